"""Reading image files into one axis order: (other planes..., T, Z, Y, X[, C]).

Every image the package reads goes through here (``label_files.read_image`` is this module's
``read_image``): ``predict``, ``embed``, ``--support`` files, the training datasets.

* TIFF through tifffile, every compression imagecodecs decodes (LZW, deflate, zstd, JPEG, ...),
  either byte order. The axes come from the file's metadata (tifffile's ``series[0].axes``: the
  OME-XML of an OME-TIFF, the ImageJ hyperstack's T/Z/C, tifffile's own shape metadata), so the
  channels of a hyperstack, an OME-TIFF or a planar (channel-first) RGB TIFF become the trailing
  channel axis, never planes. The first series (and, for pyramids, its full resolution) is read.
* PNG, JPEG, BMP through Pillow: (Y, X) or (Y, X, C); a 16-bit PNG through imagecodecs (Pillow
  keeps only the high byte of 16-bit colour).
* CZI, ND2, LIF through bioio (the optional ``[bioio]`` extra), first scene.

What is read is what the file means (``docs/files.md``, "Colour models and bit depths"): CMYK
(JPEG, Adobe-inverted and YCCK included; TIFF) becomes RGB; palette PNGs/BMPs their colours
(grey when the palette is grey); grey + alpha the grey; a TIFF of 2 to 7 bits per sample is
scaled to 0..255 (uint8 is read as 0..255 by the intensity rule); 1-bit is bool; 9 to 15 bits
keep their values (a 12-bit TIFF is uint16 0..4095).

The axis order contract: ``axes`` has one letter per array axis. Y and X are the plane; C, when
present, is the last axis and holds the channels (a file's samples ``S`` or channels ``C``);
every other letter is a plane axis: T (time) and Z (depth) last among them, Z next to (Y, X),
other letters (tifffile's I, Q, ... for unnamed page sequences) first, in the file's order.
Axes of length 1 are dropped. Pixels keep their dtype, in the machine's byte order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")
VENDOR_SUFFIXES = (".czi", ".nd2", ".lif")  # read through bioio, the [bioio] extra
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg", ".bmp", *VENDOR_SUFFIXES)
BIOIO_INSTALL = "pip install 'napari-label-anything[bioio]'"
CHANNEL_AXES = "CS"  # a file's channel letters (tifffile: S = samples of a pixel, e.g. RGB)
DECODE_CHECK_BYTES = 32 * 2**20  # how much of an input's first page ``probe_image`` decodes


class FileProblem(ValueError):
    """What is wrong with a file, said without its name (the readers add it)."""


@dataclass(frozen=True)
class ImageInfo:
    """What an image file holds, in the order ``read_image`` returns it.

    shape: the array's shape, e.g. (T, Z, Y, X, C).
    dtype: its dtype (machine byte order).
    axes: one letter per axis of ``shape`` (see the module docstring), e.g. "TZYXC".
    file_axes: the axes as the file stores them (tifffile's or bioio's letters, e.g. "TZCYX");
        "" for PNG/JPEG/BMP.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    file_axes: str

    @property
    def channels(self) -> int:
        """Length of the channel axis C; 0 when there is none."""
        return self.shape[-1] if self.axes.endswith("C") else 0


