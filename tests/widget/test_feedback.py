"""The annotation loop in a real napari viewer (Xvfb): run -> suggest the most uncertain plane
-> correct it -> use it as a support -> run again."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtCore import Qt

from conftest import blob_image, dimmed_stack, mean_iou, wait_for
from napari_label_anything.widget.messages import PlaneResult

pytestmark = pytest.mark.napari


def press(qtbot, button) -> None:
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


@pytest.fixture
def loop(make_napari_viewer):
    """A stack with a known answer, plane 0 (copied) as a fully painted support, classic model."""
    viewer = make_napari_viewer()
    stack, truth = dimmed_stack(seed=1)
    viewer.add_image(stack[0], name="support")
    viewer.add_labels(truth[0], name="support truth")
    viewer.add_image(stack, name="stack")
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model("classic", "cpu")
    widget.classes.add("disc")
    widget.classes.add("square")
    widget.add_support(viewer.layers["support"], labels_layer=viewer.layers["support truth"])
    widget.query_combo.setCurrentText("stack")
    return viewer, widget, stack, truth


def stack_ious(viewer, truth) -> list[float]:
    out = np.asarray(viewer.layers["stack labels"].data)
    return [mean_iou(out[z], truth[z]) for z in range(len(truth))]


def test_the_full_loop_points_at_a_bad_plane_and_feeding_it_back_helps(qtbot, loop):
    viewer, widget, stack, truth = loop
    assert widget.uncertainty_check.isChecked()  # on by default
    wait_for(qtbot, widget.run(scope="all planes"))
    assert widget.status.text().startswith("done") and "'stack uncertainty'" in widget.status.text()
    uncertainty = viewer.layers["stack uncertainty"]
    assert uncertainty.data.shape == stack.shape and uncertainty.data.dtype == np.float32
    assert 0 <= uncertainty.data.min() and uncertainty.data.max() <= 1
    assert "stack uncertainty" not in [widget.query_combo.itemText(i) for i in range(widget.query_combo.count())]
    before = stack_ious(viewer, truth)
    segmenter = widget.model_picker.get_segmenter()
    fits = segmenter.stats["fits"]

    # Suggest: the button goes to the most uncertain plane, which really is a bad plane.
    viewer.dims.set_point(0, 0)
    press(qtbot, widget.suggest_button)
    ranking = widget.suggest_planes(3)
    (z,) = ranking[0]
    assert len(ranking) == 3 and viewer.dims.current_step[0] == z
    assert widget.status.text().startswith("most uncertain plane(s) of 'stack'") and f"{z} (" in widget.status.text()
    median = float(np.median(before))
    print(f"\nsuggested plane {z}: IoU {before[z]:.3f}; median plane IoU {median:.3f}")
    assert before[z] < median

    # The user corrects that plane with napari's tools (here: the true labels) and feeds it back.
    out = viewer.layers["stack labels"]
    out.data[z] = truth[z]
    out.refresh()
    press(qtbot, widget.feedback_button)  # the plane shown is z
    assert widget.last_error is None, widget.last_error
    support = widget.supports[-1]
    assert support.image is viewer.layers["stack"] or support.name == "stack"
    # every pixel is a prompt: the classes as painted, the background as background prompts
    np.testing.assert_array_equal(np.asarray(support.labels.data)[z], np.where(truth[z] == 0, 255, truth[z]))
    assert not np.asarray(support.labels.data)[np.arange(len(truth)) != z].any()
    assert widget.support_list.count() == 2 and widget.support_list.item(1).text().startswith("stack")
    assert widget.query_combo.currentText() == "stack"  # the query stays the query
    episode = widget.episode
    assert [s.name for s in episode.supports] == ["support", f"stack [{z}]"]
    np.testing.assert_array_equal(episode.supports[1].image, stack[z])

    # Re-run: one new fit (the episode changed), and a better stack.
    wait_for(qtbot, widget.run(scope="all planes"))
    assert widget.status.text().startswith("done")
    assert segmenter.stats["fits"] == fits + 1
    after = stack_ious(viewer, truth)
    print(f"stack mean IoU {np.mean(before):.3f} -> {np.mean(after):.3f}")
    assert np.mean(after) > np.mean(before) + 0.01
    np.testing.assert_array_equal(viewer.layers["stack labels"].data[z], truth[z])  # kept as corrected
    assert "1 corrected plane(s) kept as you painted them" in widget.status.text()
    assert z not in [i for (i,) in widget.suggest_planes(len(truth))]  # corrected planes are not suggested again


def test_uncertainty_only_when_asked_and_only_on_success(qtbot, loop):
    viewer, widget, stack, _ = loop
    widget.uncertainty_check.setChecked(False)
    wait_for(qtbot, widget.run(scope="all planes"))
    assert "stack labels" in viewer.layers and "stack uncertainty" not in viewer.layers
    before = len(notification_manager.records)
    press(qtbot, widget.suggest_button)
    notes = notification_manager.records[before:]
    assert len(notes) == 1 and notes[0].severity == NotificationSeverity.ERROR
    assert str(notes[0].message).startswith("cannot suggest a plane: no uncertainty for 'stack'")

    # A cancelled run writes no uncertainty either.
    widget.uncertainty_check.setChecked(True)
    worker = widget.run(scope="all planes")

    def on_yield(message):
        if isinstance(message, PlaneResult):
            widget.cancel()

    worker.yielded.connect(on_yield)
    wait_for(qtbot, worker)
    assert "cancelled" in widget.status.text() and "stack uncertainty" not in viewer.layers

    # The current plane only: one plane scored, the others have no score.
    viewer.dims.set_point(0, 4)
    wait_for(qtbot, widget.run(scope="current plane"))
    layer = viewer.layers["stack uncertainty"]
    assert layer.data[4].any() and not layer.data[np.arange(len(stack)) != 4].any()
    assert widget.suggest_planes(5) == [(4,)]


def test_uncertainty_appears_plane_by_plane_and_a_cancel_takes_it_back(qtbot, loop):
    from napari_label_anything.widget.output_layers import SCORES_KEY

    viewer, widget, stack, _ = loop
    shown = []
    worker = widget.run(scope="all planes")

    def first_run(message):  # after the widget's own handler: what the viewer shows now
        if isinstance(message, PlaneResult):
            data = viewer.layers["stack uncertainty"].data
            shown.append([bool(data[z].any()) for z in range(len(stack))])

    worker.yielded.connect(first_run)
    wait_for(qtbot, worker)
    assert shown[0] == [True] + [False] * (len(stack) - 1) and shown[-1] == [True] * len(stack)
    layer = viewer.layers["stack uncertainty"]
    original, scores, limits = layer.data, dict(layer.metadata[SCORES_KEY]), tuple(layer.contrast_limits)
    snapshot = np.array(original)
    assert sorted(scores) == [(z,) for z in range(len(stack))]

    # A second run cancelled after two planes: they were written into a copy, which is dropped.
    copies = []
    worker = widget.run(scope="all planes")

    def second_run(message):
        if isinstance(message, PlaneResult):
            copies.append(viewer.layers["stack uncertainty"].data is not original)
            if len(copies) == 2:
                widget.cancel()

    worker.yielded.connect(second_run)
    wait_for(qtbot, worker)
    assert copies[:2] == [True, True] and "cancelled" in widget.status.text()
    layer = viewer.layers["stack uncertainty"]
    assert layer.data is original and np.array_equal(original, snapshot)  # never written into
    assert layer.metadata[SCORES_KEY] == scores and tuple(layer.contrast_limits) == limits


def test_feeding_back_re_encodes_only_the_new_support(qtbot, make_napari_viewer, reference):
    """Label Anything: the corrected plane is the only image the next run encodes."""
    viewer = make_napari_viewer()
    support_image, support_truth = blob_image()
    viewer.add_image(support_image, name="support", rgb=True)
    viewer.add_labels(support_truth, name="support truth")
    stack = np.stack([blob_image((64, 72), seed=s)[0] for s in range(3)])
    viewer.add_image(stack, name="stack", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model(str(reference / "sam_like"), "cpu")
    widget.classes.add("red")
    widget.classes.add("green")
    widget.add_support(viewer.layers["support"], labels_layer=viewer.layers["support truth"])
    wait_for(qtbot, widget.run(viewer.layers["stack"], scope="all planes"))
    assert "stack uncertainty" in viewer.layers
    stats = widget.model_picker.get_segmenter().stats
    encoded, prompts = stats["encoded_images"], stats["prompt_encodings"]
    assert encoded == 4
    out = viewer.layers["stack labels"]
    assert out.data[2].any()
    widget.add_prediction_as_support(2, viewer.layers["stack"])
    assert [s.name for s in widget.episode.supports] == ["support", "stack [2]"]
    wait_for(qtbot, widget.run(viewer.layers["stack"], scope="all planes"))
    assert widget.status.text().startswith("done")
    # nothing encoded: the new support is a query plane, already in the feature cache
    assert stats["encoded_images"] == encoded
    assert stats["prompt_encodings"] == prompts + 1


def test_feedback_errors_are_reported_and_change_nothing(qtbot, loop):
    viewer, widget, stack, _ = loop
    n_layers = len(viewer.layers)
    with pytest.raises(ValueError, match="run 'stack' first"):
        widget.add_prediction_as_support(3)
    before = len(notification_manager.records)
    press(qtbot, widget.feedback_button)
    notes = notification_manager.records[before:]
    assert len(notes) == 1 and str(notes[0].message).startswith("cannot use this plane as support: run 'stack'")
    assert len(viewer.layers) == n_layers and len(widget.supports) == 1
    wait_for(qtbot, widget.run(scope="current plane"))  # plane 0 only
    with pytest.raises(ValueError, match="not a plane"):
        widget.add_prediction_as_support(len(stack))
    with pytest.raises(ValueError, match="no labels on plane 5"):
        widget.add_prediction_as_support(5)
    assert len(widget.supports) == 1
    assert widget.add_prediction_as_support((0,)).name == "stack"
    assert widget.add_prediction_as_support(0) is widget.supports[1]  # the same support again
    with pytest.raises(ValueError, match="already a support"):
        widget.suggest_planes()
