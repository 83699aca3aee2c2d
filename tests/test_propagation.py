"""propagate_stack (benchmarks/propagation.py, beside its benchmark): a stack predicted outward
from its prompted planes (napari-free)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_label_anything.episode import Episode
from napari_label_anything.inference.base import PredictionCancelled
from napari_label_anything.inference.classic import ClassicSegmenter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from propagation import outward_order, plane_confidence, propagate_stack  # noqa: E402


def drifting_stack(n=13, shape=(48, 56), seed=0):
    """A (Z, Y, X) uint8 stack with one disc (class 1) that moves right by 2.2 pixels per plane
    and dims from 230 at plane 0 to 90 at the last plane on a background of 40: a support on
    plane 0 alone no longer recognises the dim far planes, neighbouring planes look alike."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    stack = np.zeros((n, *shape), np.uint8)
    truth = np.zeros((n, *shape), np.uint8)
    for z in range(n):
        disc = (yy - 24) ** 2 + (xx - 14 - 2.2 * z) ** 2 < 8**2
        image = np.full(shape, 40.0)
        image[disc] = 230 - 140 * z / (n - 1)
        image += rng.normal(0, 8, shape)
        stack[z] = np.clip(image, 0, 255).astype(np.uint8)
        truth[z] = disc
    return stack, truth


def mean_iou(labels, truth) -> float:
    scores = []
    for p, t in zip(labels == 1, truth == 1, strict=True):
        union = np.count_nonzero(p | t)
        scores.append(np.count_nonzero(p & t) / union if union else 1.0)
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def drifting():
    stack, truth = drifting_stack()
    episode = Episode(["blob"])
    episode.add_support(stack, labels=truth, plane=0)
    return stack, truth, episode


@pytest.fixture(scope="module")
def segmenter():
    return ClassicSegmenter(n_jobs=1)


def test_outward_order_is_nearest_first():
    assert outward_order(7, [3]) == [3, 2, 4, 1, 5, 0, 6]
    assert outward_order(5, [0]) == [0, 1, 2, 3, 4]
    assert outward_order(8, [1, 6]) == [1, 6, 0, 2, 5, 7, 3, 4]
    labels = np.array([[0, 1], [1, 0]])
    probability = np.array([[1.0, 0.6], [0.8, 1.0]])
    assert plane_confidence(labels, probability) == pytest.approx(0.7)
    assert plane_confidence(labels, probability, "plane") == pytest.approx(0.85)
    assert plane_confidence(np.zeros((2, 2)), probability) == 0.0


def test_propagation_follows_a_drifting_object_that_plain_prediction_loses(drifting, segmenter):
    stack, truth, episode = drifting
    plain = mean_iou(segmenter.predict_stack(episode, stack), truth)
    labels, added = propagate_stack(segmenter, episode, stack, threshold=0.8, start_planes=[0])
    propagated = mean_iou(labels, truth)
    assert propagated > plain + 0.15, f"propagated mean IoU {propagated:.3f} vs plain {plain:.3f}"
    assert added and added == sorted(added) and 0 not in added  # outward from plane 0, never a start plane


def test_output_matches_predict_stack_and_the_users_episode_is_unchanged(drifting, segmenter):
    stack, _, episode = drifting
    signature, n_supports = episode.signature(), len(episode.supports)
    plain = segmenter.predict_stack(episode, stack)
    progress = []
    labels, added = propagate_stack(
        segmenter, episode, stack, threshold=0.8, start_planes=[0], progress=lambda d, t: progress.append((d, t))
    )
    assert labels.shape == plain.shape == stack.shape and labels.dtype == plain.dtype == np.uint8
    assert progress == [(i, len(stack)) for i in range(1, len(stack) + 1)]
    assert episode.signature() == signature and len(episode.supports) == n_supports
    # the start plane is predicted from the user's supports alone, as predict_stack does
    np.testing.assert_array_equal(labels[0], plain[0])
    # a threshold no plane reaches adds nothing: the result is predict_stack's
    strict, none_added = propagate_stack(segmenter, episode, stack, threshold=1.0, start_planes=[0])
    assert none_added == []
    np.testing.assert_array_equal(strict, plain)


def test_a_capped_run_still_propagates(drifting, segmenter):
    stack, truth, episode = drifting
    plain = mean_iou(segmenter.predict_stack(episode, stack), truth)
    labels, added = propagate_stack(segmenter, episode, stack, threshold=0.8, start_planes=[0], max_added=2)
    score = mean_iou(labels, truth)
    assert len(added) > 2 and score > plain + 0.1, f"max_added=2: propagated {score:.3f} vs plain {plain:.3f}"


def test_default_start_is_the_middle_plane_and_out_is_filled(drifting, segmenter):
    stack, truth, _ = drifting
    episode = Episode(["blob"])
    episode.add_support(stack, labels=truth, plane=6)
    out = np.zeros(stack.shape, np.uint8)
    labels, added = propagate_stack(segmenter, episode, stack[:, None].squeeze(1), threshold=0.8, out=out)
    assert labels is out and 6 not in added
    assert mean_iou(labels[6:7], truth[6:7]) > 0.9


def test_bad_inputs_name_the_value(drifting, segmenter):
    stack, _, episode = drifting
    for threshold in (0.0, 1.01, 2, -0.5, "high", True):
        with pytest.raises(ValueError, match="threshold"):
            propagate_stack(segmenter, episode, stack, threshold=threshold)
    for planes in ([13], [-1], [0, 40], []):
        with pytest.raises(ValueError, match=r"start.?plane"):
            propagate_stack(segmenter, episode, stack, start_planes=planes)
    with pytest.raises(ValueError, match="max_added"):
        propagate_stack(segmenter, episode, stack, max_added=-1)
    with pytest.raises(ValueError, match="confidence"):
        propagate_stack(segmenter, episode, stack, confidence="median")
    with pytest.raises(ValueError, match="one plane axis"):
        propagate_stack(segmenter, episode, np.zeros((2, 3, 48, 56), np.uint8))
    with pytest.raises(ValueError, match="out has shape"):
        propagate_stack(segmenter, episode, stack, out=np.zeros((2, 48, 56), np.uint8))


def test_cancel_stops_the_run_and_leaves_the_episode(drifting, segmenter):
    stack, _, episode = drifting
    signature = episode.signature()
    event = threading.Event()
    event.set()
    with pytest.raises(PredictionCancelled):
        propagate_stack(segmenter, episode, stack, cancel=event, start_planes=[0])
    done = []

    def cancel_after_three():
        return len(done) >= 3

    with pytest.raises(PredictionCancelled):
        propagate_stack(segmenter, episode, stack, start_planes=[0], cancel=cancel_after_three,
                        progress=lambda d, t: done.append(d))  # fmt: skip
    assert done == [1, 2, 3]
    assert episode.signature() == signature and len(episode.supports) == 1
