"""Prompts drawn from instances: the official point rule, noisy boxes, mask unions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_label_anything.episode import Episode
from napari_label_anything.training.datasets.base import Instance
from napari_label_anything.training.prompts import (
    PROMPT_TYPES,
    check_prompt_types,
    draw_combination,
    mask_box,
    noisy_box,
    point_count,
    prompt_type_combinations,
    sample_points,
    support_prompts,
)


def square(shape, y0, x0, y1, x1) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_combinations_are_the_non_empty_subsets():
    assert len(prompt_type_combinations()) == 7
    assert len(set(prompt_type_combinations())) == 7
    assert prompt_type_combinations(("mask", "point")) == [("point",), ("mask",), ("point", "mask")]
    assert prompt_type_combinations("bbox") == [("bbox",)]
    rng = np.random.default_rng(0)
    drawn = {draw_combination(rng) for _ in range(300)}
    assert drawn == set(prompt_type_combinations(PROMPT_TYPES))


@pytest.mark.parametrize("bad", [(), ("points",), ("mask", "scribble"), None])
def test_bad_prompt_types_are_refused(bad):
    with pytest.raises((ValueError, TypeError), match="prompt_types"):
        check_prompt_types(bad)


def test_point_count_follows_the_rule():
    rng = np.random.default_rng(1)
    counts = [point_count(area, 10_000, rng) for area in rng.integers(1, 10_000, 2000)]
    assert min(counts) >= 1 and max(counts) <= 10
    tiny = [point_count(1, 1_000_000, rng) for _ in range(500)]
    assert np.mean(tiny) < 1.1  # Poisson(0.01) + 1
    whole = [point_count(10_000, 10_000, rng) for _ in range(500)]
    assert np.mean(whole) > 9  # Poisson(10) + 1, clipped at 10
    assert max(point_count(10_000, 10_000, rng, max_points=3) for _ in range(100)) == 3


def test_points_lie_in_the_mask_and_repeat_only_when_needed():
    rng = np.random.default_rng(2)
    mask = square((30, 40), 5, 10, 9, 14)
    points = sample_points(mask, 10, rng)
    assert points.shape == (10, 2)
    assert mask[points[:, 0].astype(int), points[:, 1].astype(int)].all()
    assert len({tuple(p) for p in points}) == 10
    single = sample_points(square((30, 40), 3, 3, 4, 4), 4, rng)
    assert (single == [3, 3]).all()
    with pytest.raises(ValueError, match="empty"):
        sample_points(np.zeros((5, 5), bool), 1, rng)


def test_noisy_boxes_stay_in_the_image_and_near_the_box():
    rng = np.random.default_rng(3)
    for shape, mask in [
        ((300, 400), square((300, 400), 10, 20, 290, 380)),  # sigma 28-36 px: the 20 px clip matters
        ((50, 60), square((50, 60), 0, 0, 3, 60)),  # touches the borders
        ((20, 20), square((20, 20), 7, 7, 8, 8)),  # one pixel
    ]:
        true = mask_box(mask)
        for _ in range(300):
            box = noisy_box(true, shape, rng)
            y0, x0, y1, x1 = box
            assert 0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]
            assert np.abs(box - true).max() <= 20 + 1e-9
    true = mask_box(square((300, 400), 10, 20, 290, 380))
    moved = np.array([np.abs(noisy_box(true, (300, 400), rng) - true).max() for _ in range(200)])
    assert (moved == 20).any() and (moved > 0).all()
    assert tuple(mask_box(square((9, 9), 2, 3, 5, 7))) == (2, 3, 5, 7)


def test_each_object_gets_one_kind_and_the_result_feeds_an_episode():
    rng = np.random.default_rng(4)
    shape = (60, 80)
    instances = [
        Instance(7, square(shape, 0, 0, 10, 10)),
        Instance(7, square(shape, 20, 20, 30, 30)),
        Instance(9, square(shape, 40, 50, 60, 80)),
        Instance(3, square(shape, 40, 0, 50, 10)),  # not in the episode
    ]
    class_map = {7: 1, 9: 2}
    kinds_seen = set()
    for _ in range(60):
        combination = draw_combination(rng)
        prompts = support_prompts(instances, class_map, shape, combination, rng)
        episode = Episode(["a", "b"])
        support = episode.add_support(np.zeros(shape, np.uint8), **prompts)
        assert support.prompted_classes() == {1, 2}
        kinds = set()
        if prompts["labels"] is not None:
            kinds.add("mask")
            assert set(np.unique(prompts["labels"])) <= {0, 1, 2}
            assert not prompts["labels"][40:50, 0:10].any()
        if len(prompts["points"]):
            kinds.add("point")
            ys, xs, ks = prompts["points"].T
            owners = {
                (int(y), int(x)): k
                for inst, k in ((instances[0], 1), (instances[1], 1), (instances[2], 2))
                for y, x in zip(*np.nonzero(inst.mask), strict=True)
            }
            assert all(owners.get((int(y), int(x))) == k for y, x, k in zip(ys, xs, ks, strict=True))
        if len(prompts["boxes"]):
            kinds.add("bbox")
            assert len(prompts["boxes"]) <= 3
        assert kinds <= set(combination)
        kinds_seen.add(frozenset(kinds))
    assert len(kinds_seen) == 7


def test_masks_are_class_unions_and_boxes_are_exact_without_noise():
    rng = np.random.default_rng(5)
    shape = (40, 40)
    a, b = square(shape, 0, 0, 5, 5), square(shape, 10, 10, 20, 30)
    prompts = support_prompts([Instance(1, a), Instance(1, b)], {1: 1}, shape, ("mask",), rng)
    assert (prompts["labels"] == (a | b)).all()
    assert prompts["points"].shape == (0, 3) and prompts["boxes"].shape == (0, 5)
    prompts = support_prompts([Instance(1, a), Instance(1, b)], {1: 1}, shape, ("bbox",), rng, box_noise=False)
    assert prompts["labels"] is None
    assert sorted(map(tuple, prompts["boxes"])) == [(0, 0, 5, 5, 1), (10, 10, 20, 30, 1)]


def test_crowded_classes_use_masks_only():
    rng = np.random.default_rng(6)
    shape = (40, 40)
    crowd = [Instance(1, square(shape, y, x, y + 1, x + 1)) for y in range(0, 40, 4) for x in range(0, 32, 4)]
    assert len(crowd) == 80
    lone = Instance(2, square(shape, 30, 34, 36, 40))
    prompts = support_prompts([*crowd, lone], {1: 1, 2: 2}, shape, ("point",), rng)
    assert int((prompts["labels"] == 1).sum()) == 80
    assert set(prompts["points"][:, 2]) == {2}
    relaxed = support_prompts([*crowd, lone], {1: 1, 2: 2}, shape, ("point",), rng, max_point_annotations=100)
    assert relaxed["labels"] is None


def test_a_class_hidden_under_a_larger_mask_still_gets_a_prompt():
    rng = np.random.default_rng(7)
    shape = (30, 30)
    big, small = square(shape, 0, 0, 30, 30), square(shape, 5, 5, 8, 8)
    prompts = support_prompts([Instance(1, big), Instance(2, small)], {1: 1, 2: 2}, shape, ("mask",), rng)
    assert int((prompts["labels"] == 2).sum()) == 9  # the smaller class is painted on top
    covered = support_prompts([Instance(1, small), Instance(2, small)], {1: 1, 2: 2}, shape, ("mask",), rng)
    episode = Episode(["a", "b"])
    assert episode.add_support(np.zeros(shape), **covered).prompted_classes() == {1, 2}


def test_instances_must_match_the_image():
    with pytest.raises(ValueError, match="shape"):
        support_prompts([Instance(1, np.ones((5, 5), bool))], {1: 1}, (6, 6), ("mask",), np.random.default_rng())
