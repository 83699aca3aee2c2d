"""Background work for the dock widget: every worker goes through one launcher.

The launcher connects the callbacks *before* starting a worker (a fast worker would finish
before anyone listens otherwise) and can stop them all when the widget closes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


class WorkerLauncher:
    def __init__(self) -> None:
        self._workers: list = []

    @property
    def busy(self) -> bool:
        return any(w.is_running for w in self._workers)

    def start(
        self,
        generator_function: Callable[..., Iterator],
        *args: Any,
        yielded: Callable[[Any], None] | None = None,
        returned: Callable[[Any], None] | None = None,
        errored: Callable[[Exception], None] | None = None,
        aborted: Callable[[], None] | None = None,
        finished: Callable[[], None] | None = None,
    ):
        """Run ``generator_function(*args)`` in a napari thread worker and return the worker.

        It must be a generator function: napari then makes a generator worker, which can be
        stopped between yields.
        """
        from napari.qt.threading import create_worker

        worker = create_worker(generator_function, *args, _start_thread=False)
        for signal, callback in (
            (worker.yielded, yielded),
            (worker.returned, returned),
            (worker.errored, errored),
            (worker.aborted, aborted),
            (worker.finished, finished),
        ):
            if callback is not None:
                signal.connect(callback)
        worker.finished.connect(lambda: self._workers.remove(worker) if worker in self._workers else None)
        self._workers.append(worker)
        worker.start()
        return worker

    def stop_all(self) -> None:
        """Ask every running worker to stop at its next yield (i.e. after the current plane)."""
        for worker in list(self._workers):
            worker.quit()


def predict_planes(
    get_segmenter: Callable[[], Any],
    episode,
    query: np.ndarray,
    plane_indices: list[tuple[int, ...]],
    layout,
) -> Iterator[tuple[str, Any]]:
    """Generator run in the worker: yields ("status", text), then ("plane", (index, labels, done, total)).

    Loading the model (and downloading it on first use) happens here, off the GUI thread.
    """
    from ..preprocessing import intensity_range

    yield "status", "loading model"
    segmenter = get_segmenter()
    yield "status", f"running {segmenter.name} on {segmenter.device}"
    options = {}
    if np.asarray(query[:0]).dtype != np.uint8 and layout.plane_axes:
        options["value_range"] = intensity_range(np.asarray(query))
    total = len(plane_indices)
    for done, index in enumerate(plane_indices, start=1):
        plane = np.asarray(layout.take(query, index)) if index else np.asarray(query)
        labels = segmenter.predict(episode, plane, **options)
        yield "plane", (index, labels, done, total)
