"""The dock's "export probabilities…": the query's class probabilities as TIFF or OME-Zarr.

``ProbabilityExport`` is mixed into ``LabelAnythingWidget``. The probabilities are computed
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
from pathlib import Path
from typing import Any

# Save-dialog filters: (file type filter, dtype)
FILTERS = {
    "TIFF, float32 0..1 (*.tif *.tiff)": "float32",
    "TIFF, uint8 0..255 (*.tif *.tiff)": "uint8",
    "OME-Zarr, float32 0..1 (*.ome.zarr)": "float32",
    "OME-Zarr, uint8 0..255 (*.ome.zarr)": "uint8",
}


def probability_job(get_segmenter, episode, query, rgb: bool, target: str, dtype: str, normalise: str,
                    download: str | None, extra: dict[str, Any], cancel=None):  # fmt: skip
    """Generator for the worker: yields ("status", text) and ("progress", (done, total)); returns
    the written path (None when cancelled). The planes are predicted and written in a helper
    thread, so progress comes out while they run."""
    from ..inference.base import PredictionCancelled, is_cancelled
    from ..probabilities import channel_names, probability_planes, write_probabilities
    from ..stacks import stack_layout
    from .workers import PredictionError, download_with_status

    try:
        if download is not None:
            yield from download_with_status(download)
        yield "status", "loading model"
        segmenter = get_segmenter()
        yield "status", f"class probabilities with {segmenter.name} on {segmenter.device}"
        layout = stack_layout(query.shape, 0, rgb)
        mode = segmenter.normalisation(query, rgb=rgb, normalise=normalise)
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
                yield "progress", updates.get()
        error = outcome.get("error")
        if isinstance(error, PredictionCancelled) and is_cancelled(cancel):
            return None
        if error is not None:
            raise error
        return outcome["path"]
    except RuntimeError as err:
        name = "" if type(err) is RuntimeError else f"{type(err).__name__}: "
        raise PredictionError(f"{name}{err}") from err


class ProbabilityExport:
    """The probability export of the dock widget (mixed into ``LabelAnythingWidget``)."""

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
        from ..ome_zarr import is_zarr_path
        from ..probabilities import TIFF_SUFFIXES, check_dtype
        from .layers import model_data
        from .workers import import_torch_stack

        if self.closed:
            raise ValueError("the Label Anything widget is closed; open it again to export")
        if self.runs.busy or self.finetuning or getattr(self, "batching", False):
            raise ValueError("a run or fine-tuning is in progress: wait for it or press Cancel / Stop")
        dtype = check_dtype(dtype).name
        path = Path(path)
        if not (path.name.lower().endswith(TIFF_SUFFIXES) or is_zarr_path(path)):
            raise ValueError(f"{path.name}: probabilities are written as .tif / .tiff or .ome.zarr")
        query_layer = query_layer or self._chosen_query()
        episode = self._run_episode()
        data, rgb = model_data(query_layer, self.channels)
        import_torch_stack()
        download = self.model_picker.checkpoint_to_download()
        self.cancel_preview()  # the export wins: a preview in flight is dropped
        extra = {"query": query_layer.name, "model": self.model_picker.model_name}
        self.progress.setRange(0, 0)
        self.run_button.setEnabled(False)
        self.run_button.setText("exporting…")
        self.cancel_button.setEnabled(True)
        self.run_status(f"exporting the class probabilities of {query_layer.name!r}")
        return self.runs.launcher.start(
            probability_job, self.segmenter_after_encoding, episode, data, rgb, str(path), dtype, self.normalise,
            download, extra, cancellable=True,
            yielded=self._on_probability_message,
            returned=lambda written: self._probabilities_ended(written, query_layer.name, dtype),
            errored=lambda error: self._probabilities_ended(None, query_layer.name, dtype, error),
            aborted=lambda: self._probabilities_ended(None, query_layer.name, dtype),
        )  # fmt: skip

    def _on_probability_message(self, message) -> None:
        if self.closed:
            return
        kind, payload = message
        if kind == "progress":
            done, total = payload
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.status.setText(f"probabilities: plane {done}/{total}")
        else:
            self.run_status(payload)

    def _probabilities_ended(self, written, query_name: str, dtype: str, error: BaseException | None = None) -> None:
        from .dock_layout import KEY_RUN

        if self.closed:
            return
        self.run_button.setEnabled(True)
        self.run_button.setText(f"Run ({KEY_RUN})")
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0 if written is None else 1)
        if error is not None:
            self._report_error("cannot export probabilities", error)
        elif written is None:
            self.run_status("probability export cancelled: no file written")
        else:
            self.run_status(f"exported the class probabilities of {query_name!r} ({dtype}) to {written}")
        self.schedule_encoding()  # encoding.py: what changed meanwhile

    def _export_probabilities_dialog(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, chosen = QFileDialog.getSaveFileName(
            self, "Export class probabilities", "probabilities.tif", ";;".join(FILTERS)
        )
        if path:
            if "OME-Zarr" in chosen and not path.lower().endswith(".zarr"):
                path += ".ome.zarr"
            dtype = FILTERS.get(chosen, "float32")
            self._guard(lambda: self.export_probabilities(path, dtype=dtype), "cannot export probabilities")
