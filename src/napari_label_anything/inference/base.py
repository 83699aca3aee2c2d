"""The segmenter interface: an ``Episode`` plus a query image -> a multi-class label image.

``Segmenter`` is what every model implements (Label Anything, the embedded default) and all the
widget and the CLI use: ``predict_proba`` is the one abstract method; ``predict``, stack
iteration (lazy, cancellable, with progress) and ``predict_stack`` derive from it.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np

from ..episode import Episode
from ..labels import labels_dtype
from ..preprocessing import (
    DRIFT_PLANES,
    PER_PLANE,
    brightness_drifts,
    check_normalise,
    highlights_move,
    stack_value_range,
)
from ..stacks import as_stack, sample_planes, stack_layout
from .uncertainty import uncertainty_map

ProgressCallback = Callable[[int, int], Any]
CancelCheck = Callable[[], bool] | threading.Event


class PredictionCancelled(RuntimeError):
    """Raised inside a stack prediction when its ``cancel`` check turns true."""


def is_cancelled(cancel: CancelCheck | None) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())


class PlaneSteps:
    """Progress and cancellation inside the prediction of one plane.

    A plane can take long (a large plane, a slow model), so a segmenter whose plane goes
    through several steps (the classic one's fit and row bands, Label Anything's tiles) takes
    the ``current_steps()`` of the plane it predicts and calls ``step(done, total)`` after each
    step, and ``check()`` between smaller pieces of work; both raise ``PredictionCancelled``
    once ``cancel`` turns true, so a run stops within a step instead of at the end of the plane.
    ``iter_predict_stack`` makes one per plane; a segmenter that cannot step never asks for it.

    Used as a context manager it applies to the predictions made in this thread inside the
    ``with`` block, e.g. ``with PlaneSteps(on_step, cancel): segmenter.predict(episode, image)``.

    Args:
        on_step: called as ``on_step(done, total)``: ``done`` of the plane's ``total`` steps are
            finished (the total may differ between planes and segmenters).
        cancel: a ``threading.Event`` or a callable (see ``is_cancelled``).
    """

    def __init__(self, on_step: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> None:
        self.on_step, self.cancel = on_step, cancel
        self._token = None

    def check(self) -> None:
        """Raise ``PredictionCancelled`` if ``cancel`` has turned true (safe from any thread)."""
        if is_cancelled(self.cancel):
            raise PredictionCancelled("prediction cancelled")

    def step(self, done: int, total: int) -> None:
        """``done`` of ``total`` steps are finished: check ``cancel``, then report them."""
        self.check()
        if self.on_step is not None:
            self.on_step(done, total)

    def __enter__(self) -> PlaneSteps:
        self._token = _CURRENT_STEPS.set(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        _CURRENT_STEPS.reset(self._token)


_CURRENT_STEPS: ContextVar[PlaneSteps | None] = ContextVar("plane_steps", default=None)
_NO_STEPS = PlaneSteps()


def current_steps() -> PlaneSteps:
    """The ``PlaneSteps`` of the plane this thread is predicting: one that neither reports nor
    cancels outside ``iter_predict_stack`` and ``with PlaneSteps(...)``. Threads a segmenter
    starts itself do not see it: it takes it in its own thread and passes ``check`` on."""
    return _CURRENT_STEPS.get() or _NO_STEPS


def brightness_differs(episode: Episode | None, planes: Sequence[Any]) -> bool:
    """Whether images to predict, 2D (Y, X[, C]) arrays, differ in brightness from the episode's
    supports or among themselves (``preprocessing.brightness_drifts`` over all of them, or
    ``preprocessing.highlights_move`` from the supports): then each is best normalised by its
    own percentiles. Supports from one microscope session and queries from another differ;
    images of one kind with more or fewer objects do not."""
    supports = [s.image for s in episode.supports] if episode is not None else []
    if len(supports) + len(planes) < 2:
        return False
    return brightness_drifts([*supports, *planes]) or (bool(supports) and highlights_move(supports, planes))


class Segmenter(ABC):
    """Few-shot multi-class segmentation from an ``Episode``.

    Subclasses implement ``predict_proba``; everything else derives from it.
    """

    name: str = "segmenter"
    device: str = "cpu"

    @abstractmethod
    def predict_proba(self, episode: Episode, query: Any, **options: Any) -> np.ndarray:
        """Class probabilities of a 2D query: (N+1, Y, X) float32, class 0 = background."""

    def predict(self, episode: Episode, query: Any, **options: Any) -> np.ndarray:
        """Label image of a 2D query (Y, X): value k = class k, 0 = background."""
        return self._proba_and_labels(episode, query, **options)[1]

    def predict_with_uncertainty(
        self, episode: Episode, query: Any, method: str = "least_confidence", **options: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and per-pixel uncertainty of a 2D query from one ``predict_proba`` call.

        Returns ``(labels, uncertainty)``: the labels as ``predict`` gives them (the argmax of
        the probabilities; for Label Anything the argmax of the softmax is the argmax of the
        logits) and a (Y, X) float32 map in 0..1 (``uncertainty.uncertainty_map``; ``method``
        "least_confidence" = 1 - max probability, or "entropy").
        """
        proba, labels = self._proba_and_labels(episode, query, **options)
        return labels, uncertainty_map(proba, method)

    def _proba_and_labels(self, episode: Episode, query: Any, **options: Any) -> tuple[np.ndarray, np.ndarray]:
        """One prediction of a 2D query: its (N+1, Y, X) probabilities and the (Y, X) labels
        ``predict`` and ``predict_with_uncertainty`` give, here their argmax. A segmenter whose
        labels are more than the argmax overrides this one method."""
        proba = self.predict_proba(episode, query, **options)
        return proba, proba.argmax(axis=0).astype(labels_dtype(episode.n_classes))

    def iter_predict_stack(
        self,
        episode: Episode,
        stack: Any,
        axis: int | tuple[int, ...] = 0,
        planes: Sequence[tuple[int, ...] | int] | None = None,
        cancel: CancelCheck | None = None,
        rgb: bool | None = None,
        uncertainty: bool = False,
        normalise: str = "auto",
        plane_progress: ProgressCallback | None = None,
        probabilities: bool = False,
        **options: Any,
    ) -> Iterator[tuple]:
        """Yield ``(plane_index, labels)`` for each plane of ``stack`` (see ``predict_stack``).

        ``normalise`` (see ``normalisation``): "stack" predicts the planes with one shared
        intensity range, so planes keep the same contrast through the stack; "plane" normalises
        each plane (and each support) by its own percentiles, so a darker or brighter plane is
        seen like the others; "auto" (default) is "plane" where the planes differ in
        brightness and the segmenter supports it, else "stack". A ``value_range`` option wins
        over both. ``cancel`` is checked before every plane, and within a plane by segmenters
        that predict it in steps (``PlaneSteps``), which also report them to
        ``plane_progress(done, total)``. With ``uncertainty=True`` it yields
        ``(plane_index, labels, uncertainty)`` instead, both from one
        ``predict_with_uncertainty`` call per plane. With ``probabilities=True`` it yields
        ``(plane_index, labels, proba)``: the plane's (N+1, Y, X) float32 ``predict_proba`` and the
        labels ``predict`` gives from that same prediction (not with ``uncertainty``).
        """
        stack = as_stack(stack)
        layout = stack_layout(stack.shape, axis, rgb)
        episode.validate()
        plane_shape = (*layout.spatial_shape, *(layout.shape[-1:] if layout.rgb else ()))
        self.check_plane_memory(episode, plane_shape, np.dtype(stack.dtype))  # before any plane is read
        indices = layout.plane_indices() if planes is None else layout.check_planes(planes)
        if is_cancelled(cancel):  # before the brightness check reads any plane
            raise PredictionCancelled("prediction cancelled")
        if "value_range" not in options:
            per_plane = self.normalisation(stack, axis, rgb, normalise, episode) == "plane"
            options["value_range"] = PER_PLANE if per_plane else self._stack_range(stack)
        elif check_normalise(normalise) == "plane":
            raise ValueError("pass either value_range or normalise='plane', not both")
        if uncertainty and probabilities:
            raise ValueError("ask for uncertainty or for probabilities, not both")
        if probabilities:

            def predict_plane(plane, **extra):
                with PlaneSteps(plane_progress, cancel):
                    return self._proba_and_labels(episode, plane, **options, **extra)[::-1]
        elif uncertainty:

            def predict_plane(plane, **extra):
                with PlaneSteps(plane_progress, cancel):
                    return self.predict_with_uncertainty(episode, plane, **options, **extra)
        else:

            def predict_plane(plane, **extra):
                with PlaneSteps(plane_progress, cancel):
                    return self.predict(episode, plane, **options, **extra)

        for index, result in self._predict_planes(episode, stack, layout, indices, cancel, predict_plane, options):
            yield (index, *result) if uncertainty or probabilities else (index, result)

    def check_plane_memory(self, episode: Episode, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Refuse, before any plane is read, planes of ``shape`` (Y, X[, C]) and ``dtype`` this
        segmenter could not predict in the memory available (a ``MemoryError``); this default
        refuses nothing."""
        return None

    #: whether "auto" may normalise plane by plane (supports included): segmenters whose
    #: supports follow the same per-image rule as their queries
    normalises_per_plane: bool = False

    def normalisation(self, stack: Any, axis: int | tuple[int, ...] = 0, rgb: bool | None = None,
                      normalise: str = "auto", episode: Episode | None = None) -> str:  # fmt: skip
        """What ``normalise`` resolves to for ``stack``: "stack" or "plane" (see
        ``iter_predict_stack``); "auto" looks for drift among up to ``DRIFT_PLANES`` evenly
        spaced planes, and compares a lone image with the ``episode``'s supports
        (``brightness_differs``)."""
        if check_normalise(normalise) != "auto":
            return normalise
        if not self.normalises_per_plane:
            return "stack"
        stack = as_stack(stack)
        layout = stack_layout(stack.shape, axis, rgb)
        if layout.n_planes > 1:  # the planes among themselves (supports are mostly planes of it)
            return "plane" if brightness_drifts(sample_planes(stack, layout, DRIFT_PLANES)) else "stack"
        return "plane" if brightness_differs(episode, sample_planes(stack, layout, 1)) else "stack"

    def _stack_range(self, stack: Any) -> tuple[float, float] | None:
        """The one intensity range of a stack's planes in "stack" normalisation."""
        return stack_value_range(stack)

    def _predict_planes(
        self,
        episode: Episode,
        stack: Any,
        layout,
        indices: list[tuple[int, ...]],
        cancel,
        predict_plane: Callable[[np.ndarray], Any],
        options: dict[str, Any],
    ) -> Iterator[tuple[tuple[int, ...], Any]]:
        """``(index, predict_plane(plane))`` one plane at a time; a segmenter that can batch
        planes, or that looks at neighbouring planes (``predict_plane(plane, **extra)`` passes
        extra options for that plane), overrides this (``options`` are the prediction options,
        e.g. ``value_range``)."""
        for index in indices:
            if is_cancelled(cancel):
                raise PredictionCancelled("prediction cancelled")
            yield index, predict_plane(layout.take(stack, index))

    def predict_stack(
        self,
        episode: Episode,
        stack: Any,
        axis: int | tuple[int, ...] = 0,
        progress: ProgressCallback | None = None,
        planes: Sequence[tuple[int, ...] | int] | None = None,
        cancel: CancelCheck | None = None,
        rgb: bool | None = None,
        out: Any = None,
        plane_progress: ProgressCallback | None = None,
        **options: Any,
    ) -> np.ndarray:
        """Label every plane of a (Z, Y, X), (T, Z, Y, X) or (..., Y, X, 3|4) stack.

        Args:
            episode: classes and prompted supports.
            stack: the array, NumPy or lazy (zarr, dask, memmap: planes are read one at a time);
                all axes in front of (Y, X[, C]) are plane axes by default.
            axis: the plane axis or axes (see ``stacks.stack_layout``).
            progress: called as ``progress(done, total)`` after each plane.
            planes: only these plane indices (others stay 0), e.g. ``[(3,), (4,)]``.
            cancel: a ``threading.Event`` or a callable; when it turns true the run stops with
                ``PredictionCancelled``.
            rgb: whether the last axis is colour (default: guessed from its size, see
                ``stacks.stack_layout``).
            out: where to write the labels (e.g. a zarr array, so memory does not grow with
                the number of planes); it must have the shape of the result. Default: a new
                NumPy array.
            plane_progress: called as ``plane_progress(done, total)`` within a plane by
                segmenters that predict a plane in steps (see ``PlaneSteps``).
            options: ``normalise`` ("auto", "stack" or "plane", see ``iter_predict_stack``) and
                the segmenter's prediction options.

        Returns:
            Labels with the stack's shape minus any colour axis, uint8 (uint16 above 255
            classes); ``out`` when given.
        """
        stack = as_stack(stack)
        layout = stack_layout(stack.shape, axis, rgb)
        if out is None:
            out = np.zeros(layout.labels_shape, dtype=labels_dtype(episode.n_classes))
        elif tuple(out.shape) != layout.labels_shape:
            raise ValueError(f"out has shape {tuple(out.shape)}; this stack's labels need {layout.labels_shape}")
        total = layout.n_planes if planes is None else len(layout.check_planes(planes))
        planes_iter = self.iter_predict_stack(
            episode, stack, axis, planes=planes, cancel=cancel, rgb=rgb, plane_progress=plane_progress, **options
        )
        for done, (index, labels) in enumerate(planes_iter, start=1):
            out[layout.labels_index(index)] = labels
            if progress is not None:
                progress(done, total)
        return out
