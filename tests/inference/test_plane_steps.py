"""Progress and cancel inside one plane (``PlaneSteps``): a large plane reports its steps as
they finish, and a cancel stops it within a step rather than at the end of the plane. No napari."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import napari_label_anything as nla
from conftest import blob_image, blobs
from napari_label_anything.inference.base import PlaneSteps, PredictionCancelled, Segmenter, current_steps
from napari_label_anything.inference.classic import ClassicSegmenter

BIG = (1700, 2500)  # three row bands of the classic features


def scribbled_episode() -> nla.Episode:
    """One class scribbled on a few of its pixels (implicit background: labels snap to edges)."""
    image = blobs((256, 256), 0)
    labels = np.zeros(image.shape, np.uint8)
    inside = np.argwhere(image > 140)[:300]
    labels[inside[:, 0], inside[:, 1]] = 1
    episode = nla.Episode(["blob"])
    episode.add_support(image, labels=labels)
    return episode


@pytest.fixture(scope="module")
def big():
    """A classic segmenter (fitted once for the module), its episode and a big plane as a stack."""
    segmenter = ClassicSegmenter()
    episode = scribbled_episode()
    segmenter.fit(episode)
    return segmenter, episode, blobs(BIG, 1)[None]


def test_a_big_plane_reports_its_steps_as_they_finish(big):
    segmenter, episode, stack = big
    steps: list[tuple[int, int, float]] = []
    start = time.perf_counter()
    labels = segmenter.predict_stack(
        episode, stack, plane_progress=lambda *step: steps.append((*step, time.perf_counter()))
    )
    end = time.perf_counter()
    when = ", ".join(f"{d}/{t} at {s - start:.1f} s" for d, t, s in steps)
    print(f"\n{len(steps)} steps in {end - start:.1f} s: {when}")
    assert len(steps) >= 6
    done, totals, times = zip(*steps, strict=True)
    assert list(done) == list(range(1, len(steps) + 1)) and set(totals) == {len(steps)}
    assert times[1] - start < 0.6 * (end - start)  # the first band's step comes while the plane runs
    assert labels.shape == (1, *BIG) and labels.any()


def test_cancel_in_the_middle_of_a_big_plane_stops_it_within_a_second(big):
    segmenter, episode, stack = big
    cancel, stepped, when = threading.Event(), threading.Event(), []

    def cancel_mid_band() -> None:
        if stepped.wait(60):  # the fit is done and the first band's features are under way
            time.sleep(0.3)
            when.append(time.perf_counter())
            cancel.set()

    threading.Thread(target=cancel_mid_band, daemon=True).start()
    with pytest.raises(PredictionCancelled):
        segmenter.predict_stack(episode, stack, cancel=cancel, plane_progress=lambda d, t: stepped.set())
    latency = time.perf_counter() - when[0]
    print(f"\ncancelled {latency:.2f} s after the cancel")
    assert latency < 1.5


def test_steps_leave_the_result_unchanged_and_need_no_stack():
    segmenter, episode = ClassicSegmenter(), scribbled_episode()
    query = blobs((300, 200), 2)
    steps: list[tuple[int, int]] = []
    with PlaneSteps(lambda d, t: steps.append((d, t))):
        stepped = segmenter.predict(episode, query)
    assert steps == [(d, 4) for d in range(1, 5)]  # fit, one band's features and classes, labels
    assert current_steps().on_step is None  # nothing left behind
    np.testing.assert_array_equal(stepped, segmenter.predict(episode, query))
    with PlaneSteps(cancel=lambda: True), pytest.raises(PredictionCancelled):
        segmenter.predict(episode, query)


class PlainSegmenter(Segmenter):
    """A segmenter that cannot step: it never asks for its ``PlaneSteps``."""

    def predict_proba(self, episode, query, **options):
        return np.full((episode.n_classes + 1, *query.shape[:2]), 1 / (episode.n_classes + 1), np.float32)


def test_a_segmenter_that_cannot_step_ignores_it_and_is_cancelled_between_planes(episode):
    stack = np.stack([blob_image(seed=s)[0] for s in range(3)])
    steps: list = []
    labels = PlainSegmenter().predict_stack(episode, stack, plane_progress=lambda d, t: steps.append(d))
    assert labels.shape == stack.shape[:3] and not steps
    planes = PlainSegmenter().iter_predict_stack(episode, stack, cancel=lambda: len(steps) >= 1)
    next(planes)
    steps.append("one plane")
    with pytest.raises(PredictionCancelled):
        next(planes)


def test_label_anything_reports_each_batch_of_tiles(sam_like_segmenter, episode):
    from napari_label_anything.inference import LabelAnythingSegmenter
    from napari_label_anything.inference.tiling import plan_tiles

    segmenter = LabelAnythingSegmenter(sam_like_segmenter.model, device="cpu", tiling="tile")
    query = blob_image((512, 800), seed=5)[0]
    choice = segmenter.tiling_for(episode, query.shape[:2])
    n_tiles = len(plan_tiles(query.shape[:2], choice.tile, choice.overlap))
    steps: list[tuple[int, int]] = []
    with PlaneSteps(lambda d, t: steps.append((d, t))):
        segmenter.predict(episode, query)
    assert n_tiles > 1 and steps == [(d, n_tiles) for d in range(1, n_tiles + 1)]
    steps.clear()
    with PlaneSteps(lambda d, t: steps.append((d, t)), cancel=lambda: len(steps) > 0):
        with pytest.raises(PredictionCancelled):
            segmenter.predict(episode, query)
    assert steps == [(1, n_tiles)]  # stopped after the first batch of tiles
