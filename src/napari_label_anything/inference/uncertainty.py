"""Where a prediction is unsure: per-pixel uncertainty from class probabilities, planes ranked.

NumPy only (no torch, no napari). The default measure is *least confidence*, ``1 - max_k p_k``:
when the probabilities are calibrated it is the chance that the pixel's label (the argmax) is
wrong, so its mean over a plane estimates the fraction of mislabelled pixels on that plane,
which is what "the plane most worth correcting" means. It is cheap (no logarithm) and lies in
0..1 - 1/K for K channels. Normalised entropy (``method="entropy"``, entropy / log K, 0..1) is
the alternative; it also weighs how the remaining probability is spread over the other
classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

METHODS = ("least_confidence", "entropy")


def uncertainty_map(proba: np.ndarray, method: str = "least_confidence") -> np.ndarray:
    """Per-pixel uncertainty of (K, Y, X) class probabilities: (Y, X) float32 in 0..1.

    ``method``: "least_confidence" (``1 - max_k p_k``, the default) or "entropy"
    (``-sum p log p / log K``). 0 means one class has all the probability; K = 1 gives 0.
    Probabilities are clipped to 0..1 first (rounding can leave them a hair outside).
    """
    proba = np.asarray(proba)
    if proba.ndim < 1 or proba.shape[0] < 1:
        raise ValueError(f"expected (K, ...) class probabilities, got shape {proba.shape}")
    if method not in METHODS:
        raise ValueError(f"unknown uncertainty method {method!r}; choose one of {METHODS}")
    p = np.clip(proba.astype(np.float32, copy=False), 0.0, 1.0)
    k = p.shape[0]
    if k == 1:
        return np.zeros(p.shape[1:], np.float32)
    if method == "least_confidence":
        out = 1.0 - p.max(axis=0)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        out = -terms.sum(axis=0) / np.float32(np.log(k))
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def plane_score(uncertainty: np.ndarray) -> float:
    """One number per plane: its mean uncertainty (the expected fraction of wrong pixels)."""
    uncertainty = np.asarray(uncertainty)
    return float(uncertainty.mean(dtype=np.float64)) if uncertainty.size else 0.0


def rank_planes(per_plane_scores: Mapping | Sequence[float] | np.ndarray, n: int | None = None, exclude=()) -> list:
    """The ``n`` planes with the highest scores, highest first (all when ``n`` is None).

    ``per_plane_scores``: ``{plane_index: score}`` or a sequence (plane i has score i).
    Equal scores keep the planes' order; NaN scores and planes in ``exclude`` are left out.
    """
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if isinstance(per_plane_scores, Mapping):
        items = list(per_plane_scores.items())
    else:
        items = list(enumerate(np.asarray(per_plane_scores, dtype=np.float64).ravel().tolist()))
    excluded = set(exclude)
    items = [(index, float(score)) for index, score in items if index not in excluded and not np.isnan(score)]
    order = sorted(range(len(items)), key=lambda i: -items[i][1])  # stable: ties keep their order
    ranked = [items[i][0] for i in order]
    return ranked if n is None else ranked[:n]
