"""The plugin's output layers, in one place: what they are, how they are found and written.

A query's results go into layers the plugin owns, each marked in its metadata with the query
layer's name (user layers never match): ``"<query> labels"`` (``OUTPUT_KEY``, the class labels
of runs and previews), ``"<query> uncertainty"`` (``UNCERTAINTY_KEY``, per-pixel uncertainty
with each plane's mean under ``SCORES_KEY``) and ``"<query> objects"`` (``OBJECTS_KEY``, one
label per object). A new output layer goes directly above its query, below the prompt layers,
and the user's selection and mode are given back (``place_output_layer``).

A run writes its planes as they finish (``ProgressiveOutput``, ``ProgressiveUncertainty``). The
first write goes through ``write_output`` / ``write_uncertainty`` (which copy the layer's data,
or create the layer), so the array a layer held before the run is never written to; later planes
are written in place into the new array. A cancelled, stopped or failed run calls ``restore``:
each layer gets back its previous array, metadata, features, colours and contrast limits, and a
layer the run created is removed. Nothing here copies a stack a second time. A preview writes
its one plane in place (``write_preview``).

No Qt here: these functions work on a ``napari.Viewer`` and its layers only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..inference.uncertainty import plane_score
from ..labels import CLASSES_KEY, class_names, labels_dtype
from .class_table import ClassTable
from .layer_conversion import label_colormap, same_layer, spatial_shape, unwrapped

logger = logging.getLogger(__name__)

OUTPUT_KEY = "label_anything_output_for"  # metadata of output layers: the query layer's name
OBJECTS_KEY = "label_anything_objects_for"  # metadata of objects layers: the query layer's name
UNCERTAINTY_KEY = "label_anything_uncertainty_for"  # metadata: the query layer's name
SCORES_KEY = "label_anything_plane_uncertainty"  # metadata: {plane index: mean uncertainty}


def find_plugin_layer(viewer, key: str, query_layer, kind: str):
    """The layer of type ``kind`` ("Labels", "Image") whose metadata ``key`` names
    ``query_layer``: a layer the plugin wrote for that query, or None (user layers never match)."""
    for layer in viewer.layers:
        if layer.metadata.get(key) == query_layer.name and layer.__class__.__name__ == kind:
            return layer
    return None


def find_output_layer(viewer, query_layer):
    """The plugin's own output layer for ``query_layer``, or None (user layers never match)."""
    return find_plugin_layer(viewer, OUTPUT_KEY, query_layer, "Labels")


def keep_selection(viewer) -> tuple:
    """The layer selection as it is now: (selected layers, the active layer, its mode)."""
    selection = viewer.layers.selection
    active = selection.active
    return list(selection), active, getattr(active, "mode", None)


def _position(layers, layer) -> int | None:
    return next((i for i, other in enumerate(layers) if same_layer(other, layer)), None)


def place_output_layer(viewer, layer, query_layer, kept: tuple) -> None:
    """Put a layer the plugin just added where it covers no scribbles, and give the selection back.

    ``layer`` goes directly above ``query_layer`` in the layer list, so below the prompt layers
    (added after their images); the selected layers, the active layer and its mode become
    ``kept`` again (``keep_selection`` before adding: napari selects the layer it adds, and the
    next drag would pan the new layer instead of painting the prompt layer).
    """
    layers = viewer.layers
    query, current = _position(layers, query_layer), _position(layers, layer)
    if query is not None and current is not None:
        layers.move(current, query + 1)  # before the layer above the query (pre-move index)
    selected, active, mode = kept
    present = [other for other in selected if _position(layers, other) is not None]
    layers.selection.clear()
    layers.selection.update(present)
    if active is not None and mode is not None and _position(layers, active) is not None and active.mode != mode:
        active.mode = mode


def write_output(viewer, query_layer, predicted: dict[tuple[int, ...], np.ndarray], classes: ClassTable):
    """Write predicted planes into the plugin's output layer for ``query_layer``.

    Creates ``"<query> labels"`` (a unique name if a user layer already has it) or updates the
    existing output layer; planes not in ``predicted`` keep their values (0 when new).
    """
    shape = spatial_shape(query_layer)
    layer = find_output_layer(viewer, query_layer)
    dtype = labels_dtype(len(classes))
    if layer is not None and tuple(layer.data.shape) == shape:
        data = np.array(layer.data, dtype=dtype)
    else:
        data = np.zeros(shape, dtype=dtype)
    for index, plane in predicted.items():
        # a value above the classes is the background class of supports_to_episode: label 0
        data[index] = np.where(plane > len(classes), 0, plane)
    names = class_names(classes.names)
    features = {"index": list(names), "class": list(names.values())}
    if layer is None:
        name = free_layer_name(viewer, f"{query_layer.name} labels")
        kept = keep_selection(viewer)
        layer = viewer.add_labels(
            data, name=name, scale=query_layer.scale, translate=query_layer.translate, opacity=0.6
        )
        layer.metadata[OUTPUT_KEY] = query_layer.name
        place_output_layer(viewer, layer, query_layer, kept)
    else:
        layer.data = data
    layer.metadata[CLASSES_KEY] = names
    layer.features = features
    layer.colormap = label_colormap(classes)
    return layer


