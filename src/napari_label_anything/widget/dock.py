"""The Label Anything dock widget: classes, supports, query, run/cancel, files.

Thin by design: it collects prompts from layers into an ``Episode`` (``layers.py``), runs a
``Segmenter`` in a worker (``workers.py``) and writes a Labels layer (``layers.write_output``).
From napari's console::

    widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")[1]
    widget.classes.add("nucleus"); widget.add_support(viewer.layers["image"])
    worker = widget.run(viewer.layers["query"], scope="all")   # returns the napari worker
    widget.episode                                               # the Episode built from the layers
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QColorDialog,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..labels import as_labels
from ..stacks import stack_layout
from .classes import ClassTable
from .layers import (
    CLASSES_KEY,
    SupportLayers,
    create_support_layers,
    find_output_layer,
    spatial_shape,
    supports_to_episode,
    write_output,
)
from .model_picker import ModelPicker
from .workers import WorkerLauncher, predict_planes

KEY_NEXT_CLASS, KEY_PREVIOUS_CLASS, KEY_RUN = "Alt-N", "Alt-P", "Alt-R"
SCOPES = ("current plane", "plane range", "all planes")


def _notify(kind: str, message: str) -> None:
    from napari.utils import notifications

    getattr(notifications, f"show_{kind}")(message)


def _import_torch_stack() -> None:
    """Import torch, torchvision and segment_anything on the GUI thread, safely.

    torchvision imports torch._dynamo, which imports triton if installed. Triton bundles its
    own LLVM; inside napari on Mesa's software OpenGL (llvmpipe: VMs, remote desktops, Xvfb)
    loading it next to Mesa's LLVM segfaults. Triton only serves GPU kernels, so without CUDA
    it is hidden from the import system. Importing here, not in a worker thread, also keeps
    native-extension loading off the workers.
    """
    import sys

    import torch

    if not torch.cuda.is_available() and "triton" not in sys.modules:
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
    try:
        import segment_anything.modeling  # noqa: F401
    except ImportError:  # pragma: no cover - the classic model does not need it
        pass


class LabelAnythingWidget(QWidget):
    """Few-shot multi-class segmentation from prompts on support images."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.classes = ClassTable()
        self.supports: list[SupportLayers] = []
        self.launcher = WorkerLauncher()
        self._pending: dict[tuple[int, ...], np.ndarray] = {}
        self._run_query = None
        self.last_error: Exception | None = None
        self.status_history: list[str] = []  # status lines of the current run, for the console
        self._build_ui()
        self.classes.changed.connect(self._on_classes_changed)
        self.classes.active_changed.connect(self._on_active_class)
        self.classes.removed.connect(self._on_class_removed)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layer_choices)
        self._bind_keys()
        self._refresh_layer_choices()
        self.adopt_sample_layers()

    # -- UI --------------------------------------------------------------------------------

    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)

        self.model_picker = ModelPicker()
        layout.addWidget(self.model_picker)

        class_box = QGroupBox(f"Classes ({KEY_NEXT_CLASS} / {KEY_PREVIOUS_CLASS} to switch)")
        class_layout = QVBoxLayout(class_box)
        self.class_list = QListWidget()
        self.class_list.currentRowChanged.connect(lambda row: self.classes.set_active(row + 1) if row >= 0 else None)
        self.class_list.itemDoubleClicked.connect(lambda item: self._rename_class(self.class_list.row(item) + 1))
        buttons = QHBoxLayout()
        for text, slot in (("add", self._add_class), ("rename", self._rename_active), ("colour", self._recolor_active),
                           ("remove", self._remove_active)):  # fmt: skip
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        class_layout.addWidget(self.class_list)
        class_layout.addLayout(buttons)
        layout.addWidget(class_box)

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
        self.add_support_button.clicked.connect(lambda: self.add_support())
        remove_support = QPushButton("remove selected")
        remove_support.clicked.connect(self._remove_selected_support)
        buttons.addWidget(self.add_support_button)
        buttons.addWidget(remove_support)
        support_layout.addLayout(buttons)
        self.support_list = QListWidget()
        self.support_list.setWordWrap(True)
        support_layout.addWidget(self.support_list)
        layout.addWidget(support_box)

        query_box = QGroupBox("Query")
        form = QFormLayout(query_box)
        self.query_combo = QComboBox()
        self.scope_combo = QComboBox()
        self.scope_combo.addItems(SCOPES)
        self.scope_combo.setCurrentText("all planes")
        self.range_start, self.range_stop = QSpinBox(), QSpinBox()
        range_row = QHBoxLayout()
        range_row.addWidget(self.range_start)
        range_row.addWidget(QLabel("to"))
        range_row.addWidget(self.range_stop)
        form.addRow("image", self.query_combo)
        form.addRow("planes", self.scope_combo)
        form.addRow("range (axis 0)", range_row)
        run_row = QHBoxLayout()
        self.run_button = QPushButton(f"Run ({KEY_RUN})")
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.cancel_button)
        form.addRow(run_row)
        self.progress = QProgressBar()
        self.status = QLabel("ready")
        self.status.setWordWrap(True)
        form.addRow(self.progress)
        form.addRow(self.status)
        layout.addWidget(query_box)

        file_row = QHBoxLayout()
        for text, slot in (("save episode…", self._save_episode_dialog), ("load episode…", self._load_episode_dialog),
                           ("export TIFF…", self._export_dialog)):  # fmt: skip
            button = QPushButton(text)
            button.clicked.connect(slot)
            file_row.addWidget(button)
        layout.addLayout(file_row)
        layout.addStretch()

    def _refresh_layer_choices(self, event=None) -> None:
        from napari.layers import Image, Labels

        images = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        labels = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        for combo, names, extra in (
            (self.support_image_combo, images, []),
            (self.query_combo, images, []),
            (self.support_labels_combo, labels, ["(new layer)"]),
        ):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(extra + names)
            if current in extra + names:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        support_images = {s.image.name for s in self.supports}
        if self.query_combo.currentText() in support_images:
            others = [n for n in images if n not in support_images]
            if others:
                self.query_combo.setCurrentText(others[-1])
        self.supports = [s for s in self.supports if s.image in self.viewer.layers]
        self._refresh_support_list()

    def set_model(self, name: str, device: str = "auto") -> None:
        """Choose the model (name, repo id or folder) and device, as the combo boxes do."""
        self.model_picker.set_model(name, device)

    # -- classes ---------------------------------------------------------------------------

    def _on_classes_changed(self) -> None:
        self.class_list.blockSignals(True)
        self.class_list.clear()
        for name, color in zip(self.classes.names, self.classes.colors, strict=True):
            pixmap = QPixmap(14, 14)
            pixmap.fill(QColor(color))
            self.class_list.addItem(QListWidgetItem(QIcon(pixmap), name))
        self.class_list.setCurrentRow(self.classes.active - 1)
        self.class_list.blockSignals(False)
        for support in self.supports:
            support.recolor(self.classes)
        output = self._output_layer()
        if output is not None:
            from .layers import label_colormap

            output.colormap = label_colormap(self.classes)
        self._refresh_support_list()

    def _on_active_class(self, k: int) -> None:
        self.class_list.blockSignals(True)
        self.class_list.setCurrentRow(k - 1)
        self.class_list.blockSignals(False)
        for support in self.supports:
            support.set_active_class(self.classes)

    def _on_class_removed(self, k: int) -> None:
        for support in self.supports:
            support.remove_class(k)

    def _add_class(self) -> None:
        name, ok = QInputDialog.getText(self, "New class", "class name:")
        if ok:
            self._guard(lambda: self.classes.add(name or None))

    def _rename_class(self, k: int) -> None:
        name, ok = QInputDialog.getText(self, "Rename class", "class name:", text=self.classes.names[k - 1])
        if ok:
            self._guard(lambda: self.classes.rename(k, name))

    def _rename_active(self) -> None:
        if self.classes.active:
            self._rename_class(self.classes.active)

    def _recolor_active(self) -> None:
        k = self.classes.active
        if k:
            color = QColorDialog.getColor(QColor(self.classes.color_of(k)), self, "Class colour")
            if color.isValid():
                self.classes.recolor(k, color.name())

    def _remove_active(self) -> None:
        if self.classes.active:
            self.classes.remove(self.classes.active)

    def _guard(self, action) -> None:
        try:
            action()
        except ValueError as err:
            _notify("error", str(err))

    # -- supports --------------------------------------------------------------------------

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
        if any(s.image is image_layer for s in self.supports):
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
            if layer is support.labels and not support.owns_labels:
                continue
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._refresh_support_list()

    def _refresh_support_list(self, event=None) -> None:
        self.support_list.clear()
        n = len(self.classes)
        for support in self.supports:
            counts = support.prompt_counts(n)
            parts = [
                f"  {name}: {counts['pixels'][k]} px, {counts['points'][k]} pt, {counts['boxes'][k]} box"
                for k, name in enumerate(self.classes.names, start=1)
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

    # -- running ---------------------------------------------------------------------------

    @property
    def episode(self):
        """The ``Episode`` the current layers describe (raises ValueError if incomplete)."""
        if not len(self.classes):
            raise ValueError("define at least one class")
        episode = supports_to_episode(self.supports, self.classes, model=self.model_picker.model_name)
        episode.validate()
        return episode

    def _plane_indices(self, query_layer, scope: str) -> list[tuple[int, ...]]:
        layout = stack_layout(query_layer.data.shape, 0, rgb=query_layer.rgb)
        if not layout.plane_axes:
            return [()]
        current = tuple(
            int(round(c)) for c in query_layer.world_to_data(self.viewer.dims.point)[: len(layout.plane_axes)]
        )
        current = tuple(min(max(c, 0), layout.shape[a] - 1) for c, a in zip(current, layout.plane_axes, strict=True))
        if scope == "current plane":
            return [current]
        if scope == "plane range":
            start, stop = sorted((self.range_start.value(), self.range_stop.value()))
            stop = min(stop, layout.shape[0] - 1)
            return [(i, *current[1:]) for i in range(start, stop + 1)]
        return layout.plane_indices()

    def run(self, query_layer=None, scope: str | None = None):
        """Segment ``query_layer`` (default: the widget's choice) in a worker; returns the worker.

        ``scope``: "current plane", "plane range" or "all planes" (default: the widget's choice).
        Nothing is written until every requested plane is done: cancel or an error leaves all
        layers as they were.
        """
        if self.launcher.busy:
            _notify("warning", "a run is already in progress")
            return None
        try:
            if query_layer is None:
                if not self.query_combo.currentText():
                    raise ValueError("choose a query image layer")
                query_layer = self.viewer.layers[self.query_combo.currentText()]
            episode = self.episode
            indices = self._plane_indices(query_layer, scope or self.scope_combo.currentText())
        except (ValueError, TypeError, KeyError) as err:
            _notify("error", f"cannot run: {err}")
            self.last_error = err
            return None
        _import_torch_stack()
        download = self.model_picker.checkpoint_to_download()
        self._pending = {}
        self._run_query = query_layer
        self.last_error = None
        self.status_history = []
        self.progress.setRange(0, len(indices))
        self.progress.setValue(0)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        query = query_layer.data
        return self.launcher.start(
            predict_planes,
            self.model_picker.get_segmenter,
            episode,
            query,
            indices,
            query_layer.rgb,
            download,
            yielded=self._on_yielded,
            returned=self._on_returned,
            errored=self._on_errored,
            aborted=self._on_aborted,
            finished=self._on_finished,
        )

    def cancel(self) -> None:
        """Stop the running prediction after the current plane; nothing is written."""
        self.launcher.stop_all()

    def _on_yielded(self, message) -> None:
        kind, payload = message
        if kind == "status":
            self.status.setText(payload)
            self.status_history.append(payload)
            return
        index, labels, done, total = payload
        self._pending[index] = labels
        self.progress.setValue(done)
        self.status.setText(f"plane {done}/{total}")

    def _on_returned(self, value) -> None:
        layer = write_output(self.viewer, self._run_query, self._pending, self.classes)
        self.status.setText(f"done: {len(self._pending)} plane(s) -> {layer.name!r}")
        self._pending = {}

    def _on_errored(self, error: Exception) -> None:
        self.last_error = error
        self._pending = {}
        self.status.setText(f"failed: {error}")
        _notify("error", f"Label Anything failed: {error}")

    def _on_aborted(self) -> None:
        self._pending = {}
        self.status.setText("cancelled; no layer was changed")
        _notify("info", "Label Anything: run cancelled, no layer was changed")

    def _on_finished(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _output_layer(self):
        name = self.query_combo.currentText()
        return find_output_layer(self.viewer, self.viewer.layers[name]) if name in self.viewer.layers else None

    # -- files -----------------------------------------------------------------------------

    def save_episode(self, path: str | Path) -> Path:
        """Write classes, supports, prompts and the model id to an .episode file."""
        return self.episode.save(path)

    def load_episode(self, path: str | Path) -> None:
        """Recreate an episode's support images and prompt layers, and its classes."""
        from ..episode import Episode

        episode = Episode.load(path)
        self.classes.reset(episode.classes)
        if episode.model:
            self.set_model(episode.model, self.model_picker.device)
        for i, support in enumerate(episode.supports):
            image = self.viewer.add_image(support.image, name=support.name or f"support {i + 1}",
                                          rgb=support.image.ndim == 3)  # fmt: skip
            layers = self.add_support(image)
            if support.labels is not None:
                layers.labels.data = as_labels(support.labels, episode.n_classes)
            if len(support.points):
                layers.points.add(support.points[:, :2])
                layers.points.features["class"] = support.points[:, 2].astype(np.int64)
            for y0, x0, y1, x1, k in support.boxes:
                layers.shapes.add_rectangles(np.array([[y0, x0], [y1, x1]]))
                layers.shapes.features.loc[len(layers.shapes.data) - 1, "class"] = int(k)
            layers.recolor(self.classes)
        self._refresh_support_list()

    def export_labels(self, path: str | Path, query_layer=None) -> Path:
        """Save the output layer of ``query_layer`` as TIFF with the class names in its metadata."""
        from ..files import write_labels

        query_layer = query_layer or self.viewer.layers[self.query_combo.currentText()]
        layer = find_output_layer(self.viewer, query_layer)
        if layer is None:
            raise ValueError(f"no prediction for {query_layer.name!r} yet: press Run first")
        return write_labels(path, np.asarray(layer.data), self.classes.names, {"query": query_layer.name})

    def _save_episode_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save episode", "run.episode", "Episodes (*.episode)")
        if path:
            self._guard(lambda: self.save_episode(path))

    def _load_episode_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load episode", "", "Episodes (*.episode)")
        if path:
            self._guard(lambda: self.load_episode(path))

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export labels", "labels.tif", "TIFF (*.tif *.tiff)")
        if path:
            self._guard(lambda: self.export_labels(path))

    # -- key bindings and closing ----------------------------------------------------------

    def _key_actions(self):
        return {
            KEY_NEXT_CLASS: lambda *_: self.classes.set_active(self.classes.active + 1),
            KEY_PREVIOUS_CLASS: lambda *_: self.classes.set_active(self.classes.active - 1),
            KEY_RUN: lambda *_: self.run(),
        }

    def _bind_keys(self) -> None:
        for key, action in self._key_actions().items():
            self.viewer.bind_key(key, action, overwrite=True)

    def _bind_layer_keys(self, layer) -> None:
        for key, action in self._key_actions().items():
            layer.bind_key(key, action, overwrite=True)

    def cleanup(self) -> None:
        """Stop workers and release key bindings (called when the widget closes)."""
        self.launcher.stop_all()
        for key in self._key_actions():
            self.viewer.bind_key(key, None)
            for support in self.supports:
                for layer in support.layers():
                    layer.bind_key(key, None)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.cleanup()
        super().closeEvent(event)

    def sizeHint(self):  # noqa: N802 - Qt API
        hint = super().sizeHint()
        hint.setWidth(max(hint.width(), 360))
        return hint
