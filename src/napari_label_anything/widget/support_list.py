"""The supports of the dock widget: add and remove support images, and the list of prompted planes.

``SupportActions`` is mixed into ``LabelAnythingWidget``; the prompt layers themselves are made
and read in ``layers.py``.
"""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QListWidget, QPushButton, QVBoxLayout

from .layers import CLASSES_KEY, SupportLayers, create_support_layers, spatial_shape
from .run_controller import same_layer


class SupportActions:
    """The dock widget's support box (mixed into ``LabelAnythingWidget``)."""

    def _build_support_box(self) -> QGroupBox:
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
        self.add_support_button.clicked.connect(lambda: self._guard(self.add_support, "cannot add support"))
        self.remove_support_button = QPushButton("remove selected")
        self.remove_support_button.clicked.connect(
            lambda: self._guard(self._remove_selected_support, "cannot remove support")
        )
        buttons.addWidget(self.add_support_button)
        buttons.addWidget(self.remove_support_button)
        support_layout.addLayout(buttons)
        self.support_list = QListWidget()
        self.support_list.setWordWrap(True)
        support_layout.addWidget(self.support_list)
        return support_box

    def add_support(self, image_layer=None, labels_layer=None) -> SupportLayers:
        """Make ``image_layer`` (default: the one chosen in the widget) a support.

        ``labels_layer``: an existing Labels layer to use as its mask prompts.
        """
        if image_layer is None:
            name = self.support_image_combo.currentText()
            if not name:
                raise ValueError("open an image layer first")
            image_layer = self.viewer.layers[name]
            choice = self.support_labels_combo.currentText()
            if labels_layer is None and choice and choice != "(new layer)":
                labels_layer = self.viewer.layers[choice]
        if any(same_layer(s.image, image_layer) for s in self.supports):
            raise ValueError(f"{image_layer.name!r} is already a support")
        if not len(self.classes):
            self.classes.add()
        support = create_support_layers(self.viewer, image_layer, self.classes, labels_layer)
        self.supports.append(support)
        for layer in support.layers():
            self._bind_layer_keys(layer)
            layer.events.data.connect(self._refresh_support_list)
        support.labels.events.paint.connect(self._refresh_support_list)
        self._refresh_layer_choices()
        return support

    def _remove_selected_support(self) -> None:
        row = self.support_list.currentRow()
        if row < 0:
            return
        support = self.supports.pop(row)
        for layer in support.layers():
            if same_layer(layer, support.labels) and not support.owns_labels:
                continue
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._refresh_support_list()

    def _refresh_support_list(self, event=None) -> None:
        if self.closed:  # still connected to the prompt layers' events
            return
        self.support_list.clear()
        n = len(self.classes)
        for support in self.supports:
            counts = support.prompt_counts(n)
            parts = [
                f"  {name}: {counts['pixels'][k]} px, {counts['points'][k]} pt, {counts['boxes'][k]} box"
                for k, name in enumerate(["background", *self.classes.names])
                if k or counts["pixels"][0] + counts["points"][0] + counts["boxes"][0]
            ]
            self.support_list.addItem("\n".join([support.name, *parts]))

    def adopt_sample_layers(self) -> None:
        """Set up the plugin's sample (or any Labels layer carrying class names) as a support."""
        from napari.layers import Image, Labels

        if self.supports:
            return
        for layer in list(self.viewer.layers):
            names = layer.metadata.get(CLASSES_KEY) if isinstance(layer, Labels) else None
            image_name = layer.name.removesuffix(" prompts")
            if not names or image_name not in self.viewer.layers:
                continue
            image = self.viewer.layers[image_name]
            if not isinstance(image, Image) or spatial_shape(image) != tuple(layer.data.shape):
                continue
            if not len(self.classes):
                self.classes.reset(list(names)[1:])
            self.add_support(image, labels_layer=layer)
            return
