"""The dock widget's Fine-tune box: learn from the painted and corrected planes of this episode.

``FinetunePanel`` is the dock's part (its host described by ``FinetuneHost``). The work is
``finetune_session.finetune_episode`` (the widget's only door to training), run in a thread
worker that yields progress, so napari stays responsive; Cancel stops it between steps. On
success the new checkpoint is registered under a model name and chosen in the model picker; the
held-out planes' mIoU before and after is shown. Nothing in the viewer changes: the user's
layers are untouched whether the run succeeds, fails or is cancelled.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QVBoxLayout

from .messages import FinetuneStep, Status
from .workers import WorkerLauncher

DEFAULT_STEPS = 100


def finetuned_models_dir() -> Path:
    """Where the widget keeps fine-tuned checkpoints: ``<registry config dir>/finetuned``."""
    from ..hub.registry import config_dir

    return config_dir() / "finetuned"


def default_model_name(base: str) -> str:
    stem = Path(str(base)).name or str(base)
    return f"{stem}-finetuned-{time.strftime('%Y%m%d-%H%M%S')}"


def _discard(folder: Path | None) -> None:
    import shutil

    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _finetune_job(segmenter_source, episode, out: Path, steps: int, name: str, device: str, stop):
    """Generator for the worker: yields a ``Status``, then ``FinetuneStep`` per step; returns the outcome."""
    from ..finetune_session import finetune_episode

    segmenter = segmenter_source()
    yield Status(f"fine-tuning {segmenter.name} on the episode's painted planes…")
    updates: list[FinetuneStep] = []

    def progress(step: int, total: int, loss: float, eta: float) -> None:
        updates.append(FinetuneStep(step, total, loss, eta))

    # finetune_episode calls progress from its thread; the worker forwards it on the next yield.
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = finetune_episode(
                segmenter, episode, out, steps, register_as=name, device=device, progress=progress, cancel=stop
            )
        except BaseException as err:  # noqa: BLE001 - handed to the GUI thread below
            outcome["error"] = err

    thread = threading.Thread(target=target, name="nla-finetune", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
        while updates:
            yield updates.pop(0)
    while updates:
        yield updates.pop(0)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class FinetuneHost(Protocol):
    """What ``FinetunePanel`` uses of the dock."""

    closed: bool
    runs: Any  # the RunController: ``busy``
    model_picker: Any
    channels: tuple[int, ...] | None

    @property
    def batching(self) -> bool: ...

    def guard(self, action: Callable[[], Any], what: str) -> Any: ...

    def report_error(self, what: str, err: BaseException) -> None: ...

    def build_episode(self, background: bool, channels=None) -> Any: ...


class FinetunePanel:
    """The Fine-tune box of the dock."""

    def __init__(self, host: FinetuneHost) -> None:
        self.host = host

    def build(self) -> QGroupBox:
        self._finetune_launcher = WorkerLauncher()
        self._finetune_stop = threading.Event()
        self.finetune_outcome = None
        self._finetune_out: Path | None = None
        box = QGroupBox("Fine-tune the model on this episode")
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        self.finetune_steps = QSpinBox()
        self.finetune_steps.setRange(1, 100_000)
        self.finetune_steps.setValue(DEFAULT_STEPS)
        self.finetune_steps.setToolTip("Optimizer steps: about 100 adapt a model to a few planes; more can overfit")
        self.finetune_name = QLineEdit()
        self.finetune_name.setPlaceholderText("name (default: <model>-finetuned-<time>)")
        self.finetune_name.setToolTip("The name the fine-tuned model gets in the model picker and on the command line")
        self.finetune_button = QPushButton("Fine-tune")
        self.finetune_button.setToolTip(
            "Train the chosen Label Anything model on the planes you painted or corrected (taken as complete\n"
            "answers: unpainted pixels are background). The last quarter of them is held out and scored\n"
            "before and after. The new model is added to the model picker; your layers are not changed."
        )
        self.finetune_button.clicked.connect(lambda: self.host.guard(self.finetune, "cannot fine-tune"))
        self.finetune_cancel_button = QPushButton("Stop")
        self.finetune_cancel_button.setToolTip("Stop fine-tuning after the current step (the model in use is kept)")
        self.finetune_cancel_button.setEnabled(False)
        self.finetune_cancel_button.clicked.connect(self.cancel_finetune)
        row.addWidget(QLabel("steps"))
        row.addWidget(self.finetune_steps)
        row.addWidget(self.finetune_button)
        row.addWidget(self.finetune_cancel_button)
        layout.addLayout(row)
        layout.addWidget(self.finetune_name)
        self.finetune_status = QLabel("needs a Label Anything model and 3+ painted or corrected planes")
        self.finetune_status.setWordWrap(True)
        layout.addWidget(self.finetune_status)
        return box

    @property
    def finetuning(self) -> bool:
        return self._finetune_launcher.busy

    def finetune(self, steps: int | None = None, name: str | None = None):
        """Fine-tune the chosen model on the episode's painted planes in a worker; returns the worker.

        The result (``finetune_session.FinetuneOutcome``) lands in ``self.finetune_outcome``; the
        new model is registered as ``name`` and chosen in the model picker.
        """
        if self.finetuning or self.host.runs.busy or self.host.batching:
            raise ValueError("wait for the current run, batch or fine-tuning to finish")
        from ..finetune_session import split_held_out

        episode = self.host.build_episode(background=False, channels=self.host.channels)  # as runs see them
        split_held_out(episode)  # refuse too few painted planes before any loading
        picker = self.host.model_picker
        if picker.model_name == "classic":
            raise ValueError("fine-tuning needs a Label Anything model: choose one in the model picker")
        steps = int(steps or self.finetune_steps.value())
        name = (name or self.finetune_name.text().strip() or default_model_name(picker.model_name)).strip()
        if not re.fullmatch(r"[\w.-]+", name) or name in (".", ".."):
            raise ValueError(f"model name {name!r}: use letters, digits, '.', '-' and '_' only")
        out = finetuned_models_dir() / name
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"a fine-tuned model named {name!r} exists already ({out}); choose another name")
        self._finetune_stop.clear()
        self.finetune_outcome = None
        self.finetune_button.setEnabled(False)
        self.finetune_cancel_button.setEnabled(True)
        self.finetune_status.setText(f"fine-tuning {steps} step(s)…")
        self._finetune_out = out
        return self._finetune_launcher.start(
            _finetune_job, picker.get_segmenter, episode, out, steps, name, picker.device, self._finetune_stop,
            yielded=self._on_finetune_message, returned=self._on_finetune_done,
            errored=self._on_finetune_error, finished=self._on_finetune_finished,
        )  # fmt: skip

    def cancel_finetune(self) -> None:
        self._finetune_stop.set()
        if self.finetuning:
            self.finetune_status.setText("stopping after the current step…")

    def _on_finetune_message(self, message: Status | FinetuneStep) -> None:
        if self.host.closed:
            return
        if isinstance(message, Status):
            self.finetune_status.setText(message.text)
            return
        self.finetune_status.setText(
            f"step {message.step}/{message.total}, loss {message.loss:.4f}, about {message.eta:.0f} s left"
        )

    def _on_finetune_done(self, outcome) -> None:
        self.finetune_outcome = outcome
        if self.host.closed:
            return
        if outcome.cancelled:
            _discard(self._finetune_out)  # nothing to resume from the widget: no half-made model is kept
            self.finetune_status.setText(f"stopped after {outcome.steps} step(s); the model in use is unchanged")
            return
        picker = self.host.model_picker
        picker.set_model(outcome.registered_as or str(outcome.checkpoint), picker.device)
        held = ", ".join(outcome.held_out)
        self.finetune_status.setText(
            f"{outcome.registered_as}: held-out mIoU {outcome.before:.3f} → {outcome.after:.3f} "
            f"({held}; learned from {outcome.trained_on} plane(s), {outcome.steps} steps). "
            "It is now chosen in the model picker; choose the previous model there to go back."
        )

    def _on_finetune_error(self, err: BaseException) -> None:
        _discard(self._finetune_out)
        self.host.report_error("fine-tuning failed", err)

    def _on_finetune_finished(self) -> None:
        if self.host.closed:
            return
        self.finetune_button.setEnabled(True)
        self.finetune_cancel_button.setEnabled(False)

    def stop(self) -> None:
        """Called when the widget is released: stop a running fine-tuning at its next step."""
        self._finetune_stop.set()
        self._finetune_launcher.stop_all()
