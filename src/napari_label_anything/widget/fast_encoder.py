"""The fast encoder prepared in the background, as soon as a model is chosen.

With the encoder choice ``auto`` (or ``onnx``, ``onnx-int8``), a Label Anything model on the CPU
runs its image encoder in ONNX Runtime, exported once per weights and cached on disk
(``inference.encoder_backends``). The first export takes a while, so the widget starts it as
soon as the model picker's choice resolves to such a model (``ModelPicker.needs_fast_encoder``):
a worker loads the segmenter (``ModelPicker.get_segmenter``, which keeps it for the Run), the
status line saying "preparing the fast encoder (one-off, cached)…" while the export runs, then
"fast encoder ready (ONNX Runtime)", or, when the export failed and PyTorch runs instead, the
one-line note saying why.

A Run (or a preview, the support encoding, a batch) started meanwhile waits for it: the model
picker loads one model at a time, and the one being prepared is the one the Run needs. Running
PyTorch beside the export instead would load a second copy of the model and split the same CPU
cores between the two, slowing both; a waiting Run's status line says what it waits for.
Never downloads (a model still to download is prepared at its first Run); nothing for the
classic model or a graphics card (PyTorch runs there).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from qtpy.QtCore import QTimer

from ..inference.encoder_backends import ENCODER_LABELS, PREPARING_TEXT
from .messages import EncoderReady, Status
from .reporting import one_line, set_status, short
from .workers import LOADING_TEXT, PredictionError, WorkerLauncher, import_torch_stack

logger = logging.getLogger(__name__)

PREPARE_DELAY_MS = 300  # quiet time after the last change of the model choice
WAITING_TEXT = f"{PREPARING_TEXT} the run starts once it is ready"


def prepare_job(get_segmenter: Callable[..., Any]) -> Iterator[Status | EncoderReady]:
    """Worker generator: ``get_segmenter(on_status=...)`` in a helper thread, yielding a
    ``Status`` for each message of a one-off export as it comes, then ``EncoderReady``: the
    encoder that runs and None, or the note saying why PyTorch runs instead."""
    messages: queue.SimpleQueue = queue.SimpleQueue()
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["segmenter"] = get_segmenter(on_status=messages.put)
        except BaseException as err:  # noqa: BLE001 - raised in the generator below
            outcome["error"] = err
        finally:
            messages.put(None)

    threading.Thread(target=load, name="nla-prepare", daemon=True).start()
    while (message := messages.get()) is not None:
        yield Status(message)
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, RuntimeError):  # superqt would swallow it (workers.PredictionError)
            raise PredictionError(f"{type(error).__name__}: {error}") from error
        raise error
    segmenter = outcome["segmenter"]
    yield EncoderReady(getattr(segmenter, "encoder_backend", None), getattr(segmenter, "encoder_note", None))


class PreparationHost(Protocol):
    """What ``FastEncoderPreparation`` uses of the dock."""

    closed: bool
    model_picker: Any
    runs: Any  # the RunController: ``busy``
    status: Any  # the status line (a QLabel)

    @property
    def finetuning(self) -> bool: ...

    @property
    def batching(self) -> bool: ...


class FastEncoderPreparation:
    """The dock's background preparation of the chosen model's fast encoder."""

    def __init__(self, host: PreparationHost, parent=None) -> None:
        self.host = host
        self.prepare_timer = QTimer(parent)
        self.prepare_timer.setSingleShot(True)
        self.prepare_timer.setInterval(PREPARE_DELAY_MS)
        self.prepare_timer.timeout.connect(self._prepare_now)
        self._preparations = WorkerLauncher()
        self._prepare_shown: str | None = None  # the status line the preparation wrote last
        self.preparation_stats = {"started": 0, "ready": 0, "fallback": 0, "failed": 0}
        self.preparation_messages: list[str] = []  # every line it showed, for the console and tests

    def start(self) -> None:
        """Prepare now and after each change of the model choice."""
        picker = self.host.model_picker
        for combo in (picker.model_combo, picker.device_combo, picker.encoder_combo):
            combo.currentIndexChanged.connect(self.schedule)
        self.schedule()

    @property
    def preparing(self) -> bool:
        """Whether a fast encoder is being prepared (a Run started now waits for it)."""
        return self._preparations.busy

    def pending(self) -> bool:
        """Whether a preparation is about to start or running: the support encoding waits for it,
        so that the preparation loads the model (and says what it does)."""
        return self.prepare_timer.isActive() or self.preparing

    def schedule(self, *_) -> None:
        if self.host.closed or not hasattr(self, "prepare_timer"):
            return
        self.prepare_timer.start()

    def stop(self) -> None:
        """Stop listening (on close); the export itself finishes in its thread and stays cached."""
        self.prepare_timer.stop()
        self._preparations.stop_all()

    def waiting_text(self, text: str) -> str:
        """A Run's status ``text``, or what it waits for when it waits for the preparation."""
        if text == LOADING_TEXT and self.preparing:
            self._prepare_shown = WAITING_TEXT
            return WAITING_TEXT
        return text

    def _show_preparation(self, text: str, final: bool = False) -> None:
        """Progress goes on the status line unless a run, batch or fine-tuning owns it; the final
        line only replaces the preparation's own last line (never a run's)."""
        if self.preparation_messages[-1:] != [text]:  # a fallback note comes as progress, then as the end
            self.preparation_messages.append(text)
        if final:
            if self._prepare_shown is None or self.host.status.text() != short(self._prepare_shown):
                return
        elif self.host.runs.busy or self.host.batching or self.host.finetuning:
            return
        set_status(self.host.status, text)
        self._prepare_shown = text

    def _prepare_now(self) -> None:
        if self.host.closed:
            return
        if self._preparations.busy or self.host.runs.busy or self.host.batching or self.host.finetuning:
            self.prepare_timer.start()  # after them; the choice is looked at again then
            return
        picker = self.host.model_picker
        if not picker.needs_fast_encoder():  # imports onnxruntime, on the GUI thread (workers.py)
            return
        import_torch_stack()  # native extensions load on the GUI thread (workers.py)
        self.preparation_stats["started"] += 1
        self._show_preparation(f"loading {picker.model_combo.currentText()}…")

        def yielded(message: Status | EncoderReady) -> None:
            if self.host.closed:
                return
            if isinstance(message, Status):
                self._show_preparation(message.text)
                return
            backend, note = message.backend, message.note
            if note:
                self.preparation_stats["fallback"] += 1
                self._show_preparation(note, final=True)
            else:
                self.preparation_stats["ready"] += 1
                self._show_preparation(f"fast encoder ready ({ENCODER_LABELS.get(backend, backend)})", final=True)

        def errored(error) -> None:
            logger.info("preparing the model failed: %s", error)
            if not self.host.closed:
                self.preparation_stats["failed"] += 1
                self._show_preparation(f"model not loaded: {one_line(error)}", final=True)

        self._preparations.start(prepare_job, picker.get_segmenter, yielded=yielded, errored=errored)
