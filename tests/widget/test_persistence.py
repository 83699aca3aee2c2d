"""The widget keeps its state when its panel is closed with × and opened again from the Plugins
menu in the same viewer (napari builds a new widget then). Real napari viewer, Xvfb."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from conftest import blob_image

pytestmark = pytest.mark.napari


def open_widget(viewer):
    return viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")[1]


def close_with_x(qtbot, widget):
    qtbot.mouseClick(widget.parent().title.close_button, Qt.MouseButton.LeftButton)
    assert widget.closed


def test_closing_with_x_and_reopening_keeps_classes_supports_and_model(qtbot, ready, reference):
    viewer, widget = ready
    widget.set_model(str(reference / "sam_like"), "cpu")
    widget.set_live_preview(False)
    widget.classes.recolor(2, "#123456")
    widget.classes.set_active(2)
    support = widget.supports[0]
    support.points.add([[20, 100]])
    worker = widget.run(viewer.layers["query"])
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    segmenter = widget.model_picker.get_segmenter()
    names = [layer.name for layer in viewer.layers]
    episode, unsaved = widget.episode.signature(), widget.has_unsaved_changes()
    encoder = widget.model_picker.encoder  # the one the run used (the default)
    widget.model_picker.set_encoder("onnx-int8")  # the encoder choice is kept too
    widget.model_picker.neighbours_check.setChecked(False)  # and the classic model's depth setting
    close_with_x(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == names  # closing removes nothing

    again = open_widget(viewer)
    assert again is not widget  # napari built a new one
    assert again.classes.names == ["red", "green"] and again.classes.color_of(2) == "#123456"
    assert again.classes.active == 2
    assert again.class_list.count() == 3 and "green" in again.class_list.item(2).text()
    assert [s.image.name for s in again.supports] == ["support"] and again.supports[0] is support
    assert again.support_list.count() == 1 and "1 pt" in again.support_list.item(0).text().split("green")[1]
    assert again.model_picker.model_name == str(reference / "sam_like")
    assert again.model_picker.encoder == "onnx-int8"
    again.model_picker.set_encoder(encoder)
    assert not again.model_picker.compare_neighbours
    again.model_picker.neighbours_check.setChecked(True)
    assert again.model_picker.get_segmenter() is segmenter  # no reload
    assert again.episode.signature() == episode and again.has_unsaved_changes() == unsaved
    assert again.hint.isHidden() and not again.live_preview
    assert again.query_combo.currentText() == "query"
    # It works as the first did: prompts follow the active class, the run uses the same model.
    again.classes.set_active(1)
    support.points.add([[30, 40]])
    assert support.points.features["class"].tolist()[-1] == 1
    before = segmenter.stats["encoded_images"]
    worker = again.run(viewer.layers["query"])
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert again.status.text().startswith("done") and segmenter.stats["encoded_images"] == before
    assert [layer.name for layer in viewer.layers].count("query labels") == 1
    # the old widget no longer reacts to the shared class table
    again.classes.add("blue")
    assert widget.class_list.count() == 3 and again.class_list.count() == 4


def test_a_new_viewer_does_not_get_the_state_and_a_redocked_widget_keeps_its_own(qtbot, ready, make_napari_viewer):
    viewer, widget = ready
    close_with_x(qtbot, widget)
    other = make_napari_viewer()
    other.add_image(blob_image()[0], name="support", rgb=True)
    fresh = open_widget(other)
    assert fresh.classes.names == [] and fresh.supports == []
    # docked again, the first widget takes its own state back: a later new widget starts empty
    viewer.window.add_dock_widget(widget, name="Label Anything again")
    assert not widget.closed and widget.classes.names == ["red", "green"]
    widget.classes.add("blue")
    assert widget.class_list.count() == 4
    viewer.window.remove_dock_widget(widget)
    again = open_widget(viewer)
    assert again.classes.names == ["red", "green", "blue"] and len(again.supports) == 1
    assert np.asarray(again.supports[0].labels.data).any()
