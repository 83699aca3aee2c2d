"""Batch prediction over files, folders, stacks and zarr arrays: one ``BatchJob`` per input.

What the CLI's ``predict`` runs, in one process or on dask workers (``cluster.py``): inputs are
expanded and checked (shape, plane layout) before any model loads; every input gets its own
output name (never two the same), claimed for the run (``claimed_outputs``: a second run into
the same names stops); outputs of this package are never inputs (``is_own_output``); ``run_job``
predicts an input plane by plane into its output (a TIFF, or an OME-Zarr labels image filled
plane by plane, so memory does not grow with the stack). No dask here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..episode import Episode
from ..io import ome_zarr
from ..io.image_reader import ImageInfo, probe_image
from ..io.label_files import IMAGE_SUFFIXES, image_base_name, read_image
from ..labels import labels_dtype
from ..limits import check_planes
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


def expand_inputs(
    paths: Sequence[str | os.PathLike], recursive: bool = False, skip: Sequence[str | os.PathLike] = ()
) -> list[Path]:
    """Files and zarr arrays as given; a folder becomes the inputs in it (sorted by name).

    Outputs of this package are never inputs: a folder's label images, objects images and
    probability maps (``is_own_output``) are passed over, and so are the folders in ``skip``
    (the run's output and cache folders) when sub-folders are searched. An output named as an input
    is refused.

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: for a folder holding no input, an unknown file type, or an output named as an input.
    """
    expanded: list[Path] = []
    skipped = {Path(p).resolve() for p in skip}
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise FileNotFoundError(f"no such query file or folder: {path}")
        if path.is_dir() and not ome_zarr.is_zarr_path(path):
            outputs: list[Path] = []
            found = _inputs_in(path, recursive, skipped, outputs)
            if not found:
                kinds = "TIFF, PNG, JPEG, BMP, CZI, ND2, LIF or .zarr"
                passed = f"; {len(outputs)} output(s) of napari-label-anything passed over" if outputs else ""
                raise ValueError(
                    f"folder {path} holds no {kinds} input{' (searched recursively)' if recursive else ''}{passed}"
                )
            expanded.extend(found)
        elif is_input(path):
            if is_own_output(path):
                raise ValueError(f"{path} is an output of napari-label-anything (its metadata says so), not an input")
            expanded.append(path)
        else:
            raise ValueError(f"{path} is not an image (TIFF, PNG, JPEG, BMP, CZI, ND2, LIF) nor a .zarr array")
    return expanded


def _inputs_in(folder: Path, recursive: bool, skipped: set[Path], outputs: list[Path]) -> list[Path]:
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if is_input(entry):
            (outputs if is_own_output(entry) else found).append(entry)
        elif recursive and entry.is_dir() and not entry.name.startswith(".") and not ome_zarr.is_zarr_path(entry):
            if entry.resolve() not in skipped:
                found.extend(_inputs_in(entry, recursive, skipped, outputs))
    return found


def is_own_output(path: str | os.PathLike) -> bool:
    """Whether ``path`` was written by this package: a TIFF carrying its JSON metadata (label,
    objects and probability images), or a zarr group with its attributes (OME-Zarr outputs)."""
    from ..io.label_files import METADATA_KEY, TIFF_SUFFIXES, read_label_metadata

    path = Path(path)
    try:
        if ome_zarr.is_zarr_path(path):
            import zarr

            return METADATA_KEY in zarr.open(str(path), mode="r").attrs
        if path.name.lower().endswith(TIFF_SUFFIXES):
            return bool(read_label_metadata(path))
    except Exception:  # noqa: BLE001 - an unreadable input is not ours; reading it reports the damage
        return False
    return False


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
    """Shape and dtype of an input, in the order ``io.label_files.read_image`` gives (headers, and a TIFF's
    first page decoded; see ``input_info``).

    Raises:
        ValueError: for a damaged or unreadable input.
    """
    info = input_info(path)
    return info.shape, info.dtype


def input_info(path: str | os.PathLike) -> ImageInfo:
    """What ``open_query`` will return for an input, decoded far enough to fail before a model
    loads (``image_reader.probe_image``); a zarr input's ``axes`` are those of its OME-Zarr
    metadata (``ome_zarr.ZarrImage``), "" for a zarr array without (its shape says)."""
    if ome_zarr.is_zarr_path(path):
        array = ome_zarr.open_image(path)
        return ImageInfo(tuple(array.shape), np.dtype(array.dtype), array.axes, array.file_axes)
    return probe_image(path)


def open_query(path: str | os.PathLike):
    """The input's pixels: a lazy zarr array for ``.zarr``, else a NumPy array."""
    return ome_zarr.open_image(path) if ome_zarr.is_zarr_path(path) else read_image(path)


def model_query(job: BatchJob, episode: Episode, query=None):
    """The job's query (``query``: the input already opened) as the model sees it: reduced to the
    job's ``channels`` (``predict --channels``), else a colour query to the episode's channels
    (``Episode.channels``, the napari widget's choice); lazy inputs stay lazy. A grey query,
    or an episode for all channels, is read as it is."""
    from ..preprocessing import pick_channels, select_channels

    query = open_query(job.source) if query is None else query
    if job.channels is not None:
        return pick_channels(query, job.channels)
    if episode.channels is not None and job.layout(query.shape).rgb:
        query = select_channels(query, episode.channels)
    return query


@dataclass(frozen=True)
class BatchJob:
    """One input and its output. ``options`` go to ``Segmenter.predict_stack`` (e.g. class_rows);
    ``objects``: also write the objects TIFF and their measurements CSV beside the output
    (``objects.write_objects_outputs``)."""

    source: str
    target: str
    format: str = "tiff"
    axis: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    objects: bool = False
    channels: tuple[int, ...] | None = None  # the input's channels the model sees (None: grey / colour as is)
    probabilities: str | None = None  # also write the class probabilities ("float32" / "uint8"): probabilities_path

    def layout(self, shape: Sequence[int]) -> StackLayout:
        """The planes of an input of ``shape`` (the input's, channel axis included)."""
        if self.channels is not None:  # the chosen channels become one grey image
            return stack_layout(tuple(shape)[:-1], self.axis, rgb=False)
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
    """Everything about a job that can be checked before the model loads (readable input, planes,
    axes, channels)."""
    info = input_info(job.source)
    shape = info.shape
    check_channels_of(job, info)
    try:
        layout = job.layout(shape)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{job.source}: {err}") from None
    check_planes(layout.n_planes, job.source)  # a small file may declare any number of planes
    if job.format == "ome-zarr":
        ome_zarr.axes(len(layout.labels_shape))
        if job.probabilities:  # NGFF: at most t and z besides the class channel
            from ..probabilities import channel_position

            channel_position(len(layout.plane_axes), zarr=True)
    if job.objects and len(layout.labels_shape) > 3:
        raise ValueError(f"{job.source}: objects are split in 2D images and 3D stacks, not {layout.labels_shape}")
    return layout


def check_channels_of(job: BatchJob, info: ImageInfo) -> None:
    """An input whose channels are not colour needs the job's ``channels``: 2 or 5+ channels, or
    4 channels of a C axis (a hyperstack's fourth channel is no alpha; RGBA samples are colour).
    ``channels`` need an input with a channel axis. ValueError naming the input."""
    from ..preprocessing import MAX_COLOUR_CHANNELS, check_channels
    from ..stacks import MIN_PLANE_SIDE

    shape = info.shape
    if info.axes:  # a file: its axes say
        n = info.channels
    else:  # a zarr array: a short trailing axis is a channel axis
        n = shape[-1] if len(shape) >= 3 and shape[-1] < MIN_PLANE_SIDE else 0
    if job.channels is None:
        colour = n == 3 or (n == MAX_COLOUR_CHANNELS and "C" not in info.file_axes)
        if n and not colour and info.axes:
            raise ValueError(
                f"{job.source} has {n} channels (axes {info.file_axes or info.axes}); the models see grey or colour "
                "(RGB, RGBA) images: choose the channels they see with --channels (one channel is read as a grey "
                "image, several as their mean)"
            )
        return
    if not n:
        raise ValueError(f"{job.source} has no channel axis (axes {info.axes or shape}); leave out --channels for it")
    try:
        check_channels(job.channels, n)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{job.source}: {err}") from None


def parse_channels(text: str | None) -> tuple[int, ...] | None:
    """``--channels`` text ("0" or "0,2") as a tuple of channel indices; None for None."""
    if text is None:
        return None
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise ValueError(f"--channels must be comma-separated channel numbers (0 is the first), got {text!r}") from None


def job_outputs(job: BatchJob) -> list[Path]:
    """Every path ``run_job`` writes for ``job``: its labels, objects files, probability map."""
    from ..objects import objects_paths

    paths = [Path(job.target), *(objects_paths(job.target) if job.objects else ())]
    return paths + ([probabilities_path(job)] if job.probabilities else [])


OVERWRITE_HINT = "pass --overwrite or choose another --out"


def refuse_existing(jobs: Sequence[BatchJob], hint: str = OVERWRITE_HINT) -> None:
    """ValueError naming the outputs of ``jobs`` that exist already (``hint``: what to do), if any."""
    existing = [str(p) for job in jobs for p in job_outputs(job) if p.exists()]
    if existing:
        raise ValueError(f"output(s) exist: {', '.join(existing)}; {hint}")


@contextmanager
def claimed_outputs(jobs: Sequence[BatchJob], overwrite: bool = False, hint: str = OVERWRITE_HINT):
    """Claim every output of ``jobs`` for the ``with`` block (``claims.claimed``: a second run
    into the same names stops with ``claims.OutputClaimed``), then refuse outputs that exist
    unless ``overwrite`` (``refuse_existing`` again, under the claims: a run that ended meanwhile
    may have written them). Yields the notes of claims taken over from runs that died."""
    from ..io.claims import claimed

    with claimed(p for job in jobs for p in job_outputs(job)) as claims:
        if not overwrite:
            refuse_existing(jobs, hint)
        yield [c.note for c in claims if c.note]


def create_output(job: BatchJob, episode: Episode, shape: Sequence[int]) -> Path:
    """For an OME-Zarr job whose input has ``shape``: its empty labels image in a temporary folder
    (see ``ome_zarr.create_labels``), its axes named as the input's (``ome_zarr.label_axes_of``)."""
    layout = job.layout(shape)
    named = ome_zarr.label_axes_of(job.source, len(layout.labels_shape)) if job.axis == 0 else None
    return ome_zarr.create_labels(
        job.target, layout.labels_shape, labels_dtype(episode.n_classes), episode.classes, _metadata(job), named
    )


def _metadata(job: BatchJob) -> dict[str, Any]:
    return {"query": str(job.source), **job.metadata}  # a "query" in metadata wins (e.g. the path as given)


def predict_into_zarr(
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
    _predict_stack(segmenter, episode, job, query, out, progress, cancel, planes)
    return out.counts


def probabilities_path(job: BatchJob) -> Path:
    """Where a job's probability map goes: beside its labels, ``<name>_probabilities.tif`` or
    ``<name>_probabilities.ome.zarr`` (``--format``)."""
    from ..probabilities import SUFFIXES

    labels_suffix = FORMATS.get(job.format, "")
    base = job.target[: -len(labels_suffix)] if labels_suffix and job.target.endswith(labels_suffix) else job.target
    return Path(base + SUFFIXES[job.format])


def _predict_stack(segmenter, episode: Episode, job: BatchJob, query, out, progress, cancel, planes=None):
    """``predict_stack`` of the job's query into ``out`` (None: a new array, returned). With
    ``job.probabilities`` the same prediction, plane by plane, also writes the probability map
    (``probabilities.write_probabilities``, at ``probabilities_path(job)``)."""
    if not job.probabilities:
        return segmenter.predict_stack(
            episode, query, axis=job.axis, planes=planes, progress=progress, cancel=cancel, out=out, **job.options
        )
    from ..probabilities import channel_names, probability_planes, write_probabilities
    from ..stacks import stack_layout

    if planes is not None:
        raise ValueError("probabilities are written for whole inputs, in one process")
    layout = stack_layout(tuple(query.shape), job.axis)
    if out is None:
        out = np.zeros(layout.labels_shape, dtype=labels_dtype(episode.n_classes))
    predicted = probability_planes(
        segmenter, episode, query, job.axis, labels_out=out, progress=progress, cancel=cancel, **job.options
    )
    sizes = [layout.shape[a] for a in layout.plane_axes]
    names = channel_names(episode.classes)
    write_probabilities(probabilities_path(job), predicted, sizes, layout.spatial_shape, names, job.probabilities,
                        _metadata(job))  # fmt: skip
    return out


def run_job(
    segmenter,
    episode: Episode,
    job: BatchJob,
    progress: Callable[[int, int], Any] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> JobResult:
    """Predict one input into its output, written atomically (TIFF, or OME-Zarr plane by plane).

    ``cancel`` (a callable or ``threading.Event``) stops the prediction with
    ``PredictionCancelled``, between planes and within one (``PlaneSteps``), and once more
    before the output is written: nothing is written.
    """
    from ..inference.base import PredictionCancelled, is_cancelled
    from ..io.label_files import write_labels

    def check_cancel() -> None:
        if is_cancelled(cancel):
            raise PredictionCancelled("prediction cancelled")

    start = time.perf_counter()
    source = open_query(job.source)
    query = model_query(job, episode, source)
    layout = job.layout(source.shape)
    if job.format == "ome-zarr":
        folder = create_output(job, episode, source.shape)
        try:
            counts = predict_into_zarr(segmenter, episode, job, folder, progress=progress, cancel=cancel)
            check_cancel()
            ome_zarr.commit(folder, job.target)
        except BaseException:
            ome_zarr.discard(folder)
            raise
    elif job.format == "tiff":
        labels = _predict_stack(segmenter, episode, job, query, None, progress, cancel)
        check_cancel()
        colors = [episode.colors.get(name) for name in episode.classes]  # Fiji's LUT as the widget showed them
        write_labels(job.target, labels, episode.classes, _metadata(job), colors)
        counts = np.bincount(labels.ravel(), minlength=episode.n_classes + 1)
    else:
        raise ValueError(f"unknown output format {job.format!r}; choose one of {', '.join(FORMATS)}")
    if job.objects:
        from ..objects import write_objects_outputs

        labels = labels if job.format == "tiff" else ome_zarr.open_labels(job.target, mode="r")
        write_objects_outputs(job.target, labels, query, episode.classes, _metadata(job))
    return JobResult(job.source, job.target, layout.n_planes, time.perf_counter() - start, count_names(episode, counts))


def count_names(episode: Episode, counts: np.ndarray) -> dict[str, int]:
    """Pixels per class name, every label value counted: a class named "background" (the
    widget's background scribbles) adds to the background's count."""
    from ..labels import BACKGROUND, class_names, is_background_name

    named: dict[str, int] = {}
    for k, name in class_names(episode.classes).items():
        key = BACKGROUND if is_background_name(name) else name
        named[key] = named.get(key, 0) + (int(counts[k]) if k < len(counts) else 0)
    return named
