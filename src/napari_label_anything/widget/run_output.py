"""The output layers of a run, written plane by plane as the planes finish, and undone on failure.

A stack run shows its progress in the viewer: each finished plane goes into the query's output
Labels layer at once. The first write goes through ``layers.write_output`` (which copies the
layer's data, or creates the layer), so the array the layer held before the run is never
written to and is kept as it was; later planes are written in place into the new array. A
cancelled, stopped or failed run calls ``restore``: the layer gets back its previous array,
metadata, features and colours, and a layer the run created is removed, so every layer is as
it was before the run. Nothing here copies a stack a second time.

``ProgressiveUncertainty`` does the same for the query's uncertainty layer (``feedback``): each
plane's map and score appear with its labels, and a failed run takes them back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..inference.uncertainty import plane_score
from ..labels import class_names
from .feedback import SCORES_KEY, find_uncertainty_layer, write_uncertainty
from .layers import CLASSES_KEY, find_output_layer, spatial_shape, write_output

logger = logging.getLogger(__name__)


def _unwrapped(layer):
    return getattr(layer, "__wrapped__", layer)


@dataclass
class _Saved:
    """A layer as it was before the run's first write into it."""

    layer: Any
    data: Any
    metadata: dict
    features: Any
    colormap: Any


@dataclass
class ProgressiveOutput:
    """Writes a run's planes into the output layer of ``query`` as they arrive."""

    viewer: Any
    query: Any
    classes: Any
    saved: list[_Saved] = field(default_factory=list)  # layers the run changed, as they were
    created: list = field(default_factory=list)  # layers the run added
    written: int = 0  # planes written so far

    def _touched(self, layer) -> bool:
        layers = [s.layer for s in self.saved] + self.created
        return any(_unwrapped(layer) is _unwrapped(other) for other in layers)

    def write(self, index: tuple[int, ...], labels: np.ndarray, so_far: dict[tuple[int, ...], np.ndarray]):
        """Write plane ``index`` (``so_far``: every plane of the run until now, this one included)."""
        layer = find_output_layer(self.viewer, self.query)
        if layer is not None and self._touched(layer) and self._fits(layer, labels):
            layer.data[index] = np.where(labels > len(self.classes), 0, labels)
            layer.refresh()
        else:
            # the first plane (or the user removed or replaced the layer meanwhile)
            if layer is None:
                new = True
            else:
                new = False
                if not self._touched(layer):
                    self.saved.append(
                        _Saved(layer, layer.data, dict(layer.metadata), layer.features.copy(), layer.colormap)
                    )
            layer = write_output(self.viewer, self.query, so_far, self.classes)
            if new:
                self.created.append(layer)
        self.written += 1
        return layer

    def _fits(self, layer, labels) -> bool:
        if tuple(layer.data.shape) != spatial_shape(self.query):
            return False
        if layer.metadata.get(CLASSES_KEY) != class_names(self.classes.names):
            return False
        return np.asarray(labels).max(initial=0) <= np.iinfo(layer.data.dtype).max

    def restore(self) -> None:
        """Undo every write: removed layers the run created, previous data back in the others.

        A layer the user removed meanwhile stays removed. Safe to call twice.
        """
        present = {id(_unwrapped(layer)) for layer in self.viewer.layers}
        for layer in self.created:
            if id(_unwrapped(layer)) in present:
                self.viewer.layers.remove(layer)
        for saved in reversed(self.saved):
            layer = saved.layer
            if id(_unwrapped(layer)) not in present:
                continue
            layer.data = saved.data
            layer.metadata.clear()
            layer.metadata.update(saved.metadata)
            layer.features = saved.features
            layer.colormap = saved.colormap
        self.created, self.saved, self.written = [], [], 0


@dataclass
class ProgressiveUncertainty:
    """Writes a run's uncertainty maps into the query's uncertainty layer as they arrive.

    The first plane written into a layer goes through ``feedback.write_uncertainty`` (which
    copies the layer's data, or creates the layer); later planes are written in place into that
    copy, with their scores. A layer found anew mid-run (the query renamed, or the layer
    removed) starts again the same way, with the planes from then on. ``restore`` puts back every
    layer's previous data, scores and contrast limits, and removes the layers the run created.
    """

    viewer: Any
    query: Any
    n_channels: int  # classes + background
    layer: Any = None  # the layer written into last
    saved: list = field(default_factory=list)  # (layer, data, metadata, contrast limits) as before the run
    created: list = field(default_factory=list)  # layers the run added

    def _touched(self, layer) -> bool:
        return any(_unwrapped(layer) is _unwrapped(other) for other in [s[0] for s in self.saved] + self.created)

    def write(self, index: tuple[int, ...], uncertainty: np.ndarray):
        """Write plane ``index``'s (Y, X) float32 uncertainty map and its score."""
        layer = find_uncertainty_layer(self.viewer, self.query)
        if layer is not None and self._touched(layer) and tuple(layer.data.shape) == spatial_shape(self.query):
            layer.data[index] = uncertainty
            layer.metadata[SCORES_KEY][index] = plane_score(uncertainty)
            layer.refresh()
        else:
            if layer is not None and not self._touched(layer):
                self.saved.append((layer, layer.data, dict(layer.metadata), tuple(layer.contrast_limits)))
            new = layer is None
            layer = write_uncertainty(self.viewer, self.query, {index: uncertainty}, self.n_channels)
            if new:
                self.created.append(layer)
        self.layer = layer
        return layer

    def restore(self) -> None:
        """Undo every write (a layer the user removed meanwhile stays removed). Safe to call twice."""
        present = {id(_unwrapped(layer)) for layer in self.viewer.layers}
        for layer in self.created:
            if id(_unwrapped(layer)) in present:
                self.viewer.layers.remove(layer)
        for layer, data, metadata, limits in reversed(self.saved):
            if id(_unwrapped(layer)) not in present:
                continue
            layer.data = data
            layer.metadata.clear()
            layer.metadata.update(metadata)
            layer.contrast_limits = limits
        self.layer, self.saved, self.created = None, [], []
