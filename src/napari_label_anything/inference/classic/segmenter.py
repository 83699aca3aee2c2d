"""An embedded few-shot segmenter that needs no downloaded weights: a per-episode pixel classifier.

``ClassicSegmenter`` trains randomised trees (scikit-learn) on multi-scale intensity, edge and
texture features of an episode's prompted pixels, once per episode content, then classifies
every pixel of each query plane. Features (``features``) are computed in row bands, so
prediction memory grows with the number of classes, not the number of features.
"""

from __future__ import annotations

import os
import threading
import warnings
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from ...episode import CONTEXT_REACH, Episode, Support, check_image
from ...labels import BACKGROUND, labels_dtype
from ...preprocessing import PER_PLANE, intensity_range, normalise_image, stack_value_range
from ..base import PredictionCancelled, Segmenter, brightness_differs, current_steps, is_cancelled
from ..cache import LRUCache
from .background import add_background, drop_prompt_like
from .boundaries import SNAP_BYTES_PER_PIXEL, prompts_outline_boundaries, snap_to_edges
from .features import (
    BAND_PIXELS,
    BYTES_PER_FEATURE_PIXEL,
    Depth,
    band_count,
    brightness_threshold,
    check_memory,
    depth_features,
    depth_plane,
    depth_width,
    feature_bands,
    features_at,
    n_features,
    pixel_features,
    scale_columns,
)
from .trees import BalancedExtraTrees, predict_in_chunks, subsample

__all__ = ["BalancedExtraTrees", "ClassicSegmenter", "pixel_features"]

_FIT_PARAMS = ("sigma_min", "sigma_max", "point_radius", "box_core", "box_weight", "label_margin", "point_margin",
               "box_margin", "detection_margin", "detection_threshold", "min_background", "max_samples_per_class",
               "n_estimators", "min_samples_leaf", "background_ratio", "depth_sigmas", "seed",
               "fine_scale")  # fmt: skip
EDGE_SNAP_MODES = ("auto", "always", "never")


class Fitted(NamedTuple):
    """What ``ClassicSegmenter.fit`` caches per episode."""

    classifier: BalancedExtraTrees
    colour: bool
    value_range: tuple[float, float] | None
    depth: bool  # trained on depth features too (see ``ClassicSegmenter.uses_depth``)
    threshold: float  # the supports' brightness_threshold, the cut of every image's features
    outlined: bool  # the prompts draw the boundaries (``boundaries``); else labels snap to edges


def _is_per_plane(value_range) -> bool:
    return isinstance(value_range, str) and value_range == PER_PLANE


def _is_colour(episode: Episode) -> bool:
    """Whether an episode's images are featurised as colour: any of its supports is."""
    return any(s.image.ndim == 3 for s in episode.supports)


