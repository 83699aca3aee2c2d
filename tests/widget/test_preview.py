"""Live preview in a real napari viewer (Xvfb): the shown plane re-predicts after prompt edits."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import blob_image

pytestmark = pytest.mark.napari

SETTLE_MS = 1_500  # comfortably past the preview delay and a classic plane on a small image


def settle(qtbot, widget) -> None:
    """Wait until no preview is waiting or running, then let queued callbacks run."""
    qtbot.wait(SETTLE_MS)
    qtbot.waitUntil(lambda: not widget.preview_timer.isActive() and not widget.preview_busy, timeout=60_000)
    qtbot.wait(50)


def test_painting_a_prompt_previews_the_shown_plane_once_after_the_delay(qtbot, ready):
    viewer, widget = ready
    assert widget.live_preview  # on by default for the classic model
    assert widget.preview_check.toolTip()
    assert "query labels" not in viewer.layers
    support = widget.supports[0]
    support.labels.paint((40, 60), 1)
    assert widget.preview_timer.isActive() and widget.preview_stats["started"] == 0  # waits first
    settle(qtbot, widget)
    assert widget.preview_stats == {"started": 1, "written": 1}
    out = np.asarray(viewer.layers["query labels"].data)
    assert out.shape == (48, 56) and set(np.unique(out)) <= {0, 1, 2} and out.any()
    assert widget.status.text().startswith("live preview -> 'query labels'")
    assert widget.plane_seconds[("classic", "cpu")] < 2.0


def test_two_quick_edits_give_one_preview_and_points_count_too(qtbot, ready):
    viewer, widget = ready
    support = widget.supports[0]
    support.labels.paint((40, 60), 1)
    qtbot.wait(100)
    support.points.add([[70, 20]])
    settle(qtbot, widget)
    assert widget.preview_stats == {"started": 1, "written": 1}


def test_switching_it_off_stops_previews(qtbot, ready):
    viewer, widget = ready
    widget.set_live_preview(False)
    widget.supports[0].labels.paint((40, 60), 1)
    settle(qtbot, widget)
    assert widget.preview_stats["started"] == 0 and "query labels" not in viewer.layers
    widget.note_plane_seconds(0.1)  # the user's choice wins over timings
    assert not widget.live_preview
    widget.set_live_preview(True)
    widget.supports[0].labels.paint((41, 60), 1)
    settle(qtbot, widget)
    assert widget.preview_stats == {"started": 1, "written": 1}


def test_an_edit_while_a_preview_runs_supersedes_it(qtbot, ready):
    viewer, widget = ready
    support = widget.supports[0]
    support.labels.paint((40, 60), 1)
    qtbot.waitUntil(lambda: widget.preview_busy, timeout=10_000)
    support.labels.paint((75, 20), 2)  # the running preview's result is dropped
    widget.preview_timer.stop()
    widget.preview.preview_now()  # the delay is over while the first preview still runs
    settle(qtbot, widget)
    assert widget.preview_stats["started"] == 2 and widget.preview_stats["written"] == 1
    # what is shown is the prediction from the latest prompts
    episode = widget.build_episode(background=True)
    expected = widget.model_picker.get_segmenter().predict(episode, viewer.layers["query"].data)
    np.testing.assert_array_equal(viewer.layers["query labels"].data, expected)


def prompted_stack(make_napari_viewer, planes: int, shape: tuple[int, int], shown_plane: int = 0):
    """A stack query (classic model, two classes) and a 2-D support prompted for both while
    ``shown_plane`` is on screen: (viewer, widget, support layers, stack)."""
    viewer = make_napari_viewer()
    viewer.add_image(blob_image()[0], name="support", rgb=True)
    stack = np.stack([blob_image(shape, seed=s)[0] for s in range(planes)])
    viewer.add_image(stack, name="stack", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model("classic", "cpu")
    widget.classes.add("red")
    widget.classes.add("green")
    widget.query_combo.setCurrentText("stack")
    viewer.dims.set_point(0, shown_plane)
    support = widget.add_support(viewer.layers["support"])
    support.labels.paint((30, 35), 1)
    support.labels.paint((60, 90), 2)
    return viewer, widget, support, stack


def test_the_preview_writes_only_the_shown_plane_of_a_stack(qtbot, make_napari_viewer):
    viewer, widget, _, _ = prompted_stack(make_napari_viewer, 4, (40, 48), shown_plane=2)
    settle(qtbot, widget)
    out = np.asarray(viewer.layers["stack labels"].data)
    assert widget.preview_stats["written"] >= 1
    assert out[2].any() and not out[[0, 1, 3]].any()


def test_a_full_run_in_progress_is_not_disturbed(qtbot, make_napari_viewer):
    viewer, widget, support, stack = prompted_stack(make_napari_viewer, 6, (64, 80))
    widget.cancel_preview()
    episode = widget.episode
    worker = widget.run(scope="all planes")
    assert worker is not None
    support.labels.paint((25, 30), 1)  # an edit during the run: no preview while it is busy
    widget.preview_timer.stop()
    widget.preview.preview_now()
    assert widget.preview_stats["started"] == 0
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.wait(20)
    expected = widget.model_picker.get_segmenter().predict_stack(episode, stack)
    assert widget.status.text().startswith("done")
    assert not widget.preview_timer.isActive() or widget.preview_stats["started"] == 0
    np.testing.assert_array_equal(viewer.layers["stack labels"].data, expected)  # the run's result, whole
    assert widget.runs.last_plane_seconds is not None
    settle(qtbot, widget)  # then the edit made during the run is previewed on the shown plane
    assert widget.preview_stats["started"] == 1
    after = np.asarray(viewer.layers["stack labels"].data)
    np.testing.assert_array_equal(after[1:], expected[1:])
