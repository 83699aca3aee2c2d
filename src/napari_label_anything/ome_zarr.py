"""OME-Zarr: label images written as NGFF 0.4 images, and zarr / OME-Zarr inputs read lazily.

A labels output ``<name>_labels.ome.zarr`` is a zarr (format 2) group holding one array ``0``
(the labels, one chunk per plane) and NGFF 0.4 metadata: ``multiscales`` (one level, axes named
``t``/``z``/``y``/``x``), ``image-label`` (a colour and the class name of every label value) and
``napari_label_anything`` (``{"classes": {"0": "background", ...}, ...}``, as in the TIFFs).
napari's builtin reader opens it (``viewer.open(path, layer_type="labels")``), as does
``napari-ome-zarr``. A class probability image (``create_probabilities``, see
``probabilities.py``) is the same kind of group, with a channel axis and ``omero`` channel names.

It is written atomically: into a hidden ``.<name>.*.part`` folder beside the target, renamed
into place once complete (``create_labels`` ... ``commit``), so a crash never leaves a
half-written labels image under the final name.
"""

from __future__ import annotations

import colorsys
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .files import ZARR_SUFFIXES

NGFF_VERSION = "0.4"
ARRAY = "0"  # the one resolution level
# Chunks hold one plane, at most this many pixels a side (planes go to disjoint chunks, so
# several processes may write different planes of one output at once).
CHUNK_SIDE = 2048


def _zarr_format_2() -> dict[str, Any]:
    import zarr

    return {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}


def axes(ndim: int) -> list[dict[str, str]]:
    """NGFF axes of a label image with ``ndim`` dimensions: (y, x), (z, y, x), (t, z, y, x), (t, c, z, y, x)."""
    names = {2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}.get(ndim)
    if names is None:
        raise ValueError(f"an OME-Zarr image has 2 to 5 axes; these labels have {ndim}: write --format tiff instead")
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    return [{"name": n, "type": kinds[n]} for n in names]


def _colours(n_classes: int) -> list[list[int]]:
    """One distinct RGBA colour per class (evenly spaced hues)."""
    return [
        [round(255 * v) for v in colorsys.hsv_to_rgb(k / max(n_classes, 1), 0.85, 0.95)] + [255]
        for k in range(n_classes)
    ]