def canonical_order(file_axes: str) -> tuple[tuple[int, ...], str]:
    """The permutation of a file's axes into (other..., T, Z, Y, X[, C]) and the new axes string.

    ``np.transpose(array, permutation)`` gives the array in that order. A file without Y or X
    letters keeps its order, the last two axes (before a channel axis) taken for (Y, X).

    Raises:
        ValueError: when the file names two channel axes (both C and S).
    """
    letters = ["C" if a in CHANNEL_AXES else a for a in file_axes]
    channel = [i for i, a in enumerate(letters) if a == "C"]
    if len(channel) > 1:
        raise FileProblem(f"two channel axes in {file_axes!r} (C and S); save the channels as one axis")
    rest = [i for i in range(len(letters)) if i not in channel]
    if len(rest) < 2:
        raise FileProblem(f"axes {file_axes!r} do not hold a 2D image")
    if "Y" not in letters or "X" not in letters:  # unnamed: the last two are (Y, X)
        letters = [*("Q" * (len(rest) - 2)), "Y", "X"]
        return (*rest, *channel), "".join(letters) + "C" * len(channel)
    y, x = letters.index("Y"), letters.index("X")
    planes = [i for i in rest if i not in (y, x)]
    rank = {"T": 1, "Z": 2}
    planes.sort(key=lambda i: rank.get(letters[i], 0))  # stable: other letters keep the file's order
    order = (*planes, y, x, *channel)
    return order, "".join(letters[i] for i in order)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (TIFF, PNG, JPEG, BMP; CZI, ND2, LIF with bioio) in the order
    (other planes..., T, Z, Y, X[, C]): see ``read_image_with_axes`` for the axis names.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: one line naming the file, for a damaged, empty or undecodable image (e.g. an
            unknown TIFF compression) or a vendor format without the bioio extra.
    """
    return read_image_with_axes(path)[0]


def read_image_with_axes(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """An image file's pixels and the name of each axis.

    Returns:
        (array, axes): the array in the order (other planes..., T, Z, Y, X[, C]) in its own dtype
        (machine byte order); ``axes`` one letter per array axis, e.g. "YX", "YXC", "ZYX",
        "TZYXC" (module docstring).

    Raises:
        FileNotFoundError, ValueError: as ``read_image``.
    """
    path = _existing(path)
    try:
        if _is_vendor(path):
            array, file_axes = _read_vendor(path)
        elif _is_tiff(path):
            array, file_axes = _read_tiff(path)
        else:
            array, file_axes = _read_pillow(path), ""
        array, axes = _canonical(array, file_axes)
    except FileProblem as err:
        raise ValueError(f"{path}: {_one_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - tifffile, imagecodecs and Pillow raise many types for damaged files
        raise ValueError(_unreadable(path, err)) from None
    if array.size == 0:
        raise ValueError(f"{path} is not a readable image: it holds no pixels (damaged or empty file)")
    return array, axes


def probe_image(path: str | os.PathLike, decode: bool = True) -> ImageInfo:
    """Shape, dtype and axes of what ``read_image`` would return, without reading the whole file.

    TIFF and vendor files: from the header; with ``decode``, the first page's pixels are also
    decoded (up to ``DECODE_CHECK_BYTES``) and the last page's data must lie within the file,
    so a damaged file, an unknown compression or a missing codec fails here, not after a model
    has loaded. PNG, JPEG and BMP are decoded whole (they are small), or with ``decode=False``
    read from their header.

    Raises:
        FileNotFoundError, ValueError: as ``read_image``.
    """
    path = _existing(path)
    if not (_is_tiff(path) or _is_vendor(path)):  # PNG, JPEG, BMP
        header = None if decode else _pillow_header(path)
        if header is not None:
            return header
        array, axes = read_image_with_axes(path)
        return ImageInfo(tuple(array.shape), array.dtype, axes, "")
    try:
        if _is_vendor(path):
            shape, dtype, file_axes = _probe_vendor(path, decode)
        else:
            shape, dtype, file_axes = _probe_tiff(path, decode)
        order, axes = canonical_order(file_axes)
    except FileProblem as err:
        raise ValueError(f"{path}: {_one_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - see read_image_with_axes
        raise ValueError(_unreadable(path, err)) from None
    shape = tuple(int(shape[i]) for i in order)
    if 0 in shape:
        raise ValueError(f"{path} is not a readable image: it holds no pixels (damaged or empty file)")
    return ImageInfo(shape, _native(np.dtype(dtype)), axes, file_axes)


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    return path


def _is_tiff(path: Path) -> bool:
    return path.name.lower().endswith(TIFF_SUFFIXES)


def _is_vendor(path: Path) -> bool:
    return path.name.lower().endswith(VENDOR_SUFFIXES)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _unreadable(path: Path, err: BaseException) -> str:
    return f"{path} is not a readable image ({type(err).__name__}: {_one_line(err)})"


def _native(dtype: np.dtype) -> np.dtype:
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def _canonical(array: np.ndarray, file_axes: str) -> tuple[np.ndarray, str]:
    array = np.asarray(array)
    if not array.dtype.isnative:  # big-endian TIFF or 16-bit PNG: torch and others need native order
        array = array.astype(_native(array.dtype))
    if not file_axes:  # Pillow: (Y, X) or (Y, X, C)
        return array, "YX" if array.ndim == 2 else "YXC"
    if len(file_axes) != array.ndim:
        raise FileProblem(f"the file's axes {file_axes!r} do not match its shape {array.shape}")
    order, axes = canonical_order(file_axes)
    return (array if order == tuple(range(array.ndim)) else np.transpose(array, order)), axes


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array, axes, page = series.asarray(), series.axes, series.keyframe
    if _is_cmyk_tiff(page) and "S" in axes:
        array = np.moveaxis(_cmyk_to_rgb(np.moveaxis(array, axes.index("S"), -1)), -1, axes.index("S"))
    bits = int(page.bitspersample)
    if array.dtype == np.uint8 and 1 < bits < 8:  # 0..2**bits-1: scaled, so that 0..255 holds its range
        array = np.rint(array * (255.0 / (2**bits - 1))).astype(np.uint8)
    return array, axes


def _is_cmyk_tiff(page) -> bool:
    """A TIFF page of separated CMYK inks (photometric SEPARATED, InkSet CMYK or absent)."""
    import tifffile

    inkset = page.tags.valueof(332, 1)  # InkSet: 1 = CMYK, 2 = other inks (left as channels)
    return page.photometric == tifffile.PHOTOMETRIC.SEPARATED and inkset == 1 and page.samplesperpixel >= 4


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """(..., 4+) CMYK (0 = no ink) -> (..., 3) RGB of the same dtype: (top - ink) * (top - K) / top;
    samples after K (alpha) are dropped."""
    top = float(np.iinfo(cmyk.dtype).max) if cmyk.dtype.kind in "ui" else 1.0
    ink = cmyk[..., :3].astype(np.float64)
    rgb = (top - ink) * (top - cmyk[..., 3:4].astype(np.float64)) / top
    return (np.rint(rgb) if cmyk.dtype.kind in "ui" else rgb).astype(cmyk.dtype)


def _probe_tiff(path: Path, decode: bool) -> tuple[tuple[int, ...], np.dtype, str]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        if decode:
            first = series[0]
            if first is not None:
                _decode_some(first)
            if _data_end(series) > tif.filehandle.size:
                raise EOFError("its image data ends past the end of the file (truncated)")
        shape = list(series.shape)
        if _is_cmyk_tiff(series.keyframe) and "S" in series.axes:  # read as RGB
            shape[series.axes.index("S")] = 3
        return tuple(shape), series.dtype, series.axes


def _data_end(series) -> int:
    """Where a TIFF series' image data ends in its file (contiguous data, else its last page's)."""
    if series.dataoffset is not None:
        return int(series.dataoffset) + int(series.nbytes)
    last = series[len(series) - 1]
    if last is None:
        return 0
    return max((o + n for o, n in zip(last.dataoffsets, last.databytecounts, strict=False) if n), default=0)


def _decode_some(page) -> None:
    """Decode the segments (strips, tiles) of a TIFF page until ``DECODE_CHECK_BYTES`` are decoded."""
    decoded = 0
    for segment, _, _ in page.segments(maxworkers=1):
        if segment is not None:
            decoded += segment.nbytes
        if decoded >= DECODE_CHECK_BYTES:
            break


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pillow modes read as another mode: CMYK (Pillow undoes Adobe's inverted CMYK and YCCK) and
# other colour models -> RGB; palette -> RGB (or L: ``_pillow_mode``); grey + alpha -> grey.
PILLOW_CONVERSIONS = {"CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "P": "RGB", "PA": "RGB",
                      "LA": "L", "La": "L"}  # fmt: skip


def _png_header(path: Path) -> tuple[int, int, int, int] | None:
    """(height, width, bit depth, colour type) from a PNG's IHDR; None for any other file."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big"), head[24], head[25]


