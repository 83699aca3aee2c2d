"""Boundaries the prompts leave open: ``inference.classic.boundaries`` and how ``ClassicSegmenter`` uses it.

Complete masks draw every boundary, strokes none; where none is drawn the labels follow the
image's edges. Images are synthetic, with exact ground truth.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_label_anything.episode import Episode
from napari_label_anything.inference.classic import ClassicSegmenter
from napari_label_anything.inference.classic.boundaries import (
    edge_strength,
    outlined_share,
    prompts_outline_boundaries,
    snap_to_edges,
)


def blurred_disks(seed: int = 0, size: int = 128, blur: float = 2.5):
    """16-bit image of blurred bright disks (radius 9-12) on a dark noisy background, truth 0/1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((size, size), np.uint8)
    for _ in range(400):
        cy, cx, r = *rng.uniform(16, size - 16, 2), rng.uniform(9, 12)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        if not (ndi.binary_dilation(disk, iterations=6) & (truth > 0)).any():
            truth[disk] = 1
    image = ndi.gaussian_filter(200 + 2000.0 * truth, blur) + rng.normal(0, 60, truth.shape)
    return np.clip(image, 0, 65535).astype(np.uint16), truth


def strokes(truth: np.ndarray) -> np.ndarray:
    """Labels 1 = background, 2 = object: a short line through the centre of each object and
    background lines more than 6 pixels from every object, as a person paints them."""
    out = np.zeros(truth.shape, np.uint8)
    objects, n = ndi.label(truth)
    for centre in ndi.center_of_mass(truth, objects, range(1, n + 1)):
        y, x = (int(round(v)) for v in centre)
        out[y, x - 3 : x + 4] = 2
    far = ndi.distance_transform_edt(truth == 0) > 6
    rows = np.zeros(truth.shape, bool)
    rows[::9] = True
    out[rows & far] = 1
    return out


def iou(pred, truth) -> float:
    return float(((pred > 0) & (truth > 0)).sum() / max(((pred > 0) | (truth > 0)).sum(), 1))


# -- outlined_share -----------------------------------------------------------------------------


def test_complete_masks_outline_every_boundary_and_strokes_none():
    _, truth = blurred_disks()
    assert outlined_share([truth.astype(np.int32)]) == 1.0
    painted = strokes(truth).astype(np.int32) - 1  # -1 unprompted, 0 background, 1 object
    assert outlined_share([painted]) == 0.0
    assert prompts_outline_boundaries([truth.astype(np.int32)])
    assert not prompts_outline_boundaries([painted])


def test_outlined_share_counts_touching_prompts_only():
    target = np.full((10, 10), -1, np.int32)
    target[2:5, 2:5] = 1
    target[2:5, 5:8] = 0  # touches class 1 along one side
    share = outlined_share([target])
    # outline pixels: each 3x3 block has 3 pixels on 4 sides = 12 neighbour pairs; 3 of them touch
    assert share == pytest.approx(6 / 24)
    # supports are pooled, and one class over the whole image has no outline at all
    assert outlined_share([target, np.ones((6, 6), np.int32)]) == pytest.approx(6 / 24)
    assert outlined_share([np.ones((6, 6), np.int32)]) == 0.0
    assert outlined_share([np.full((6, 6), -1, np.int32)]) == 0.0


# -- snap_to_edges ------------------------------------------------------------------------------


def halo_probabilities(truth: np.ndarray, widen: int) -> np.ndarray:
    """(2, Y, X) probabilities sure inside the objects and far outside, unsure in a band around
    every object whose 50 % line lies ``widen`` pixels outside the true edge (a halo)."""
    inside = ndi.distance_transform_edt(truth > 0)
    outside = ndi.distance_transform_edt(truth == 0)
    signed = np.where(truth > 0, inside, -outside) + widen  # > 0 means "object" for the argmax
    p = 1 / (1 + np.exp(-signed / 3.0))
    return np.stack([1 - p, p]).astype(np.float32)


