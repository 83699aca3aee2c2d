"""Background work for the dock widget: every worker goes through one launcher.

The launcher connects the callbacks *before* starting a worker (a fast worker would finish
before anyone listens otherwise) and can stop them all when the widget closes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .messages import CANCELLED, ModelReady, Normalised, PlaneResult, Progress, Status


def import_torch_stack() -> None:
    """Import torch, torchvision and segment_anything on the GUI thread (``device.import_torch``
    hides triton first, whose LLVM crashes next to Mesa's); native extensions then never load in
    a worker thread."""
    from ..hub.device import import_torch

    import_torch()
    try:
        import segment_anything.modeling  # noqa: F401
    except ImportError:  # pragma: no cover - the classic model does not need it
        pass


class WorkerLauncher:
    def __init__(self) -> None:
        self._workers: list = []

    @property
    def busy(self) -> bool:
        """True from ``start`` until the worker's ``finished`` signal (a queued worker counts); a
        worker no longer counts once its own ``finished`` callback runs."""
        return bool(self._workers)

    def start(
        self,
        generator_function: Callable[..., Iterator],
        *args: Any,
        yielded: Callable[[Any], None] | None = None,
        returned: Callable[[Any], None] | None = None,
        errored: Callable[[Exception], None] | None = None,
        aborted: Callable[[], None] | None = None,
        finished: Callable[[], None] | None = None,
        cancellable: bool = False,
    ):
        """Run ``generator_function(*args)`` in a napari thread worker and return the worker.

        It must be a generator function: napari then makes a generator worker, which can be
        stopped between yields. ``cancellable``: also pass it ``cancel=``, a callable that turns
        true once the worker is asked to stop (``worker.quit()``, ``stop_all``), so that work it
        runs between two yields can stop at once rather than at its next yield.
        """
        from napari.qt.threading import create_worker

        kwargs = {"cancel": lambda: worker.abort_requested} if cancellable else {}  # called once started
        # _ignore_errors: the ``errored`` callback reports errors; napari would re-raise them
        # in the GUI thread otherwise (an uncaught traceback next to our notification).
        worker = create_worker(generator_function, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        # Forgotten first: a ``finished`` callback then sees ``busy`` without this worker. Queued
        # slot calls of one signal can run apart; if the callback ran first, an edit made between
        # it and the removal would be held back for a worker that had already finished.
        worker.finished.connect(lambda: self._workers.remove(worker) if worker in self._workers else None)
        for signal, callback in (
            (worker.yielded, yielded),
            (worker.returned, returned),
            (worker.errored, errored),
            (worker.aborted, aborted),
            (worker.finished, finished),
        ):
            if callback is not None:
                signal.connect(callback)
        self._workers.append(worker)
        worker.start()
        return worker

    def stop_all(self) -> None:
        """Ask every running worker to stop: at its next yield, and at once for the work of a
        worker started ``cancellable`` (e.g. within the plane ``predict_planes`` predicts)."""
        for worker in list(self._workers):
            worker.quit()


def download_with_status(repo_id: str, poll_seconds: float = 0.25) -> Iterator[Status]:
    """Download a checkpoint in a helper thread, yielding ``Status("downloading ... 42%")`` lines."""
    import threading

    from ..hub.model_files import download_checkpoint, hub_cache_dir

    state: dict[str, Any] = {"file": "", "done": 0, "total": 0, "error": None}

    def on_progress(name: str, done: int, total: int) -> None:
        state.update(file=name, done=done, total=total)

    def target() -> None:
        try:
            download_checkpoint(repo_id, progress=False, on_progress=on_progress)
        except Exception as err:  # noqa: BLE001 - re-raised in the worker below
            state["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    yield Status(f"downloading {repo_id} into {hub_cache_dir()}")
    while thread.is_alive():
        thread.join(poll_seconds)
        if state["total"]:
            percent = 100 * state["done"] / state["total"]
            yield Status(f"downloading {state['file']}: {percent:.0f}% of {state['total'] / 1e6:.0f} MB")
    if state["error"] is not None:
        raise state["error"]


LOADING_TEXT = "loading model"  # a run's status while it gets its segmenter


class PredictionError(Exception):
    """A RuntimeError raised during a run, passed on under another type.

    superqt takes a RuntimeError out of a worker for a sign that the worker was deleted: it
    only warns, and never emits ``errored`` nor ``finished`` (the widget would stay busy).
    Torch raises RuntimeError (out of memory, shape mismatch...), so they are wrapped here.
    """


def predict_planes(
    get_segmenter: Callable[[], Any],
    episode,
    query: np.ndarray,
    plane_indices: list[tuple[int, ...]],
    rgb: bool,
    download: str | None = None,
    uncertainty: bool = False,
    normalise: str = "auto",
    cancel: Callable[[], bool] | None = None,
) -> Iterator[Status | ModelReady | Normalised | Progress | PlaneResult]:
    """Generator run in the worker (``messages.py``): yields ``Status`` lines, ``ModelReady`` once
    the model is loaded (for "auto", the model it resolved to; ``encoder``: the label of the image
    encoder that runs, ``encoder_backends.ENCODER_LABELS``, None for models without one), then for
    each plane ``Progress`` while it runs (``done`` a float: the planes finished plus the finished
    share of this one, from segmenters that predict a plane in steps) and a ``PlaneResult``.

    ``uncertainty``: also compute each plane's uncertainty map, in the same pass, when the
    segmenter can (``Segmenter.predict_with_uncertainty``); others give None.

    ``normalise``: "auto", "stack" or "plane" (``Segmenter.iter_predict_stack``); what it
    resolves to for this query is yielded as ``Normalised("stack" or "plane")`` before the planes.

    ``cancel``: a callable that turns true when the run is cancelled
    (``WorkerLauncher.start(cancellable=True)``); the segmenter then stops within its current
    step (``inference.base.PlaneSteps``) and the generator ends with ``messages.CANCELLED``.

    Downloading the checkpoint ``download`` (a hub repo id, when not cached) and loading the
    model happen here, off the GUI thread; the planes go through ``Segmenter.iter_predict_stack``
    in a helper thread (``stream_planes``). A RuntimeError comes out as ``PredictionError``.
    """
    try:
        if download is not None:
            yield from download_with_status(download)
        from ..inference.encoder_backends import encoder_label

        yield Status(LOADING_TEXT)
        segmenter = get_segmenter()
        yield ModelReady(str(segmenter.name), str(segmenter.device), encoder_label(segmenter))
        yield Status(f"running {segmenter.name} on {segmenter.device}")
        with_uncertainty = uncertainty and hasattr(segmenter, "predict_with_uncertainty")
        if uncertainty and not with_uncertainty:
            yield Status(f"{segmenter.name} gives no uncertainty: labels only")
        options = {"uncertainty": True} if with_uncertainty else {}
        if hasattr(segmenter, "normalisation"):  # a Segmenter; a bare plane iterator has no choice
            options["normalise"] = segmenter.normalisation(query, rgb=rgb, normalise=normalise, episode=episode)
            yield Normalised(options["normalise"])

        def planes(stop, plane_progress) -> Iterator[tuple]:
            for item in segmenter.iter_predict_stack(episode, query, planes=plane_indices, rgb=rgb, cancel=stop,
                                                     plane_progress=plane_progress, **options):  # fmt: skip
                yield item if with_uncertainty else (*item, None)

        yield from stream_planes(planes, len(plane_indices), cancel)
    except RuntimeError as err:
        name = "" if type(err) is RuntimeError else f"{type(err).__name__}: "
        raise PredictionError(f"{name}{err}") from err


def stream_planes(
    planes: Callable[[Callable[[], bool], Callable[[int, int], Any]], Iterator[tuple]],
    total: int,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[Status | Progress | PlaneResult]:
    """Run ``planes(stop, plane_progress)`` in a helper thread; yield what it gives as it comes.

    ``planes`` yields the core's (index, labels, uncertainty map or None) per plane and calls
    ``plane_progress(done, steps)`` within a plane; here they become ``PlaneResult`` and
    ``Progress(planes done + done / steps, total)`` (``messages.py``). A
    napari generator worker acts on ``quit()`` only at a yield, so the plane runs outside this
    generator: progress comes out while it runs, and ``stop`` turns true as soon as ``cancel``
    does (or this generator is closed), which a segmenter checks between its steps. A plane
    cancelled that way ends the generator with ``messages.CANCELLED``, the yield at which the
    worker ends as aborted; any other exception of the helper is raised here.
    """
    import queue
    import threading

    from ..inference.base import PredictionCancelled, is_cancelled

    messages: queue.SimpleQueue = queue.SimpleQueue()
    closed = threading.Event()

    def stop() -> bool:
        return closed.is_set() or is_cancelled(cancel)

    def work() -> None:
        try:
            for item in planes(stop, lambda done, steps: messages.put(("step", done / max(steps, 1)))):
                messages.put(("plane", item))
            messages.put(("end", None))
        except BaseException as err:  # noqa: BLE001 - raised in the generator below
            messages.put(("error", err))

    threading.Thread(target=work, name="nla-planes", daemon=True).start()
    done = 0
    try:
        while True:
            kind, payload = messages.get()
            if kind == "step":
                yield Progress(done + min(payload, 1.0), total)
            elif kind == "plane":
                done += 1
                index, labels, uncertainty_map = payload
                yield PlaneResult(tuple(index), labels, done, total, uncertainty_map)
            elif kind == "error" and not (isinstance(payload, PredictionCancelled) and stop()):
                raise payload
            else:
                break
        if is_cancelled(cancel):
            yield CANCELLED
    finally:
        closed.set()
