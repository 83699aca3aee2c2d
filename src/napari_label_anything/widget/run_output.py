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
from .layers import CLASSES_KEY, find_output_layer, spatial_shape, unwrapped, write_output

logger = logging.getLogger(__name__)


@dataclass
class _LayerWrites:
    """The layers a run wrote into, each as it was before the run's first write, and the layers
    the run created: what ``undo`` needs to leave the viewer as it was."""

    saved: list[tuple[Any, dict]] = field(default_factory=list)  # (layer, {attribute: value before})
    created: list = field(default_factory=list)

    def touched(self, layer) -> bool:
        layers = [saved for saved, _ in self.saved] + self.created
        return any(unwrapped(layer) is unwrapped(other) for other in layers)

    def keep(self, layer, **before) -> None:
        """Remember ``layer``'s attributes as they are (copies where the run would change them)."""
        self.saved.append((layer, before))

    def undo(self, viewer) -> None:
        """Remove the created layers, put the saved attributes back; a layer the user removed
        meanwhile stays removed. Safe to call twice."""
        present = {id(unwrapped(layer)) for layer in viewer.layers}
        for layer in self.created:
            if id(unwrapped(layer)) in present:
                viewer.layers.remove(layer)
        for layer, before in reversed(self.saved):
            if id(unwrapped(layer)) not in present:
                continue
            for name, value in before.items():
                if name == "metadata":  # napari's metadata dict is kept; its contents go back
                    layer.metadata.clear()
                    layer.metadata.update(value)
                else:
                    setattr(layer, name, value)
        self.saved, self.created = [], []


@dataclass
class ProgressiveOutput:
    """Writes a run's planes into the output layer of ``query`` as they arrive."""

    viewer: Any
    query: Any
    classes: Any
    writes: _LayerWrites = field(default_factory=_LayerWrites)
    written: int = 0  # planes written so far

    def write(self, index: tuple[int, ...], labels: np.ndarray, so_far: dict[tuple[int, ...], np.ndarray]):
        """Write plane ``index`` (``so_far``: every plane of the run until now, this one included)."""
        layer = find_output_layer(self.viewer, self.query)
        if layer is not None and self.writes.touched(layer) and self._fits(layer, labels):
            layer.data[index] = np.where(labels > len(self.classes), 0, labels)
            layer.refresh()
        else:
            # the first plane (or the user removed or replaced the layer meanwhile)
            if layer is None:
                new = True
            else:
                new = False
                if not self.writes.touched(layer):
                    self.writes.keep(layer, data=layer.data, metadata=dict(layer.metadata),
                                     features=layer.features.copy(), colormap=layer.colormap)  # fmt: skip
            layer = write_output(self.viewer, self.query, so_far, self.classes)
            if new:
                self.writes.created.append(layer)
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
        self.writes.undo(self.viewer)
        self.written = 0


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
    writes: _LayerWrites = field(default_factory=_LayerWrites)

    def write(self, index: tuple[int, ...], uncertainty: np.ndarray):
        """Write plane ``index``'s (Y, X) float32 uncertainty map and its score."""
        layer = find_uncertainty_layer(self.viewer, self.query)
        if layer is not None and self.writes.touched(layer) and tuple(layer.data.shape) == spatial_shape(self.query):
            layer.data[index] = uncertainty
            layer.metadata[SCORES_KEY][index] = plane_score(uncertainty)
            layer.refresh()
        else:
            if layer is not None and not self.writes.touched(layer):
                self.writes.keep(layer, data=layer.data, metadata=dict(layer.metadata),
                                 contrast_limits=tuple(layer.contrast_limits))  # fmt: skip
            new = layer is None
            layer = write_uncertainty(self.viewer, self.query, {index: uncertainty}, self.n_channels)
            if new:
                self.writes.created.append(layer)
        self.layer = layer
        return layer

    def restore(self) -> None:
        """Undo every write (a layer the user removed meanwhile stays removed). Safe to call twice."""
        self.writes.undo(self.viewer)
        self.layer = None
