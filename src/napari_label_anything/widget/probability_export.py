"""The dock's "export probabilities…": the query's class probabilities as TIFF or OME-Zarr.

``ProbabilityExporter`` is the dock's part (its host described by ``ProbabilityHost``). The probabilities are computed
again, with the episode as it is now, rather than kept from the last run: a run keeps only
labels (a stack's probabilities are N+1 floats per pixel, too much to hold for every run), and
the file then always matches the current prompts and model, even after edits since the run.
The segmenter's caches (features, prototypes, the classic model's fit) make that second pass
cheaper than the run. The work is ``probabilities.probability_planes`` +
``write_probabilities`` (what ``predict --probabilities`` runs), in a worker of the run
controller: it counts as a run (one at a time, Cancel stops it, closing the widget too), and
writes plane by plane, atomically (a cancel leaves no file).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .messages import Progress, Status

# Save-dialog filters: (file type filter, dtype)
FILTERS = {
    "TIFF, float32 0..1 (*.tif *.tiff)": "float32",
    "TIFF, uint8 0..255 (*.tif *.tiff)": "uint8",
    "OME-Zarr, float32 0..1 (*.ome.zarr)": "float32",
    "OME-Zarr, uint8 0..255 (*.ome.zarr)": "uint8",
}


def probability_job(get_segmenter, episode, query, rgb: bool, target: str, dtype: str, normalise: str,
                    download: str | None, extra: dict[str, Any], cancel=None):  # fmt: skip
    """Generator for the worker: yields ``Status`` and ``Progress`` (planes); returns
    the written path (None when cancelled). The planes are predicted and written in a helper
    thread, so progress comes out while they run."""
    from ..inference.base import PredictionCancelled, is_cancelled
    from ..probabilities import channel_names, probability_planes, write_probabilities
    from ..stacks import stack_layout
    from .workers import PredictionError, download_with_status

    try:
        if download is not None:
            yield from download_with_status(download)
        yield Status("loading model")
        segmenter = get_segmenter()
        yield Status(f"class probabilities with {segmenter.name} on {segmenter.device}")
        layout = stack_layout(query.shape, 0, rgb)
        mode = segmenter.normalisation(query, rgb=rgb, normalise=normalise, episode=episode)
        updates: queue.SimpleQueue = queue.SimpleQueue()
        planes = probability_planes(segmenter, episode, query, 0, rgb=rgb, cancel=cancel, normalise=mode,
                                    progress=lambda done, total: updates.put((done, total)))  # fmt: skip
        sizes = [layout.shape[a] for a in layout.plane_axes]
        names = channel_names(episode.classes)
        outcome: dict[str, Any] = {}

        def write() -> None:
            try:
                outcome["path"] = write_probabilities(target, planes, sizes, layout.spatial_shape, names, dtype, extra)
            except BaseException as err:  # noqa: BLE001 - raised in the generator below
                outcome["error"] = err

        thread = threading.Thread(target=write, name="nla-probabilities", daemon=True)
        thread.start()
        while thread.is_alive() or not updates.empty():
            thread.join(0.1)
            while not updates.empty():
                yield Progress(*updates.get())
        error = outcome.get("error")
        if isinstance(error, PredictionCancelled) and is_cancelled(cancel):
            return None
        if error is not None:
            raise error
        return outcome["path"]
    except RuntimeError as err:
        name = "" if type(err) is RuntimeError else f"{type(err).__name__}: "
        raise PredictionError(f"{name}{err}") from err


class ProbabilityHost(Protocol):
    """What ``ProbabilityExporter`` uses of the dock: its state, the run bar, the run's inputs."""

    closed: bool
    runs: Any  # the RunController: ``busy``, and its ``launcher`` (an export counts as a run)
    model_picker: Any
    channels: tuple[int, ...] | None
    progress: Any  # the run bar's QProgressBar
    run_button: Any
    cancel_button: Any
    status: Any  # the status line (a QLabel)

    @property
    def finetuning(self) -> bool: ...

    @property
    def batching(self) -> bool: ...

    @property
    def normalise(self) -> str: ...

    def guard(self, action: Callable[[], Any], what: str) -> Any: ...

    def report_error(self, what: str, err: BaseException) -> None: ...

    def chosen_query(self) -> Any: ...

    def run_episode(self) -> Any: ...

    def run_status(self, text: str, details: str | None = None) -> None: ...

    def reset_run_bar(self) -> None:
        """Run enabled, Cancel disabled: nothing runs."""

    def cancel_preview(self) -> None: ...

    def segmenter_after_encoding(self) -> Any: ...

    def schedule_encoding(self, *_) -> None: ...


