"""Batch prediction on a dask.distributed cluster (the only module that imports dask.distributed).

``run_batch`` sends the episode to every worker once (scatter), then one task per input (TIFF
outputs), or per chunk of planes (OME-Zarr outputs, which workers fill plane by plane in place,
each plane its own chunk). Each worker process loads the model once (``worker_segmenter``, a
module-level cache keyed by model, device and embedding folder) and keeps its feature and
prototype caches across tasks. Outputs are the files the single-process run writes, bit for bit:
every task predicts planes with the intensity range of its whole stack. (Label Anything's float
arithmetic also depends on torch's thread count, one per worker here: near-tied pixels may
differ from a multi-threaded single-process run.)

``--workers N`` starts ``LocalCluster(n_workers=N, threads_per_worker=1, processes=True)``;
``--scheduler ADDRESS`` connects to a running scheduler (whose workers must have this package
installed and see the same file paths).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..episode import Episode
from .jobs import BatchJob, JobResult, count_names, create_output, predict_into_zarr, probe, run_job

INSTALL_HINT = "pip install 'napari-label-anything[cluster]'"
STOP_TIMEOUT_S = 120  # how long a failed run waits for its running tasks to finish their current plane

_SEGMENTERS: dict[tuple[str, str, str | None], Any] = {}
_STATS: dict[str, Any] = {"loads": {}, "tasks": 0}  # of this worker process (see ``worker_stats``)
_LOCK = threading.Lock()


def require_distributed() -> None:
    """Raise a one-line RuntimeError naming the extra to install when dask.distributed is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            f"--workers and --scheduler need dask.distributed ({err}); install it with {INSTALL_HINT}"
        ) from None


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads: ``load_segmenter(name, device=device, embeddings=embeddings, encoder=encoder)``."""

    name: str
    device: str = "auto"
    embeddings: str | None = None
    encoder: str = "auto"


def worker_segmenter(spec: ModelSpec):
    """The segmenter of ``spec`` in this process, loaded on first use and kept (with its caches)."""
    key = (spec.name, spec.device, spec.embeddings, spec.encoder)
    with _LOCK:
        _STATS["tasks"] += 1
        if key not in _SEGMENTERS:
            from ..inference.loading import load_segmenter

            _SEGMENTERS[key] = load_segmenter(
                spec.name, device=spec.device, embeddings=spec.embeddings, encoder=spec.encoder
            )
            _STATS["loads"][key] = _STATS["loads"].get(key, 0) + 1
        return _SEGMENTERS[key]


def _run_job_task(spec: ModelSpec, episode: Episode, job: BatchJob) -> JobResult:
    segmenter = worker_segmenter(spec)
    with _LOCK:  # a worker with several threads shares one model: one prediction at a time
        return run_job(segmenter, episode, job)


def _planes_task(
    spec: ModelSpec, episode: Episode, job: BatchJob, folder: str, planes: list[tuple[int, ...]], stop: str
):
    from distributed import Event

    stopped = Event(stop)  # set by the driver when the run fails: tasks end before their next plane
    segmenter = worker_segmenter(spec)
    with _LOCK:
        return predict_into_zarr(segmenter, episode, job, folder, planes=planes, cancel=stopped.is_set)


def workers_lost(err: BaseException) -> RuntimeError | None:
    """A one-line RuntimeError for a run whose workers were lost (a task cancelled because its
    workers or the scheduler went away, or a task whose workers all died); None for other errors."""
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    if isinstance(err, FutureCancelledError):
        reason = " ".join(f"{err.reason} {err.msg or ''}".split())
        return RuntimeError(
            f"the dask workers were lost: {reason}; outputs finished before are kept, none is half-written"
        )
    if isinstance(err, KilledWorker):
        return RuntimeError(
            f"the dask workers were lost: every worker that ran task {err.task!r} died (out of memory? see the "
            "worker logs); outputs finished before are kept, none is half-written"
        )
    return None


def worker_stats() -> dict[str, Any]:
    """How many tasks this worker process ran and how often it loaded each model (``client.run(worker_stats)``)."""
    return {"tasks": _STATS["tasks"], "loads": dict(_STATS["loads"])}


def connect(workers: int | None = None, scheduler: str | None = None):
    """A ``distributed.Client``: on a new local cluster of ``workers`` processes, or on ``scheduler``."""
    require_distributed()
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="20s")
    if workers is None or workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    )
    client = Client(cluster)
    client._nla_owns_cluster = cluster  # closed with the client by ``close``
    return client


def close(client) -> None:
    cluster = getattr(client, "_nla_owns_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def run_batch(
    client,
    spec: ModelSpec,
    episode: Episode,
    jobs: Sequence[BatchJob],
    planes_per_task: int = 8,
    done: Callable[[JobResult, int], Any] | None = None,
) -> list[JobResult]:
    """Run ``jobs`` on ``client``'s workers; after each task, ``done(result, planes)`` gets the
    number of planes it predicted and the input's ``JobResult`` once the input is complete (else None).

    OME-Zarr jobs are split into tasks of ``planes_per_task`` planes written in place by the
    workers; the driver commits each output (atomic rename) once all its planes are written.
    Results come back in the order of ``jobs``.
    """
    import time
    import uuid

    import numpy as np
    from distributed import Event, as_completed, wait

    stop = Event(f"nla-stop-{uuid.uuid4().hex}", client=client)
    shared = client.scatter(episode, broadcast=True)  # sent once, not once per task
    futures: dict[Any, tuple[int, Any]] = {}
    pending: dict[int, dict[str, Any]] = {}
    for i, job in enumerate(jobs):
        if job.format != "ome-zarr":
            futures[client.submit(_run_job_task, spec, shared, job, pure=False)] = (i, None)
            continue
        shape, _ = probe(job.source)
        layout = job.layout(shape)
        folder = create_output(job, episode, shape)
        indices = layout.plane_indices()
        chunks = [indices[k : k + planes_per_task] for k in range(0, len(indices), planes_per_task)]
        pending[i] = {"folder": folder, "left": len(chunks), "counts": 0, "start": time.perf_counter()}
        for chunk in chunks:
            future = client.submit(_planes_task, spec, shared, job, str(folder), chunk, stop.name, pure=False)
            futures[future] = (i, len(chunk))
    results: list[JobResult | None] = [None] * len(jobs)
    try:
        for future in as_completed(list(futures)):
            i, n_planes = futures[future]
            value = future.result()  # re-raises a worker's error here
            if n_planes is None:
                results[i] = value
                if done is not None:
                    done(value, value.planes)
                continue
            state = pending[i]
            state["counts"] = state["counts"] + np.asarray(value)
            state["left"] -= 1
            if state["left"] == 0:
                from ..io import ome_zarr

                job = jobs[i]
                ome_zarr.commit(state.pop("folder"), job.target)
                planes = job.layout(probe(job.source)[0]).n_planes
                results[i] = JobResult(
                    job.source, job.target, planes, time.perf_counter() - state["start"],
                    count_names(episode, state["counts"]),
                )  # fmt: skip
            if done is not None:
                done(results[i], n_planes)  # results[i] stays None until the input's last chunk
    except BaseException as err:
        # A cancelled task that is already running goes on writing into its folder (and zarr would
        # re-create a removed one), so tasks are told to stop and awaited before folders are removed.
        try:
            stop.set()
            wait(list(futures), timeout=STOP_TIMEOUT_S)
        except Exception:  # a lost scheduler or a timeout: remove what can be removed
            pass
        try:
            client.cancel(list(futures))
        except Exception:  # noqa: BLE001 - the scheduler may be gone with the workers
            pass
        lost = workers_lost(err)
        if lost is not None:
            raise lost from None
        raise
    finally:
        from ..io import ome_zarr

        for state in pending.values():
            if "folder" in state:
                ome_zarr.discard(state["folder"])
    return [r for r in results if r is not None]