def _disk(shape: tuple[int, int], y: float, x: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Row/column indices of the pixels within ``radius`` of (y, x), clipped to the image."""
    cy, cx, r = int(round(y)), int(round(x)), int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy**2 + dx**2 <= radius**2
    rows, cols = cy + dy[keep], cx + dx[keep]
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    return rows[inside], cols[inside]


class ClassicSegmenter(Segmenter):
    """Few-shot pixel classification with no pretrained weights (any CPU, no download).

    Images are normalised (``normalise_image``) and featurised (``pixel_features``: intensity,
    edges, Hessian and structure-tensor eigenvalues, texture and differences of Gaussians at
    scales sigma_min..sigma_max, per channel for colour, across planes for stacks); prompted
    support pixels train ``BalancedExtraTrees``, half of which see only the scales up to
    ``fine_scale`` (local detail) and half all of them (context), so the forest transfers to
    images where things are smaller or larger; every query pixel is classified and the
    probability maps are smoothed by a Gaussian of ``smooth`` pixels.

    The rules (docs/classic.md has them in full):

    - Training pixels: painted labels, point disks (``point_radius``), box cores (``box_core``,
      weight ``box_weight``).
    - Background: a class named "background" is class 0; without one (or on a support with no
      background prompt) it is inferred from unprompted pixels far from every prompt, minus
      those that look prompted (positive-unlabelled learning); classes that leave nothing
      unlike themselves tile the image and there is no background.
    - Proportions: complete masks keep their class proportions as priors; strokes, points and
      boxes are class-balanced.
    - Boundaries: where the prompts leave them open (``edge_snap="auto"``) labels snap to the
      image's edges; complete masks keep the trees' own boundaries.
    - Intensity: one range for supports and queries (``_episode_range``), or each image by its
      own percentiles where a query's brightness differs from the supports' (``predict_proba``'s
      ``value_range``; ``predict_stack``'s ``normalise``).
    - Memory and steps: features run in row bands; a plane that would not fit raises
      ``FeatureMemoryError`` before allocating; a plane is predicted in cancellable steps
      (``PlaneSteps``). ``stats`` counts fits and fit-cache hits. The same episode, settings
      and ``seed`` always give the same result.

    Args:
        sigma_min, sigma_max: feature scales in pixels (powers of two from sigma_min).
        fine_scale: the largest scale half the trees see (None: every tree sees all scales).
        point_radius, box_core, box_weight: prompt sampling (see above).
        label_margin, point_margin, box_margin, detection_threshold, detection_margin,
            min_background: the implicit background rule (see above).
        max_samples_per_class: training pixel cap per class.
        n_estimators, min_samples_leaf, background_ratio: the trees (``BalancedExtraTrees``).
        depth_sigmas: depth scales in planes for stacks (see above); () for none.
        seed: non-negative integer all random draws (pixel subsamples, trees) start from.
        smooth: Gaussian sigma (pixels) applied to the probability maps; 0 disables it.
        edge_snap: "auto" (snap labels to edges where the prompts leave boundaries open),
            "always" or "never".
        edge_confidence: top probability from which a pixel keeps its class when snapping.
        n_jobs: threads for fitting and prediction (default: CPU count, at most 8).
        cache_size: fitted episodes kept.
    """

    name = "classic"
    device = "cpu"

    def __init__(
        self,
        *,
        sigma_min: float = 1.0,
        sigma_max: float = 16.0,
        point_radius: float = 5.0,
        box_core: float = 0.5,
        box_weight: float = 0.5,
        label_margin: float = 0.0,
        point_margin: float = 10.0,
        box_margin: float = 2.0,
        detection_margin: float | None = 5.0,
        detection_threshold: float | None = 0.5,
        min_background: float = 0.15,
        max_samples_per_class: int = 10_000,
        n_estimators: int = 24,
        min_samples_leaf: int = 3,
        background_ratio: float = 3.0,
        depth_sigmas: tuple[float, ...] = (1.0, 2.0, 4.0),
        seed: int = 0,
        fine_scale: float | None = 4.0,
        smooth: float = 1.0,
        edge_snap: str = "auto",
        edge_confidence: float = 0.65,
        n_jobs: int | None = None,
        cache_size: int = 4,
    ) -> None:
        if not 0 < sigma_min <= sigma_max:
            raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
        if fine_scale is not None and not sigma_min <= fine_scale <= sigma_max:
            raise ValueError(f"fine_scale must lie in sigma_min..sigma_max, got {fine_scale}")
        if not 0 < box_core <= 1:
            raise ValueError(f"box_core must lie in (0, 1], got {box_core}")
        depth_sigmas = tuple(float(s) for s in depth_sigmas)
        if not all(0 < s <= CONTEXT_REACH for s in depth_sigmas):
            raise ValueError(f"depth_sigmas must lie in (0, {CONTEXT_REACH}] planes, got {depth_sigmas}")
        if edge_snap not in EDGE_SNAP_MODES:
            raise ValueError(f"edge_snap must be one of {EDGE_SNAP_MODES}, got {edge_snap!r}")
        if not 0.5 <= edge_confidence <= 1:
            raise ValueError(f"edge_confidence must lie in [0.5, 1], got {edge_confidence}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        seed = int(seed)
        self.edge_snap, self.edge_confidence = edge_snap, float(edge_confidence)
        values = locals()
        for name in _FIT_PARAMS:  # every one of them is part of the fit cache key
            setattr(self, name, values[name])
        self.smooth, self.cache_size = float(smooth), int(cache_size)
        self.n_jobs = int(n_jobs) if n_jobs is not None else min(8, os.cpu_count() or 1)
        self._fitted = LRUCache(self.cache_size)  # fit key -> Fitted
        self._lock = threading.Lock()
        self.stats = {"fits": 0, "fit_cache_hits": 0}

    def __repr__(self) -> str:
        return f"ClassicSegmenter(sigma={self.sigma_min:g}..{self.sigma_max:g}, trees={self.n_estimators})"

    def clear_cache(self) -> None:
        self._fitted.clear()

    def image01(self, image: Any, value_range: tuple[float, float] | None = None, colour: bool = False) -> np.ndarray:
        """The normalised image in the ``colour`` or grey set: grey is repeated into 3 channels,
        colour reduced to luminance, so grey and colour images mix."""
        image01 = normalise_image(image, value_range)
        if colour and image01.ndim == 2:
            image01 = np.repeat(image01[..., None], 3, axis=-1)
        elif not colour and image01.ndim == 3:
            image01 = image01 @ np.array([0.2125, 0.7154, 0.0721], np.float32)
        return image01

    def features(self, image: Any, value_range: tuple[float, float] | None = None, colour: bool = False,
                 depth: Depth | None = None, threshold: float | None = None) -> np.ndarray:  # fmt: skip
        """(Y, X, F) float32 features of a 2D image (``pixel_features``, cut at ``threshold``) in
        the ``colour`` or grey set, followed by its ``depth_features`` when ``depth`` (from
        ``depth``) is given."""
        return self._features01(self.image01(image, value_range, colour), depth, threshold)

    def _features01(self, image01: np.ndarray, depth: Depth | None, threshold: float | None) -> np.ndarray:
        """``features`` of an image already through ``image01``."""
        colour = image01.ndim == 3
        self._check_memory(image01.shape, n_features(self.sigma_min, self.sigma_max, colour, depth) * 4, "the features")
        features = pixel_features(image01, self.sigma_min, self.sigma_max, self.n_jobs, threshold,
                                  current_steps().check)  # fmt: skip
        if depth is None:
            return features
        return np.concatenate([features, depth_features(depth, slice(0, image01.shape[0]))], axis=-1)

    def uses_depth(self, episode: Episode) -> bool:
        """Whether stack planes of this episode are featurised across planes: depth scales are
        set and every support was taken from a stack (so it keeps its neighbouring planes)."""
        return bool(self.depth_sigmas and episode.supports) and all(s.context is not None for s in episode.supports)

    def depth(self, context: Any, value_range: tuple[float, float] | None) -> Depth:
        """The ``Depth`` of a plane from ``context`` = (planes, position): the (D, Y, X[, C])
        planes around it (itself included), normalised like the plane, as grey."""
        planes, position = context
        planes = np.asarray(planes)
        if planes.ndim not in (3, 4) or not 0 <= int(position) < len(planes):
            raise ValueError(f"context must be ((D, Y, X[, C]) planes, position in 0..D-1), got shape "
                             f"{planes.shape} and position {position!r}")  # fmt: skip
        self._check_depth_memory(planes.shape[1:3], len(planes), planes.dtype.itemsize)
        prepared = [self._depth_plane(check_image(p, "context plane"), value_range) for p in planes]
        return Depth(np.stack(prepared), int(position), self.depth_sigmas, CONTEXT_REACH)

    def _check_depth_memory(self, shape: tuple[int, ...], n_planes: int, itemsize: int) -> None:
        """Refuse, before reading them, neighbouring planes that would not fit: each is held raw
        and prepared (float32), and stacked once more for its ``Depth``."""
        self._check_memory(shape, n_planes * (itemsize + 8), "the neighbouring planes (depth context)")

    def _depth_plane(self, plane: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
        """One plane as ``Depth.planes`` holds it (``features.depth_plane``)."""
        return depth_plane(self.image01(plane, value_range, False), self.sigma_min)

    @staticmethod
    def _query_range(query: np.ndarray, value_range, fitted_range):
        """The intensity range a query is normalised with: ``value_range`` if given, else the
        episode's; None (divide by 255) for a uint8 query of an all-uint8 episode."""
        if value_range is None and not (query.dtype == np.uint8 and fitted_range is None):
            return fitted_range
        return value_range

    def _check_memory(self, shape: tuple[int, ...], bytes_per_pixel: float, what: str) -> None:
        band = min(shape[0] * shape[1], BAND_PIXELS) * n_features(self.sigma_min, self.sigma_max, True)
        need = bytes_per_pixel * shape[0] * shape[1] + band * BYTES_PER_FEATURE_PIXEL
        check_memory(shape, int(need), what)

    def check_plane_memory(self, episode: Episode, shape: tuple[int, ...], dtype: np.dtype, read: bool = True) -> None:
        """Refuse a query plane whose prediction would not fit, before it is read (``read``: its
        raw pixels counted too) and before it is normalised: normalising's float64 and float32
        copies, or the normalised copy, the class probabilities (smoothed through a copy) and the
        labels, with one band of features; for a stack plane seen with its neighbours
        (``uses_depth``), those planes first. ``FeatureMemoryError`` names the need."""
        if read and self.uses_depth(episode):
            self._check_depth_memory(shape[:2], 2 * CONTEXT_REACH + 1, np.dtype(dtype).itemsize)
        channels = min(shape[2], 3) if len(shape) == 3 else 1
        kept = 4 * (3 if _is_colour(episode) else 1)
        predicting = kept + 4 * (episode.n_classes + 2) + 2
        raw = np.dtype(dtype).itemsize * (shape[2] if len(shape) == 3 else 1) + 1 if read else 0
        self._check_memory(shape, raw + max(12 * channels + kept, predicting), "predicting the classes")

    def prompt_pixels(self, support: Support, background_class: int | None = None):
        """Training pixels of the prompts of one support (the rules in the class docstring).

        Returns:
            target: (Y, X) int32; -1 = no training pixel, else 0..N (the explicit "background"
                class already mapped to 0). Implicit background is not included.
            weight: (Y, X) float32 sample weights.
            footprints: [(mask, margin)], the (Y, X) bool areas of foreground painted pixels,
                point disks and boxes with the margin implicit background keeps from each.
        """
        shape = support.shape
        target = np.full(shape, -1, np.int32)
        weight = np.zeros(shape, np.float32)
        boxed, near_point, painted_fg = (np.zeros(shape, bool) for _ in range(3))

        def as_target(k: float) -> int:
            return 0 if int(k) == background_class else int(k)

        core_class = np.full(shape, -1, np.int32)  # -2 marks a clash between classes
        for y0, x0, y1, x1, k in support.boxes:
            k = as_target(k)
            r0, c0 = max(0, int(np.floor(y0))), max(0, int(np.floor(x0)))
            r1, c1 = min(shape[0], int(np.floor(y1)) + 1), min(shape[1], int(np.floor(x1)) + 1)
            cy, cx, hy, hx = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, (x1 - x0) / 2
            rows, cols = np.arange(r0, r1)[:, None], np.arange(c0, c1)[None, :]
            core = ((rows - cy) / (self.box_core * hy)) ** 2 + ((cols - cx) / (self.box_core * hx)) ** 2 <= 1
            core[min(int(round(cy)), r1 - 1) - r0, min(int(round(cx)), c1 - 1) - c0] = True
            window = core_class[r0:r1, c0:c1]
            clash = core & (window != -1) & (window != k)
            window[core & (window == -1)] = k
            window[clash] = -2
            if k:
                boxed[r0:r1, c0:c1] = True
        has_core = core_class >= 0
        target[has_core], weight[has_core] = core_class[has_core], self.box_weight

        for y, x, k in support.points:
            rows, cols = _disk(shape, y, x, self.point_radius)
            target[rows, cols], weight[rows, cols] = as_target(k), 1.0
            near_point[rows, cols] |= as_target(k) > 0

        if support.labels is not None:
            painted = support.labels > 0
            values = support.labels[painted].astype(np.int32)
            if background_class is not None:
                values[values == background_class] = 0
            target[painted], weight[painted] = values, 1.0
            painted_fg = painted & (target > 0)
        footprints = [(painted_fg, self.label_margin), (near_point, self.point_margin), (boxed, self.box_margin)]
        return target, weight, footprints

    def fit(self, episode: Episode, depth: bool = False, per_plane: bool = False) -> Fitted:
        """The classifier of an episode, whether it uses colour features and the episode's
        intensity range (fitted once, cached); with ``depth`` (only where ``uses_depth``), the
        classifier of plane and depth features, for planes of a stack; with ``per_plane``, each
        support (and each of its neighbouring planes) normalised by its own percentiles, as
        queries are in "plane" normalisation (``Segmenter.iter_predict_stack``)."""
        episode.validate()
        depth = depth and self.uses_depth(episode)
        # Parameters belong in the key, so changing an attribute after construction refits.
        key = (episode.signature(), depth, per_plane, *(getattr(self, name) for name in _FIT_PARAMS))
        with self._lock:  # one fit per episode even when two threads ask at once
            fitted = self._fitted.get(key)
            if fitted is not None:
                self.stats["fit_cache_hits"] += 1
                return fitted
            fitted = self._fit(episode, depth, per_plane)
            self.stats["fits"] += 1
            self._fitted.put(key, fitted)
            return fitted

    def _train(self, targets, weights, features, implicit: bool, balance: bool, colour: bool,
               n_depth: int) -> BalancedExtraTrees:  # fmt: skip
        """Subsample the training pixels over all supports, then fit the trees on them.

        ``features[i]`` is support i's (Y, X, F) features or a callable giving the (n, F)
        features of flat pixel indices (then ``n_depth`` depth columns; with ``fine_scale``, half
        the trees see only the columns of the scales up to it, and the depth columns). Implicit
        background: at most ``max_samples_per_class`` pixels per class. Otherwise every class
        was prompted, so the pixels are drawn uniformly
        (at most that cap times the number of classes). ``balance``: class-balanced trees, else
        the trees keep the drawn pixels' proportions.
        """
        rng = np.random.default_rng(self.seed)
        flat_targets = [t.ravel() for t in targets]
        classes = np.unique(np.concatenate([np.unique(t) for t in flat_targets]))
        classes = classes[classes >= 0]
        cap = self.max_samples_per_class
        if implicit:
            per_class = [subsample([t == k for t in flat_targets], cap, rng) for k in classes]
            rows = [np.concatenate(parts) for parts in zip(*per_class, strict=True)]
        else:
            rows = subsample([t >= 0 for t in flat_targets], cap * len(classes), rng)

        def take(source, r: np.ndarray) -> np.ndarray:
            return source(r) if callable(source) else source.reshape(-1, source.shape[-1])[r]

        x = np.concatenate([take(f, r) for f, r in zip(features, rows, strict=True)])
        y = np.concatenate([t[r] for t, r in zip(flat_targets, rows, strict=True)])
        w = np.concatenate([wt.ravel()[r] for wt, r in zip(weights, rows, strict=True)])
        ratio = self.background_ratio if implicit else None

        # The size of things changes between images (magnification, cell type, depth), and a forest
        # of fine and of all scales transfers better than either alone.
        sets = None
        if self.fine_scale is not None and self.fine_scale < self.sigma_max:
            all_columns = np.arange(x.shape[1])
            sets = [scale_columns(self.sigma_min, self.sigma_max, self.fine_scale, colour, n_depth), all_columns]
        trees = BalancedExtraTrees(self.n_estimators, self.min_samples_leaf, ratio, self.n_jobs, self.seed, balance,
                                   column_sets=sets)  # fmt: skip
        return trees.fit(x, y, w)

    def _fit(self, episode: Episode, depth: bool, per_plane: bool) -> Fitted:
        names = [c.strip().lower() for c in episode.classes]
        background_class = names.index(BACKGROUND) + 1 if BACKGROUND in names else None
        prompts = [self.prompt_pixels(s, background_class) for s in episode.supports]
        targets, weights = [p[0] for p in prompts], [p[1] for p in prompts]
        # A support with no background prompt says nothing of its background but what the
        # implicit rule infers, also when other supports prompt it (e.g. scribbled objects
        # beside a corrected plane fed back whole): the rule runs on those supports only.
        inferred = [background_class is None or not (t == 0).any() for t in targets]
        implicit = any(inferred)
        colour = _is_colour(episode)
        value_range = PER_PLANE if per_plane else self._episode_range(episode)
        images = [self.image01(s.image, value_range, colour) for s in episode.supports]
        depths = [self.depth((s.context, s.context_index), value_range) if depth else None for s in episode.supports]
        threshold = brightness_threshold(images, self.sigma_min)
        # Before implicit background is added. Every support must draw its boundaries: one
        # scribbled support leaves them open wherever its classes are seen.
        outlined = all(prompts_outline_boundaries([t]) for t in targets)
        for (target, weight, footprints), infer in zip(prompts, inferred, strict=True):
            if infer:
                add_background(target, weight, footprints)
        rule = [i for i, infer in enumerate(inferred) if infer and (targets[i] == 0).any()]
        n_depth = depth_width(self.depth_sigmas) if depth else 0
        if rule and self.detection_threshold is not None:
            features = [self._features01(im, d, threshold) for im, d in zip(images, depths, strict=True)]
            fine = scale_columns(self.sigma_min, self.sigma_max, self.fine_scale or self.sigma_max, colour, n_depth)
            drop_prompt_like([targets[i] for i in rule], [features[i][..., fine] for i in rule], self)
        else:  # only the training pixels are featurised (band by band)
            at = partial(features_at, sigma_min=self.sigma_min, sigma_max=self.sigma_max, n_jobs=self.n_jobs,
                         threshold=threshold)  # fmt: skip
            features = [partial(at, im, depth=d) for im, d in zip(images, depths, strict=True)]
        current_steps().check()
        classifier = self._train(targets, weights, features, implicit, implicit or not outlined, colour, n_depth)
        return Fitted(classifier, colour, value_range, depth, threshold, outlined)

    @staticmethod
    def _episode_range(episode: Episode) -> tuple[float, float] | None:
        """One intensity range for every support and query (``normalise_image``'s percentiles
        over all non-uint8 supports together), or None when every support is uint8 (then /255)."""
        images = [np.asarray(s.image) for s in episode.supports]
        images = [im[..., :3] if im.ndim == 3 else im for im in images if im.dtype != np.uint8]
        if not images:
            return None
        step = max(1, sum(im.size for im in images) // 4_000_000)
        low, high = intensity_range(np.concatenate([im.ravel()[::step] for im in images]))
        return (low, high) if high > low else None

    def predict_proba(self, episode: Episode, query: Any, value_range: tuple[float, float] | str | None = "auto",
                      context: Any = None, **options: Any) -> np.ndarray:  # fmt: skip
        """Class probabilities of a 2D query: (N+1, Y, X) float32 summing to 1, class 0 = background.

        Args:
            episode: classes and prompted supports (fitted once, then cached).
            query: (Y, X) or (Y, X, 3|4) image of any real dtype.
            value_range: (low, high) intensity mapped to 0..1 for this query; None: the one
                range of the episode's supports (``_episode_range``), so support and query
                pixels of equal value look alike (a uint8 query with uint8 supports is /255);
                ``PER_PLANE``: supports and query each by their own percentiles; "auto" (the
                default): ``PER_PLANE`` where the query's brightness differs from the
                supports' (``base.brightness_differs``: another session, exposure or stain)
                and no ``context`` is given, else None. ``predict_stack`` passes its own (see
                ``normalise`` there).
            context: for a plane of a stack, (planes, position): the (D, Y, X[, C]) planes
                within ``CONTEXT_REACH`` of it along the stack's plane axis, itself at
                ``position`` (``predict_stack`` passes it). Used where ``uses_depth`` and
                there are at least two planes.
            options: accepted so callers can pass one set of options to any segmenter;
                ignored, with a warning when one is set.
        """
        return self._predict(episode, query, value_range, context, options)[0]

    def _predict(self, episode: Episode, query: Any, value_range, context, options: dict[str, Any]):
        """``predict_proba``'s probabilities, with the normalised query and the ``Fitted``
        episode they came from (which ``_labels`` needs to snap labels to edges)."""
        ignored = sorted(k for k, v in options.items() if v is not None)
        if ignored:
            warnings.warn(f"the classic segmenter ignores option(s) {ignored}", stacklevel=2)
        query = check_image(query, "query image")
        planes = context.planes if isinstance(context, Depth) else None if context is None else context[0]
        if planes is not None and len(planes) < 2:  # one plane has no depth, as in add_support
            context = None
        steps, total = current_steps(), self._n_steps(query.shape)  # the threads below get steps.check
        steps.check()
        self.check_plane_memory(episode, query.shape, query.dtype, read=False)  # before it is normalised
        if isinstance(value_range, str) and value_range == "auto":  # per image for a lone one; stacks decide whole
            value_range = PER_PLANE if context is None and brightness_differs(episode, [query]) else None
        fitted = self.fit(episode, depth=context is not None, per_plane=_is_per_plane(value_range))
        steps.step(1, total)
        value_range = self._query_range(query, value_range, fitted.value_range)
        image01 = self.image01(query, value_range, fitted.colour)
        if not fitted.depth:
            plane_depth = None
        else:  # ``_predict_planes`` passes a ready Depth, with each plane prepared once
            plane_depth = context if isinstance(context, Depth) else self.depth(context, value_range)
        if plane_depth is not None and plane_depth.planes.shape[1:] != image01.shape[:2]:
            raise ValueError(f"context planes are {plane_depth.planes.shape[1:]} but the query is {image01.shape[:2]}")
        size = episode.n_classes + 1
        proba = np.zeros((size, *image01.shape[:2]), np.float32)
        columns = fitted.classifier.classes_.astype(np.intp)
        bands = feature_bands(image01, self.sigma_min, self.sigma_max, n_jobs=self.n_jobs, depth=plane_depth,
                              threshold=fitted.threshold, check=steps.check)  # fmt: skip
        for b, (r0, r1, band) in enumerate(bands):
            steps.step(2 + 2 * b, total)
            scores = predict_in_chunks(fitted.classifier, band.reshape(-1, band.shape[-1]), steps.check)
            proba[columns, r0:r1] = scores.T.reshape(len(columns), r1 - r0, -1)
            del band, scores
            steps.step(3 + 2 * b, total)
        if self.smooth > 0:
            from scipy.ndimage import gaussian_filter

            for c in columns:  # linear per channel, so channels still sum to 1
                gaussian_filter(proba[c], self.smooth, output=proba[c], mode="nearest")
        return proba, image01, fitted

    @staticmethod
    def _n_steps(shape: tuple[int, ...]) -> int:
        """Steps of a plane's prediction (``PlaneSteps``): the fit, each row band's features and
        classes, the labels."""
        return 2 * band_count(shape[0], shape[1]) + 2

    def _snaps(self, fitted: Fitted) -> bool:
        return self.edge_snap == "always" or (self.edge_snap == "auto" and not fitted.outlined)

    def _labels(self, proba: np.ndarray, image01: np.ndarray, fitted: Fitted, n_classes: int) -> np.ndarray:
        """(Y, X) labels of (N+1, Y, X) probabilities: their argmax, snapped to the image's
        edges where the episode's prompts leave boundaries open (see the class docstring)."""
        labels = np.empty(proba.shape[1:], labels_dtype(n_classes))
        steps = current_steps()
        if self._snaps(fitted):  # after the feature bands are freed, so it needs no more than they did
            check_memory(image01.shape, SNAP_BYTES_PER_PIXEL * labels.size, "placing borders along edges")
            labels[...] = snap_to_edges(proba, image01, self.edge_confidence, self.sigma_min, check=steps.check)
        else:
            step = max(1, (1 << 22) // max(proba.shape[2], 1))  # bounds argmax's int64 temporary
            for r0 in range(0, proba.shape[1], step):
                labels[r0 : r0 + step] = proba[:, r0 : r0 + step].argmax(axis=0)
        steps.step(self._n_steps(labels.shape), self._n_steps(labels.shape))
        return labels

    def _proba_and_labels(self, episode: Episode, query: Any, value_range: tuple[float, float] | str | None = "auto",
                          context: Any = None, **options: Any) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``predict_proba``'s probabilities (arguments as there) and the labels ``predict`` gives:
        the most likely class of each pixel, or, where the prompts leave boundaries open, the
        sure pixels' classes flooded along the image's edges (see the class docstring)."""
        proba, image01, fitted = self._predict(episode, query, value_range, context, options)
        return proba, self._labels(proba, image01, fitted, episode.n_classes)

    normalises_per_plane = True  # supports follow the queries' rule (``fit(per_plane=True)``)

    def _stack_range(self, stack: Any) -> None:
        """In "stack" normalisation every plane takes the episode's intensity range (one range
        for supports and queries, see ``_episode_range``): None here says so."""
        return None

    def _predict_planes(self, episode, stack, layout, indices, cancel, predict_plane, options):
        """One plane at a time, each with its neighbouring planes as ``context`` when the episode
        ``uses_depth`` (each plane is read once while it stays in reach)."""
        if not self.uses_depth(episode):
            yield from super()._predict_planes(episode, stack, layout, indices, cancel, predict_plane, options)
            return
        if is_cancelled(cancel):
            raise PredictionCancelled("prediction cancelled")
        fitted_range = self.fit(episode, depth=True, per_plane=_is_per_plane(options.get("value_range"))).value_range
        stack_range = None  # one range for every plane, when neither the caller nor the episode has one
        read: dict[tuple[int, ...], np.ndarray] = {}  # raw planes in reach, each read once
        prepared: dict[tuple[int, ...], np.ndarray] = {}  # the same as Depth.planes holds them
        for index in indices:
            if is_cancelled(cancel):
                raise PredictionCancelled("prediction cancelled")
            window, position = layout.context_indices(index, CONTEXT_REACH)
            read = {i: read[i] if i in read else layout.take(stack, i) for i in window}
            if len(window) < 2:  # no neighbours: predicted as a lone plane, as a support without context is
                yield index, predict_plane(read[index])
                continue
            value_range = self._query_range(read[index], options.get("value_range"), fitted_range)
            if value_range is None and read[index].dtype != np.uint8:  # not one stretch per plane
                stack_range = stack_value_range(stack) if stack_range is None else stack_range
                value_range = stack_range
            prepared = {i: prepared[i] if i in prepared else self._depth_plane(read[i], value_range) for i in window}
            depth = Depth(np.stack([prepared[i] for i in window]), position, self.depth_sigmas, CONTEXT_REACH)
            yield index, predict_plane(read[index], context=depth)
