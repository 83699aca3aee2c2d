"""Reading images and writing label images (ImageJ TIFF with class names in the metadata)."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .image_reader import (  # noqa: F401 - image reading lives in image_reader; these names stay importable here
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    VENDOR_SUFFIXES,
    read_image,
    read_image_with_axes,
)

ZARR_SUFFIXES = (".ome.zarr", ".zarr")


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, it replaces ``path`` at once.

    A crash or a kill while writing leaves ``path`` as it was (the temporary file is removed
    on errors; after a hard kill a hidden ``.<name>.*.part`` file may remain beside it). The
    data is flushed to disk before the rename, so a power cut cannot leave an empty file.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    partial = Path(temporary)
    try:
        os.chmod(partial, 0o666 & ~_process_umask())  # mkstemp makes 0600; give what a plain open() would
        yield partial
        with open(partial, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_error(what: str, err: BaseException) -> OSError:
    """One-line OSError "could not write {what}: {reason}" for a write that failed (``err``: an
    OSError, or safetensors' ``SafetensorError``, which reports a full disk as "StorageFull");
    a full disk says so in words and keeps ``errno.ENOSPC``."""
    import errno

    code = getattr(err, "errno", None)
    text = (getattr(err, "strerror", None) or str(err)) if code is not None else str(err)
    full = code == errno.ENOSPC or "StorageFull" in text or "No space left" in text
    error = OSError(f"could not write {what}: {'no space left on the disk' if full else ' '.join(text.split())}")
    error.errno = errno.ENOSPC if full else code
    return error


@functools.cache
def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def image_base_name(path: str | os.PathLike) -> str:
    """A file's name without its image suffix: ``a.b.ome.tif`` -> ``a.b``, ``x.ome.zarr`` -> ``x``
    (other names keep only their stem)."""
    name = Path(path).name
    for suffix in sorted((*IMAGE_SUFFIXES, *ZARR_SUFFIXES), key=len, reverse=True):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove that a file can be written there, before any work.

    Raises:
        ValueError: naming the folder and why it cannot be written (a file in the way, no permission).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {folder}: {err.strerror or err}") from None
    return folder


METADATA_KEY = "napari_label_anything"  # the JSON metadata of the TIFFs written here
IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
IMAGEJ_MAX_BYTES = 2**32 - 2**25  # ImageJ TIFFs are never BigTIFF: larger images are written as plain TIFF


def write_labels(
    path: str | os.PathLike,
    labels: np.ndarray,
    classes: Sequence[str],
    extra: dict[str, Any] | None = None,
    colors: Sequence[str | None] | None = None,
) -> Path:
    """Write a label image as an ImageJ TIFF, atomically, with its class names.

    Args:
        labels: (Y, X), (Z, Y, X) or (T, Z, Y, X) non-negative integers (value k = class k).
            Integers other than uint8/uint16 are stored as the smallest of them that holds
            their values (what ImageJ reads); labels that fit neither, or more dimensions, are
            written as a plain TIFF with the JSON metadata only.
        classes: names of classes 1..N (value 0 is the background).
        extra: more JSON metadata (e.g. the model, the query).
        colors: '#rrggbb' of classes 1..N (None or missing: ``labels.default_color``).

    Fiji opens it with the class names in Image > Show Info ("Info", and "Properties"
    ``label_0`` = "background", ``label_1`` = ...) and a colour LUT (uint8 labels; class k's
    colour at value k, a "background" class black). The JSON metadata
    ``{"classes": {"0": "background", "1": ...}, ...}`` travels under ``napari_label_anything``
    in the ImageJ description; ``read_label_classes`` / ``read_label_metadata`` read it back
    (from these files and from the plain TIFFs written before).
    """
    from ..labels import class_names

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = _imagej_labels(np.asarray(labels))
    names = class_names(classes)
    metadata = {"classes": label_names(classes), **(extra or {})}
    imagej: dict[str, Any] = {
        "Info": "\n".join(["napari-label-anything label image", *(f"{k} = {n}" for k, n in names.items())]),
        "Properties": {f"label_{k}": name for k, name in names.items()},
    }
    if labels.dtype == np.uint8:
        imagej["LUTs"] = [_label_lut(list(classes), colors)]
    axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(labels.ndim)
    return write_tiff(path, labels, metadata, axes, imagej)


def _imagej_labels(labels: np.ndarray) -> np.ndarray:
    """uint8/uint16 labels as they are; other non-negative integers that fit uint16 as the
    smallest unsigned type holding them; anything else unchanged."""
    from ..labels import labels_dtype

    if labels.dtype in IMAGEJ_DTYPES[:2] or labels.dtype.kind not in "biu" or labels.size == 0:
        return labels
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high > np.iinfo(np.uint16).max:
        return labels
    return labels.astype(labels_dtype(high))


def _label_lut(classes: list[str], colors: Sequence[str | None] | None) -> np.ndarray:
    """(3, 256) uint8 ImageJ LUT: 0 black, value k the colour of class k (a "background" class
    black; values above the classes the default colours)."""
    from ..labels import default_color, is_background_name

    lut = np.zeros((3, 256), dtype=np.uint8)
    given = list(colors or [])
    for k in range(1, 256):
        if k <= len(classes) and is_background_name(classes[k - 1]):
            continue
        color = (given[k - 1] if k <= len(given) else None) or default_color(k)
        lut[:, k] = [int(color.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)]
    return lut


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray | Iterator[np.ndarray],
    metadata: dict[str, Any],
    axes: str | None,
    imagej: dict[str, Any] | None = None,
    shape: Sequence[int] | None = None,
    dtype: Any = None,
) -> Path:
    """Write ``data`` as a zlib-compressed TIFF, atomically: an ImageJ hyperstack where ImageJ
    can hold it, else a plain (Big)TIFF.

    Args:
        data: an array, or an iterator of (Y, X) pages in C order (then ``shape`` and ``dtype``
            are required): written as they come, so a large image never sits in memory whole.
        metadata: JSON-ready; stored under ``napari_label_anything`` (``read_label_metadata``).
        axes: ImageJ axes (a subsequence of "TZCYX", one letter per dimension) or None.
        imagej: ImageJ metadata ("Info", "Properties", "Labels", "Ranges", "LUTs"...), used
            only in an ImageJ TIFF.

    ImageJ takes uint8, uint16 or float32 images under 4 GB; others get the plain TIFF.
    """
    import tifffile

    shape = tuple(np.shape(data)) if shape is None else tuple(int(n) for n in shape)
    dtype = np.dtype(getattr(data, "dtype", None) if dtype is None else dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    as_imagej = axes is not None and len(axes) == len(shape) and dtype in IMAGEJ_DTYPES and nbytes <= IMAGEJ_MAX_BYTES
    described = {METADATA_KEY: json.dumps(metadata)}
    if as_imagej:
        options = {"imagej": True, "metadata": {"axes": axes, **(imagej or {}), **described}}
    else:
        options = {"metadata": described, "bigtiff": nbytes > IMAGEJ_MAX_BYTES}
    if not isinstance(data, np.ndarray):
        options.update(shape=shape, dtype=dtype)
    path = Path(path)
    with atomic_write(path) as partial:
        # minisblack: a 3- or 4-plane stack is not a colour image
        tifffile.imwrite(partial, data, photometric="minisblack", compression="zlib", **options)
    return path


def label_names(classes: Sequence[str]) -> dict[str, str]:
    """``labels.class_names`` with string keys, as JSON metadata stores it."""
    from ..labels import class_names

    return {str(k): name for k, name in class_names(classes).items()}


def read_label_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata ``write_labels`` / ``write_tiff`` stored in a TIFF ({} when it has none):
    from an ImageJ description, or from the JSON description of plain TIFFs."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.shaped_metadata:
            raw = tif.shaped_metadata[0].get(METADATA_KEY)
        else:
            raw = (tif.imagej_metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def read_label_classes(path: str | os.PathLike) -> dict[int, str]:
    """Class names stored by ``write_labels`` ({} when the TIFF has none)."""
    metadata = read_label_metadata(path)
    return {int(k): v for k, v in metadata.get("classes", {}).items()}


def overlay_png(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> Path:
    """Save a 2D image with its labels blended on top (colours of skimage's label2rgb)."""
    from PIL import Image
    from skimage.color import label2rgb

    from ..preprocessing import to_uint8_rgb

    rgb = to_uint8_rgb(image)
    blended = label2rgb(labels, image=rgb, alpha=alpha, bg_label=0, bg_color=None, kind="overlay")
    picture = Image.fromarray(np.clip(blended * 255 if blended.max() <= 1.0 else blended, 0, 255).astype(np.uint8))
    with atomic_write(path) as partial:
        picture.save(partial, format="PNG")
    return Path(path)
