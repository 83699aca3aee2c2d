"""Batch prediction over files, folders, stacks and zarr arrays: one ``BatchJob`` per input.

What the CLI's ``predict`` runs, in one process or on dask workers (``cluster.py``): inputs are
expanded and checked (shape, plane layout) before any model loads; every input gets its own
output name (never two the same); ``run_job`` predicts an input plane by plane into its output
(a TIFF, or an OME-Zarr labels image filled plane by plane, so memory does not grow with the
stack). No dask here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import ome_zarr
from ..episode import Episode
from ..files import IMAGE_SUFFIXES, TIFF_SUFFIXES, image_base_name, read_image
from ..labels import labels_dtype
from ..stacks import StackLayout, stack_layout

FORMATS = {"tiff": "_labels.tif", "ome-zarr": "_labels.ome.zarr"}


def is_input(path: Path) -> bool:
    """Whether ``path`` is something ``predict`` reads: an image file or a ``.zarr`` folder."""
    name = path.name.lower()
    if name.startswith("."):
        return False
    if ome_zarr.is_zarr_path(path):
        return path.is_dir()
    return path.is_file() and name.endswith(IMAGE_SUFFIXES)


def expand_inputs(paths: Sequence[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Files and zarr arrays as given; a folder becomes the inputs in it (sorted by name).

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: for a folder holding no input, or an unknown file type.
    """
    expanded: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise FileNotFoundError(f"no such query file or folder: {path}")
        if path.is_dir() and not ome_zarr.is_zarr_path(path):
            found = _inputs_in(path, recursive)
            if not found:
                kinds = "TIFF, PNG, JPEG, BMP or .zarr"
                raise ValueError(
                    f"folder {path} holds no {kinds} input{' (searched recursively)' if recursive else ''}"
                )
            expanded.extend(found)
        elif is_input(path):
            expanded.append(path)
        else:
            raise ValueError(f"{path} is not an image (TIFF, PNG, JPEG, BMP) nor a .zarr array")
    return expanded


def _inputs_in(folder: Path, recursive: bool) -> list[Path]:
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if is_input(entry):
            found.append(entry)
        elif recursive and entry.is_dir() and not entry.name.startswith(".") and not ome_zarr.is_zarr_path(entry):
            found.extend(_inputs_in(entry, recursive))
    return found


def output_paths(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, suffix: str) -> list[Path]:
    """One output per input, never two the same: ``<out_dir>/<base><suffix>``.

    Clashing base names get as many parent folder names as it takes (``d1_a``, ``d2_a``); inputs
    in one folder that differ only by suffix (``a.tif``, ``a.png``) keep it (``a_tif``, ``a_png``).

    Raises:
        ValueError: when the same input is given twice, or names still clash.
    """
    resolved = [Path(p).resolve() for p in inputs]
    seen: dict[Path, int] = {}
    for i, path in enumerate(resolved):
        if path in seen:
            raise ValueError(f"{inputs[i]} is given twice (also as input {seen[path] + 1}); each output must be unique")
        seen[path] = i
    keys = [(p.parent, image_base_name(p)) for p in resolved]
    leaves = [  # same folder, same base name: keep the suffix
        f"{base}_{path.name[len(base) :].lstrip('.').replace('.', '_')}" if keys.count((parent, base)) > 1 else base
        for (parent, base), path in zip(keys, resolved, strict=True)
    ]
    names = list(leaves)
    for depth in range(1, max((len(p.parent.parts) for p in resolved), default=0) + 1):
        counts = {n: names.count(n) for n in names}
        if all(c == 1 for c in counts.values()):
            break
        names = [
            "_".join([*path.parent.parts[-depth:], leaf]).lstrip("/_") if counts[name] > 1 else name
            for name, leaf, path in zip(names, leaves, resolved, strict=True)
        ]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"inputs would write the same output name(s) {clashes}; rename or separate them")
    return [Path(out_dir) / f"{name}{suffix}" for name in names]


