"""The output layer of a run, written plane by plane as the planes finish, and undone on failure.

A stack run shows its progress in the viewer: each finished plane goes into the query's output
Labels layer at once. The first write goes through ``layers.write_output`` (which copies the
layer's data, or creates the layer), so the array the layer held before the run is never
written to and is kept as it was; later planes are written in place into the new array. A
cancelled, stopped or failed run calls ``restore``: the layer gets back its previous array,
metadata, features and colours, and a layer the run created is removed, so every layer is as
it was before the run. Nothing here copies a stack a second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..labels import class_names
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
