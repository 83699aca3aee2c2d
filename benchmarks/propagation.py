"""Propagation through z or t: a stack predicted outward from its prompted planes.

``propagate_stack`` predicts the planes of a stack nearest first, starting from the planes the
episode's supports come from; a plane whose prediction is confident becomes a support of a
working copy of the episode (its predicted labels as mask prompts), so the planes after it are
predicted from supports that look like them. Objects that drift or change slowly through the
stack are followed instead of being matched against one far-away plane.

Confidence of a plane is the mean, over the pixels it labels as a class (1..N), of the largest
class probability (``1 - uncertainty_map``, least confidence); ``confidence="plane"`` takes the
mean over every pixel instead. The foreground mean is the default because on microscopy planes
the background is most of the plane and easy: a plane whose few objects are half wrong still
has a plane mean near 1, and it is the labelled objects that a new support teaches. A plane that
labels no pixel as a class is never added (it would teach nothing about the classes).

Not part of the package: on the real nuclei stack (``bench_propagation.py``, beside this file)
propagating gave no clear gain over plain ``predict_stack`` for many times its cost (every added
plane is a refit of the classic model), so neither the widget nor the package offers it. It lives
beside its benchmark, tested by tests/test_propagation.py.

NumPy only; the segmenter does the predicting (any ``Segmenter``: its own intensity rule for a
stack, batching and caches apply per plane).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_label_anything.episode import CONTEXT_REACH, Episode
from napari_label_anything.inference.base import (
    CancelCheck,
    PredictionCancelled,
    ProgressCallback,
    Segmenter,
    is_cancelled,
)
from napari_label_anything.labels import BACKGROUND, labels_dtype
from napari_label_anything.preprocessing import stack_value_range
from napari_label_anything.stacks import as_stack, is_index, stack_layout

CONFIDENCE_MEASURES = ("foreground", "plane")

__all__ = ["CONFIDENCE_MEASURES", "outward_order", "plane_confidence", "propagate_stack"]


def outward_order(n_planes: int, start_planes: Sequence[int]) -> list[int]:
    """Every plane 0..n-1, nearest to a start plane first: the start planes, then the planes at
    distance 1 (below before above), distance 2, ... Ties keep plane order."""
    starts = np.asarray(sorted(set(start_planes)))
    planes = np.arange(n_planes)
    distance = np.abs(planes[:, None] - starts[None, :]).min(axis=1)
    return [int(p) for p in sorted(planes, key=lambda p: (distance[p], p))]


def plane_confidence(labels: np.ndarray, max_probability: np.ndarray, measure: str = "foreground") -> float:
    """How sure a plane's prediction is: the mean of ``max_probability`` over the pixels labelled
    1..N (``measure="foreground"``; 0.0 when there are none) or over the whole plane ("plane")."""
    if measure not in CONFIDENCE_MEASURES:
        raise ValueError(f"unknown confidence measure {measure!r}; choose one of {CONFIDENCE_MEASURES}")
    if measure == "plane":
        return float(max_probability.mean(dtype=np.float64)) if max_probability.size else 0.0
    foreground = labels > 0
    return float(max_probability[foreground].mean(dtype=np.float64)) if foreground.any() else 0.0


def _check_threshold(threshold: Any, what: str = "threshold") -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in (0, 1], got {threshold!r}") from None
    if isinstance(threshold, (bool, np.bool_)) or not 0.0 < value <= 1.0:
        raise ValueError(f"{what} must lie in (0, 1], got {threshold!r}")
    return value


def _check_max_added(max_added: Any) -> int | None:
    if max_added is None:
        return None
    if isinstance(max_added, (bool, np.bool_)) or not isinstance(max_added, (int, np.integer)) or max_added < 0:
        raise ValueError(f"max_added must be None or an integer >= 0, got {max_added!r}")
    return int(max_added)


def _start_planes(start_planes: Any, n_planes: int) -> list[int]:
    if start_planes is None:
        return [n_planes // 2]
    values = [start_planes] if isinstance(start_planes, (int, np.integer)) else start_planes
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"start_planes must be a list of plane indices, got {start_planes!r}")
    values = list(values)
    if not values:
        raise ValueError("start_planes is empty: give the planes the episode's supports come from")
    checked = []
    for plane in values:
        if not is_index(plane):
            raise ValueError(f"start plane {plane!r} must be an integer plane index")
        if not 0 <= plane < n_planes:
            raise ValueError(f"start plane {plane!r} is out of range: the stack has planes 0..{n_planes - 1}")
        checked.append(int(plane))
    return checked


def _working_copy(episode: Episode) -> Episode:
    """A new episode with the same classes and the same (never mutated) support objects: adding
    to it leaves the caller's episode as it was."""
    working = Episode(list(episode.classes), model=episode.model)
    working.supports = list(episode.supports)
    return working