def free_layer_name(viewer, name: str) -> str:
    """``name``, or ``"name (2)"``, ``"name (3)"``, ... : the first no layer of ``viewer`` has, so a
    new output layer never takes a user layer's name."""
    existing = {layer.name for layer in viewer.layers}
    candidate, suffix = name, 2
    while candidate in existing:
        candidate, suffix = f"{name} ({suffix})", suffix + 1
    return candidate


def find_objects_layer(viewer, query_layer):
    """The plugin's objects layer for ``query_layer``, or None (user layers never match)."""
    return find_plugin_layer(viewer, OBJECTS_KEY, query_layer, "Labels")


def write_objects(viewer, query_layer, instances: np.ndarray):
    """Write ``instances`` (one label per object) into ``"<query> objects"`` (created when missing)."""
    layer = find_objects_layer(viewer, query_layer)
    if layer is not None:
        layer.data = instances
        return layer
    name = free_layer_name(viewer, f"{query_layer.name} objects")
    kept = keep_selection(viewer)
    layer = viewer.add_labels(
        instances, name=name, scale=query_layer.scale, translate=query_layer.translate, opacity=0.6,
        metadata={OBJECTS_KEY: query_layer.name},
    )  # fmt: skip
    place_output_layer(viewer, layer, query_layer, kept)  # below the prompts; the selection kept
    return layer


def find_uncertainty_layer(viewer, query_layer):
    """The plugin's uncertainty layer for ``query_layer``, or None (user layers never match)."""
    return find_plugin_layer(viewer, UNCERTAINTY_KEY, query_layer, "Image")


def is_plugin_output(layer) -> bool:
    """An uncertainty layer written by the plugin (not an image to segment or prompt)."""
    return UNCERTAINTY_KEY in layer.metadata


def write_uncertainty(viewer, query_layer, planes: dict[tuple[int, ...], np.ndarray], n_channels: int):
    """Write per-plane uncertainty maps into ``"<query> uncertainty"`` (created when missing).

    Planes not in ``planes`` keep their values (0 when new) and their scores; ``n_channels``
    (classes + background) sets the top of the colour range, 1 - 1/K, the most a pixel can reach.
    """
    shape = spatial_shape(query_layer)
    layer = find_uncertainty_layer(viewer, query_layer)
    if layer is not None and tuple(layer.data.shape) == shape:
        data = np.array(layer.data, dtype=np.float32)
        scores = dict(layer.metadata.get(SCORES_KEY, {}))
    else:
        data, scores = np.zeros(shape, np.float32), {}
    for index, plane in planes.items():
        data[index] = plane
        scores[index] = plane_score(plane)
    top = max(1.0 - 1.0 / max(n_channels, 2), 1e-3)
    if layer is None:
        name = free_layer_name(viewer, f"{query_layer.name} uncertainty")
        kept = keep_selection(viewer)
        layer = viewer.add_image(
            data, name=name, scale=query_layer.scale, translate=query_layer.translate, colormap="inferno",
            blending="additive", opacity=0.5, contrast_limits=(0.0, top),
            metadata={UNCERTAINTY_KEY: query_layer.name},  # before the layer lists refresh
        )  # fmt: skip
        place_output_layer(viewer, layer, query_layer, kept)  # below the prompts; the selection kept
    else:
        layer.data = data
        layer.contrast_limits = (0.0, top)
    layer.metadata[SCORES_KEY] = scores
    return layer


def write_preview(viewer, query_layer, index: tuple[int, ...], labels, classes):
    """Write one plane into the output layer of ``query_layer``: in place when the layer exists
    (the other planes are not copied), else through ``write_output`` (which creates it)."""
    layer = find_output_layer(viewer, query_layer)
    fits = layer is not None and tuple(layer.data.shape) == spatial_shape(query_layer)
    fits = fits and layer.metadata.get(CLASSES_KEY) == class_names(classes.names)  # same colours and names
    if not fits or np.asarray(labels).max(initial=0) > np.iinfo(layer.data.dtype).max:
        return write_output(viewer, query_layer, {index: labels}, classes)
    layer.data[index] = np.where(labels > len(classes), 0, labels)
    layer.refresh()
    return layer


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
