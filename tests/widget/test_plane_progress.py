"""Progress and Cancel inside a plane: the widget's worker streams a plane's steps while it runs,
and Cancel reaches the segmenter within the plane (``workers.predict_planes``; a real napari
viewer, Xvfb, for the dock)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conftest import blob_image, blobs
from napari_label_anything.inference.base import Segmenter, current_steps
from napari_label_anything.widget.messages import CANCELLED, ModelReady, Normalised, PlaneResult, Progress, Status
from napari_label_anything.widget.workers import PredictionError, predict_planes
from test_progress import assert_same, snapshot

N_STEPS = 5


class SteppingSegmenter(Segmenter):
    """Every plane takes ``N_STEPS`` steps of ``seconds``, reported through its ``PlaneSteps``."""

    name = "stepping"

    def __init__(self, seconds: float = 0.02, fail: Exception | None = None) -> None:
        self.seconds, self.fail, self.steps_taken = seconds, fail, 0

    def predict_proba(self, episode, query, **options):
        steps = current_steps()
        for done in range(1, N_STEPS + 1):
            time.sleep(self.seconds)
            self.steps_taken += 1
            if self.fail is not None and done == 3:
                raise self.fail
            steps.step(done, N_STEPS)
        return np.full((episode.n_classes + 1, *query.shape[:2]), 1 / (episode.n_classes + 1), np.float32)


def stack(n: int = 3) -> np.ndarray:
    return np.stack([blob_image((40, 48), seed=s)[0] for s in range(n)])


def planes_thread_alive() -> bool:
    return any(t.name == "nla-planes" for t in threading.enumerate())


def test_the_worker_yields_each_plane_s_steps_before_the_plane(episode):
    messages = list(predict_planes(SteppingSegmenter, episode, stack(), [(0,), (1,), (2,)], rgb=True))
    kinds = [type(message) for message in messages]
    assert kinds[:4] == [Status, ModelReady, Status, Normalised]
    assert kinds[4:] == ([Progress] * N_STEPS + [PlaneResult]) * 3
    progress = [message for message in messages if isinstance(message, Progress)]
    assert [p.done for p in progress] == [p + d / N_STEPS for p in range(3) for d in range(1, N_STEPS + 1)]
    assert {p.total for p in progress} == {3}
    planes = [message for message in messages if isinstance(message, PlaneResult)]
    assert [(p.index, p.done, p.total) for p in planes] == [((0,), 1, 3), ((1,), 2, 3), ((2,), 3, 3)]
    assert all(p.uncertainty is None for p in planes)
    assert not planes_thread_alive()


def test_cancel_stops_the_plane_within_a_step_and_ends_with_a_cancelled_status(episode):
    segmenter = SteppingSegmenter(seconds=0.2)
    cancelled = threading.Event()
    messages = []
    for message in predict_planes(lambda: segmenter, episode, stack(), [(0,), (1,)], True, cancel=cancelled.is_set):
        messages.append(message)
        if isinstance(message, Progress):
            start = time.perf_counter()
            cancelled.set()  # from the first step of the first plane on
    latency = time.perf_counter() - start
    assert messages[-1] == CANCELLED == Status("cancelled")
    assert not any(isinstance(message, PlaneResult) for message in messages)
    assert segmenter.steps_taken == 2 and latency < 1.0  # the step under way, not the rest of the plane
    time.sleep(0.05)
    assert not planes_thread_alive()


def test_closing_the_worker_s_generator_stops_the_plane(episode):
    segmenter = SteppingSegmenter(seconds=0.2)
    messages = predict_planes(lambda: segmenter, episode, stack(), [(0,), (1,)], True)
    assert next(message for message in messages if isinstance(message, Progress))
    messages.close()
    time.sleep(0.5)
    assert segmenter.steps_taken == 2 and not planes_thread_alive()


@pytest.mark.parametrize(
    ("error", "raised"), [(ValueError("bad plane"), ValueError), (RuntimeError("oom"), PredictionError)]
)
def test_an_error_inside_a_plane_comes_out_of_the_worker(episode, error, raised):
    segmenter = SteppingSegmenter(fail=error)
    with pytest.raises(raised, match=str(error)):
        list(predict_planes(lambda: segmenter, episode, stack(), [(0,), (1,)], True))


@pytest.mark.napari
def test_cancel_during_a_big_plane_ends_the_run_at_once_and_the_bar_moved_within_it(qtbot, make_napari_viewer):
    from napari_label_anything.widget.dock import PROGRESS_PER_PLANE

    viewer = make_napari_viewer()
    viewer.add_image(blobs((256, 256), 0), name="support")
    viewer.add_image(blobs((2500, 2500), 1), name="query")
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model("classic", "cpu")
    widget.set_live_preview(False)
    widget.classes.add("blob")
    support = widget.add_support(viewer.layers["support"])
    for row, col in np.argwhere(viewer.layers["support"].data > 140)[:400:40]:
        support.labels.paint((row, col), 1)
    widget.query_combo.setCurrentText("query")
    before = snapshot(viewer)
    values: list[int] = []
    widget.progress.valueChanged.connect(values.append)
    worker = widget.run(viewer.layers["query"])
    assert worker is not None
    qtbot.waitUntil(lambda: 0 < widget.progress.value() < PROGRESS_PER_PLANE, timeout=60_000)  # the fit is done
    qtbot.wait(300)  # into the features of the first band
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        start = time.perf_counter()
        widget.cancel()
    latency = time.perf_counter() - start
    qtbot.waitUntil(lambda: not planes_thread_alive(), timeout=30_000)  # the plane's work stopped too
    stopped = time.perf_counter() - start
    qtbot.wait(50)
    print(f"\nthe run ended {latency:.2f} s and its plane stopped {stopped:.2f} s after Cancel; bar: {values}")
    assert latency < 2.5 and stopped < 2.5
    assert "cancelled" in widget.status.text() and widget.run_button.isEnabled()
    assert_same(before, snapshot(viewer))  # no output layer appeared
    assert any(0 < v < PROGRESS_PER_PLANE for v in values)
