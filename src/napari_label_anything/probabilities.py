"""Class probability maps: predicted plane by plane, written as TIFF or OME-Zarr.

A probability map has one channel per class, background included: channel 0 the background,
channel k class k of the episode. A class named "background" (what the napari widget saves for
background scribbles) is the background too: its probability is added to channel 0 and it has
no channel of its own (``channel_names``, ``merge_background``). Values are float32 in 0..1
(summing to 1 over the channels of a pixel) or uint8 0..255 (``round(255 p)``).

Layout: the stack's planes first (in the order of its plane axes), then the channel, then
(Y, X). A TIFF is an ImageJ hyperstack (axes "CYX", "ZCYX" or "TZCYX"; the class names are the
slice labels); an OME-Zarr image follows NGFF's axis order (c, y, x), (c, z, y, x) or
(t, c, z, y, x), the class names as its ``omero`` channel labels. Both are written atomically
and plane by plane: memory holds one plane's probabilities, whatever the size of the stack.
NumPy, tifffile and zarr only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .labels import BACKGROUND, is_background_name

DTYPES = ("float32", "uint8")
TIFF_SUFFIXES = (".tif", ".tiff")
SUFFIXES = {"tiff": "_probabilities.tif", "ome-zarr": "_probabilities.ome.zarr"}

PlaneProbabilities = Iterator[tuple[tuple[int, ...], np.ndarray]]


def check_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as a NumPy dtype if it is one of ``DTYPES``, else ValueError."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ValueError(f"probabilities are written as {' or '.join(DTYPES)}, got {dtype!r}")
    return np.dtype(name)


def channel_names(classes: Sequence[str]) -> list[str]:
    """The channel names of an episode's probability map: "background", then every class not
    named "background", in order."""
    return [BACKGROUND, *(str(name) for name in classes if not is_background_name(name))]


def merge_background(proba: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """(N+1, Y, X) probabilities of an episode of ``classes`` -> the channels of
    ``channel_names(classes)``: a "background" class's probability added to channel 0."""
    merged = [k for k, name in enumerate(classes, start=1) if is_background_name(name)]
    if not merged:
        return proba
    kept = [k for k in range(proba.shape[0]) if k not in merged]
    out = proba[kept]
    out[0] += proba[merged].sum(axis=0)
    return out


def convert(proba: np.ndarray, dtype: Any) -> np.ndarray:
    """Probabilities (any float dtype, 0..1) as ``dtype``: float32 as they are (clipped to 0..1),
    uint8 as ``round(255 p)``."""
    dtype = check_dtype(dtype)
    proba = np.clip(np.asarray(proba, dtype=np.float32), 0.0, 1.0)
    if dtype == np.uint8:
        return np.rint(proba * 255.0).astype(np.uint8)
    return proba


def probability_planes(
    segmenter,
    episode,
    stack: Any,
    axis: int | tuple[int, ...] = 0,
    rgb: bool | None = None,
    labels_out: Any = None,
    progress: Callable[[int, int], Any] | None = None,
    cancel: Any = None,
    **options: Any,
) -> PlaneProbabilities:
    """Yield ``(plane index, (C, Y, X) float32 probabilities)`` for every plane of ``stack``, in
    C order of its plane axes, channels as ``channel_names(episode.classes)``.

    One ``predict_proba`` per plane (``Segmenter.iter_predict_stack(probabilities=True)``, the
    same normalisation and batching as ``predict_stack``); the labels of that same prediction go
    into ``labels_out`` (an array of the stack's labels shape) when given. ``progress(done,
    total)`` is called after each plane is consumed; ``cancel`` and ``options`` are as for
    ``predict_stack``.
    """
    from .stacks import as_stack, stack_layout

    stack = as_stack(stack)
    layout = stack_layout(stack.shape, axis, rgb)
    planes = segmenter.iter_predict_stack(episode, stack, axis, cancel=cancel, rgb=rgb, probabilities=True, **options)
    for done, (index, labels, proba) in enumerate(planes, start=1):
        if labels_out is not None:
            labels_out[layout.labels_index(index)] = labels
        yield index, merge_background(np.asarray(proba, dtype=np.float32), episode.classes)
        if progress is not None:
            progress(done, layout.n_planes)


