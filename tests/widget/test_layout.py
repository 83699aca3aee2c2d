"""The dock fits a laptop screen and behaves (real napari viewer, Xvfb): Run / Cancel and the
class list always in reach, a preview that leaves the user's layer selection and the prompt
layers alone, the preview on the image shown, the auto-off said aloud, class colours kept in
episode files."""

from __future__ import annotations

import itertools
import json
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
from qtpy.QtCore import Qt

from conftest import blob_image, wait_for

pytestmark = pytest.mark.napari

SCREEN_HEIGHT = 768  # a 1366 x 768 laptop
NAPARI_CHROME = 150  # napari's menu bar, status bar, dock title and the desktop's own bars
SETTLE_MS = 1_500


def settle(qtbot, widget) -> None:
    qtbot.wait(SETTLE_MS)
    qtbot.waitUntil(lambda: not widget.preview_timer.isActive() and not widget.preview_busy, timeout=60_000)
    qtbot.wait(50)


def open_dock(viewer):
    return viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")[1]


def names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


def test_the_dock_fits_a_laptop_screen_with_every_section_open(qtbot, make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(blob_image()[0], name="image", rgb=True)
    widget = open_dock(viewer)
    dock = widget.parent()
    qtbot.wait(50)
    assert widget.minimumSizeHint().height() <= SCREEN_HEIGHT - NAPARI_CHROME - 18
    assert not any(section.expanded for section in widget.sections.values())  # the less-used ones fold away
    assert widget.model_picker.model_combo.currentText() in widget.sections["model"].header.text()
    for expanded in (False, True):
        for section in widget.sections.values():
            section.set_expanded(expanded)
        qtbot.wait(20)
        assert widget.minimumSizeHint().height() <= SCREEN_HEIGHT - NAPARI_CHROME - 18
        assert dock.minimumSizeHint().height() <= SCREEN_HEIGHT - NAPARI_CHROME - 18  # with its title bar
        assert dock.window().minimumSizeHint().height() <= SCREEN_HEIGHT - 40  # the whole napari window
    body = widget.sections["finetune"].body
    assert body.isVisibleTo(widget)
    qtbot.mouseClick(widget.sections["finetune"].header, Qt.MouseButton.LeftButton)
    assert not body.isVisibleTo(widget) and not widget.sections["finetune"].expanded
    for control in (widget.run_button, widget.cancel_button, widget.progress, widget.status, widget.class_list):
        assert not widget.scroll_area.isAncestorOf(control)  # never scrolled away
    for control in (widget.model_picker, widget.support_list, widget.query_combo, widget.suggest_button,
                    widget.finetune_button, widget.save_button, widget.hint):  # fmt: skip
        assert widget.scroll_area.isAncestorOf(control)


def test_run_and_cancel_keep_their_height_while_the_first_run_hint_shows(qtbot, make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(blob_image()[0], name="image", rgb=True)
    widget = open_dock(viewer)
    window = widget.window()
    window.resize(1366, SCREEN_HEIGHT - 30)
    qtbot.wait(100)
    assert widget.hint.isVisible()
    assert window.height() <= SCREEN_HEIGHT - 30  # the window could be made that small
    for button in (widget.run_button, widget.cancel_button):
        assert button.isVisible() and button.height() >= button.sizeHint().height()
        bottom = button.mapTo(widget, button.rect().bottomLeft()).y()
        assert 0 <= bottom < widget.height()  # inside the dock, not below it


def prompt_mode_before_preview(viewer, widget):
    support = widget.supports[0]
    viewer.layers.selection.active = viewer.layers[support.labels.name]
    viewer.layers[support.labels.name].mode = "paint"
    return support


def assert_selection_and_order_kept(viewer, support, outputs) -> None:
    active = viewer.layers.selection.active
    assert active is not None and active.name == support.labels.name and active.mode == "paint"
    order = names(viewer)
    prompts = [order.index(layer.name) for layer in support.layers()]
    for name in outputs:
        assert order.index(name) < min(prompts), order  # the output never covers the scribbles
    assert order.index(outputs[-1]) == order.index("query") + 1, order  # directly above its image


def test_a_preview_keeps_the_active_layer_and_its_mode_and_stays_below_the_prompts(qtbot, ready):
    viewer, widget = ready
    support = prompt_mode_before_preview(viewer, widget)
    support.labels.paint((40, 60), 1)
    settle(qtbot, widget)
    assert widget.preview_stats["written"] == 1 and "query labels" in viewer.layers
    assert_selection_and_order_kept(viewer, support, ["query labels"])


def test_a_run_keeps_the_active_layer_and_its_mode_and_stays_below_the_prompts(qtbot, ready):
    viewer, widget = ready
    widget.set_live_preview(False)
    support = prompt_mode_before_preview(viewer, widget)
    assert widget.uncertainty_check.isChecked()
    wait_for(qtbot, widget.run(viewer.layers["query"]))
    assert widget.status.text().startswith("done")
    assert_selection_and_order_kept(viewer, support, ["query labels", "query uncertainty"])


def test_the_preview_goes_to_the_image_shown_unless_the_query_was_chosen(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(blob_image()[0], name="support", rgb=True)
    viewer.add_image(blob_image((48, 56), seed=4)[0], name="first", rgb=True)
    viewer.add_image(blob_image((40, 64), seed=5)[0], name="second", rgb=True)  # opened last
    widget = open_dock(viewer)
    widget.set_model("classic", "cpu")
    widget.classes.add("red")
    widget.classes.add("green")
    support = widget.add_support(viewer.layers["support"])
    viewer.layers["second"].visible = False  # the user looks at "first"
    support.labels.paint((30, 35), 1)
    support.labels.paint((60, 90), 2)
    settle(qtbot, widget)
    assert "first labels" in viewer.layers and "second labels" not in viewer.layers
    assert widget.status.text().startswith("live preview -> 'first labels'")
    # A choice in the query combo wins over what is shown (here the image it already showed).
    assert widget.query_combo.currentText() == "second"
    widget.query_combo.activated.emit(widget.query_combo.findText("second"))
    support.labels.paint((31, 35), 1)
    settle(qtbot, widget)
    assert "second labels" in viewer.layers
    assert np.asarray(viewer.layers["second labels"].data).shape == (40, 64)


def test_the_preview_says_why_it_turned_itself_off(qtbot, ready, monkeypatch):
    from napari_label_anything.widget import preview

    viewer, widget = ready
    assert widget.live_preview
    clock = itertools.count(0.0, 3.4)  # every reading 3.4 s after the last: a slow plane
    monkeypatch.setattr(preview, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    widget.supports[0].labels.paint((40, 60), 1)
    settle(qtbot, widget)
    assert widget.preview_stats["written"] == 1 and not widget.live_preview
    text = widget.status.text()
    assert text.startswith("live preview -> 'query labels'")
    assert "live preview off: a plane took 3.4 s (over 2 s); tick 'live preview' to turn it back on" in text


def test_custom_class_colours_survive_save_load_and_closing_the_panel(qtbot, ready, tmp_path, monkeypatch):
    from napari_label_anything import Episode
    from napari_label_anything.widget import reporting
    from napari_label_anything.widget.class_table import default_color

    viewer, widget = ready
    widget.set_live_preview(False)
    widget.classes.recolor(2, "#123456")
    assert widget.has_unsaved_changes()
    path = widget.save_episode(tmp_path / "run.episode")
    assert Episode.load(path).colors == {"red": default_color(1), "green": "#123456"}
    widget.classes.recolor(2, "#abcdef")
    assert widget.has_unsaved_changes()  # a new colour is a change worth saving
    monkeypatch.setattr(reporting, "confirm", lambda *a: True)
    widget.load_episode(path)
    assert widget.classes.colors == [default_color(1), "#123456"]
    # the panel closed with × and opened again keeps them, and the folded sections as they were
    widget.sections["files"].set_expanded(True)
    qtbot.mouseClick(widget.parent().title.close_button, Qt.MouseButton.LeftButton)
    again = open_dock(viewer)
    assert again is not widget and again.classes.colors == [default_color(1), "#123456"]
    assert again.sections["files"].expanded and not again.sections["model"].expanded


def test_episode_files_without_colours_still_load(tmp_path, episode):
    from napari_label_anything import Episode

    episode.colors = {"green": "#00FF00"}
    path = episode.save(tmp_path / "new.episode")
    assert Episode.load(path).colors == {"green": "#00ff00"}
    with np.load(path) as archive:  # the same file as written before colours were saved
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    del meta["colors"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    old = tmp_path / "old.episode"
    with old.open("wb") as handle:
        np.savez(handle, **arrays)
    loaded = Episode.load(old)
    assert loaded.colors == {} and loaded.classes == ["red", "green"]
    meta["colors"] = {"green": "not a colour"}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with old.open("wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(ValueError, match="colour"):
        Episode.load(old)
    assert zipfile.is_zipfile(old)