class ProbabilityExporter:
    """The dock's class probability export (Files box)."""

    def __init__(self, host: ProbabilityHost, parent=None) -> None:
        self.host = host
        self.parent = parent  # the dialogs' parent widget

    def export_probabilities(self, path: str | Path, query_layer=None, dtype: str = "float32"):
        """Write the class probabilities of ``query_layer`` (default: the widget's query) with the
        current episode and model: every plane, one channel per class with the background first
        (``probabilities.py``), as float32 (0..1) or uint8 (0..255); a ``.tif`` / ``.tiff`` path
        gives an ImageJ TIFF, a ``.ome.zarr`` path an OME-Zarr image. Runs in a worker, which it
        returns (the status line follows it; Cancel stops it, leaving no file).

        Raises:
            ValueError: while a run or fine-tuning is going, for an unknown dtype or file type,
                or an incomplete episode.
        """
        from ..io.ome_zarr import is_zarr_path
        from ..probabilities import TIFF_SUFFIXES, check_dtype
        from .layer_conversion import model_data
        from .workers import import_torch_stack

        host = self.host
        if host.closed:
            raise ValueError("the Label Anything widget is closed; open it again to export")
        if host.runs.busy or host.finetuning or host.batching:
            raise ValueError("a run or fine-tuning is in progress: wait for it or press Cancel / Stop")
        dtype = check_dtype(dtype).name
        path = Path(path)
        if not (path.name.lower().endswith(TIFF_SUFFIXES) or is_zarr_path(path)):
            raise ValueError(f"{path.name}: probabilities are written as .tif / .tiff or .ome.zarr")
        query_layer = query_layer or host.chosen_query()
        episode = host.run_episode()
        data, rgb = model_data(query_layer, host.channels)
        import_torch_stack()
        download = host.model_picker.checkpoint_to_download()
        host.cancel_preview()  # the export wins: a preview in flight is dropped
        extra = {"query": query_layer.name, "model": host.model_picker.model_name}
        host.progress.setRange(0, 0)
        host.run_button.setEnabled(False)
        host.run_button.setText("exporting…")
        host.cancel_button.setEnabled(True)
        host.run_status(f"exporting the class probabilities of {query_layer.name!r}")
        return host.runs.launcher.start(
            probability_job, host.segmenter_after_encoding, episode, data, rgb, str(path), dtype, host.normalise,
            download, extra, cancellable=True,
            yielded=self._on_probability_message,
            returned=lambda written: self._probabilities_ended(written, query_layer.name, dtype),
            errored=lambda error: self._probabilities_ended(None, query_layer.name, dtype, error),
            aborted=lambda: self._probabilities_ended(None, query_layer.name, dtype),
        )  # fmt: skip

    def _on_probability_message(self, message: Status | Progress) -> None:
        if self.host.closed:
            return
        if isinstance(message, Progress):
            done, total = int(message.done), message.total
            self.host.progress.setRange(0, total)
            self.host.progress.setValue(done)
            self.host.status.setText(f"probabilities: plane {done}/{total}")
        else:
            self.host.run_status(message.text)

    def _probabilities_ended(self, written, query_name: str, dtype: str, error: BaseException | None = None) -> None:
        host = self.host
        if host.closed:
            return
        host.reset_run_bar()
        host.progress.setRange(0, 1)
        host.progress.setValue(0 if written is None else 1)
        if error is not None:
            host.report_error("cannot export probabilities", error)
        elif written is None:
            host.run_status("probability export cancelled: no file written")
        else:
            host.run_status(f"exported the class probabilities of {query_name!r} ({dtype}) to {written}")
        host.schedule_encoding()  # encoding.py: what changed meanwhile

    def export_dialog(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, chosen = QFileDialog.getSaveFileName(
            self.parent, "Export class probabilities", "probabilities.tif", ";;".join(FILTERS)
        )
        if path:
            if "OME-Zarr" in chosen and not path.lower().endswith(".zarr"):
                path += ".ome.zarr"
            dtype = FILTERS.get(chosen, "float32")
            self.host.guard(lambda: self.export_probabilities(path, dtype=dtype), "cannot export probabilities")
