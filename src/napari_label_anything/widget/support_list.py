"""The supports of the dock widget: add and remove support images, and the list of prompted planes.

``SupportActions`` is the dock's part (its host described by ``SupportHost``); the prompt layers are made
and read in ``layer_conversion.py``. Every prompted plane of a stack is one support of the episode, so the
list has one row per prompted plane (with its prompt counts per class); *go to plane* shows the
selected one, and a stroke on a plane that had no prompts adds a row and says so on the status
line, so that a stray stroke never becomes a support unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

from ..labels import BACKGROUND, CLASSES_KEY
from .feedback import move_to_plane
from .layer_conversion import (
    SupportLayers,
    _classes_of,
    create_support_layers,
    prompt_counts,
    same_layer,
    spatial_shape,
)


def plane_prompts(support: SupportLayers, n_classes: int) -> dict[tuple[int, ...], dict[str, np.ndarray]]:
    """Prompt counts (``layers.prompt_counts``) of each prompted plane of a support; ``()`` for 2D."""
    shape = spatial_shape(support.image)
    n_plane_axes = len(shape) - 2
    labels = np.asarray(support.labels.data)
    points, point_classes = np.asarray(support.points.data), _classes_of(support.points)
    boxes, box_classes = [np.asarray(v) for v in support.shapes.data], _classes_of(support.shapes)

    def plane_of(coords) -> tuple[int, ...]:
        return tuple(int(round(c)) for c in coords[:n_plane_axes])

    planes = {plane_of(c) for c in points} | {plane_of(v[0]) for v in boxes}
    if n_plane_axes == 0:
        planes |= {()} if labels.any() else set()
    else:
        flat = labels.reshape(-1, shape[-2] * shape[-1])
        planes |= {tuple(int(i) for i in np.unravel_index(j, shape[:-2])) for j in np.nonzero(flat.any(1))[0]}
    out = {}
    for plane in sorted(planes):
        on_point = np.array([plane_of(c) == plane for c in points], bool)
        on_box = np.array([plane_of(v[0]) == plane for v in boxes], bool)
        plane_labels = labels[plane] if plane else labels
        out[plane] = prompt_counts(plane_labels, point_classes[on_point], box_classes[on_box], n_classes)
    return out


class SupportHost(Protocol):
    """What ``SupportActions`` uses of the dock."""

    closed: bool
    viewer: Any
    supports: list  # the dock's list of SupportLayers, changed in place
    classes: Any
    status: Any  # the status line (a QLabel)

    def guard(self, action: Callable[[], Any], what: str) -> Any: ...

    def refresh_layer_choices(self, event=None) -> None: ...

    def schedule_encoding(self, *_) -> None: ...

    def watch_prompt_edits(self, support: SupportLayers) -> None: ...

    def bind_layer_keys(self, layer) -> None: ...


class SupportActions:
    """The dock's support box: add and remove supports, one row per prompted plane."""

    def __init__(self, host: SupportHost) -> None:
        self.host = host
        self._listed_planes: set = set()  # (support name, plane) rows of the last refresh

    def build(self, encoding_label) -> QGroupBox:
        """The box, with ``encoding_label`` (the background encoding's line) under the list."""
        support_box = QGroupBox("Supports (every prompted plane is one support)")
        support_layout = QVBoxLayout(support_box)
        row = QFormLayout()
        self.support_image_combo = QComboBox()
        self.support_labels_combo = QComboBox()
        row.addRow("image", self.support_image_combo)
        row.addRow("mask prompts", self.support_labels_combo)
        support_layout.addLayout(row)
        buttons = QHBoxLayout()
        self.add_support_button = QPushButton("add support")
        self.add_support_button.clicked.connect(lambda: self.host.guard(self.add_support, "cannot add support"))
        self.remove_support_button = QPushButton("remove selected")
        self.remove_support_button.clicked.connect(
            lambda: self.host.guard(self._remove_selected_support, "cannot remove support")
        )
        buttons.addWidget(self.add_support_button)
        buttons.addWidget(self.remove_support_button)
        support_layout.addLayout(buttons)
        self.support_list = QListWidget()
        self.support_list.setWordWrap(True)
        go_to = lambda *_: self.host.guard(self.go_to_support, "cannot go to plane")  # noqa: E731
        self.support_list.itemDoubleClicked.connect(go_to)
        support_layout.addWidget(self.support_list)
        support_layout.addWidget(encoding_label)  # encoding.py: background encoding
        self.go_to_plane_button = QPushButton("go to plane")
        self.go_to_plane_button.clicked.connect(lambda: self.host.guard(self.go_to_support, "cannot go to plane"))
        buttons.addWidget(self.go_to_plane_button)
        return support_box

    def add_support(self, image_layer=None, labels_layer=None) -> SupportLayers:
        """Make ``image_layer`` (default: the one chosen in the widget) a support.

        ``labels_layer``: an existing Labels layer to use as its mask prompts.
        """
        if image_layer is None:
            name = self.support_image_combo.currentText()
            if not name:
                raise ValueError("open an image layer first")
            image_layer = self.host.viewer.layers[name]
            choice = self.support_labels_combo.currentText()
            if labels_layer is None and choice and choice != "(new layer)":
                labels_layer = self.host.viewer.layers[choice]
        if any(same_layer(s.image, image_layer) for s in self.host.supports):
            raise ValueError(f"{image_layer.name!r} is already a support")
        if not len(self.host.classes):
            self.host.classes.add()
        support = create_support_layers(self.host.viewer, image_layer, self.host.classes, labels_layer)
        self.attach_support(support)
        self.host.refresh_layer_choices()
        self.host.schedule_encoding()  # encoding.py: its image is encoded at once
        return support

    def attach_support(self, support: SupportLayers) -> None:
        """Use ``support`` (new, or kept from a closed panel: persistence.py) in this widget."""
        self.host.supports.append(support)
        self.host.watch_prompt_edits(support)  # preview.py: live preview after each edit
        for layer in support.layers():
            self.host.bind_layer_keys(layer)
            layer.events.data.connect(self.refresh)
        # napari emits "paint" before it writes the pixels: refresh once the stroke is in
        support.labels.events.paint.connect(
            lambda event: QTimer.singleShot(0, lambda: None if self.host.closed else self.refresh(event))
        )

    def _selected_support(self) -> tuple[SupportLayers, tuple[int, ...]] | None:
        item = self.support_list.currentItem()
        if item is None:
            return None
        index, plane = item.data(Qt.ItemDataRole.UserRole)
        return (self.host.supports[index], plane) if index < len(self.host.supports) else None  # list not yet refreshed

    def go_to_support(self) -> None:
        """Show the plane of the selected row of the support list."""
        selected = self._selected_support()
        if selected is None:
            raise ValueError("select a support in the list first")
        support, plane = selected
        move_to_plane(self.host.viewer, support.image, plane)
        self.host.viewer.layers.selection.active = support.labels

    def _remove_selected_support(self) -> None:
        """A plane row of a stack: erase that plane's prompts. A 2D support or one without
        prompts: stop using it (its prompt layers go; the user's own labels layer stays)."""
        selected = self._selected_support()
        if selected is None:
            return
        support, plane = selected
        if plane:
            self._erase_plane(support, plane)
            return
        self.host.supports.remove(support)
        for layer in support.layers():
            if same_layer(layer, support.labels) and not support.owns_labels:
                continue
            if layer in self.host.viewer.layers:
                self.host.viewer.layers.remove(layer)
        self.refresh()
        self.host.schedule_encoding()

    def _erase_plane(self, support: SupportLayers, plane: tuple[int, ...]) -> None:
        if not support.owns_labels:
            raise ValueError(f"{support.labels.name!r} is your own labels layer: erase the plane there")
        data = np.asarray(support.labels.data)
        data[plane] = 0
        n = len(plane)
        for layer in (support.points, support.shapes):
            coords = [np.asarray(c) for c in layer.data]
            doomed = {i for i, c in enumerate(coords) if tuple(int(round(v)) for v in np.atleast_2d(c)[0][:n]) == plane}
            if doomed:
                layer.selected_data = doomed
                layer.remove_selected()
        support.labels.data = data  # emits the data event: the list updates

    def refresh(self, event=None) -> None:
        """List every prompted plane of every support (a new one is selected and named)."""
        if self.host.closed:  # still connected to the prompt layers' events
            return
        names = [BACKGROUND, *self.host.classes.names]
        selected = self._selected_support() if self.support_list.currentItem() is not None else None
        before = set(self._listed_planes)
        listed = set()
        self.support_list.clear()
        for index, support in enumerate(self.host.supports):
            planes = plane_prompts(support, len(self.host.classes)) or {None: None}
            for plane, counts in planes.items():
                if plane is None:  # a support without prompts yet
                    text, key = f"{support.name}: no prompts yet", ()
                else:
                    key = plane
                    listed.add((support.name, plane))
                    where = f" [plane {', '.join(map(str, plane))}]" if plane else ""
                    lines = [
                        f"  {name}: {counts['pixels'][k]} px, {counts['points'][k]} pt, {counts['boxes'][k]} box"
                        for k, name in enumerate(names)
                        if k or counts["pixels"][0] + counts["points"][0] + counts["boxes"][0]
                    ]
                    text = "\n".join([support.name + where, *lines])
                item = QListWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, (index, key))
                self.support_list.addItem(item)
                if selected is not None and selected[0] is support and selected[1] == key:
                    self.support_list.setCurrentItem(item)
        self._listed_planes = listed
        new = sorted(p for p in listed - before if p[1])
        if new and event is not None:
            name, plane = new[-1]
            self.host.status.setText(f"plane {', '.join(map(str, plane))} of {name!r} is a new support (see the list)")
            for row in range(self.support_list.count()):
                item = self.support_list.item(row)
                index, key = item.data(Qt.ItemDataRole.UserRole)
                if self.host.supports[index].name == name and key == plane:
                    self.support_list.setCurrentItem(item)

    def adopt_sample_layers(self) -> None:
        """Set up the plugin's sample (or any Labels layer carrying class names) as a support."""
        from napari.layers import Image, Labels

        if self.host.supports:
            return
        for layer in list(self.host.viewer.layers):
            names = layer.metadata.get(CLASSES_KEY) if isinstance(layer, Labels) else None
            image_name = layer.name.removesuffix(" prompts")
            if not names or image_name not in self.host.viewer.layers:
                continue
            image = self.host.viewer.layers[image_name]
            if not isinstance(image, Image) or spatial_shape(image) != tuple(layer.data.shape):
                continue
            if not len(self.host.classes):
                self.host.classes.reset(list(names)[1:])
            self.add_support(image, labels_layer=layer)
            return
