"""The embedded default's implicit background rule (steps a to c of ``ClassicSegmenter``'s
docstring), used when no class is named "background".

a. ``add_background``: unprompted pixels far enough from every prompt are background candidates.
b. ``drop_prompt_like``: candidates that look like prompted pixels are dropped, by
   positive-unlabelled learning (Elkan & Noto 2008): classifiers of held-out prompts against a
   candidate sample estimate how likely each candidate is to belong to a prompted class.
c. If too few candidates are left, two or more prompted classes tile the image and there is
   none; one prompted class cannot tile it, so the candidates kept stay background (if none
   was kept, the ``min_background`` share least like it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .trees import BalancedExtraTrees, predict_in_chunks, subsample

# Candidates each detection classifier of step b learns from: it only scores how prompt-like a
# candidate is, so a few trees on a few thousand pixels suffice (and cost half the fit).
DETECTION_SAMPLES = 4000
TILING_PROBE = 6_000  # candidates scored first, to tell classes that tile the image


def add_background(target: np.ndarray, weight: np.ndarray, footprints) -> None:
    """Mark the implicit background candidates of one support as class 0, in place (step a).

    ``target``: (Y, X) int32 prompted classes, -1 where none; ``weight``: (Y, X) float32 sample
    weights; ``footprints``: [(mask, margin)] as ``ClassicSegmenter.prompt_pixels`` returns them.
    """
    from scipy.ndimage import distance_transform_edt

    free = target < 0
    distances = [(distance_transform_edt(~mask), margin) for mask, margin in footprints if mask.any()]
    for scale in (*(0.5**i for i in range(7)), 0.0):
        # distance > 0 also keeps every footprint itself out, whatever the scale
        candidates = np.logical_and.reduce([free] + [d > max(m * scale, 0.0) for d, m in distances])
        if candidates.any():
            break
    target[candidates], weight[candidates] = 0, 1.0


def drop_prompt_like(targets: list[np.ndarray], features: list[np.ndarray], settings: Any) -> None:
    """Steps b and c, on the targets of all supports in place.

    ``targets``: per support, (Y, X) int32 classes with the candidates of ``add_background`` as
    0; ``features``: per support, its (Y, X, F) float32 features; ``settings``: anything with
    the ``ClassicSegmenter`` attributes of the rule (``max_samples_per_class``,
    ``n_estimators``, ``min_samples_leaf``, ``n_jobs``, ``detection_threshold``,
    ``detection_margin``, ``min_background``, ``seed``).
    """
    from scipy.ndimage import distance_transform_edt
    from scipy.ndimage import label as connected

    rng = np.random.default_rng(settings.seed + 1)  # not the training draw's stream
    flat = [f.reshape(-1, f.shape[-1]) for f in features]
    components = [connected(t > 0, structure=np.ones((3, 3))) for t in targets]
    offsets = np.cumsum([0] + [n for _, n in components])
    n_folds = min(2, int(offsets[-1]))
    fold_of = rng.permutation(offsets[-1]) % n_folds  # one fold per stroke, disk or box core
    folds = [np.where(r > 0, fold_of[np.maximum(r - 1, 0) + o], -1).ravel()
             for (r, _), o in zip(components, offsets[:-1], strict=True)]  # fmt: skip
    candidates = [np.flatnonzero(t.ravel() == 0) for t in targets]
    cap = min(settings.max_samples_per_class, DETECTION_SAMPLES)
    sample = subsample([t.ravel() == 0 for t in targets], cap, rng)
    x_neg = np.concatenate([fl[rows] for fl, rows in zip(flat, sample, strict=True)])

    def prompted_score(trees, i: int, rows: np.ndarray) -> np.ndarray:
        return predict_in_chunks(trees, flat[i][rows])[:, -1]

    fold_trees, held = [], []
    for k in range(n_folds):
        x_pos = np.concatenate([fl[fo == k] for fl, fo in zip(flat, folds, strict=True)])
        y = np.r_[np.ones(len(x_pos), np.intp), np.zeros(len(x_neg), np.intp)]
        trees = BalancedExtraTrees(max(6, settings.n_estimators // 4), settings.min_samples_leaf, 1.0, settings.n_jobs,
                                   settings.seed)  # fmt: skip
        fold_trees.append(trees.fit(np.concatenate([x_pos, x_neg]), y, np.ones(len(y), np.float32)))
        for i in range(len(flat)):
            held.append(prompted_score(trees, i, np.flatnonzero(folds[i] == (k + 1) % n_folds)))
    # Elkan & Noto: with c the score of a prompted-class pixel, s(x) / c estimates the chance
    # that x belongs to a prompted class. c comes from prompts held out by whole stroke or
    # object: neighbouring prompted pixels are near-copies and would push it towards 1.
    c = max(float(np.concatenate(held).mean()), 1e-6)

    def likeness(i: int, rows: np.ndarray) -> np.ndarray:  # estimated chance of a prompted class
        return sum(prompted_score(trees, i, rows) for trees in fold_trees) / n_folds / c

    # One prompted class cannot tile the image: the user asks for it to be told from the rest.
    can_tile = len(np.unique(np.concatenate([t[t > 0] for t in targets]))) > 1
    if can_tile:
        # Where the prompted classes clearly tile the image (textures), a sample of the
        # candidates shows it, and the rest need not be scored: the kept fraction below
        # ``min_background`` by three standard errors of the sample (the full rule below only
        # drops more, near drops).
        probe = subsample([t.ravel() == 0 for t in targets], TILING_PROBE, rng)
        n_probe = sum(len(rows) for rows in probe)
        kept = sum(np.count_nonzero(likeness(i, rows) <= settings.detection_threshold) for i, rows in enumerate(probe))
        margin = 3 * np.sqrt(settings.min_background * (1 - settings.min_background) / max(n_probe, 1))
        if kept < (settings.min_background - margin) * n_probe:
            for target in targets:
                target[target == 0] = -1
            return
    drops, scores = [], []
    for i, (target, rows) in enumerate(zip(targets, candidates, strict=True)):
        drop = np.zeros(target.size, bool)
        scores.append(likeness(i, rows))
        drop[rows[scores[-1] > settings.detection_threshold]] = True
        drop = drop.reshape(target.shape)
        if settings.detection_margin:
            regions, _ = connected(drop | (target > 0))
            unprompted = drop & ~np.isin(regions, regions[target > 0])
            if unprompted.any():
                drop |= distance_transform_edt(~unprompted) <= settings.detection_margin
        drops.append(drop & (target == 0))
    total = sum(len(rows) for rows in candidates)
    tiled = total - sum(np.count_nonzero(d) for d in drops) < settings.min_background * total
    if tiled and not can_tile:  # what was kept stays background; if nothing was, the least like it
        tiled = False
        if not any(((target == 0) & ~drop).any() for target, drop in zip(targets, drops, strict=True)):
            cut = np.quantile(np.concatenate(scores), settings.min_background)
            for drop, rows, score in zip(drops, candidates, scores, strict=True):
                drop.flat[rows[score <= cut]] = False
    for target, drop in zip(targets, drops, strict=True):
        target[(target == 0) if tiled else drop] = -1  # tiled: the classes cover the image