def _png16_shape(header: tuple[int, int, int, int]) -> tuple[int, ...]:
    """What a 16-bit PNG is read as: grey (+ alpha: grey) (Y, X), RGB (Y, X, 3), RGBA (Y, X, 4)."""
    height, width, _, colour_type = header
    samples = {0: 1, 2: 3, 4: 1, 6: 4}.get(colour_type, 1)
    return (height, width) if samples == 1 else (height, width, samples)


def _read_png16(path: Path) -> np.ndarray:
    """A 16-bit PNG at its full depth (Pillow reads 16-bit colour as 8-bit)."""
    import imagecodecs

    if not getattr(imagecodecs, "PNG", None) or not imagecodecs.PNG.available:
        raise FileProblem("a 16-bit PNG needs imagecodecs' PNG codec, which this installation lacks")
    array = np.asarray(imagecodecs.png_decode(path.read_bytes()))
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha: the grey
        array = array[..., 0]
    return array


def _pillow_mode(image) -> str | None:
    """The mode ``image`` is read as when not its own (``PILLOW_CONVERSIONS``; a palette of greys is L)."""
    target = PILLOW_CONVERSIONS.get(image.mode)
    if image.mode == "P":
        palette = np.asarray(image.getpalette() or [0, 0, 0])[: 3 * 256].reshape(-1, 3)  # RGB triples
        if (palette == palette[:, :1]).all():
            return "L"
    return target


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    header = _png_header(path)
    if header is not None and header[2] == 16:
        return _read_png16(path)
    with Image.open(path) as image:
        mode = _pillow_mode(image)
        return np.asarray(image.convert(mode) if mode else image)


