"""Model and device choice for the dock widget, with honest cost notes and a segmenter cache.

The choices come from the same registry as ``napari-label-anything models``.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QLabel

FOLDER_CHOICE = "__folder__"


class ModelPicker(QGroupBox):
    """A model combo (registry + local folders), a device combo and a note on what it costs."""

    def __init__(self) -> None:
        from ..device import DEVICE_CHOICES
        from ..registry import list_models

        super().__init__("Model")
        self._segmenters: dict[tuple[str, str], object] = {}
        form = QFormLayout(self)
        self.model_combo = QComboBox()
        self.model_combo.addItem("auto (best available)", "auto")
        for row in list_models():
            if row.name == "classic":
                self.model_combo.addItem("classic (no weights)", row.name)
            else:
                state = "cached" if row.cached else f"download ~{row.size_mb:.0f} MB"
                self.model_combo.addItem(f"{row.name} ({state})", row.name)
        self.model_combo.addItem("local folder…", FOLDER_CHOICE)
        self.model_combo.activated.connect(self._on_activated)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICE_CHOICES)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.model_combo.currentIndexChanged.connect(self._update_note)
        self.device_combo.currentIndexChanged.connect(self._update_note)
        form.addRow("model", self.model_combo)
        form.addRow("device", self.device_combo)
        form.addRow(self.note)
        self._update_note()

    @property
    def model_name(self) -> str:
        """A registry name, hub repo id, folder path, ``auto`` or ``classic``."""
        return self.model_combo.currentData()

    @property
    def device(self) -> str:
        return self.device_combo.currentText()

    def set_model(self, name: str, device: str = "auto") -> None:
        index = self.model_combo.findData(name)
        if index < 0:
            self.model_combo.insertItem(self.model_combo.count() - 1, Path(name).name or name, name)
            index = self.model_combo.findData(name)
        self.model_combo.setCurrentIndex(index)
        self.device_combo.setCurrentText(device)

    def get_segmenter(self):
        """Load (once per model and device) the chosen segmenter. Called in the worker thread."""
        from ..inference import load_segmenter

        key = (self.model_name, self.device)
        if key not in self._segmenters:
            self._segmenters[key] = load_segmenter(*key)
        return self._segmenters[key]

    def checkpoint_to_download(self) -> str | None:
        """The hub repo id of the chosen model when it must be downloaded first, else None."""
        from ..checkpoint import cached_checkpoint, is_offline, looks_like_repo_id
        from ..device import resolve_device
        from ..registry import resolve_model_name

        if (self.model_name, self.device) in self._segmenters:
            return None
        source = resolve_model_name(self.model_name, resolve_device(self.device).type)
        if looks_like_repo_id(source) and cached_checkpoint(source) is None and not is_offline():
            return source
        return None

    def _on_activated(self, index: int) -> None:
        if self.model_combo.itemData(index) != FOLDER_CHOICE:
            return
        folder = QFileDialog.getExistingDirectory(self, "Checkpoint folder (config.json + model.safetensors)")
        if folder:
            self.set_model(folder, self.device)
        else:
            self.model_combo.setCurrentIndex(0)

    def _update_note(self, *args) -> None:
        from ..device import resolve_device

        name = str(self.model_name)
        try:
            device = resolve_device(self.device).type
        except ValueError as err:
            self.note.setText(f"⚠ {err}")
            return
        if device == "cpu" and name.startswith("sam-1024"):
            note = "⚠ SAM ViT-B at 1024 px on a CPU: about 20–40 s per new image (cached afterwards)."
        elif device == "cpu" and name.startswith("mae"):
            note = "ViT-MAE at 480 px on a CPU: about 1–3 s per new image."
        elif name == "classic":
            note = "Embedded pixel classifier: fast, no download; learns only from your prompts."
        else:
            note = f"device: {device}"
        self.note.setText(note)
