"""Supports encoded in the background as soon as they are added (real napari viewer, Xvfb)."""

from __future__ import annotations

import pytest

from conftest import blob_image
from napari_label_anything.widget.encoding import BUSY_TEXT, READY_TEXT

pytestmark = pytest.mark.napari


@pytest.fixture
def la_viewer(make_napari_viewer, reference):
    """A viewer with a support image, its truth as labels, a 2D query and the tiny MAE-like model."""
    viewer = make_napari_viewer()
    support_image, support_truth = blob_image()
    viewer.add_image(support_image, name="support", rgb=True)
    viewer.add_labels(support_truth, name="support truth")
    viewer.add_image(blob_image((64, 72), seed=4)[0], name="query", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model(str(reference / "mae_like"), "cpu")
    widget.set_live_preview(False)
    widget.classes.add("red")
    widget.classes.add("green")
    widget.query_combo.setCurrentText("query")
    return viewer, widget


def test_a_support_is_encoded_before_any_run_and_the_run_encodes_only_the_query(qtbot, la_viewer):
    viewer, widget = la_viewer
    assert widget.encoding_label.isHidden() and widget.encoding_state == ""
    widget.add_support(viewer.layers["support"], labels_layer=viewer.layers["support truth"])
    assert widget.encode_timer.isActive()  # after a short pause, not on the GUI thread now
    qtbot.waitUntil(lambda: widget.encoding_state.startswith(BUSY_TEXT), timeout=10_000)
    qtbot.waitUntil(lambda: widget.encoding_state == READY_TEXT, timeout=60_000)
    assert not widget.encoding_label.isHidden() and widget.encoding_label.toolTip()
    stats = widget.model_picker.get_segmenter().stats
    assert stats["encoded_images"] == 1 and stats["prompt_encodings"] == 1  # before any run
    worker = widget.run(scope="current plane")
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert widget.status.text().startswith("done")
    assert stats["encoded_images"] == 2  # the query only
    assert stats["prompt_encodings"] == 1  # the prompts were ready
    qtbot.wait(500)
    assert widget.encoding_state == READY_TEXT and widget.encoding_stats["started"] == 1


def test_a_run_started_while_the_supports_encode_waits_for_them(qtbot, la_viewer):
    viewer, widget = la_viewer
    widget.add_support(viewer.layers["support"], labels_layer=viewer.layers["support truth"])
    qtbot.waitUntil(lambda: widget.encoding_state.startswith(BUSY_TEXT), timeout=10_000)
    worker = widget.run(scope="current plane")  # the model is used by one worker at a time
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    stats = widget.model_picker.get_segmenter().stats
    assert widget.status.text().startswith("done")
    assert stats["encoded_images"] == 2 and stats["prompt_encodings"] == 1
    qtbot.waitUntil(lambda: widget.encoding_state == READY_TEXT, timeout=60_000)


def test_changed_prompts_are_encoded_again_and_an_unprompted_image_at_once(qtbot, la_viewer):
    viewer, widget = la_viewer
    support = widget.add_support(viewer.layers["support"])  # no prompts yet: its image is encoded
    qtbot.waitUntil(lambda: "images encoded" in widget.encoding_state, timeout=60_000)
    stats = widget.model_picker.get_segmenter().stats
    assert stats["encoded_images"] == 1 and stats["prompt_encodings"] == 0
    support.labels.paint((30, 35), 1)
    widget.classes.set_active(2)
    support.points.add([[60, 90]])  # both classes prompted now (the point takes the active class)
    qtbot.waitUntil(lambda: widget.encoding_state == READY_TEXT, timeout=60_000)
    assert stats["encoded_images"] == 1 and stats["prompt_encodings"] == 1  # the image was cached
    support.labels.paint((40, 40), 1)  # a stroke, as the brush makes it
    qtbot.waitUntil(lambda: widget.encoding_state.startswith(BUSY_TEXT), timeout=10_000)
    qtbot.waitUntil(lambda: widget.encoding_state == READY_TEXT, timeout=60_000)
    assert stats["prompt_encodings"] == 2 and stats["encoded_images"] == 1


def test_nothing_to_encode_for_classic_and_never_a_download(qtbot, la_viewer, monkeypatch):
    viewer, widget = la_viewer
    widget.set_model("classic", "cpu")
    widget.add_support(viewer.layers["support"], labels_layer=viewer.layers["support truth"])
    qtbot.wait(800)
    assert widget.encoding_state == "" and widget.encoding_stats["started"] == 0
    widget.set_model("sam-1024-coco", "cpu")  # a hub model: must be downloaded first
    monkeypatch.setattr(widget.model_picker, "checkpoint_to_download", lambda: "some/repo")
    loaded = []
    monkeypatch.setattr(widget.model_picker, "get_segmenter", lambda: loaded.append(1))
    widget.schedule_encoding()
    qtbot.waitUntil(lambda: "first Run" in widget.encoding_state, timeout=10_000)
    assert widget.encoding_stats["started"] == 0 and not loaded


def test_the_neighbours_setting_does_not_reload_a_checkpoint_model(la_viewer):
    """Comparing planes with their neighbours is a classic-model setting: toggling it keeps the
    loaded checkpoint model (no second copy) and the key its encoded supports are kept under."""
    _, widget = la_viewer
    picker = widget.model_picker
    assert not picker.is_classic()
    first, key = picker.get_segmenter(), picker._key()
    picker.neighbours_check.setChecked(False)
    assert picker.get_segmenter() is first and picker._key() == key and len(picker._segmenters) == 1
    picker.set_model("classic", "cpu")
    assert picker.is_classic() and picker.get_segmenter().depth_sigmas == ()
