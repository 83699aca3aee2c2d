"""Reading images and writing label images (TIFF with class names in the metadata)."""

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

TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg", ".bmp")
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


@functools.cache
def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF (any dimensionality, via tifffile) or a PNG/JPEG/BMP (via Pillow)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        if path.name.lower().endswith(TIFF_SUFFIXES):
            import tifffile

            array = np.asarray(tifffile.imread(path))
        else:
            from PIL import Image

            with Image.open(path) as image:
                array = np.asarray(image)
    except Exception as err:  # noqa: BLE001 - tifffile and Pillow raise many types for damaged files
        raise ValueError(f"{path} is not a readable image ({type(err).__name__}: {err})") from None
    if array.size == 0:
        raise ValueError(f"{path} is not a readable image: it holds no pixels (damaged or empty file)")
    return array


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


def write_labels(
    path: str | os.PathLike,
    labels: np.ndarray,
    classes: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a label image as TIFF, atomically; the class names travel in its JSON metadata.

    The metadata (``ImageDescription``) holds ``{"classes": {"0": "background", "1": ...}, ...}``;
    ``read_label_classes`` reads it back.
    """
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"classes": label_names(classes), **(extra or {})}
    with atomic_write(path) as partial:
        tifffile.imwrite(
            partial,
            labels,
            photometric="minisblack",  # a 3- or 4-plane label stack is not a colour image
            metadata={"napari_label_anything": json.dumps(metadata)},
            compression="zlib",
        )
    return path


def label_names(classes: Sequence[str]) -> dict[str, str]:
    """``labels.class_names`` with string keys, as JSON metadata stores it."""
    from .labels import class_names

    return {str(k): name for k, name in class_names(classes).items()}


def read_label_classes(path: str | os.PathLike) -> dict[int, str]:
    """Class names stored by ``write_labels`` ({} when the TIFF has none)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        metadata = tif.shaped_metadata[0] if tif.shaped_metadata else {}
    raw = metadata.get("napari_label_anything")
    if not raw:
        return {}
    return {int(k): v for k, v in json.loads(raw)["classes"].items()}


def overlay_png(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> Path:
    """Save a 2D image with its labels blended on top (colours of skimage's label2rgb)."""
    from PIL import Image
    from skimage.color import label2rgb

    from .preprocessing import to_uint8_rgb

    rgb = to_uint8_rgb(image)
    blended = label2rgb(labels, image=rgb, alpha=alpha, bg_label=0, bg_color=None, kind="overlay")
    picture = Image.fromarray(np.clip(blended * 255 if blended.max() <= 1.0 else blended, 0, 255).astype(np.uint8))
    with atomic_write(path) as partial:
        picture.save(partial, format="PNG")
    return Path(path)
