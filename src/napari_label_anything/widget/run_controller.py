"""One prediction run at a time, from the Run button to the output layer, and nothing after close.

The controller owns the worker launcher. Each plane is written into the output layer as it
finishes (``output_layers.ProgressiveOutput``), so a stack fills up in the viewer; a run that is
cancelled, stopped or fails takes those planes back: every layer is as it was before the run.
A run reads layers that the user can remove while it works (the query, every support image
and prompt layer): removing one stops the run, which then ends with a message naming the
layer and leaves nothing written. Closing the widget (or the viewer) calls ``close``: the
workers are asked to stop, the planes written are taken back and every later worker callback
is ignored, so no layer is changed and no deleted Qt widget is touched.

The widget is reached through a small ``RunView`` interface, so the rules here do not depend
on the widget's layout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..corrections import keep_planes
from .feedback import kept_note
from .layer_conversion import model_data, same_layer
from .messages import ModelReady, Normalised, PlaneResult, Progress, RunOutcome, Status
from .output_layers import ProgressiveOutput, ProgressiveUncertainty, write_output
from .reporting import one_line
from .workers import PredictionError, WorkerLauncher, predict_planes

logger = logging.getLogger(__name__)


class RunView(Protocol):
    """What the controller needs from the widget (called on the GUI thread, never after close)."""

    def run_started(self, total: int) -> None: ...

    def run_progress(self, done: float, total: int) -> None:
        """``done`` of ``total`` planes are finished; a fraction is the finished share of the
        plane in progress (segmenters that predict a plane in steps report it)."""

    def run_status(self, text: str) -> None: ...

    def run_ended(self, outcome: RunOutcome, message: str, error: BaseException | None) -> None:
        """How the run ended; ``message`` is one line."""


def run_summary(run: Run) -> str:
    """The text "<model> on <device>, <encoder> encoder, <t> s": what ran (for "auto", the model and
    encoder it resolved to) and how long the run took, download and loading included."""
    name, device, encoder = run.model or ("the model", "?", None)
    encoder = f", {encoder} encoder" if encoder else ""
    each = ", each plane normalised on its own" if run.normalised == "plane" else ""
    return f"{name} on {device}{encoder}{each}, {time.perf_counter() - run.started:.1f} s"


@dataclass
class Run:
    """The state of the run in progress."""

    worker: Any
    query: Any
    watched: list  # layers the run reads: removing one stops it
    class_names: tuple[str, ...]
    total: int
    pending: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict)
    stop_reason: str | None = None  # set when a watched layer disappears
    outcome: tuple[RunOutcome, str, BaseException | None] | None = None  # reported when the worker finishes
    model: tuple[str, str, str | None] | None = None  # (name, device, encoder label) of the segmenter that ran
    started: float = field(default_factory=time.perf_counter)
    last_event: float | None = None  # when the model was ready, then when the last plane arrived
    plane_seconds: list[float] = field(default_factory=list)  # time between planes, as they arrived
    output: ProgressiveOutput | None = None  # the planes written so far, and how to undo them
    uncertainty: ProgressiveUncertainty | None = None  # the same for the uncertainty layer, when asked
    stopping: bool = False  # cancelled or stopped: later planes are not written
    normalised: str | None = None  # what the run's normalisation resolved to: "stack" or "plane"
    kept: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict)  # planes shown as the user gave them
    disagreements: dict[tuple[int, ...], int] = field(default_factory=dict)  # per kept plane the run predicted


class RunController:
    def __init__(self, viewer, view: RunView, classes) -> None:
        self.viewer = viewer
        self.view = view
        self.classes = classes
        self.launcher = WorkerLauncher()
        self.current: Run | None = None
        self.last_plane_seconds: float | None = None  # median plane time of the last successful run
        self.closed = False
        self.viewer.layers.events.removed.connect(self._on_layer_removed)

    @property
    def busy(self) -> bool:
        """True from ``start`` until the worker has finished (cancelled and stopped runs too)."""
        return self.current is not None or self.launcher.busy

    def start(
        self,
        get_segmenter: Callable[[], Any],
        episode,
        query_layer,
        indices: list[tuple[int, ...]],
        watched: Sequence,
        download: str | None,
        uncertainty: bool = False,
        channels=None,
        kept: dict[tuple[int, ...], np.ndarray] | None = None,
        normalise: str = "auto",
    ):
        """Start predicting ``indices`` of ``query_layer`` in a worker and return the worker.

        ``channels``: the colour channels of the query the model sees (``layer_conversion.model_data``).

        ``kept``: {plane index: labels} the user corrected (``feedback.kept_planes``): written
        as they are, whatever the model predicts there (``corrections.keep_planes``); where the
        model differs is counted in the done message.

        ``normalise``: how a stack's planes are normalised ("auto", "stack" or "plane"); the
        done message says when each plane was normalised on its own.

        ``uncertainty``: also write the uncertainty layer (``output_layers.write_uncertainty``), plane
        by plane with the labels, if the segmenter gives uncertainty.
        """
        if self.closed:
            raise RuntimeError("the Label Anything widget is closed")
        if self.busy:
            raise RuntimeError("a run is already in progress")
        data, rgb = model_data(query_layer, channels)  # a bad channel fails before the run starts
        self.view.run_started(len(indices))
        run = Run(None, query_layer, [query_layer, *watched], tuple(self.classes.names), len(indices), kept=kept or {})
        run.output = ProgressiveOutput(self.viewer, query_layer, self.classes)
        if uncertainty:
            run.uncertainty = ProgressiveUncertainty(self.viewer, query_layer, len(self.classes) + 1)
        self.current = run
        try:
            run.worker = self.launcher.start(
                predict_planes,
                get_segmenter,
                episode,
                data,
                indices,
                rgb,
                download,
                uncertainty,
                normalise,
                cancellable=True,  # a cancel or stop reaches the segmenter within its plane
                yielded=lambda message: self._on_yielded(run, message),
                returned=lambda value: self._on_returned(run),
                errored=lambda error: self._on_errored(run, error),
                aborted=lambda: self._on_aborted(run),
                finished=lambda: self._on_finished(run),
            )
        except BaseException:
            self.current = None
            raise
        return run.worker

    def cancel(self) -> None:
        """Stop the run (within the current plane where the segmenter predicts it in steps,
        else after it); the planes it wrote are taken back."""
        if self.current is not None:
            self.current.stopping = True
        self.launcher.stop_all()

    def close(self) -> None:
        """Stop every worker and take back what the run wrote; from now on worker callbacks
        change nothing. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.launcher.stop_all()
        if self.current is not None:
            self.current.stopping = True
            self._restore(self.current)
        try:
            self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        except (TypeError, ValueError, RuntimeError):  # pragma: no cover - already disconnected
            pass

    def reopen(self) -> None:
        """Undo ``close`` (the same widget was docked again)."""
        if self.closed:
            self.closed = False
            self.viewer.layers.events.removed.connect(self._on_layer_removed)

    # -- worker callbacks (GUI thread) ------------------------------------------------------

    def _live(self, run: Run) -> bool:
        return not self.closed and run is self.current

    def _on_layer_removed(self, event) -> None:
        run = self.current
        if run is None or self.closed or run.stop_reason is not None:
            return
        removed = event.value
        if any(same_layer(layer, removed) for layer in run.watched):
            what = "query" if same_layer(removed, run.query) else "support"
            run.stop_reason = f"{what} layer {removed.name!r} was removed during the run"
            self._restore(run)
            self.view.run_status(f"stopping: {run.stop_reason}")
            run.worker.quit()

    def _restore(self, run: Run) -> None:
        """Every layer back as it was before the run (planes written so far are taken back)."""
        run.pending = {}
        for output in (run.output, run.uncertainty):
            if output is None:
                continue
            try:
                output.restore()
            except Exception:  # noqa: BLE001 - e.g. the viewer's window is gone: never raise here
                logger.warning("could not restore an output layer after the run", exc_info=True)

    def _on_yielded(self, run: Run, message: Status | ModelReady | Normalised | Progress | PlaneResult) -> None:
        if not self._live(run) or run.stop_reason is not None or run.stopping:
            return
        if isinstance(message, Status):
            self.view.run_status(message.text)
            return
        if isinstance(message, Progress):  # planes done with the share of the one running
            self.view.run_progress(message.done, message.total)
            return
        if isinstance(message, Normalised):
            run.normalised = message.mode
            return
        if isinstance(message, ModelReady):
            run.model = (message.name, message.device, message.encoder)
            run.last_event = time.perf_counter()
            return
        self._on_plane(run, message)

    def _on_plane(self, run: Run, result: PlaneResult) -> None:
        index, labels, uncertainty = result.index, result.labels, result.uncertainty
        plane = {index: labels}
        run.disagreements.update(keep_planes(plane, run.kept))  # a kept plane replaces the prediction
        run.pending[index] = labels = plane[index]
        now = time.perf_counter()
        if run.last_event is not None:
            run.plane_seconds.append(now - run.last_event)
        run.last_event = now
        if tuple(self.classes.names) != run.class_names:
            run.stop_reason = "the classes changed during the run"
            self._restore(run)
            run.worker.quit()
            return
        run.output.write(index, labels, run.pending)  # the plane appears at once
        if uncertainty is not None and run.uncertainty is not None:
            run.uncertainty.write(index, uncertainty)
        self.view.run_progress(result.done, result.total)

    def _on_returned(self, run: Run) -> None:
        if not self._live(run):
            return
        if run.stop_reason is None and not any(same_layer(layer, run.query) for layer in self.viewer.layers):
            run.stop_reason = f"query layer {run.query.name!r} is no longer in the viewer"
        if run.stop_reason is None and tuple(self.classes.names) != run.class_names:
            run.stop_reason = "the classes changed during the run"
        if run.stop_reason is not None:
            self._end_stopped(run)
            return
        if run.stopping:  # cancelled after its last plane: cancelled all the same
            self._restore(run)
            run.outcome = (RunOutcome.CANCELLED, "run cancelled; no layer was changed", None)
            return
        layer = write_output(self.viewer, run.query, {**run.pending, **run.kept}, self.classes)
        message = f"done: {len(run.pending)} plane(s) -> {layer.name!r}"
        written = run.uncertainty.layer if run.uncertainty is not None else None
        if written is not None and any(same_layer(layer, written) for layer in self.viewer.layers):
            message += f" and {written.name!r}"
        message += f" ({run_summary(run)})"
        if run.disagreements:
            message += f"; {kept_note(run.disagreements)}"
        run.outcome = (RunOutcome.DONE, message, None)
        if run.plane_seconds:
            self.last_plane_seconds = float(np.median(run.plane_seconds))
        run.pending = {}

    def _on_errored(self, run: Run, error: BaseException) -> None:
        if self._live(run):
            self._restore(run)
        logger.warning("Label Anything run failed", exc_info=error)
        original = error.__cause__ if isinstance(error, PredictionError) and error.__cause__ else error
        run.outcome = (RunOutcome.FAILED, f"Label Anything failed: {one_line(error, limit=None)}", original)

    def _on_aborted(self, run: Run) -> None:
        if not self._live(run):
            return
        if run.stop_reason is not None:
            self._end_stopped(run)
        else:
            self._restore(run)
            run.outcome = (RunOutcome.CANCELLED, "run cancelled; no layer was changed", None)

    def _end_stopped(self, run: Run) -> None:
        self._restore(run)
        run.outcome = (RunOutcome.STOPPED, f"run stopped: {run.stop_reason}; nothing was written", None)

    def _on_finished(self, run: Run) -> None:
        """The worker is done: the run is over and its outcome is reported (once)."""
        if run is self.current:
            self.current = None
        if self.closed:
            return
        outcome, message, error = run.outcome or (RunOutcome.FAILED, "the run ended without a result", None)
        self.view.run_ended(outcome, message, error)
