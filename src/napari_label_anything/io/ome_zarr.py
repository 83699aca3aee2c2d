"""OME-Zarr: label images written as NGFF 0.4 images, and zarr / OME-Zarr inputs read lazily.

A labels output ``<name>_labels.ome.zarr`` is a zarr (format 2) group holding one array ``0``
(the labels, one chunk per plane) and NGFF 0.4 metadata: ``multiscales`` (one level; the axes of
the input without its channel axis, names, units and scales kept, else ``t``/``z``/``y``/``x`` by
their number), ``image-label`` (a colour and the class name of every label value) and
``napari_label_anything`` (``{"classes": {"0": "background", ...}, ...}``, as in the TIFFs).

An input (``open_image``) is a ``ZarrImage``: a lazy view of a zarr array, or of an OME-Zarr
image's first level in ``image_reader``'s axis order, the axes named by its ``multiscales``
metadata (a channel axis last, as channels; axes of length 1 dropped). Reading a region whose
chunks are missing from the store (zarr reads them as the fill value) warns with a
``MissingChunksWarning`` naming the planes.
napari's builtin reader opens it (``viewer.open(path, layer_type="labels")``), as does
``napari-ome-zarr``. A class probability image (``create_probabilities``, see
``probabilities.py``) is the same kind of group, with a channel axis and ``omero`` channel names.

It is written atomically: into a hidden ``.<name>.*.part`` folder beside the target, renamed
into place once complete (``create_labels`` ... ``commit``), so a crash never leaves a
half-written labels image under the final name.
"""

from __future__ import annotations

import colorsys
import itertools
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .label_files import ZARR_SUFFIXES

NGFF_VERSION = "0.4"
ARRAY = "0"  # the one resolution level
# Chunks hold one plane, at most this many pixels a side (planes go to disjoint chunks, so
# several processes may write different planes of one output at once).
CHUNK_SIDE = 2048


def _zarr_format_2() -> dict[str, Any]:
    import zarr

    return {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}


AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def axes(ndim: int) -> list[dict[str, str]]:
    """NGFF axes of a label image with ``ndim`` dimensions: (y, x), (z, y, x), (t, z, y, x), (t, c, z, y, x)."""
    names = {2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}.get(ndim)
    if names is None:
        raise ValueError(f"an OME-Zarr image has 2 to 5 axes; these labels have {ndim}: write --format tiff instead")
    return [{"name": n, "type": AXIS_TYPES[n]} for n in names]


def _colours(n_classes: int) -> list[list[int]]:
    """One distinct RGBA colour per class (evenly spaced hues)."""
    return [
        [round(255 * v) for v in colorsys.hsv_to_rgb(k / max(n_classes, 1), 0.85, 0.95)] + [255]
        for k in range(n_classes)
    ]