def test_snap_moves_a_halo_back_to_the_edge():
    image, truth = blurred_disks(seed=1)
    proba = halo_probabilities(truth, widen=4)
    image01 = (image - image.min()) / float(np.ptp(image))
    snapped = snap_to_edges(proba, image01, confidence=0.65, sigma=1.0)
    assert snapped.shape == truth.shape and snapped.dtype == np.int32
    assert iou(proba.argmax(0), truth) < 0.8
    assert iou(snapped, truth) > iou(proba.argmax(0), truth) + 0.1
    sure = proba.max(0) >= 0.65
    assert np.array_equal(snapped[sure], proba.argmax(0)[sure])  # sure pixels keep their class


def test_snap_without_two_sure_classes_is_the_argmax():
    image, truth = blurred_disks(seed=2)
    proba = halo_probabilities(truth, widen=0)
    image01 = image / 65535.0
    unsure = np.full_like(proba, 0.5)
    unsure[1] += 0.01 * truth
    assert np.array_equal(snap_to_edges(unsure, image01, 0.65, 1.0), unsure.argmax(0))
    one_class = np.zeros_like(proba)
    one_class[1] = 1.0
    assert np.array_equal(snap_to_edges(one_class, image01, 0.65, 1.0), np.ones(truth.shape, np.int32))


def test_snap_handles_colour_and_several_classes():
    rng = np.random.default_rng(3)
    truth = np.zeros((60, 90), np.int32)
    truth[:, 30:60], truth[:, 60:] = 1, 2
    colours = np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]], np.float32)
    image01 = np.clip(colours[truth] + rng.normal(0, 0.03, (60, 90, 3)), 0, 1).astype(np.float32)
    proba = np.full((3, 60, 90), 0.2, np.float32)
    for k, (a, b) in enumerate(((0, 24), (36, 54), (66, 90))):  # sure cores, unsure bands between
        proba[:, :, a:b] = 0.05
        proba[k, :, a:b] = 0.9
    proba[0, :, 24:36] = 0.45  # the argmax would put the first boundary 6 pixels too far right
    snapped = snap_to_edges(proba, image01, 0.65, 1.0)
    assert np.mean(snapped == truth) > 0.98
    assert edge_strength(image01, 1.0).shape == (60, 90)


# -- ClassicSegmenter ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def disks():
    return blurred_disks(seed=4), blurred_disks(seed=5)


def test_strokes_snap_to_edges(disks):
    """Strokes leave the boundary to the flood (``snap_to_edges`` of the probabilities). On
    blurred disks the trees' own 50 % line may fall as close to the truth as the flood's, so
    this checks the mechanism and that both lines find the disks, not which one is closer."""
    (support, truth), (query, query_truth) = disks
    episode = Episode(["background", "nucleus"])
    episode.add_support(support, labels=strokes(truth))
    segmenter = ClassicSegmenter()
    fitted = segmenter.fit(episode)
    assert not fitted.outlined and fitted.classifier.balance  # strokes tell neither boundaries nor proportions
    labels = segmenter.predict(episode, query)
    proba = segmenter.predict_proba(episode, query)
    image01 = segmenter.image01(query, fitted.value_range)
    assert np.array_equal(labels, snap_to_edges(proba, image01, segmenter.edge_confidence, 1.0))
    never = ClassicSegmenter(edge_snap="never").predict(episode, query)
    assert np.array_equal(never, proba.argmax(0))
    assert iou(labels == 2, query_truth) > 0.9 and iou(never == 2, query_truth) > 0.9
    # where the flood's line runs: the area it adds (negative: removes) per pixel of outline
    outline = np.count_nonzero(query_truth & ~ndi.binary_erosion(query_truth))
    offset = (np.count_nonzero(labels == 2) - np.count_nonzero(query_truth)) / outline
    assert -0.6 < offset < 0.0
    with_uncertainty, uncertainty = segmenter.predict_with_uncertainty(episode, query)
    assert np.array_equal(with_uncertainty, labels) and uncertainty.shape == query.shape


