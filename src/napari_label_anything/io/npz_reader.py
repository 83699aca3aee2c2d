"""NumPy ``.npz`` archives read member by member from an untrusted file, with bounded work.

What ``Episode.load`` reads ``.episode`` files with (``np.load`` would read every member it is
asked for without looking at sizes first). Here:

- only the members asked for are opened: the others are never read or decompressed;
- each one's ``.npy`` header (dtype, shape) is read first, and checked before its data is
  decompressed: a plain numeric dtype (no objects, so nothing can be unpickled), at most
  ``max_pixels`` pixels (``limits.max_pixels``: ``NLA_MAX_PIXELS``), exactly the size the
  zip directory declares for the member, and no more than its compressed bytes can hold
  (deflate expands at most ``DEFLATE_RATIO``-fold; stored members not at all; other
  compression methods are refused);
- the members asked for together must fit in the memory this process may still use
  (``limits.available_memory``);
- each is then decompressed into an array of exactly its size, the zip's CRC checked.

Every failure is a ``ValueError`` of one line naming the file.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import limits
from ..limits import brief, short

DEFLATE_RATIO = 1032  # the most deflate can expand: 258 bytes from each 2-bit match
_SLACK = 4096  # bytes of slack for the headers and final blocks of tiny members
NUMERIC_KINDS = "biuf"  # bool, integers, floats


class NpzError(ValueError):
    """A refused or unreadable archive (one line, naming the file)."""


def pixels(shape: tuple[int, ...]) -> int:
    """Pixels of an array of ``shape``: its values, less a trailing colour axis (size <= 4)."""
    if len(shape) >= 3 and shape[-1] <= 4:
        shape = shape[:-1]
    return math.prod(shape)


def _size(n_bytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"


class NpzReader:
    """An open ``.npz`` archive whose members are read on request (see the module docstring).

    >>> with NpzReader("run.episode", "episode file") as archive:       # doctest: +SKIP
    ...     arrays = archive.read(["meta"])
    """

    def __init__(self, path: str | os.PathLike, what: str = "npz file", max_pixels: int | None = None) -> None:
        self.path, self.what = Path(path), what
        self.max_pixels = limits.max_pixels() if max_pixels is None else int(max_pixels)
        try:
            self._zip = zipfile.ZipFile(self.path)
            self._members = {info.filename.removesuffix(".npy"): info for info in self._zip.infolist()}
        except Exception as err:  # noqa: BLE001 - whatever a damaged zip raises, it is unreadable
            raise self.unreadable(err) from None

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    @property
    def names(self) -> set[str]:
        """The members the archive lists (none of them read)."""
        return set(self._members)

    def unreadable(self, err: BaseException | str) -> NpzError:
        return NpzError(f"{self.path} is not a readable {self.what} (truncated or damaged): {short(str(err))}")

    def read(self, names: Sequence[str], max_pixels: int | None = None) -> dict[str, np.ndarray]:
        """The members ``names`` (without ``.npy``) as arrays; a name the archive lacks is left
        out (the caller says what it missed). Every header is checked before any data is read;
        ``max_pixels`` overrides the budget for these members.

        Raises:
            ValueError: one line naming the file: unreadable, a member over the budget, sizes
                that contradict each other, or more than the memory available.
        """
        limit = self.max_pixels if max_pixels is None else int(max_pixels)
        headers = {}
        for name in names:
            if name not in self._members:
                continue
            try:
                headers[name] = self._header(self._members[name], limit)
            except NpzError:
                raise
            except Exception as err:  # noqa: BLE001 - tokenize, struct, zlib, zip errors of a damaged file
                raise self.unreadable(f"{name}: {err}") from None
        need = sum(math.prod(shape) * dtype.itemsize for shape, dtype, _ in headers.values())
        available = limits.available_memory()
        if available is not None and need > available:
            raise NpzError(
                f"{self.path} needs {_size(need)} of memory to load, more than the {_size(available)} available"
            )
        arrays = {}
        for name, (shape, dtype, fortran) in headers.items():
            try:
                arrays[name] = self._data(self._members[name], shape, dtype, fortran)
            except MemoryError:
                size = _size(math.prod(shape) * dtype.itemsize)
                raise NpzError(f"{self.path}: not enough memory to load {name} ({size})") from None
            except Exception as err:  # noqa: BLE001 - a member that does not decompress to what it declared
                raise self.unreadable(f"{name}: {err}") from None
        return arrays

    def _header(self, info: zipfile.ZipInfo, limit: int) -> tuple[tuple[int, ...], np.dtype, bool]:
        """(shape, dtype, fortran order) of a member, checked; its data not yet decompressed."""
        name = info.filename.removesuffix(".npy")
        if info.flag_bits & 0x1:
            raise self.unreadable(f"{name} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.unreadable(f"{name} uses compression method {info.compress_type}, not deflate")
        with self._zip.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise self.unreadable(f"{name} has an .npy header of version {version}")
            offset = stream.tell()
        if dtype.kind not in NUMERIC_KINDS or dtype.hasobject or dtype.shape or dtype.itemsize == 0:
            raise NpzError(f"{self.path} is damaged: {name} holds {short(str(dtype))} values, not numbers")
        if any(n < 0 for n in shape):
            raise NpzError(f"{self.path} is damaged: {name} declares the shape {brief(shape)}")
        declared = short(f"a {' x '.join(map(str, shape))} {dtype.name} array", 200)
        if pixels(shape) > limit:
            raise NpzError(
                f"{self.path}: {name} declares {declared} of {pixels(shape)} pixels, more than the limit of {limit} "
                "(set NLA_MAX_PIXELS to a larger number to read it anyway)"
            )
        n_bytes = math.prod(shape) * dtype.itemsize
        if info.file_size != offset + n_bytes:
            raise NpzError(
                f"{self.path} is damaged: {name} declares {declared} ({_size(n_bytes)}) but the archive says "
                f"it holds {_size(max(0, info.file_size - offset))}"
            )
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_RATIO
        if info.file_size > ratio * info.compress_size + (_SLACK if ratio > 1 else 0):
            raise NpzError(
                f"{self.path} is damaged: {name} declares {declared} ({_size(n_bytes)}) in "
                f"{_size(info.compress_size)} of compressed data, which cannot hold it"
            )
        return tuple(shape), dtype, bool(fortran)

    def _data(self, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype, fortran: bool) -> np.ndarray:
        """A member's values: exactly ``prod(shape)`` of ``dtype``, decompressed once, CRC checked."""
        array = np.empty(math.prod(shape), dtype)
        view, done = memoryview(array.view(np.uint8)), 0
        with self._zip.open(info) as stream:
            stream.seek(info.file_size - len(view))  # past the header (read again: a few KiB at most)
            while done < len(view):
                got = stream.readinto(view[done:])
                if not got:
                    raise EOFError(f"{info.filename} ends after {done} of its {len(view)} bytes")
                done += got
            if stream.read(1):  # also where zipfile checks the CRC
                raise ValueError(f"{info.filename} holds more than it declares")
        return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