def probe(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an input, reading as little as possible (headers only for TIFF and zarr).

    Raises:
        ValueError: for a damaged or unreadable input.
    """
    path = Path(path)
    if ome_zarr.is_zarr_path(path):
        array = ome_zarr.open_image(path)
        return tuple(array.shape), np.dtype(array.dtype)
    try:
        if path.name.lower().endswith(TIFF_SUFFIXES):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return tuple(series.shape), np.dtype(series.dtype)
    except Exception as err:  # noqa: BLE001 - tifffile raises many types for damaged files
        raise ValueError(f"{path} is not a readable image ({type(err).__name__}: {err})") from None
    image = read_image(path)  # PNG, JPEG, BMP: decoded to know the exact array (they are small)
    return image.shape, image.dtype


def open_query(path: str | os.PathLike):
    """The input's pixels: a lazy zarr array for ``.zarr``, else a NumPy array."""
    return ome_zarr.open_image(path) if ome_zarr.is_zarr_path(path) else read_image(path)


def model_query(job: BatchJob, episode: Episode):
    """The job's query as the model sees it: a colour query reduced to the episode's channels
    (``Episode.channels``, the napari widget's choice; lazy inputs stay lazy). A grey query,
    or an episode for all channels, is read as it is."""
    from ..preprocessing import select_channels

    query = open_query(job.source)
    if episode.channels is not None and job.layout(query.shape).rgb:
        query = select_channels(query, episode.channels)
    return query


@dataclass(frozen=True)
class BatchJob:
    """One input and its output. ``options`` go to ``Segmenter.predict_stack`` (e.g. class_rows)."""

    source: str
    target: str
    format: str = "tiff"
    axis: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def layout(self, shape: Sequence[int]) -> StackLayout:
        return stack_layout(tuple(shape), self.axis)


@dataclass(frozen=True)
class JobResult:
    source: str
    target: str
    planes: int
    seconds: float
    counts: dict[str, int]


class _CountingOut:
    """An ``out=`` for ``predict_stack`` that forwards planes to ``array`` and counts label values."""

    def __init__(self, array, n_labels: int) -> None:
        self.array, self.shape = array, tuple(array.shape)
        self.counts = np.zeros(n_labels, dtype=np.int64)

    def __setitem__(self, index, labels: np.ndarray) -> None:
        self.array[index] = labels
        self.counts += np.bincount(np.asarray(labels).ravel(), minlength=len(self.counts))[: len(self.counts)]


def check_job(job: BatchJob) -> StackLayout:
    """Everything about a job that can be checked before the model loads (readable input, planes, axes)."""
    shape, _ = probe(job.source)
    try:
        layout = job.layout(shape)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{job.source}: {err}") from None
    if job.format == "ome-zarr":
        ome_zarr.axes(len(layout.labels_shape))
    return layout


def create_output(job: BatchJob, episode: Episode, shape: Sequence[int]) -> Path:
    """For an OME-Zarr job: its empty labels image in a temporary folder (see ``ome_zarr.create_labels``)."""
    layout = job.layout(shape)
    return ome_zarr.create_labels(
        job.target, layout.labels_shape, labels_dtype(episode.n_classes), episode.classes, _metadata(job)
    )


def _metadata(job: BatchJob) -> dict[str, Any]:
    return {"query": str(job.source), **job.metadata}  # a "query" in metadata wins (e.g. the path as given)


def predict_planes(
    segmenter,
    episode: Episode,
    job: BatchJob,
    folder: str | os.PathLike,
    planes: Sequence[tuple[int, ...]] | None = None,
    progress: Callable[[int, int], Any] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Predict ``planes`` (default all) of an OME-Zarr job into its labels ``folder``; return label counts.

    ``cancel`` is checked before each plane (``PredictionCancelled`` once it turns true).
    """
    query = model_query(job, episode)
    out = _CountingOut(ome_zarr.open_labels(folder), episode.n_classes + 1)
    segmenter.predict_stack(
        episode, query, axis=job.axis, planes=planes, progress=progress, cancel=cancel, out=out, **job.options
    )
    return out.counts


def run_job(segmenter, episode: Episode, job: BatchJob, progress: Callable[[int, int], Any] | None = None) -> JobResult:
    """Predict one input into its output, written atomically (TIFF, or OME-Zarr plane by plane)."""
    from ..files import write_labels

    start = time.perf_counter()
    query = model_query(job, episode)
    layout = job.layout(query.shape)
    if job.format == "ome-zarr":
        folder = create_output(job, episode, query.shape)
        try:
            counts = predict_planes(segmenter, episode, job, folder, progress=progress)
            ome_zarr.commit(folder, job.target)
        except BaseException:
            ome_zarr.discard(folder)
            raise
    elif job.format == "tiff":
        labels = segmenter.predict_stack(episode, query, axis=job.axis, progress=progress, **job.options)
        write_labels(job.target, labels, episode.classes, _metadata(job))
        counts = np.bincount(labels.ravel(), minlength=episode.n_classes + 1)
    else:
        raise ValueError(f"unknown output format {job.format!r}; choose one of {', '.join(FORMATS)}")
    return JobResult(job.source, job.target, layout.n_planes, time.perf_counter() - start, count_names(episode, counts))


def count_names(episode: Episode, counts: np.ndarray) -> dict[str, int]:
    from ..labels import class_names

    return {name: int(counts[k]) if k < len(counts) else 0 for k, name in class_names(episode.classes).items()}