def test_complete_masks_keep_the_trees_boundaries(disks):
    (support, truth), (query, _) = disks
    episode = Episode(["background", "nucleus"])
    episode.add_support(support, labels=truth + 1)
    segmenter = ClassicSegmenter()
    fitted = segmenter.fit(episode)
    assert fitted.outlined and not fitted.classifier.balance  # masks keep the image's proportions
    proba = segmenter.predict_proba(episode, query)
    assert np.array_equal(segmenter.predict(episode, query), proba.argmax(0))
    always = ClassicSegmenter(edge_snap="always").predict(episode, query)
    image01 = segmenter.image01(query, fitted.value_range)
    assert np.array_equal(always, snap_to_edges(proba, image01, 0.65, 1.0))


def test_stacks_snap_every_plane(disks):
    (support, truth), (query, _) = disks
    episode = Episode(["background", "nucleus"])
    episode.add_support(support, labels=strokes(truth))
    segmenter = ClassicSegmenter()
    labels = segmenter.predict_stack(episode, np.stack([query, support]))
    fitted = segmenter.fit(episode)
    for plane, image in enumerate((query, support)):
        proba = segmenter.predict_proba(episode, image)
        snapped = snap_to_edges(proba, segmenter.image01(image, fitted.value_range), 0.65, 1.0)
        assert np.array_equal(labels[plane], snapped)
        assert not np.array_equal(labels[plane], proba.argmax(0))  # snapping changed something


def test_a_class_that_is_nowhere_sure_keeps_its_objects():
    image, truth = blurred_disks(seed=6)
    objects, n = ndi.label(truth)
    dim = objects == 1  # one object the trees lean towards without ever being sure of it
    p = np.where(truth > 0, 0.9, 0.05).astype(np.float32)
    p[dim] = 0.55
    proba = np.stack([1 - p, p])
    image01 = image / 65535.0
    snapped = snap_to_edges(proba, image01, 0.65, 1.0)
    assert np.mean(snapped[dim] == 1) > 0.9
    # without the seed at its innermost pixel the flood from the background takes it all
    assert np.mean(snap_to_edges(proba, image01, 0.65, 1.0, min_area=dim.sum() + 1)[dim] == 1) < 0.1


@pytest.mark.parametrize("options", [{"edge_snap": "sometimes"}, {"edge_snap": True}, {"edge_confidence": 0.4},
                                     {"edge_confidence": 1.5}])  # fmt: skip
def test_bad_snap_options_are_named(options):
    name = next(iter(options))
    with pytest.raises(ValueError, match=name):
        ClassicSegmenter(**options)


def test_snapping_checks_its_memory_after_the_prediction(disks, monkeypatch):
    """The flood runs after the feature bands are freed: its memory is checked then, on its own,
    and a plane it cannot afford is refused with the same clear error as the prediction."""
    from napari_label_anything.inference.classic import features as classic_features
    from napari_label_anything.inference.classic.features import FeatureMemoryError

    (support, truth), (query, _) = disks
    episode = Episode(["background", "nucleus"])
    episode.add_support(support, labels=strokes(truth))
    segmenter = ClassicSegmenter()
    proba = segmenter.predict_proba(episode, query)  # fits (and caches) with the memory there is
    calls = []

    def available() -> int:
        calls.append(1)  # the prediction's check passes, the flood's (the second) does not
        return 10**12 if len(calls) == 1 else 10_000

    monkeypatch.setattr(classic_features, "available_memory", available)
    with pytest.raises(FeatureMemoryError, match="placing borders along edges"):
        segmenter.predict(episode, query)
    assert proba.shape == (2 + 1, *query.shape)
