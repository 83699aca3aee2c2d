"""Model and device choice for the dock widget, with honest cost notes and a segmenter cache.

The choices come from the same registry as ``napari-label-anything models``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
)

FOLDER_CHOICE = "__folder__"
# (label, load_segmenter's encoder=): "auto", then every name in encoder_backends.ENCODER_BACKENDS.
ENCODER_CHOICES = (
    ("auto (ONNX Runtime on a CPU, else PyTorch)", "auto"),
    ("PyTorch", "torch"),
    ("ONNX Runtime", "onnx"),
    ("ONNX Runtime int8 (faster, approximate)", "onnx-int8"),
)
ENCODER_TOOLTIP = (
    "How the image encoder (nearly all of the work on a CPU) runs; ONNX Runtime runs on the CPU only.\n"
    "auto: ONNX Runtime on a CPU when it is installed, PyTorch on a graphics card. Its one-off export\n"
    "starts in the background as soon as you choose a model (then it is reused from the disk); if it\n"
    "fails, PyTorch runs instead and the status line says why.\n"
    "PyTorch: the reference.\n"
    "ONNX Runtime: the same encoder exported for a CPU, with the same results.\n"
    "ONNX Runtime int8: that export with 8-bit weights, approximate: image features are slightly\n"
    "off and pixels where classes are nearly tied may change label. Check it on your data."
)


class ModelPicker(QGroupBox):
    """A model combo (registry + local folders), a device combo and a note on what it costs."""

    def __init__(self) -> None:
        from ..hub.registry import list_models
        from .preflight import device_choices

        super().__init__("Model")
        self._segmenters: dict[tuple[str, str], object] = {}
        self._loading = threading.Lock()  # one load at a time: a second caller waits and reuses it
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
        self.device_combo.addItems(device_choices())  # only what this machine has
        self.encoder_combo = QComboBox()
        for label, backend in ENCODER_CHOICES:
            self.encoder_combo.addItem(label, backend)
        self.encoder_combo.setToolTip(ENCODER_TOOLTIP)
        self.embeddings_edit = QLineEdit()
        self.embeddings_edit.setPlaceholderText("memory only")
        self.embeddings_edit.setToolTip(
            "A folder where image features are kept on disk (zarr), so a stack is encoded once across\n"
            "sessions; 'napari-label-anything embed --encoder …' can fill it in advance (with the encoder\n"
            "chosen above: int8 features are kept apart). Empty: keep them in memory only."
        )
        self.neighbours_check = QCheckBox("compare each plane with the planes around it")
        self.neighbours_check.setChecked(True)
        self.neighbours_check.setToolTip(
            "classic model, stacks: a support prompted on a plane keeps the planes above and below it,\n"
            "and each pixel is also compared with them, which tells an object centred in this plane from\n"
            "the out-of-focus light of one a few planes away. Turn it off for a time series whose\n"
            "objects move between frames."
        )
        browse = QPushButton("…")
        browse.setToolTip("Choose the folder where image features are kept between sessions")
        browse.clicked.connect(self._choose_embeddings_folder)
        embeddings_row = QHBoxLayout()
        embeddings_row.addWidget(self.embeddings_edit)
        embeddings_row.addWidget(browse)
        self.model_combo.setToolTip(
            "The model that segments your images.\n"
            "auto: the best published Label Anything model already on this computer, else 'classic'\n"
            "(never a model you fine-tuned or registered: pick those by name).\n"
            "Label Anything models are downloaded once (the size is shown) and then work offline;\n"
            "'classic' needs no download and learns only from your scribbles;\n"
            "'local folder…': a folder holding config.json and model.safetensors."
        )
        self.device_combo.setToolTip(
            "Where the model computes. auto: the graphics card (CUDA, Apple MPS) if this computer\n"
            "has one, else the processor (CPU). Only the devices this computer has are listed."
        )
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.model_combo.currentIndexChanged.connect(self._update_note)
        self.device_combo.currentIndexChanged.connect(self._update_note)
        form.addRow("model", self.model_combo)
        form.addRow("device", self.device_combo)
        form.addRow("encoder", self.encoder_combo)
        form.addRow("embeddings", embeddings_row)
        form.addRow(self.neighbours_check)
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
        self.set_device(device)

    def set_device(self, device: str) -> None:
        """Choose ``device``; ValueError (the choice unchanged) when this machine lacks it."""
        from .preflight import check_device

        device = check_device(device)
        if self.device_combo.findText(device) < 0:  # e.g. "cuda:1" on a machine with CUDA
            self.device_combo.addItem(device)
        self.device_combo.setCurrentText(device)

    @property
    def embeddings_folder(self) -> str | None:
        """The disk embedding store's folder, or None (features kept in memory only)."""
        return self.embeddings_edit.text().strip() or None

    def set_embeddings_folder(self, folder: str | Path | None) -> None:
        self.embeddings_edit.setText("" if folder is None else str(folder))

    @property
    def encoder(self) -> str:
        """The image encoder choice: ``auto``, ``torch``, ``onnx`` or ``onnx-int8`` (``ENCODER_CHOICES``)."""
        return self.encoder_combo.currentData()

    def resolved_encoder(self) -> str:
        """The encoder the choice stands for on the chosen device (``encoder_backends.resolve_encoder``;
        before any fallback); ``torch`` when the device cannot be resolved."""
        from ..hub.device import resolve_device
        from ..inference.encoder_backends import resolve_encoder

        try:
            return resolve_encoder(self.encoder, resolve_device(self.device).type)
        except ValueError:
            return "torch"

    def set_encoder(self, backend: str) -> None:
        """Choose the encoder backend; ValueError (the choice unchanged) for an unknown name."""
        index = self.encoder_combo.findData(backend)
        if index < 0:
            known = ", ".join(name for _, name in ENCODER_CHOICES)  # the same names as ENCODER_OPTIONS
            raise ValueError(f"unknown encoder backend {backend!r}; choose one of {known}")
        self.encoder_combo.setCurrentIndex(index)

    @property
    def compare_neighbours(self) -> bool:
        """Whether the classic model compares stack planes with their neighbours (depth context)."""
        return self.neighbours_check.isChecked()

    def is_classic(self) -> bool:
        """Whether the chosen model and device resolve to the embedded ``classic`` model (False
        when they cannot be resolved)."""
        from ..hub.device import resolve_device
        from ..hub.registry import CLASSIC, resolve_model_name

        try:
            return resolve_model_name(self.model_name, resolve_device(self.device).type) == CLASSIC
        except Exception:  # noqa: BLE001 - an unknown model or device is not the classic one
            return False

    def _key(self) -> tuple:
        # the neighbours setting is the classic model's alone: toggling it must not load another
        # copy of a checkpoint model, nor make its encoded supports look stale
        neighbours = self.compare_neighbours if self.is_classic() else None
        return (self.model_name, self.device, self.encoder, self.embeddings_folder, neighbours)

    def get_segmenter(self, on_status: Callable[[str], Any] | None = None):
        """Load (once per model, device, encoder and embeddings folder) the chosen segmenter.

        Called in worker threads, one load at a time: a caller that comes while another loads the
        same choice waits for it (a Run started while the fast encoder is being prepared waits
        for it) and gets the same segmenter. ``on_status``: one-line messages of a one-off ONNX
        export (``load_segmenter``). The embedded ``classic`` model has no image features, so
        the encoder and embeddings settings do not apply to it; the neighbours setting applies
        to it alone.
        """
        from ..inference import load_segmenter

        key = self._key()
        with self._loading:
            if key not in self._segmenters:
                name, device, encoder, embeddings, neighbours = key
                segmenter = load_segmenter(name, device, encoder=encoder, embeddings=embeddings, on_status=on_status)
                if neighbours is False:  # a classic model (see ``_key``)
                    segmenter.depth_sigmas = ()  # part of its fit key: planes are then seen one by one
                self._segmenters[key] = segmenter
            return self._segmenters[key]

    def is_loaded(self) -> bool:
        """Whether the chosen segmenter is loaded already."""
        return self._key() in self._segmenters

    def _choose_embeddings_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for stored image features (embeddings)")
        if folder:
            self.set_embeddings_folder(folder)

    def needs_fast_encoder(self) -> bool:
        """Whether the chosen model is a Label Anything model whose encoder choice resolves to
        ONNX Runtime here (``auto`` on a CPU), not loaded yet and on this machine already (no
        download, no network check): what the widget prepares in the background."""
        from ..hub.device import resolve_device
        from ..hub.model_files import cached_checkpoint, looks_like_repo_id
        from ..hub.registry import resolve_model_name

        if self.is_loaded() or self.is_classic() or self.resolved_encoder() == "torch":
            return False
        try:
            source = resolve_model_name(self.model_name, resolve_device(self.device).type)
        except Exception:  # noqa: BLE001 - an unknown model: a Run reports it
            return False
        return not (looks_like_repo_id(source) and cached_checkpoint(source) is None)

    def checkpoint_to_download(self) -> str | None:
        """The hub repo id of the chosen model when it must be downloaded first, else None.

        Raises ``CheckpointNotAvailableError`` at once (cache folder, manual install) when it
        must be downloaded but downloads are off or the hub cannot be reached
        (``preflight.check_download``).
        """
        from ..hub.device import resolve_device
        from ..hub.model_files import cached_checkpoint, looks_like_repo_id
        from ..hub.registry import resolve_model_name
        from .preflight import check_download

        if self._key() in self._segmenters:
            return None
        source = resolve_model_name(self.model_name, resolve_device(self.device).type)
        if looks_like_repo_id(source) and cached_checkpoint(source) is None:
            check_download(source)
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
        from ..hub.device import resolve_device

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