def labels_attributes(ndim: int, classes: Sequence[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The group attributes of a labels image: NGFF multiscales + image-label, and the class names."""
    from .files import label_names

    names = label_names(classes)
    colours = _colours(len(classes))
    return {
        "multiscales": [
            {
                "version": NGFF_VERSION,
                "name": "labels",
                "axes": axes(ndim),
                "datasets": [{"path": ARRAY, "coordinateTransformations": [{"type": "scale", "scale": [1.0] * ndim}]}],
            }
        ],
        "image-label": {
            "version": NGFF_VERSION,
            "colors": [{"label-value": k + 1, "rgba": colour} for k, colour in enumerate(colours)],
            "properties": [{"label-value": int(k), "class": name} for k, name in names.items()],
        },
        "napari_label_anything": {"classes": names, **(extra or {})},
    }


def create_labels(
    target: str | os.PathLike,
    shape: Sequence[int],
    dtype: Any,
    classes: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Create an empty (all 0) labels image in a temporary folder beside ``target``; return that folder.

    Fill it through ``open_labels(folder)``, then ``commit(folder, target)`` (or ``discard``).
    """
    shape = tuple(int(s) for s in shape)
    attributes = labels_attributes(len(shape), classes, extra)  # checks the number of axes first
    return _create(target, shape, dtype, attributes)


def create_probabilities(
    target: str | os.PathLike,
    shape: Sequence[int],
    channel_axis: int,
    dtype: Any,
    names: Sequence[str],
    metadata: dict[str, Any],
) -> Path:
    """Create an empty class probability image (``probabilities.py``) in a temporary folder
    beside ``target``; fill it through ``open_labels(folder)``, then ``commit`` or ``discard``.

    ``shape`` has the channel at ``channel_axis`` (NGFF order: t, c, z, y, x); the channels are
    named in the ``omero`` metadata (napari-ome-zarr shows them as layer names) and in
    ``napari_label_anything`` (``metadata``, with ``"channels": {"0": "background", ...}``).
    """
    shape = tuple(int(s) for s in shape)
    names_of_axes = {3: "cyx", 4: "czyx", 5: "tczyx"}.get(len(shape))
    if names_of_axes is None or names_of_axes.index("c") != channel_axis:
        raise ValueError(f"a probability image of shape {shape} has no NGFF axes with the channel at {channel_axis}")
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    top = 1.0 if np.dtype(dtype) == np.float32 else 255.0
    attributes = {
        "multiscales": [
            {
                "version": NGFF_VERSION,
                "name": "probabilities",
                "axes": [{"name": n, "type": kinds[n]} for n in names_of_axes],
                "datasets": [
                    {"path": ARRAY, "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(shape)}]}
                ],
            }
        ],
        "omero": {
            "channels": [
                {
                    "label": str(name),
                    "color": "FFFFFF",
                    "active": c == 0,
                    "window": {"start": 0.0, "end": top, "min": 0.0, "max": top},
                }
                for c, name in enumerate(names)
            ],  # fmt: skip
            "rdefs": {"model": "greyscale"},
        },
        "napari_label_anything": metadata,
    }
    return _create(target, shape, dtype, attributes)


def _create(target: str | os.PathLike, shape: tuple[int, ...], dtype: Any, attributes: dict[str, Any]) -> Path:
    """An image group of one array ``0`` (all 0, one chunk per plane) in a temporary folder beside
    ``target``."""
    import zarr

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
    try:
        group = zarr.open_group(str(folder), mode="w", **_zarr_format_2())
        group.attrs.update(attributes)
        chunks = (1,) * (len(shape) - 2) + tuple(min(s, CHUNK_SIDE) for s in shape[-2:])
        zarr.open_array(
            str(folder / ARRAY), mode="w", shape=shape, chunks=chunks, dtype=np.dtype(dtype), fill_value=0,
            **_zarr_format_2(),
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def open_labels(folder: str | os.PathLike, mode: str = "r+"):
    """The array of a labels (or probability) image, being written or committed."""
    import zarr

    return zarr.open_array(str(Path(folder) / ARRAY), mode=mode)


def commit(folder: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move a completed labels image from its temporary ``folder`` to ``target``, replacing what is there.

    An existing ``target`` is moved aside first and removed after the rename, so ``target``
    is missing only for the instant between two renames, never half-written.
    """
    folder, target = Path(folder), Path(target)
    old = None
    if target.is_dir() and not target.is_symlink():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
        os.replace(target, old / "labels")
    elif target.exists() or target.is_symlink():
        target.unlink()
    os.replace(folder, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def discard(folder: str | os.PathLike) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def write_labels(
    target: str | os.PathLike, labels: np.ndarray, classes: Sequence[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write an in-memory label image as an OME-Zarr labels image, atomically."""
    folder = create_labels(target, labels.shape, labels.dtype, classes, extra)
    try:
        open_labels(folder)[...] = labels
        return commit(folder, target)
    except BaseException:
        discard(folder)
        raise


def read_label_classes(path: str | os.PathLike) -> dict[int, str]:
    """Class names stored by ``write_labels`` / ``create_labels`` ({} when there are none)."""
    import zarr

    attributes = dict(zarr.open_group(str(path), mode="r").attrs)
    stored = attributes.get("napari_label_anything", {}).get("classes", {})
    return {int(k): v for k, v in stored.items()}


def is_zarr_path(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(ZARR_SUFFIXES)


def open_image(path: str | os.PathLike):
    """A zarr array, or an OME-Zarr image group (its first multiscale level), opened lazily (read-only).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when it is not a zarr array nor an image group (naming what it is instead).
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such zarr array or OME-Zarr image: {path}")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # noqa: BLE001 - zarr raises many types for what is not a zarr store
        raise ValueError(
            f"{path} is not a readable zarr array or OME-Zarr image ({type(err).__name__}: {err})"
        ) from None
    if hasattr(node, "shape") and hasattr(node, "dtype"):
        array = node
    else:
        attributes = dict(node.attrs)
        multiscales = attributes.get("multiscales") or attributes.get("ome", {}).get("multiscales")  # NGFF 0.4 / 0.5
        try:
            level = multiscales[0]["datasets"][0]["path"]
            array = node[level]
        except (TypeError, KeyError, IndexError) as err:
            raise ValueError(
                f"{path} is a zarr group but not an OME-Zarr image (no readable 'multiscales' level: {err!r}); "
                "give the path of one of its arrays"
            ) from None
        if not hasattr(array, "shape"):
            raise ValueError(f"{path}: the first multiscale level {level!r} is not an array")
    if array.ndim < 2 or 0 in array.shape:
        raise ValueError(f"{path} holds an array of shape {tuple(array.shape)}, not an image or a stack")
    if not (np.issubdtype(array.dtype, np.number) or np.dtype(array.dtype) == np.bool_):
        raise ValueError(f"{path} holds {array.dtype} values, not an image")
    return array
