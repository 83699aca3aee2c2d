"""The segmenter interface: an ``Episode`` plus a query image -> a multi-class label image.

``Segmenter`` is what every model implements (Label Anything, the embedded default) and all the
widget and the CLI use: ``predict_proba`` is the one abstract method; ``predict``, stack
iteration (lazy, cancellable, with progress) and ``predict_stack`` derive from it.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..episode import Episode
from ..labels import labels_dtype
from ..preprocessing import stack_value_range
from ..stacks import as_stack, stack_layout
from .uncertainty import uncertainty_map

ProgressCallback = Callable[[int, int], Any]
CancelCheck = Callable[[], bool] | threading.Event


class PredictionCancelled(RuntimeError):
    """Raised inside a stack prediction when its ``cancel`` check turns true."""


def is_cancelled(cancel: CancelCheck | None) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())


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
        **options: Any,
    ) -> Iterator[tuple]:
        """Yield ``(plane_index, labels)`` for each plane of ``stack`` (see ``predict_stack``).

        Planes are predicted with one shared intensity range, so 16-bit planes keep the same
        contrast through the stack. ``cancel`` is checked before every plane. With
        ``uncertainty=True`` it yields ``(plane_index, labels, uncertainty)`` instead, both
        from one ``predict_with_uncertainty`` call per plane.
        """
        stack = as_stack(stack)
        layout = stack_layout(stack.shape, axis, rgb)
        episode.validate()
        indices = layout.plane_indices() if planes is None else layout.check_planes(planes)
        if "value_range" not in options:
            options["value_range"] = stack_value_range(stack)
        if uncertainty:

            def predict_plane(plane, **extra):
                return self.predict_with_uncertainty(episode, plane, **options, **extra)
        else:

            def predict_plane(plane, **extra):
                return self.predict(episode, plane, **options, **extra)

        for index, result in self._predict_planes(episode, stack, layout, indices, cancel, predict_plane, options):
            yield (index, *result) if uncertainty else (index, result)

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
        for done, (index, labels) in enumerate(
            self.iter_predict_stack(episode, stack, axis, planes=planes, cancel=cancel, rgb=rgb, **options), start=1
        ):
            out[layout.labels_index(index)] = labels
            if progress is not None:
                progress(done, total)
        return out