def _pillow_header(path: Path) -> ImageInfo | None:
    """A PNG/JPEG/BMP's ``ImageInfo`` from its header; None when Pillow cannot tell (then it is decoded)."""
    from PIL import Image, ImageMode

    try:
        png = _png_header(path)
        if png is not None and png[2] == 16:
            shape = _png16_shape(png)
            return ImageInfo(shape, np.dtype(np.uint16), "YX" if len(shape) == 2 else "YXC", "")
        with Image.open(path) as image:
            mode, (width, height) = ImageMode.getmode(_pillow_mode(image) or image.mode), image.size
    except Exception:  # noqa: BLE001 - read_image_with_axes says what is wrong
        return None
    typestr = getattr(mode, "typestr", None)
    if typestr is None:
        return None
    bands, dtype = len(mode.bands), _native(np.dtype(typestr))
    if bands == 1:
        return ImageInfo((height, width), dtype, "YX", "")
    return ImageInfo((height, width, bands), dtype, "YXC", "")


def _bioio_image(path: Path):
    """A bioio ``BioImage`` of ``path`` (first scene); a one-line error when bioio or its reader
    for the suffix is not installed."""
    suffix = path.suffix.lower()
    try:
        from bioio import BioImage
    except ImportError:
        raise FileProblem(f"reading {suffix} files needs bioio: {BIOIO_INSTALL}") from None
    try:
        return BioImage(path)
    except Exception as err:  # noqa: BLE001 - bioio raises its own types, per plugin
        if "Unsupported" in type(err).__name__:  # bioio installed, its reader for this suffix not
            raise FileProblem(f"no bioio reader for {suffix} files is installed: {BIOIO_INSTALL}") from None
        raise


def _read_vendor(path: Path) -> tuple[np.ndarray, str]:
    image = _bioio_image(path)
    array, order = np.asarray(image.data), str(image.dims.order)
    return _squeeze(array, order)


def _probe_vendor(path: Path, decode: bool) -> tuple[tuple[int, ...], np.dtype, str]:
    image = _bioio_image(path)
    order, shape = str(image.dims.order), tuple(int(s) for s in image.shape)
    if decode:  # one plane: the codec and the file's first data
        plane = "YXS" if "S" in order else "YX"
        image.get_image_data(plane, **{a: 0 for a in order if a not in plane})
    kept = [i for i, (a, n) in enumerate(zip(order, shape, strict=True)) if n > 1 or a in "YX"]
    return tuple(shape[i] for i in kept), np.dtype(image.dtype), "".join(order[i] for i in kept)


def _squeeze(array: np.ndarray, order: str) -> tuple[np.ndarray, str]:
    """Drop the axes of length 1 (bioio always gives five or six), keeping Y and X."""
    if len(order) != array.ndim:
        raise FileProblem(f"the reader's axes {order!r} do not match its shape {array.shape}")
    dropped = tuple(i for i, (a, n) in enumerate(zip(order, array.shape, strict=True)) if n == 1 and a not in "YX")
    return np.squeeze(array, axis=dropped), "".join(a for i, a in enumerate(order) if i not in dropped)