def output_shape(plane_sizes: Sequence[int], n_channels: int, spatial: Sequence[int], zarr: bool) -> tuple[int, ...]:
    """The shape of a probability map: TIFF (*planes, C, Y, X); OME-Zarr NGFF order, the channel
    after the time axis of a (T, Z) stack: (C, Y, X), (C, Z, Y, X), (T, C, Z, Y, X)."""
    planes = tuple(int(n) for n in plane_sizes)
    at = channel_position(len(planes), zarr)
    return (*planes[:at], int(n_channels), *planes[at:], *(int(n) for n in spatial))


def channel_position(n_plane_axes: int, zarr: bool) -> int:
    """Where the channel axis goes among the plane axes (see ``output_shape``)."""
    if zarr and n_plane_axes > 2:
        raise ValueError(f"an OME-Zarr image has at most a time and a z axis; this stack has {n_plane_axes} "
                         "plane axes: write the probabilities as TIFF")  # fmt: skip
    if zarr:
        return 1 if n_plane_axes == 2 else 0  # (t, c, z, y, x), else (c[, z], y, x)
    return n_plane_axes


def write_probabilities(
    target: str | os.PathLike,
    planes: PlaneProbabilities,
    plane_sizes: Sequence[int],
    spatial_shape: Sequence[int],
    names: Sequence[str],
    dtype: Any = "float32",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the probability planes ``planes`` yields (see ``probability_planes``) to ``target``,
    a ``.tif``/``.tiff`` file or a ``.zarr`` folder, atomically: an error or a cancel while the
    planes are predicted leaves ``target`` as it was.

    Args:
        planes: ``(plane index, (C, Y, X) probabilities)`` for every plane, in C order.
        plane_sizes: the number of planes along each plane axis (() for a 2D image).
        spatial_shape: (Y, X) of a plane.
        names: the C channel names (``channel_names``).
        dtype: "float32" (0..1) or "uint8" (0..255).
        extra: more JSON metadata (e.g. the model, the query).
    """
    dtype = check_dtype(dtype)
    target = Path(target)
    metadata = {
        "channels": {str(c): str(name) for c, name in enumerate(names)},
        "probabilities": dtype.name,
        **(extra or {}),
    }
    if target.name.lower().endswith(TIFF_SUFFIXES):
        return _write_tiff(target, planes, plane_sizes, spatial_shape, list(names), dtype, metadata)
    from .io.ome_zarr import is_zarr_path

    if is_zarr_path(target):
        return _write_zarr(target, planes, plane_sizes, spatial_shape, list(names), dtype, metadata)
    raise ValueError(f"{target}: probabilities are written as .tif / .tiff or .ome.zarr")


def _write_tiff(target, planes, plane_sizes, spatial_shape, names, dtype, metadata) -> Path:
    from .io.label_files import write_tiff

    shape = output_shape(plane_sizes, len(names), spatial_shape, zarr=False)
    axes = {3: "CYX", 4: "ZCYX", 5: "TZCYX"}.get(len(shape))
    top = 1.0 if dtype == np.float32 else 255.0
    n_planes = int(np.prod(shape[:-3], dtype=np.int64))
    imagej = {
        "Labels": list(names) * n_planes,  # each page (a channel of a plane) named by its class
        "Ranges": (0.0, top) * len(names),
        "Info": "napari-label-anything class probabilities\n"
        + "\n".join(f"channel {c + 1} = {name}" for c, name in enumerate(names)),
    }

    def pages() -> Iterator[np.ndarray]:
        for _, proba in planes:
            _check_plane(proba, len(names), spatial_shape)
            yield from convert(proba, dtype)

    return write_tiff(target, pages(), metadata, axes, imagej, shape=shape, dtype=dtype)


def _write_zarr(target, planes, plane_sizes, spatial_shape, names, dtype, metadata) -> Path:
    from .io import ome_zarr

    at = channel_position(len(plane_sizes), zarr=True)
    shape = output_shape(plane_sizes, len(names), spatial_shape, zarr=True)
    folder = ome_zarr.create_probabilities(target, shape, at, dtype, names, metadata)
    try:
        array = ome_zarr.open_labels(folder)
        for index, proba in planes:
            _check_plane(proba, len(names), spatial_shape)
            array[(*index[:at], slice(None), *index[at:])] = convert(proba, dtype)
        return ome_zarr.commit(folder, target)
    except BaseException:
        ome_zarr.discard(folder)
        raise


def _check_plane(proba: np.ndarray, n_channels: int, spatial_shape: Sequence[int]) -> None:
    if proba.shape != (n_channels, *spatial_shape):
        raise ValueError(f"a probability plane has shape {proba.shape}; expected {(n_channels, *spatial_shape)}")
