"""Prompts drawn from a sample's instances, following the official training recipe.

Per episode one non-empty combination of prompt types is drawn (7 with points, boxes and
masks allowed); then every annotation of an episode class picks one type of that combination:

- point: ``clip(Poisson(10 * sqrt(area / image_area)) + 1, 1, max_points)`` positive points,
  drawn uniformly (without repetition where the object is large enough) from the object's mask;
- bbox: the object's bounding box, optionally with noise ``N(0, 0.1 * side)`` per coordinate,
  clipped to +-20 px and to the image, and kept non-empty;
- mask: the union of the class's objects that picked "mask" becomes the class's painted labels.

A class with more than ``max_point_annotations`` objects in one image is prompted with masks only.
Everything here is NumPy, in napari's (row, column) convention: the result goes straight into
``Episode.add_support`` (``model_inputs.build_prompt_arrays`` does the conversion to (x, y)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

from .datasets.base import Instance

PROMPT_TYPES = ("point", "bbox", "mask")
MAX_POINTS = 10
MAX_POINT_ANNOTATIONS = 70
POINT_RATE = 10.0  # Poisson mean for an object covering the whole image
BOX_NOISE_FRACTION = 0.1  # noise sigma as a fraction of the box side
BOX_NOISE_LIMIT = 20.0  # pixels


def check_prompt_types(prompt_types: Sequence[str]) -> tuple[str, ...]:
    """Validate a selection of ``PROMPT_TYPES``; returns it deduplicated, in canonical order."""
    if isinstance(prompt_types, str):
        prompt_types = (prompt_types,)
    try:
        chosen = tuple(prompt_types)
    except TypeError:
        raise TypeError(f"prompt_types must be a selection of {PROMPT_TYPES}, got {prompt_types!r}") from None
    unknown = [t for t in chosen if t not in PROMPT_TYPES]
    if unknown or not chosen:
        raise ValueError(f"prompt_types must be a non-empty selection of {PROMPT_TYPES}, got {prompt_types!r}")
    return tuple(t for t in PROMPT_TYPES if t in chosen)


def prompt_type_combinations(prompt_types: Sequence[str] = PROMPT_TYPES) -> list[tuple[str, ...]]:
    """Every non-empty combination of the allowed types (7 for all three), canonical order."""
    allowed = check_prompt_types(prompt_types)
    return [combo for size in range(1, len(allowed) + 1) for combo in combinations(allowed, size)]


def draw_combination(rng: np.random.Generator, prompt_types: Sequence[str] = PROMPT_TYPES) -> tuple[str, ...]:
    """One combination of prompt types for an episode, uniformly among the non-empty ones."""
    options = prompt_type_combinations(prompt_types)
    return options[int(rng.integers(len(options)))]


def point_count(area: int, image_area: int, rng: np.random.Generator, max_points: int = MAX_POINTS) -> int:
    """How many points an object of ``area`` pixels gets: Poisson(10 sqrt(area/image)) + 1, in 1..max."""
    mean = POINT_RATE * np.sqrt(area / max(image_area, 1))
    return int(np.clip(rng.poisson(mean) + 1, 1, max(1, max_points)))


def sample_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` pixels of a (Y, X) bool mask, uniformly: (count, 2) float64 rows (y, x).

    Pixels repeat only when the mask has fewer pixels than ``count``.
    """
    ys, xs = np.nonzero(mask)
    if not len(ys):
        raise ValueError("cannot draw points from an empty mask")
    chosen = rng.choice(len(ys), size=count, replace=count > len(ys))
    return np.column_stack([ys[chosen], xs[chosen]]).astype(np.float64)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Bounding box of a non-empty (Y, X) bool mask in pixel edges: float64 (y0, x0, y1, x1)."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        raise ValueError("an empty mask has no bounding box")
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], dtype=np.float64)