def labels_attributes(
    ndim: int, classes: Sequence[str], extra: dict[str, Any] | None = None, input_axes: LabelAxes | None = None
) -> dict[str, Any]:
    """The group attributes of a labels image: NGFF multiscales + image-label, and the class names.

    ``input_axes``: the axes (and scales) of the input without its channel axis
    (``label_axes_of``); None, or of another length than ``ndim``: named by their number (``axes``).
    """
    from .label_files import label_names

    names = label_names(classes)
    colours = _colours(len(classes))
    named = axes(ndim)  # checks the number of axes
    scale = [1.0] * ndim
    if input_axes is not None and len(input_axes.axes) == ndim:
        named, scale = [dict(a) for a in input_axes.axes], list(input_axes.scale or scale)
    return {
        "multiscales": [
            {
                "version": NGFF_VERSION,
                "name": "labels",
                "axes": named,
                "datasets": [{"path": ARRAY, "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
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
    input_axes: LabelAxes | None = None,
) -> Path:
    """Create an empty (all 0) labels image in a temporary folder beside ``target``; return that folder.

    Fill it through ``open_labels(folder)``, then ``commit(folder, target)`` (or ``discard``).
    ``input_axes``: see ``labels_attributes``.
    """
    shape = tuple(int(s) for s in shape)
    attributes = labels_attributes(len(shape), classes, extra, input_axes)  # checks the number of axes first
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
    top = 1.0 if np.dtype(dtype) == np.float32 else 255.0
    attributes = {
        "multiscales": [
            {
                "version": NGFF_VERSION,
                "name": "probabilities",
                "axes": [{"name": n, "type": AXIS_TYPES[n]} for n in names_of_axes],
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


class MissingChunksWarning(UserWarning):
    """Planes of a zarr input whose chunks are missing from the store: zarr reads them as the
    fill value, not as image data (``ZarrImage``)."""


@dataclass(frozen=True)
class LabelAxes:
    """NGFF axes of a labels output taken from its input: one dict per axis (name, type, unit), and
    the scale of each (None: 1)."""

    axes: tuple[dict[str, Any], ...]
    scale: tuple[float, ...] | None = None


def open_image(path: str | os.PathLike) -> ZarrImage:
    """A zarr array, or an OME-Zarr image group (its first multiscale level), opened lazily (read-only)
    as a ``ZarrImage``: an OME-Zarr image in the order (other..., T, Z, Y, X[, C]) of its
    ``multiscales`` axes, a zarr array without them as it is.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when it is not a zarr array nor an image group (naming what it is instead), or
            its axes metadata does not fit its array.
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
    multiscale, folder = None, path
    if hasattr(node, "shape") and hasattr(node, "dtype"):
        array = node
    else:
        attributes = dict(node.attrs)
        multiscales = attributes.get("multiscales") or attributes.get("ome", {}).get("multiscales")  # NGFF 0.4 / 0.5
        try:
            multiscale = multiscales[0]
            level = multiscale["datasets"][0]["path"]
            array = node[level]
        except (TypeError, KeyError, IndexError) as err:
            raise ValueError(
                f"{path} is a zarr group but not an OME-Zarr image (no readable 'multiscales' level: {err!r}); "
                "give the path of one of its arrays"
            ) from None
        if not hasattr(array, "shape"):
            raise ValueError(f"{path}: the first multiscale level {level!r} is not an array")
        folder = path / str(level)
    if array.ndim < 2 or 0 in array.shape:
        raise ValueError(f"{path} holds an array of shape {tuple(array.shape)}, not an image or a stack")
    if not (np.issubdtype(array.dtype, np.number) or np.dtype(array.dtype) == np.bool_):
        raise ValueError(f"{path} holds {array.dtype} values, not an image")
    named = _ngff_axes(multiscale, array.ndim, path) if multiscale is not None else None
    return ZarrImage(array, path, folder, named, _ngff_scale(multiscale, array.ndim))


def _ngff_axes(multiscale: dict, ndim: int, path: Path) -> list[dict[str, Any]] | None:
    """The axes of an NGFF ``multiscales`` entry as dicts (0.3 gives names, 0.1/0.2 none: t, c, z, y, x)."""
    given = multiscale.get("axes")
    if given is None:
        return [{"name": n, "type": AXIS_TYPES[n]} for n in "tczyx"] if ndim == 5 else None
    named = [dict(a) if isinstance(a, dict) else {"name": str(a)} for a in given]
    if len(named) != ndim or any("name" not in a for a in named):
        raise ValueError(f"{path}: its multiscales axes {given!r} do not fit its array of {ndim} axes")
    for a in named:
        a.setdefault("type", AXIS_TYPES.get(str(a["name"]).lower()))
        if a["type"] is None:
            del a["type"]
    return named


def _ngff_scale(multiscale: dict | None, ndim: int) -> list[float] | None:
    """The ``scale`` transformation of an NGFF image's first level (None without one)."""
    try:
        transforms = multiscale["datasets"][0].get("coordinateTransformations") or []
        scale = next(t["scale"] for t in transforms if t.get("type") == "scale")
        return [float(v) for v in scale] if len(scale) == ndim else None
    except (TypeError, KeyError, StopIteration, ValueError):
        return None


def _axis_letter(axis: dict[str, Any]) -> str:
    """An NGFF axis as an ``image_reader`` letter: C for a channel axis, T, Z, Y, X by name, else Q."""
    name = str(axis["name"]).upper()
    if axis.get("type") == "channel" or name == "C":
        return "C"
    return name if name in ("T", "Z", "Y", "X") else ("T" if axis.get("type") == "time" else "Q")


def label_axes_of(source: str | os.PathLike, ndim: int) -> LabelAxes | None:
    """The axes of the labels of ``source`` (a file or zarr input), ``ndim`` of them: the input's
    axes without its channel axis (an OME-Zarr's names, units and scales; a file's T, Z, Y, X).
    None when they are unnamed (a zarr array, a plain multi-page TIFF) or do not number ``ndim``."""
    if is_zarr_path(source):
        image = open_image(source)
        if image.named is None:
            return None
        kept = [i for i, a in enumerate(image.axes) if a != "C"]
        named = tuple(image.named[i] for i in kept)
        scale = None if image.scale is None else tuple(image.scale[i] for i in kept)
        found = LabelAxes(named, scale)
    else:
        from .image_reader import probe_image

        letters = probe_image(source, decode=False).axes.replace("C", "")
        if not set(letters) <= set("TZYX"):
            return None
        found = LabelAxes(tuple({"name": a.lower(), "type": AXIS_TYPES[a.lower()]} for a in letters))
    return found if len(found.axes) == ndim else None


class ZarrImage:
    """A zarr input as ``predict`` reads it: lazy, a region read only when indexed.

    ``axes``: one ``image_reader`` letter per axis (e.g. "TZYXC") of an OME-Zarr image, whose
    axes are put in ``image_reader.canonical_order`` (a channel axis last) with those of length 1
    dropped; "" for a zarr array without axes metadata, kept as it is. ``named``: the NGFF axis
    dicts in that order (None without them); ``scale`` likewise.

    Before a region is read, the chunks covering it are looked up in the store (a local folder,
    zarr v2 or v3; the shards of a sharded array): a missing one, which zarr would read as the
    fill value, gives one ``MissingChunksWarning`` per plane naming the input and the plane.
    """

    def __init__(self, array, source: Path, folder: Path, named: list[dict] | None, scale: list[float] | None):
        from .image_reader import canonical_order

        self.array, self.source, self.fill_value = array, source, getattr(array, "fill_value", 0)
        self.dtype = np.dtype(array.dtype)
        source_shape = tuple(int(n) for n in array.shape)
        if named is None:
            self._keep, self.axes, self.named, self.scale = list(range(array.ndim)), "", None, None
        else:
            letters = "".join(_axis_letter(a) for a in named)
            try:
                order, axes = canonical_order(letters)
            except ValueError as err:
                raise ValueError(f"{source}: {err}") from None
            keep = [i for i, o in enumerate(order) if source_shape[o] > 1 or axes[i] in "YX"]
            self._keep = [order[i] for i in keep]
            self.axes = "".join(axes[i] for i in keep)
            self.named = [named[o] for o in self._keep]
            self.scale = None if scale is None else [scale[o] for o in self._keep]
        self.shape = tuple(source_shape[o] for o in self._keep)
        self.ndim = len(self.shape)
        self.file_axes = "" if named is None else "".join(_axis_letter(a) for a in named)
        self._grid = _chunk_grid(folder, array.ndim)
        self._warned: set[tuple[int, ...]] = set()

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ZarrImage({str(self.source)!r}, shape={self.shape}, axes={self.axes or None!r})"

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        key = self._full_key(key if isinstance(key, tuple) else (key,))
        source_key: list[Any] = [0] * self.array.ndim  # dropped axes have length 1
        for axis, k in zip(self._keep, key, strict=True):
            source_key[axis] = k
        self._check_chunks(source_key)
        data = np.asarray(self.array[tuple(source_key)])
        read = [a for a in range(self.array.ndim) if isinstance(source_key[a], slice)]  # in the source's order
        wanted = [a for a in self._keep if isinstance(source_key[a], slice)]
        return data if read == wanted else np.transpose(data, [read.index(a) for a in wanted])

    def _full_key(self, key: tuple) -> tuple:
        from ..stacks import is_index

        for k in key:
            if not (k is Ellipsis or isinstance(k, slice) or is_index(k)):
                raise TypeError(f"a zarr input is indexed with integers and slices, not {k!r}")
        if sum(k is Ellipsis for k in key) > 1:
            raise IndexError("an index can only have one ellipsis")
        if Ellipsis in key:
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for a zarr input of {self.ndim} axes")
        key = key + (slice(None),) * (self.ndim - len(key))
        return tuple(k if isinstance(k, slice) else range(n)[int(k)] for k, n in zip(key, self.shape, strict=True))

    def _plane_axes(self) -> list[int]:
        if self.axes:
            return [i for i, a in enumerate(self.axes) if a not in "YXC"]
        from ..stacks import stack_layout

        try:
            return list(stack_layout(self.shape).plane_axes)
        except ValueError:
            return list(range(self.ndim - 2))

    def _check_chunks(self, source_key: list[Any]) -> None:
        """Warn (``MissingChunksWarning``) naming the planes of this read whose chunks are missing."""
        if self._grid is None:
            return
        chunks, chunk_path = self._grid
        spans = []
        for k, n, c in zip(source_key, self.array.shape, chunks, strict=True):
            picked = range(n)[k] if isinstance(k, slice) else range(k, k + 1)
            if not len(picked):
                return
            spans.append(range(min(picked[0], picked[-1]) // c, max(picked[0], picked[-1]) // c + 1))
        missing = [coords for coords in itertools.product(*spans) if not chunk_path(coords).exists()]
        planes: set[tuple[int, ...]] = set()
        for coords in missing:
            per_axis = []
            for axis in (self._keep[a] for a in self._plane_axes()):
                k = source_key[axis]
                picked = range(self.array.shape[axis])[k] if isinstance(k, slice) else range(k, k + 1)
                per_axis.append([i for i in picked if i // chunks[axis] == coords[axis]])
            planes.update(itertools.islice(itertools.product(*per_axis), MAX_NAMED_PLANES * 10))
        new = sorted(planes - self._warned)
        if new:
            self._warned.update(new)
            self._warn(new)

    def _warn(self, planes: list[tuple[int, ...]]) -> None:
        import warnings

        letters = [self.axes[a].lower() if self.axes and self.axes[a] != "Q" else "" for a in self._plane_axes()]
        if all(letters):  # z=3, t=0,z=3
            names = [",".join(f"{n}={i}" for n, i in zip(letters, p, strict=True)) for p in planes]
        else:  # 3, (0, 3)
            names = [str(p[0]) if len(p) == 1 else str(p) for p in planes]
        more = f" and {len(names) - MAX_NAMED_PLANES} more" if len(names) > MAX_NAMED_PLANES else ""
        which = f"plane{'s' if len(names) > 1 else ''} {', '.join(names[:MAX_NAMED_PLANES])}{more}"
        warnings.warn(
            MissingChunksWarning(
                f"{self.source}: chunks of {which if letters else 'the image'} are missing from the store and read "
                f"as the fill value {self.fill_value}, not as image data (an incomplete copy, or chunks left out "
                "because they were empty when written)"
            ),
            stacklevel=4,  # the caller of __getitem__
        )


MAX_NAMED_PLANES = 10  # a missing-chunks warning names this many planes, then counts the rest


def _chunk_grid(folder: Path, ndim: int):
    """(chunk shape, coords -> chunk file path) of the zarr array stored in ``folder`` (from its
    ``.zarray`` or ``zarr.json``); None when it is not a local array folder (nothing checked)."""
    import json

    try:
        if (folder / ".zarray").is_file():
            meta = json.loads((folder / ".zarray").read_text())
            chunks, prefix, separator = meta["chunks"], "", meta.get("dimension_separator") or "."
        elif (folder / "zarr.json").is_file():
            meta = json.loads((folder / "zarr.json").read_text())
            chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]  # a sharded array's shards
            encoding = meta.get("chunk_key_encoding") or {"name": "default"}
            default = encoding.get("name") == "default"
            separator = (encoding.get("configuration") or {}).get("separator", "/" if default else ".")
            prefix = "c" + separator if default else ""
        else:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(chunks) != ndim:
        return None
    return tuple(int(c) for c in chunks), lambda coords: folder / (prefix + separator.join(map(str, coords)))