def propagate_stack(
    segmenter: Segmenter,
    episode: Episode,
    stack: Any,
    axis: int = 0,
    threshold: float = 0.8,
    max_added: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    *,
    start_planes: Sequence[int] | int | None = None,
    confidence: str = "foreground",
    confident_pixels_only: bool = False,
    pixel_threshold: float | None = None,
    rgb: bool | None = None,
    out: Any = None,
    **options: Any,
) -> tuple[np.ndarray, list[int]]:
    """Label every plane of a (Z, Y, X) or (T, Y, X) stack outward from its prompted planes.

    Planes are predicted nearest first (``outward_order``). After each plane, if its confidence
    (``plane_confidence`` with ``confidence``) is at least ``threshold``, the plane and its
    predicted labels (as mask prompts; with an explicit "background" class, predicted 0 is
    prompted as that class) become a support of a working copy of ``episode`` that the planes
    after it are predicted with. ``episode`` itself is never changed.

    Args:
        segmenter: any ``Segmenter`` (the classic default refits per new support set).
        episode: classes and the supports prompted on ``start_planes``.
        stack: the array (NumPy or lazy), one plane axis (z or t) in front of (Y, X[, C]).
        axis: the plane axis (one axis: propagation runs along a line of planes).
        threshold: the confidence in (0, 1] a plane needs to become a support; 1.0 adds only
            planes predicted with certainty.
        max_added: at most this many added supports take part in a plane's prediction, the
            nearest to that plane (None: all of them). Each support makes a classic fit
            slower, so a cap bounds the cost of long stacks.
        progress: called as ``progress(done, total)`` after each plane.
        cancel: a ``threading.Event`` or a callable, checked before every plane; when it turns
            true the run stops with ``PredictionCancelled``.
        start_planes: plane indices of ``stack`` that the episode's supports come from
            (default: the middle plane).
        confidence: "foreground" (mean max-probability over pixels labelled 1..N) or "plane"
            (over every pixel).
        confident_pixels_only: prompt only the pixels of an added plane whose max-probability
            is at least ``pixel_threshold`` (the others are left unprompted, 0). Meant for
            episodes with an explicit "background" class: without one, the classic model takes
            unprompted pixels for background candidates, so the unsure rims of objects would
            be taught as background.
        pixel_threshold: the per-pixel bar of ``confident_pixels_only`` in (0, 1] (default:
            ``threshold``).
        rgb: whether the last axis is colour (see ``stacks.stack_layout``).
        out: where to write the labels (shape of the result), as in ``predict_stack``.
        options: passed to the segmenter's prediction (e.g. ``value_range``).

    Returns:
        ``(labels, added_planes)``: labels as ``predict_stack`` gives them (the stack's shape
        minus any colour axis, uint8 for up to 255 classes), and the planes added as supports,
        in the order they were added.

    Raises:
        ValueError: a threshold outside (0, 1], a start plane out of range, a bad ``max_added``
            or ``confidence``, or a stack with more than one plane axis.
        PredictionCancelled: when ``cancel`` turns true.
    """
    threshold = _check_threshold(threshold)
    pixel_threshold = threshold if pixel_threshold is None else _check_threshold(pixel_threshold, "pixel_threshold")
    max_added = _check_max_added(max_added)
    if confidence not in CONFIDENCE_MEASURES:
        raise ValueError(f"unknown confidence measure {confidence!r}; choose one of {CONFIDENCE_MEASURES}")
    stack = as_stack(stack)
    layout = stack_layout(stack.shape, axis, rgb)
    if len(layout.plane_axes) != 1:
        raise ValueError(
            f"propagation runs along one plane axis, but a stack of shape {tuple(stack.shape)} with axis={axis!r} "
            f"has plane axes {layout.plane_axes}; pass a (Z, Y, X) or (T, Y, X) stack (e.g. one time point)"
        )
    n_planes = layout.n_planes
    starts = _start_planes(start_planes, n_planes)
    episode.validate()
    if out is None:
        out = np.zeros(layout.labels_shape, dtype=labels_dtype(episode.n_classes))
    elif tuple(out.shape) != layout.labels_shape:
        raise ValueError(f"out has shape {tuple(out.shape)}; this stack's labels need {layout.labels_shape}")
    # The base class computes the stack's intensity range per call; compute it once. A segmenter
    # with its own stack rule (classic: the episode's range) keeps it.
    if "value_range" not in options and type(segmenter).iter_predict_stack is Segmenter.iter_predict_stack:
        options["value_range"] = stack_value_range(stack)
    names = [c.strip().lower() for c in episode.classes]
    background_class = names.index(BACKGROUND) + 1 if BACKGROUND in names else 0

    working = _working_copy(episode)
    originals = list(episode.supports)
    added: dict[int, Any] = {}  # plane -> its Support
    order = outward_order(n_planes, starts)
    for done, plane in enumerate(order, start=1):
        if is_cancelled(cancel):
            raise PredictionCancelled("prediction cancelled")
        helpers = sorted(added, key=lambda p: (abs(p - plane), p))
        if max_added is not None:
            helpers = helpers[:max_added]
        working.supports = originals + [added[p] for p in sorted(helpers)]
        ((_, labels, uncertainty),) = segmenter.iter_predict_stack(
            working, stack, axis, planes=[(plane,)], cancel=cancel, rgb=rgb, uncertainty=True, **options
        )
        out[layout.labels_index((plane,))] = labels
        if plane not in starts:

            def neighbourhood(plane=plane):  # read only for a plane confident enough to be added
                window, position = layout.context_indices((plane,), CONTEXT_REACH)
                return np.stack([layout.take(stack, i) for i in window]), position

            support = _confident_support(
                working, neighbourhood, labels, 1.0 - uncertainty, threshold, confidence,
                pixel_threshold if confident_pixels_only else None, background_class, plane,
            )  # fmt: skip
            if support is not None:
                added[plane] = support
        if progress is not None:
            progress(done, n_planes)
    return out, list(added)


def _confident_support(working: Episode, neighbourhood, labels: np.ndarray, max_probability: np.ndarray,
                       threshold: float, confidence: str, pixel_threshold: float | None, background_class: int,
                       plane: int):  # fmt: skip
    """The support a confident plane adds (None when it is not confident or labels no class);
    ``neighbourhood()`` gives the planes around it and its position, kept as the support's context."""
    if not (labels > 0).any() or plane_confidence(labels, max_probability, confidence) < threshold:
        return None
    prompts = labels.astype(np.int64)
    if background_class:
        prompts[labels == 0] = background_class
    if pixel_threshold is not None:
        prompts[max_probability < pixel_threshold] = 0
    if not ((prompts > 0) & (prompts != background_class)).any():
        return None
    planes, position = neighbourhood()
    support = working.add_support(planes, labels=prompts, plane=position, name=f"propagated plane {plane}")
    working.supports.pop()  # built (and validated) by the episode; the caller decides where it goes
    return support