def noisy_box(box: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Jitter a (y0, x0, y1, x1) box as the official training does; stays inside ``shape``.

    Each coordinate moves by N(0, 0.1 * side) (the box's height for y, width for x), at most
    20 px; the result is clipped to the image and kept at least one pixel high and wide, so it
    stays within 20 px of the true box on every side.
    """
    y0, x0, y1, x1 = (float(v) for v in box)
    height, width = shape
    sigma = BOX_NOISE_FRACTION * np.array([y1 - y0, x1 - x0, y1 - y0, x1 - x0])
    noise = np.clip(rng.normal(0.0, 1.0, 4) * sigma, -BOX_NOISE_LIMIT, BOX_NOISE_LIMIT)
    new_y0 = float(np.clip(y0 + noise[0], 0, height - 1))
    new_x0 = float(np.clip(x0 + noise[1], 0, width - 1))
    new_y1 = float(np.clip(y1 + noise[2], new_y0 + 1, height))
    new_x1 = float(np.clip(x1 + noise[3], new_x0 + 1, width))
    return np.array([new_y0, new_x0, new_y1, new_x1])


def support_prompts(
    instances: Sequence[Instance],
    class_map: Mapping[int, int],
    shape: tuple[int, int],
    combination: Sequence[str],
    rng: np.random.Generator,
    *,
    box_noise: bool = True,
    max_points: int = MAX_POINTS,
    max_point_annotations: int = MAX_POINT_ANNOTATIONS,
) -> dict:
    """Prompts for one support image, ready for ``Episode.add_support(image, **prompts)``.

    Args:
        instances: the support's objects (``Instance``: global class id, (Y, X) bool mask);
            objects of classes outside ``class_map`` and empty masks are ignored.
        class_map: global class id -> local episode class 1..N.
        shape: (Y, X) of the support image.
        combination: the episode's prompt types (from ``draw_combination``); each object
            picks one of them uniformly.
        rng: the random source.
        box_noise: jitter boxes (training) or not (validation).
        max_points: cap on points per object.
        max_point_annotations: a class with more objects than this in the image gets masks only.

    Returns:
        ``{"labels": (Y, X) int64 or None, "points": (n, 3) float64 (y, x, k),
        "boxes": (m, 5) float64 (y0, x0, y1, x1, k)}``; a class present gets at least one prompt.
    """
    combination = check_prompt_types(combination)
    height, width = shape
    labels = np.zeros(shape, dtype=np.int64)
    points: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    objects: dict[int, list[Instance]] = {}
    for instance in instances:
        if instance.class_id in class_map and instance.mask.any():
            if instance.mask.shape != tuple(shape):
                raise ValueError(f"an instance mask has shape {instance.mask.shape}, the image is {tuple(shape)}")
            objects.setdefault(instance.class_id, []).append(instance)
    painted: dict[int, np.ndarray] = {}  # local class -> union of its objects that picked "mask"
    for class_id, found in objects.items():
        k = class_map[class_id]
        masks_only = len(found) > max_point_annotations
        for instance in found:
            kind = "mask" if masks_only else combination[int(rng.integers(len(combination)))]
            if kind == "mask":
                painted[k] = painted[k] | instance.mask if k in painted else instance.mask.copy()
            elif kind == "point":
                count = point_count(instance.area, height * width, rng, max_points)
                yx = sample_points(instance.mask, count, rng)
                points.append(np.column_stack([yx, np.full(count, k, dtype=np.float64)]))
            else:
                box = mask_box(instance.mask)
                if box_noise:
                    box = noisy_box(box, shape, rng)
                boxes.append(np.append(box, k))
    # One label image holds every class: overlapping classes are painted largest first so small
    # ones stay visible; a class left with no pixel at all is prompted by its exact box instead.
    for k, union in sorted(painted.items(), key=lambda item: -int(item[1].sum())):
        labels[union] = k
    for k, union in painted.items():
        if not (labels == k).any():
            boxes.append(np.append(mask_box(union), k))
    return {
        "labels": labels if labels.any() else None,
        "points": np.concatenate(points) if points else np.zeros((0, 3)),
        "boxes": np.stack(boxes) if boxes else np.zeros((0, 5)),
    }
