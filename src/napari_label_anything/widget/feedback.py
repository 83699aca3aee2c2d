"""The annotation loop: where the model is unsure, and corrected planes fed back as supports.

After a run (with "uncertainty layer" checked) the query has an uncertainty Image layer
``"<query> uncertainty"`` whose metadata keeps each plane's mean uncertainty from its latest
run. ``suggest_planes`` ranks those planes (``inference.uncertainty.rank_planes``) and moves
the viewer to the first. The user corrects the output Labels layer on that plane with napari's
own tools (the worst regions are enough); ``add_prediction_as_support`` then copies that plane
of the output into mask prompts of the query layer as a complete annotation
(``corrections.as_complete_prompts``: its background pixels are background prompts), and the
query becomes (or already is) a support: every prompted plane of a stack support is one support
of the episode, so the next run uses it. A model without background prompts (Label Anything)
uses its classes only. Such a complete plane is kept as the user left it: ``kept_planes`` gives
it to every later run and preview, which show it unchanged (``corrections.keep_planes``) and
count where the model now disagrees. Only the new support plane is new to the model: a Label
Anything segmenter finds every query plane in its feature cache.

The functions need a viewer only (no Qt); ``FeedbackPanel`` is the dock's part (its host, the
dock, described by ``FeedbackHost``). The uncertainty layer itself is in ``output_layers.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ..corrections import as_complete_prompts, complete_planes
from ..inference.uncertainty import rank_planes
from .class_table import BACKGROUND_PROMPT
from .layer_conversion import same_layer, spatial_shape
from .output_layers import SCORES_KEY, find_output_layer, find_uncertainty_layer


def plane_index(query_layer, plane) -> tuple[int, ...]:
    """``plane`` (an int or a tuple over the plane axes) checked against the query's shape."""
    shape = spatial_shape(query_layer)
    index = (int(plane),) if np.isscalar(plane) else tuple(int(p) for p in plane)
    n_plane_axes = len(shape) - 2
    if len(index) != n_plane_axes or any(not 0 <= i < s for i, s in zip(index, shape, strict=False)):
        raise ValueError(f"plane {plane!r} is not a plane of {query_layer.name!r} (shape {shape})")
    return index


def move_to_plane(viewer, query_layer, index: tuple[int, ...]) -> None:
    """Show plane ``index`` of ``query_layer`` (its scale and translate taken into account)."""
    if not index:
        return
    shape = spatial_shape(query_layer)
    world = query_layer.data_to_world([*index, *(s / 2 for s in shape[len(index) :])])
    offset = viewer.dims.ndim - len(shape)
    for axis, value in enumerate(world[: len(index)]):
        viewer.dims.set_point(offset + axis, float(value))


def prompted_planes(support) -> set[tuple[int, ...]]:
    """The planes of a stack support that carry mask prompts."""
    labels = np.asarray(support.labels.data)
    if labels.ndim <= 2:
        return {()} if labels.any() else set()
    flat = labels.reshape(-1, *labels.shape[-2:]).reshape(-1, labels.shape[-2] * labels.shape[-1])
    return {tuple(int(i) for i in np.unravel_index(j, labels.shape[:-2])) for j in np.nonzero(flat.any(axis=1))[0]}


def kept_planes(supports, query_layer) -> dict[tuple[int, ...], np.ndarray]:
    """{plane index: (Y, X) labels} of the query's planes that its own supports annotate
    completely (every pixel prompted, background prompts as 0): the planes runs and previews
    must show as the user gave them (``corrections.keep_planes``)."""
    n_plane_axes = len(spatial_shape(query_layer)) - 2
    kept: dict[tuple[int, ...], np.ndarray] = {}
    for support in supports:
        if same_layer(support.image, query_layer):
            kept.update(complete_planes(np.asarray(support.labels.data), BACKGROUND_PROMPT, n_plane_axes))
    return kept


def kept_note(disagreements: dict[tuple[int, ...], int]) -> str:
    """The status text for kept planes: how many, and where the model now disagrees."""
    if not disagreements:
        return ""
    differ = sum(disagreements.values())
    planes = ", ".join(_plane_text(i) for i, n in sorted(disagreements.items()) if n)
    note = f"{len(disagreements)} corrected plane(s) kept as you painted them"
    return note + (f" (the model differs on {differ} pixel(s), plane(s) {planes})" if differ else "")


class FeedbackHost(Protocol):
    """What ``FeedbackPanel`` uses of the dock."""

    viewer: Any
    supports: list
    classes: Any
    status: Any  # the status line (a QLabel)

    def guard(self, action: Callable[[], Any], what: str) -> Any: ...

    def chosen_query(self) -> Any: ...

    def plane_indices(self, query_layer, scope: str) -> list[tuple[int, ...]]: ...

    def add_support(self, image_layer=None, labels_layer=None) -> Any: ...

    def refresh_support_list(self, event=None) -> None: ...


