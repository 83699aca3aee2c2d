"""The annotation loop's core rules without napari: corrected planes as complete annotations,
kept planes, and stacks whose brightness drifts (per-plane normalisation)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import dimmed_stack, exposed_discs, mean_iou
from napari_label_anything import Episode
from napari_label_anything.corrections import as_complete_prompts, complete_planes, is_complete, keep_planes
from napari_label_anything.inference.classic import ClassicSegmenter
from napari_label_anything.preprocessing import brightness_drifts


def test_an_output_plane_becomes_complete_prompts_and_back():
    labels = np.array([[0, 1], [2, 0]], np.uint8)
    prompts = as_complete_prompts(labels, 255)
    np.testing.assert_array_equal(prompts, [[255, 1], [2, 255]])
    assert prompts.dtype == np.uint8 and is_complete(prompts) and not is_complete(labels)
    assert as_complete_prompts(labels, 300).dtype == np.uint16  # widened, never wrapped
    stack = np.zeros((3, 2, 2), np.uint8)
    stack[1] = prompts
    stack[2, 0, 0] = 1  # a scribble: not complete
    kept = complete_planes(stack, 255, 1)
    assert list(kept) == [(1,)]
    np.testing.assert_array_equal(kept[(1,)], labels)
    assert list(complete_planes(prompts, 255, 0)) == [()]


def test_kept_planes_replace_predictions_and_count_disagreements():
    predicted = {(0,): np.zeros((2, 2), np.uint8), (1,): np.ones((2, 2), np.uint8)}
    mine = np.array([[1, 1], [0, 1]], np.uint8)
    differ = keep_planes(predicted, {(1,): mine, (5,): mine})
    assert differ == {(1,): 1}  # plane 5 was not predicted: nothing to count
    np.testing.assert_array_equal(predicted[(1,)], mine)
    np.testing.assert_array_equal(predicted[(0,)], 0)


def drifting_stack(dark=(4,), factor=0.55):
    """``dimmed_stack`` with no dimmed discs, and whole planes ``dark`` darker (every pixel)."""
    stack, truth = dimmed_stack(n=9, seed=3, depth=0)
    stack = stack.astype(np.float32)
    for z in dark:
        stack[z] *= factor
    return stack.round().astype(np.uint8), truth


def test_brightness_drift_is_told_from_planes_with_fewer_objects():
    stack, _ = drifting_stack()
    assert brightness_drifts(list(stack))
    steady, _ = drifting_stack(dark=())
    assert not brightness_drifts(list(steady))
    # sparse bright objects, many in some planes and none in others: the background is steady
    rng = np.random.default_rng(0)
    sparse = rng.normal(20, 3, (6, 64, 64)).clip(0, 255).astype(np.uint8)
    sparse[:3, 10:30, 10:40] = 220
    assert not brightness_drifts(list(sparse))


def test_a_darker_plane_is_segmented_like_the_others_with_per_plane_normalisation():
    stack, truth = drifting_stack(dark=(4,))
    episode = Episode(["disc", "square"])
    episode.add_support(stack, plane=0, labels=truth[0])
    segmenter = ClassicSegmenter(n_jobs=2)
    assert segmenter.normalisation(stack) == "plane"
    assert segmenter.normalisation(stack[:4]) == "stack"  # no drift among the bright planes
    shared = segmenter.predict_stack(episode, stack, normalise="stack")
    auto = segmenter.predict_stack(episode, stack)  # auto: per plane here
    np.testing.assert_array_equal(auto, segmenter.predict_stack(episode, stack, normalise="plane"))
    dark_shared, dark_auto = mean_iou(shared[4], truth[4]), mean_iou(auto[4], truth[4])
    others = [mean_iou(auto[z], truth[z]) for z in range(1, 9) if z != 4]
    print(f"\ndark plane IoU: one range {dark_shared:.3f}, per plane {dark_auto:.3f}; others {np.mean(others):.3f}")
    assert dark_auto > dark_shared + 0.2
    assert dark_auto > np.mean(others) - 0.05


def test_normalise_options_are_checked():
    stack, truth = drifting_stack()
    episode = Episode(["disc", "square"])
    episode.add_support(stack, plane=0, labels=truth[0])
    segmenter = ClassicSegmenter(n_jobs=1)
    with pytest.raises(ValueError, match="normalise must be one of"):
        segmenter.predict_stack(episode, stack, normalise="each")
    with pytest.raises(ValueError, match="either value_range or normalise='plane'"):
        segmenter.predict_stack(episode, stack, normalise="plane", value_range=(0, 255))


def test_a_lone_image_at_another_exposure_is_normalised_on_its_own():
    """Highlights that move (``highlights_move``) while the dark background stays: a query image
    from another exposure is stretched by its own percentiles, as its supports are, and found;
    a query like the supports keeps their one range."""
    from napari_label_anything.inference.base import brightness_differs
    from napari_label_anything.preprocessing import PER_PLANE, highlights_move

    support, truth = exposed_discs(0, 1.0)
    dim, dim_truth = exposed_discs(1, 0.3)
    alike, _ = exposed_discs(2, 1.0)
    episode = Episode(["background", "nucleus"])
    episode.add_support(support, labels=truth + 1)
    assert highlights_move([support], [dim]) and not highlights_move([support], [alike])
    assert not brightness_drifts([support, dim])  # the median (background) hardly moves
    assert brightness_differs(episode, [dim]) and not brightness_differs(episode, [alike])
    segmenter = ClassicSegmenter(n_jobs=1)
    auto = segmenter.predict(episode, dim)
    np.testing.assert_array_equal(auto, segmenter.predict(episode, dim, value_range=PER_PLANE))
    shared = segmenter.predict(episode, dim, value_range=None)
    assert mean_iou(auto == 2, dim_truth) > mean_iou(shared == 2, dim_truth) + 0.2
    kept_range = segmenter.predict(episode, alike, value_range=None)
    np.testing.assert_array_equal(segmenter.predict(episode, alike), kept_range)
    assert segmenter.normalisation(dim[None], episode=episode) == "plane"  # the widget's one-plane query
