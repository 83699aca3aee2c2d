"""Uncertainty maps, plane ranking, and labels + uncertainty in one pass (napari-free)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import napari_label_anything as nla
from conftest import blob_image, dimmed_stack, mean_iou
from napari_label_anything.inference.uncertainty import plane_score, rank_planes, uncertainty_map

# -- uncertainty_map -----------------------------------------------------------------------


def test_certain_pixels_are_zero_and_uniform_pixels_are_maximal():
    proba = np.zeros((3, 2, 2), np.float32)
    proba[1] = 1.0
    proba[:, 1, 1] = 1 / 3
    least = uncertainty_map(proba)
    assert least.shape == (2, 2) and least.dtype == np.float32
    np.testing.assert_allclose(least, [[0, 0], [0, 2 / 3]], atol=1e-6)
    entropy = uncertainty_map(proba, method="entropy")
    np.testing.assert_allclose(entropy, [[0, 0], [0, 1]], atol=1e-6)


def test_maps_lie_in_0_1_and_rank_alike_for_two_classes():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(4), size=(20, 30)).transpose(2, 0, 1).astype(np.float32)
    for method in ("least_confidence", "entropy"):
        u = uncertainty_map(proba, method)
        assert u.shape == (20, 30) and 0 <= u.min() and u.max() <= 1
    np.testing.assert_allclose(uncertainty_map(proba), 1 - proba.max(0), atol=1e-6)
    # with two channels both measures are increasing functions of |p1 - p0|: the same order
    two = rng.dirichlet(np.ones(2), size=200).T.astype(np.float32)[:, :, None]
    rank_least = np.argsort(np.argsort(uncertainty_map(two).ravel()))
    rank_entropy = np.argsort(np.argsort(uncertainty_map(two, "entropy").ravel()))
    assert np.corrcoef(rank_least, rank_entropy)[0, 1] > 0.999


def test_bad_inputs_of_uncertainty_map():
    with pytest.raises(ValueError, match="unknown uncertainty method"):
        uncertainty_map(np.ones((2, 3, 3)), method="margin")
    with pytest.raises(ValueError, match="class probabilities"):
        uncertainty_map(np.zeros((0, 3, 3)))
    np.testing.assert_array_equal(uncertainty_map(np.ones((1, 3, 3))), np.zeros((3, 3)))


# -- rank_planes -----------------------------------------------------------------------------


def test_rank_planes_orders_excludes_and_keeps_ties_stable():
    scores = {(0,): 0.1, (1,): 0.5, (2,): 0.3, (3,): 0.5, (4,): float("nan")}
    assert rank_planes(scores) == [(1,), (3,), (2,), (0,)]
    assert rank_planes(scores, 2) == [(1,), (3,)]
    assert rank_planes(scores, 2, exclude=[(1,)]) == [(3,), (2,)]
    assert rank_planes(scores, 0) == []
    assert rank_planes([0.2, 0.9, 0.4], 2) == [1, 2]
    assert rank_planes(np.array([0.2, 0.9, 0.4])) == [1, 2, 0]
    with pytest.raises(ValueError, match="n must be"):
        rank_planes(scores, -1)
    assert plane_score(np.full((4, 5), 0.25, np.float32)) == pytest.approx(0.25)


# -- one pass: labels and uncertainty ---------------------------------------------------------


def test_classic_labels_equal_predict_and_uncertainty_follows_the_probabilities(episode):
    segmenter = nla.load_segmenter("classic")
    query, _ = blob_image((60, 70), seed=3)
    labels, uncertainty = segmenter.predict_with_uncertainty(episode, query)
    np.testing.assert_array_equal(labels, segmenter.predict(episode, query))
    assert labels.dtype == np.uint8 and uncertainty.shape == (60, 70) and uncertainty.dtype == np.float32
    np.testing.assert_array_equal(uncertainty, uncertainty_map(segmenter.predict_proba(episode, query)))
    _, entropy = segmenter.predict_with_uncertainty(episode, query, method="entropy")
    assert not np.array_equal(entropy, uncertainty) and 0 <= entropy.min() and entropy.max() <= 1


def test_label_anything_labels_equal_the_argmax_of_its_logits(sam_like_segmenter, episode):
    for seed in (3, 7):
        query, _ = blob_image((70, 90), seed=seed)
        labels, uncertainty = sam_like_segmenter.predict_with_uncertainty(episode, query)
        np.testing.assert_array_equal(labels, sam_like_segmenter.predict(episode, query))
        assert uncertainty.shape == (70, 90) and 0 <= uncertainty.min() and uncertainty.max() <= 1


def test_stack_with_uncertainty_yields_the_same_labels(sam_like_segmenter, episode):
    stack = np.stack([blob_image((48, 56), seed=s)[0] for s in range(3)])
    plain = list(sam_like_segmenter.iter_predict_stack(episode, stack))
    assert all(len(item) == 2 for item in plain)  # the default output is unchanged
    both = list(sam_like_segmenter.iter_predict_stack(episode, stack, uncertainty=True))
    assert [item[0] for item in both] == [item[0] for item in plain]
    for (_, labels), (_, labels2, uncertainty) in zip(plain, both, strict=True):
        np.testing.assert_array_equal(labels, labels2)
        assert uncertainty.shape == (48, 56) and uncertainty.dtype == np.float32
    classic = nla.load_segmenter("classic")
    planes = list(classic.iter_predict_stack(episode, stack, planes=[(2,)], uncertainty=True))
    assert [p[0] for p in planes] == [(2,)]
    np.testing.assert_array_equal(planes[0][1], classic.predict_stack(episode, stack)[2])


def test_cancel_stops_a_stack_with_uncertainty(episode):
    stack = np.stack([blob_image((40, 48), seed=s)[0] for s in range(4)])
    cancel = threading.Event()
    planes = nla.load_segmenter("classic").iter_predict_stack(episode, stack, cancel=cancel, uncertainty=True)
    next(planes)
    cancel.set()
    with pytest.raises(nla.PredictionCancelled):
        next(planes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_most_uncertain_plane_is_worse_than_the_median_plane(seed):
    """On a stack whose planes drift away from the support, the top-ranked plane is a bad one
    (discs dimmed to 120 of 200 at the dip: at 150 the classic model is right on most planes)."""
    stack, truth = dimmed_stack(seed=seed, depth=80)
    episode = nla.Episode(["disc", "square"])
    episode.add_support(stack[0], labels=truth[0])
    results = list(nla.load_segmenter("classic").iter_predict_stack(episode, stack, uncertainty=True))
    ious = {index: mean_iou(labels, truth[index]) for index, labels, _ in results}
    scores = {index: plane_score(uncertainty) for index, _, uncertainty in results}
    top = rank_planes(scores, 1, exclude=[(0,)])[0]
    assert ious[top] < np.median(list(ious.values())), (top, ious)