class FeedbackPanel:
    """The dock's "Correct and feed back" box: the uncertainty choice, Suggest, Use this plane."""

    def __init__(self, host: FeedbackHost) -> None:
        self.host = host

    def build(self):
        from qtpy.QtWidgets import QCheckBox, QGroupBox, QHBoxLayout, QPushButton, QVBoxLayout

        box = QGroupBox("Correct and feed back")
        layout = QVBoxLayout(box)
        self.uncertainty_check = QCheckBox("write an uncertainty layer")
        self.uncertainty_check.setChecked(True)
        self.uncertainty_check.setToolTip(
            "Each run also writes '<query> uncertainty' (1 - the top class probability per pixel),\n"
            "used by 'Suggest next plane'."
        )
        layout.addWidget(self.uncertainty_check)
        row = QHBoxLayout()
        self.suggest_button = QPushButton("Suggest next plane")
        self.suggest_button.setToolTip(
            "Go to the plane of the query where the last run was least sure (highest mean\n"
            "uncertainty): the plane most worth correcting. Planes already used as supports are skipped."
        )
        self.suggest_button.clicked.connect(lambda: self.host.guard(self.suggest_planes, "cannot suggest a plane"))
        self.feedback_button = QPushButton("Use this plane as support")
        self.feedback_button.setToolTip(
            "After correcting the output labels on this plane with napari's Labels tools (fixing the\n"
            "worst regions is enough), add this plane of the query as a support: every pixel, background\n"
            "included, becomes a prompt, and later runs keep the plane exactly as you left it. Run again."
        )
        self.feedback_button.clicked.connect(
            lambda: self.host.guard(self.add_prediction_as_support, "cannot use this plane as support")
        )
        row.addWidget(self.suggest_button)
        row.addWidget(self.feedback_button)
        layout.addLayout(row)
        return box

    def _query_support(self, query_layer):
        return next((s for s in self.host.supports if same_layer(s.image, query_layer)), None)

    def suggest_planes(self, n: int = 1, query_layer=None) -> list[tuple[int, ...]]:
        """The ``n`` planes of the query most worth correcting, most uncertain first.

        Planes are ranked by their mean uncertainty in their latest run (the uncertainty layer
        keeps it); planes already used as supports are skipped. The viewer moves to the first
        and the status line shows the ranking. Raises ValueError before any run with uncertainty.
        """
        query_layer = query_layer or self.host.chosen_query()
        layer = find_uncertainty_layer(self.host.viewer, query_layer)
        scores = {} if layer is None else dict(layer.metadata.get(SCORES_KEY, {}))
        if not scores:
            raise ValueError(f"no uncertainty for {query_layer.name!r} yet: run with 'write an uncertainty layer' on")
        support = self._query_support(query_layer)
        done = prompted_planes(support) if support is not None else set()
        ranked = rank_planes(scores, n, exclude=done)
        if not ranked:
            raise ValueError(f"every plane of {query_layer.name!r} with uncertainty is already a support")
        move_to_plane(self.host.viewer, query_layer, ranked[0])
        shown = ", ".join(f"{_plane_text(i)} ({scores[i]:.3f})" for i in ranked)
        self.host.status.setText(f"most uncertain plane(s) of {query_layer.name!r} (mean uncertainty): {shown}")
        return ranked

    def add_prediction_as_support(self, plane=None, query_layer=None):
        """Make plane ``plane`` of the query (default: the plane shown) a support whose mask
        prompts are the output layer's labels on that plane as they are now (corrected or not),
        as a complete annotation: background pixels become background prompts
        (``BACKGROUND_PROMPT``), so later runs keep the plane as it is (``kept_planes``).

        The query layer becomes a support (mask prompts ``"<query> mask prompts"``) the first
        time; later planes are added to the same layers. Returns the ``SupportLayers``.
        """
        query_layer = query_layer or self.host.chosen_query()
        output = find_output_layer(self.host.viewer, query_layer)
        if output is None or tuple(output.data.shape) != spatial_shape(query_layer):
            raise ValueError(f"run {query_layer.name!r} first: it has no output labels to correct")
        if plane is None:
            index = self.host.plane_indices(query_layer, "current plane")[0]
        else:
            index = plane_index(query_layer, plane)
        labels = np.asarray(output.data[index] if index else output.data)
        if not labels.any():  # most likely a plane no run wrote; paint background prompts instead
            raise ValueError(f"the output has no labels on plane {_plane_text(index)}: paint the classes first")
        if labels.max() > len(self.host.classes):
            raise ValueError(f"the output has label {int(labels.max())}, above the {len(self.host.classes)} class(es)")
        support = self._query_support(query_layer)
        if support is None:
            support = self.host.add_support(query_layer)
            support.query_too = True
        elif not support.owns_labels:
            raise ValueError(f"{query_layer.name!r} is a support with your own labels layer: paint it there")
        data = np.asarray(support.labels.data)
        prompts = as_complete_prompts(labels, BACKGROUND_PROMPT)  # the background is an answer too
        if index:
            data[index] = prompts
        else:
            data[...] = prompts
        support.labels.data = data  # emits the data event: the support list updates
        self.host.refresh_support_list()
        self.host.status.setText(
            f"plane {_plane_text(index)} of {query_layer.name!r} is a support now and is kept as it is "
            f"(every pixel, background included, from {output.name!r}); run again to use it"
        )
        return support


def _plane_text(index: tuple[int, ...]) -> str:
    return ", ".join(map(str, index)) if index else "(2D)"
