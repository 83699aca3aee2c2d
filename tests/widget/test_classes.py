"""The class list in a real napari viewer (Xvfb): the built-in background row (label 0) and the
user's classes 1..N, whose rows are exactly the label values of the output."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from conftest import blob_image, wait_for

pytestmark = pytest.mark.napari

BACKGROUND_PROMPT = 255


def paint_background(widget, support):
    """Select row 0 and scribble background with the brush, a point and a box."""
    widget.classes.set_active(0)
    assert support.labels.selected_label == BACKGROUND_PROMPT
    support.labels.brush_size = 6
    for yx in ((6, 6), (88, 8), (8, 120), (85, 118)):
        support.labels.paint(yx, support.labels.selected_label)
    support.points.add([[50, 10]])
    support.shapes.add_rectangles(np.array([[70.0, 2.0], [94.0, 20.0]]))
    assert support.points.features["class"].tolist() == [BACKGROUND_PROMPT]
    assert support.shapes.features["class"].tolist() == [BACKGROUND_PROMPT]


def test_background_is_row_0_and_its_prompts_give_label_0(qtbot, ready):
    viewer, widget = ready
    support = widget.supports[0]
    support.labels.brush_size = 10
    for (y, x), k in (((28, 32), 1), ((38, 44), 1), ((56, 86), 2), ((62, 94), 2)):  # inside the discs
        support.labels.paint((y, x), k)
    assert widget.classes.background_paintable  # 'classic' takes background prompts
    texts = [widget.class_list.item(i).text() for i in range(widget.class_list.count())]
    assert texts == ["0  background", "1  red", "2  green"]
    paint_background(widget, support)
    assert widget.class_list.currentRow() == 0
    assert "background: " in widget.support_list.item(0).text()
    counts = support.prompt_counts(2)
    assert counts["pixels"][0] > 0 and counts["points"][0] == 1 and counts["boxes"][0] == 1

    episode = widget.episode  # background prompts are the episode's "background" class, after the N classes
    assert episode.classes == ["red", "green", "background"]
    assert 3 in np.unique(episode.supports[0].labels) and BACKGROUND_PROMPT not in episode.supports[0].labels
    assert episode.supports[0].points[:, 2].tolist() == [3] and episode.supports[0].boxes[:, 4].tolist() == [3]

    # A query drawn at the support's scale: the classic model's features are multi-scale, and on
    # the fixture's half-size query its accuracy depends on the draw of its trees.
    image, truth = blob_image(seed=4)
    viewer.add_image(image, name="same-scale query", rgb=True)
    wait_for(qtbot, widget.run(viewer.layers["same-scale query"], scope="all planes"))
    assert widget.last_error is None, widget.last_error
    out = np.asarray(viewer.layers["same-scale query labels"].data)
    assert set(np.unique(out)) <= {0, 1, 2}  # the rows, and nothing else
    assert list(viewer.layers["same-scale query labels"].features["class"]) == ["background", "red", "green"]
    for k in (0, 1, 2):  # each row's pixels come out as that row's label value
        assert np.mean(out[truth == k] == k) > 0.7, k


def test_a_class_named_background_is_refused(qtbot, ready, monkeypatch):
    viewer, widget = ready
    with pytest.raises(ValueError, match="built-in first row"):
        widget.classes.add(" Background ")
    with pytest.raises(ValueError, match="built-in first row"):
        widget.classes.rename(1, "background")
    # through the buttons: one notification with the reason, the classes unchanged
    from qtpy.QtWidgets import QInputDialog

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("background", True)))
    qtbot.mouseClick(widget.class_buttons["add"], Qt.MouseButton.LeftButton)
    assert "built-in first row" in str(widget.last_error) and "built-in" in widget.status.text()
    assert widget.classes.names == ["red", "green"]
    # row 0 itself is neither renamed, recoloured nor removed
    widget.classes.set_active(0)
    for button in ("rename", "colour", "remove"):
        widget.last_error = None
        qtbot.mouseClick(widget.class_buttons[button], Qt.MouseButton.LeftButton)
        assert "background row is built in" in str(widget.last_error), button
    assert widget.classes.names == ["red", "green"] and widget.class_list.count() == 3


def test_label_anything_models_show_row_0_but_do_not_paint_it(qtbot, ready, reference):
    viewer, widget = ready
    support = widget.supports[0]
    paint_background(widget, support)  # painted while 'classic' was chosen
    widget.set_model(str(reference / "sam_like"), "cpu")
    assert not widget.classes.background_paintable
    row0 = widget.class_list.item(0)
    assert not row0.flags() & Qt.ItemFlag.ItemIsSelectable and "Label Anything" in row0.toolTip()
    assert widget.classes.active == 1  # moved off the row that can no longer be painted
    for _ in range(4):  # Alt-N / Alt-P cycle over the classes only
        widget.classes.set_active(widget.classes.active + 1)
        assert widget.classes.active in (1, 2)
    widget.classes.set_active(0)
    assert widget.classes.active != 0
    assert widget.run_episode().n_classes == 2  # a run leaves the background scribbles out (with a warning)
    assert widget.episode.n_classes == 3  # a saved episode keeps them
    widget.set_model("classic", "cpu")
    assert widget.classes.background_paintable and not widget.class_list.item(0).toolTip().startswith(
        "Label 0 of the output. The"
    )


def test_background_prompts_survive_save_load_and_class_removal(qtbot, ready, tmp_path, make_napari_viewer):
    viewer, widget = ready
    support = widget.supports[0]
    paint_background(widget, support)
    painted = np.asarray(support.labels.data) == BACKGROUND_PROMPT
    episode = widget.episode
    path = widget.save_episode(tmp_path / "bg.episode")

    other = make_napari_viewer()
    _, widget2 = other.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget2.load_episode(path)
    assert widget2.classes.names == ["red", "green"]  # "background" is row 0 again, not a class
    loaded = widget2.supports[0]
    np.testing.assert_array_equal(np.asarray(loaded.labels.data) == BACKGROUND_PROMPT, painted)
    assert loaded.points.features["class"].tolist() == [BACKGROUND_PROMPT]
    assert widget2.episode.signature() == episode.signature()

    # removing a class renumbers the classes above it but never the background prompts
    widget.classes.remove(1)
    data = np.asarray(support.labels.data)
    np.testing.assert_array_equal(data == BACKGROUND_PROMPT, painted)
    assert set(np.unique(data)) == {0, 1, BACKGROUND_PROMPT}
    assert support.points.features["class"].tolist() == [BACKGROUND_PROMPT]
    assert widget.episode.classes == ["green", "background"]
