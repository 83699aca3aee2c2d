"""The dock's Batch panel: the current episode over a folder of files, as ``predict`` runs it.

``BatchPanel`` is the dock's part (its host described by ``BatchHost``). The jobs are planned with the batch code
of the command line (``batch.jobs``: inputs expanded, unique output names, existing outputs
refused unless overwrite is ticked, a writable folder, every input checked) before the model
loads, and each runs through ``batch.run_job`` (TIFF or OME-Zarr, optionally with objects) in a
worker: the episode and model are the ones a Run uses. Stop cancels within the file in progress
(``PlaneSteps``): its output is never written (``run_job`` writes atomically); the files
finished before it are kept. The form is a magicgui ``Container`` built widget by widget (no
annotations to resolve, so this module may use ``from __future__ import annotations``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout

from .messages import CANCELLED, FileDone, FileStarted, ModelReady, Progress, RunOutcome, Status
from .workers import PredictionError, WorkerLauncher, download_with_status, import_torch_stack

PROGRESS_PER_PLANE = 100
OVERWRITE_HINT = "tick 'overwrite' or choose another output folder"
FORM_TOOLTIPS = {
    "input": "The folder of images to segment (TIFF, PNG, JPEG, BMP, .zarr / OME-Zarr)",
    "recursive": "Also segment the images in the folders inside the input folder",
    "output": "Where the label images go (<name>_labels.tif or <name>_labels.ome.zarr); created if needed",
    "format": "tiff: one <name>_labels.tif per input, the class names inside;\n"
    "ome-zarr: <name>_labels.ome.zarr, written plane by plane (for large stacks)",
    "overwrite": "Replace outputs that exist already; unticked, the batch refuses to start when one exists",
    "objects": "Also split each result into objects and measure them: <name>_objects.tif (one label per\n"
    "object) and <name>_objects.csv (class, size, mean intensity, centroid, box) beside it",
}


def plan_batch(
    folder: str | Path,
    out: str | Path,
    recursive: bool = False,
    format: str = "tiff",
    overwrite: bool = False,
    objects: bool = False,
    options: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[list, list[int]]:
    """The batch's jobs (``batch.jobs.BatchJob``) and each one's number of planes, every
    input checked as ``predict`` checks it. Raises ValueError / FileNotFoundError."""
    from ..batch.jobs import FORMATS, BatchJob, check_job, expand_inputs, output_paths, refuse_existing
    from ..io.label_files import check_writable_folder

    if format not in FORMATS:
        raise ValueError(f"unknown output format {format!r}; choose one of {', '.join(FORMATS)}")
    if not str(folder).strip():
        raise ValueError("choose an input folder")
    if not str(out).strip():
        raise ValueError("choose an output folder")
    inputs = expand_inputs([folder], recursive=recursive, skip=[out])
    targets = output_paths(inputs, out, FORMATS[format])
    jobs = [
        BatchJob(str(source), str(target), format, 0, dict(options or {}), dict(metadata or {}), objects=objects)
        for source, target in zip(inputs, targets, strict=True)
    ]
    if not overwrite:
        refuse_existing(jobs, OVERWRITE_HINT)
    check_writable_folder(out)
    return jobs, [check_job(job).n_planes for job in jobs]


def batch_job(
    get_segmenter: Callable[[], Any],
    episode,
    jobs: list,
    planes: list[int],
    download: str | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[Status | ModelReady | FileStarted | Progress | FileDone]:
    """Generator run in the worker (``messages.py``): ``Status`` lines, ``ModelReady``, then per
    file ``FileStarted``, ``Progress(planes done, planes in all)`` after each plane and
    ``FileDone(JobResult)`` once its output is written; returns the results.

    Each file runs in a helper thread, so progress comes out as it goes and ``cancel`` (the
    worker's stop request) reaches ``run_job`` within its plane; a cancelled file writes
    nothing and the generator ends with ``messages.CANCELLED``.
    """
    import queue
    import threading

    from ..batch.jobs import run_job
    from ..inference.base import PredictionCancelled, is_cancelled

    try:
        if download is not None:
            yield from download_with_status(download)
        yield Status("loading model")
        segmenter = get_segmenter()
        yield ModelReady(str(segmenter.name), str(segmenter.device))
        total, done, results = sum(planes), 0, []
        for i, (job, n_planes) in enumerate(zip(jobs, planes, strict=True)):
            if is_cancelled(cancel):
                break
            yield FileStarted(i, len(jobs), str(job.source))
            messages: queue.SimpleQueue = queue.SimpleQueue()

            def work(job=job, messages=messages) -> None:
                try:
                    result = run_job(segmenter, episode, job, progress=lambda d, _t: messages.put(("plane", d)),
                                     cancel=lambda: is_cancelled(cancel))  # fmt: skip
                    messages.put(("done", result))
                except BaseException as err:  # noqa: BLE001 - raised in the generator below
                    messages.put(("error", err))

            threading.Thread(target=work, name="nla-batch", daemon=True).start()
            while True:
                kind, payload = messages.get()
                if kind == "plane":
                    yield Progress(done + payload, total)
                    continue
                if kind == "done":
                    done += n_planes
                    results.append(payload)
                    yield FileDone(payload)
                elif isinstance(payload, PredictionCancelled) and is_cancelled(cancel):
                    yield CANCELLED
                    return results
                else:
                    raise payload
                break
        if is_cancelled(cancel):
            yield CANCELLED
        return results
    except RuntimeError as err:  # superqt swallows a worker's RuntimeError (workers.PredictionError)
        name = "" if type(err) is RuntimeError else f"{type(err).__name__}: "
        raise PredictionError(f"{name}{err}") from err


class BatchHost(Protocol):
    """What ``BatchPanel`` uses of the dock."""

    closed: bool
    runs: Any  # the RunController: ``busy``
    model_picker: Any

    @property
    def finetuning(self) -> bool: ...

    @property
    def normalise(self) -> str: ...

    def guard(self, action: Callable[[], Any], what: str) -> Any: ...

    def report_error(self, what: str, err: BaseException) -> None: ...

    def run_episode(self) -> Any: ...

    def cancel_preview(self) -> None: ...

    def segmenter_after_encoding(self) -> Any: ...

    def schedule_encoding(self, *_) -> None: ...


class BatchPanel:
    """The Batch panel of the dock."""

    def __init__(self, host: BatchHost) -> None:
        self.host = host

    def build(self) -> QGroupBox:
        from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit

        from ..batch.jobs import FORMATS

        self._batch_launcher = WorkerLauncher()
        self.worker = None  # the worker of the latest batch
        self.batch_results: list = []
        self.batch_outcome: RunOutcome | None = None  # once a batch ended
        self._batch_claims = None  # the outputs claimed while a batch runs (``_claim_batch``)
        self._batch_started = 0.0
        tips = FORM_TOOLTIPS
        self.batch_input = FileEdit(mode="d", label="input folder", tooltip=tips["input"])
        self.batch_recursive = CheckBox(text="include sub-folders", value=False, tooltip=tips["recursive"])
        self.batch_output = FileEdit(mode="d", label="output folder", tooltip=tips["output"])
        self.batch_format = ComboBox(choices=tuple(FORMATS), value="tiff", label="format", tooltip=tips["format"])
        self.batch_overwrite = CheckBox(text="overwrite", value=False, tooltip=tips["overwrite"])
        self.batch_objects = CheckBox(text="objects too", value=False, tooltip=tips["objects"])
        fields = [self.batch_input, self.batch_recursive, self.batch_output, self.batch_format]
        self.batch_form = Container(widgets=[*fields, self.batch_overwrite, self.batch_objects])
        for edit in (self.batch_input, self.batch_output):  # the tooltip on the parts the user points at
            edit.line_edit.native.setToolTip(edit.tooltip)
            edit.choose_btn.native.setToolTip(f"Choose the {edit.label} in a folder dialog")
        self.batch_form.native.layout().setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("Batch")
        layout = QVBoxLayout(box)
        layout.addWidget(self.batch_form.native)
        row = QHBoxLayout()
        self.batch_button = QPushButton("Run batch")
        self.batch_button.setToolTip(
            "Segment every image of the input folder with the current classes, examples and model\n"
            "(as Run does) and write the results to the output folder; napari stays usable"
        )
        self.batch_button.clicked.connect(lambda: self.host.guard(self._run_batch_from_form, "cannot run the batch"))
        self.batch_stop_button = QPushButton("Stop")
        self.batch_stop_button.setToolTip(
            "Stop the batch within the file in progress: that file's output is not written; files\nfinished before stay"
        )
        self.batch_stop_button.setEnabled(False)
        self.batch_stop_button.clicked.connect(self.cancel_batch)
        row.addWidget(self.batch_button)
        row.addWidget(self.batch_stop_button)
        layout.addLayout(row)
        self.batch_progress = QProgressBar()
        self.batch_progress.setToolTip("Planes done in the batch, all files together")
        self.batch_status = QLabel("")
        self.batch_status.setWordWrap(True)
        layout.addWidget(self.batch_progress)
        layout.addWidget(self.batch_status)
        return box

    @property
    def batching(self) -> bool:
        return self._batch_launcher.busy

    def _run_batch_from_form(self):
        return self.run_batch(
            self.batch_input.line_edit.value, self.batch_output.line_edit.value, self.batch_recursive.value,
            self.batch_format.value, self.batch_overwrite.value, self.batch_objects.value,
        )  # fmt: skip

    def run_batch(self, folder, out, recursive: bool = False, format: str = "tiff", overwrite: bool = False,
                  objects: bool = False):  # fmt: skip
        """Segment every image of ``folder`` into ``out`` in a worker, as ``predict`` does; returns the worker.

        The episode and model are those a Run uses; ``format`` "tiff" or "ome-zarr";
        ``objects``: also ``<name>_objects.tif`` and ``.csv``. Everything is checked before the
        model loads (ValueError / FileNotFoundError). ``batch_results`` collects each file's
        ``JobResult``; ``batch_outcome`` says how the batch ended.
        """
        if self.host.closed:
            raise ValueError("the Label Anything widget is closed; open it again")
        if self.batching or self.host.runs.busy or self.host.finetuning:
            raise ValueError("a run, batch or fine-tuning is in progress: wait for it or stop it")
        picker = self.host.model_picker
        episode = self.host.run_episode()
        metadata = {"model": picker.model_name}
        if picker.resolved_encoder() != "torch" and not picker.is_classic():  # "auto" as it resolves
            metadata["encoder"] = picker.resolved_encoder()
        normalise = self.host.normalise
        options = {} if normalise == "auto" else {"normalise": normalise}
        jobs, planes = plan_batch(folder, out, recursive, format, overwrite, objects, options, metadata)
        import_torch_stack()
        download = picker.checkpoint_to_download()
        self._claim_batch(jobs, overwrite)  # another run into these outputs stops here (OutputClaimed)
        self.host.cancel_preview()
        self.batch_results, self.batch_outcome = [], None
        self._batch_started = time.perf_counter()
        self.batch_progress.setRange(0, max(sum(planes), 1) * PROGRESS_PER_PLANE)
        self.batch_progress.setValue(0)
        self.batch_button.setEnabled(False)
        self.batch_stop_button.setEnabled(True)
        self.batch_status.setText(f"{len(jobs)} file(s) to {out}: starting")
        try:
            self.worker = self._batch_launcher.start(
                batch_job, self.host.segmenter_after_encoding, episode, jobs, planes, download, cancellable=True,
                yielded=self._on_batch_message, returned=self._on_batch_returned, errored=self._on_batch_error,
                aborted=self._on_batch_aborted, finished=self._on_batch_finished,
            )  # fmt: skip
        except BaseException:
            self._release_batch()
            raise
        return self.worker

    def _claim_batch(self, jobs: list, overwrite: bool) -> None:
        """Claim the batch's outputs until it ends (``batch.claimed_outputs``, existing outputs
        checked again under the claims), released by ``_release_batch``."""
        from contextlib import ExitStack

        from ..batch.jobs import claimed_outputs

        self._release_batch()
        stack = ExitStack()
        stack.enter_context(claimed_outputs(jobs, overwrite, OVERWRITE_HINT))
        self._batch_claims = stack

    def _release_batch(self) -> None:
        stack = self._batch_claims
        self._batch_claims = None
        if stack is not None:
            stack.close()

    def cancel_batch(self) -> None:
        """Stop the batch within the file in progress (its output is not written)."""
        if self.batching:
            self.batch_status.setText("stopping…")
        self._batch_launcher.stop_all()

    def _on_batch_message(self, message: Status | ModelReady | FileStarted | Progress | FileDone) -> None:
        if self.host.closed:
            return
        match message:
            case Status(text):
                self.batch_status.setText(text)
            case ModelReady(name, device):
                self.batch_status.setText(f"running {name} on {device}")
            case FileStarted(number, count, source):
                self.batch_status.setText(f"file {number + 1}/{count}: {Path(source).name}")
            case Progress(done):
                self.batch_progress.setValue(round(done * PROGRESS_PER_PLANE))
            case FileDone(result):
                self.batch_results.append(result)

    def _on_batch_returned(self, _results) -> None:
        if self.batch_outcome is None:
            self.batch_outcome = RunOutcome.CANCELLED if self.worker.abort_requested else RunOutcome.DONE
        self._batch_ended()

    def _on_batch_aborted(self) -> None:
        self.batch_outcome = RunOutcome.CANCELLED
        self._batch_ended()

    def _on_batch_error(self, err: BaseException) -> None:
        self.batch_outcome = RunOutcome.FAILED
        self._batch_ended()
        self.host.report_error("the batch failed", err)

    def _batch_ended(self) -> None:
        if self.host.closed:
            return
        seconds = time.perf_counter() - self._batch_started
        done = len(self.batch_results)
        outputs = Path(self.batch_results[-1].target).parent if self.batch_results else None
        if self.batch_outcome is RunOutcome.DONE:
            self.batch_progress.setValue(self.batch_progress.maximum())
            self.batch_status.setText(f"{done} file(s) in {seconds:.1f} s -> {outputs}")
        elif self.batch_outcome is RunOutcome.CANCELLED:
            self.batch_status.setText(f"stopped after {done} file(s): their outputs are kept, the file in progress "
                                      "wrote nothing")  # fmt: skip
        else:
            self.batch_status.setText(f"failed after {done} file(s); see the notification")

    def _on_batch_finished(self) -> None:
        self._release_batch()
        if self.host.closed:
            return
        self.batch_button.setEnabled(True)
        self.batch_stop_button.setEnabled(False)
        self.host.schedule_encoding()  # encoding.py: what changed during the batch

    def stop(self) -> None:
        """Called when the widget is released: stop a batch within its file in progress."""
        self._batch_launcher.stop_all()
