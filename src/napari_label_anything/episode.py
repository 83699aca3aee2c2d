"""A few-shot episode: named classes and support images with their prompts.

Conventions, everywhere in the public API:
- class k (1..N) is ``classes[k - 1]``; label value k is class k; 0 is background/unprompted;
- coordinates are napari's (row, column) = (y, x), in pixels of the support image;
- points are (y, x, k); boxes are (y0, x0, y1, x1, k) with any two opposite corners.

An episode holds NumPy arrays only (no torch); it validates input when it is added, so a
mistake is reported where it was made.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .io.label_files import atomic_write
from .io.npz_reader import NpzError, NpzReader
from .labels import as_labels
from .limits import brief, short
from .stacks import is_index, reach_window

FORMAT_NAME = "napari-label-anything.episode"
# bool, signed and unsigned integers, floats: no complex, datetime/timedelta, strings or objects
IMAGE_DTYPE_KINDS = "biuf"
FORMAT_VERSION = 1
HEADER_BYTES = 64 << 20  # the most an episode file's JSON header may declare
# Planes kept on each side of a support taken from a stack (``Support.context``): what a
# depth-aware segmenter may look at. The embedded default's depth kernels reach exactly this far.
CONTEXT_REACH = 8


def check_image(image: Any, what: str = "image") -> np.ndarray:
    """Validate a 2D image: (Y, X) grayscale or (Y, X, 3|4) colour, real dtype, finite values."""
    try:
        array = np.asarray(image)
    except (TypeError, ValueError) as err:  # ragged nested lists, unconvertible objects
        raise TypeError(f"{what} must be a numeric array: {err}") from None
    if array.dtype.kind not in IMAGE_DTYPE_KINDS:
        raise TypeError(
            f"{what} must be a real-valued numeric array (bool, integer or float dtype), got dtype {array.dtype}"
        )
    is_colour = array.ndim == 3 and array.shape[-1] in (3, 4)
    if array.ndim != 2 and not is_colour:
        raise ValueError(
            f"{what} must be 2D (Y, X) or colour (Y, X, 3|4), got shape {array.shape}; "
            "for a stack pass one plane (or use plane=...)"
        )
    if min(array.shape[:2]) < 2:
        raise ValueError(f"{what} is too small: shape {array.shape}; both sides must be at least 2 pixels")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return array


def _class_id(value: Any, names: list[str], what: str) -> int:
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"{what}: unknown class {brief(value)}; classes are {brief(names)}")
        return names.index(value) + 1
    try:
        is_integer = not isinstance(value, (bool, np.bool_)) and float(value).is_integer()
    except (TypeError, ValueError, OverflowError):
        is_integer = False
    if not is_integer:
        raise ValueError(f"{what}: class must be an integer 1..{len(names)} or a class name, got {brief(value)}")
    k = int(value)
    if not 1 <= k <= len(names):
        raise ValueError(f"{what}: unknown class {k}; valid classes are 1..{len(names)} ({brief(names)})")
    return k


def _plane_index(plane: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Validate ``plane`` (an int or a tuple of ints) against a stack's leading axes."""
    index = plane if isinstance(plane, tuple) else (plane,)
    if not index or not all(is_index(i) for i in index):
        raise TypeError(f"plane must be an integer or a tuple of integers, got {plane!r}")
    if len(index) > len(shape) - 2:
        raise ValueError(
            f"plane {plane!r} has {len(index)} index(es) but a stack of shape {shape} has fewer plane axes"
        )
    for axis, i in enumerate(index):
        if not -shape[axis] <= i < shape[axis]:
            raise ValueError(
                f"plane {plane!r} is out of range: axis {axis} of the stack {shape} has {shape[axis]} planes"
            )
    return tuple(int(i) for i in index)


def _context_slab(stack: np.ndarray, index: tuple[int, ...]) -> tuple[np.ndarray | None, int | None]:
    """The planes within ``CONTEXT_REACH`` of plane ``index`` along the last indexed axis of
    ``stack``, as a (D, Y, X[, C]) copy, and the plane's position in it; (None, None) when that
    axis holds a single plane."""
    axis = len(index) - 1
    size = stack.shape[axis]
    if size < 2:
        return None, None
    centre = index[-1] % size
    window = reach_window(centre, size, CONTEXT_REACH)
    context = np.array(stack[(*index[:-1], slice(window.start, window.stop))])
    context.flags.writeable = False  # its digest is kept (``Support.context_digest``)
    return context, centre - window.start


def _as_rows(values: Any, width: int, what: str, names: list[str]) -> np.ndarray:
    """Parse [(..coords.., k), ...] into a float64 (n, width) array with k as a float id."""
    if values is None:
        return np.zeros((0, width), dtype=np.float64)
    shape = "(y, x, k)" if width == 3 else "(y0, x0, y1, x1, k)"
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{what} must be a list of {shape} rows, got {type(values).__name__} {values!r}")
    if isinstance(values, np.ndarray):
        if values.ndim == 0 or values.size == 0:
            rows = [] if values.size == 0 else [values]
        else:
            rows = list(values.reshape(-1, values.shape[-1]))
    else:
        rows = list(values)
    out = np.zeros((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not isinstance(row, Iterable):
            raise TypeError(f"{what}[{i}] must be a row {shape}, got {row!r}")
        row = list(row)
        if len(row) != width:
            raise ValueError(f"{what}[{i}] must have {width} values, got {len(row)}: {row!r}")
        try:
            coords = np.asarray(row[:-1], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{what}[{i}]: coordinates must be numbers, got {row[:-1]!r}") from None
        if not np.isfinite(coords).all():
            raise ValueError(f"{what}[{i}] has NaN or infinite coordinates")
        out[i, :-1] = coords
        out[i, -1] = _class_id(row[-1], names, f"{what}[{i}]")
    return out


def _class_name(value: Any) -> str:
    """A class name given as a number (e.g. from a spreadsheet) becomes its text; anything else is refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"class names must be strings, got {type(value).__name__} {brief(value)}")
    return str(value)


@dataclass
class Support:
    """One support image with its prompts (see the module docstring for conventions).

    Attributes:
        image: (Y, X) or (Y, X, 3|4) array, any real dtype.
        labels: (Y, X) int array of painted mask prompts (0 = unprompted), or None.
        points: (n, 3) float64 rows (y, x, k).
        boxes: (n, 5) float64 rows (y0, x0, y1, x1, k) with y0 < y1 and x0 < x1.
        name: optional display name (e.g. the napari layer it came from).
        context: for a support taken from a stack (``add_support(stack, plane=...)``), the
            (D, Y, X[, C]) planes around it along the stack's last plane axis (at most
            ``CONTEXT_REACH`` on each side, fewer at the stack's ends), else None.
        context_index: the support's own plane in ``context`` (``context[context_index]`` is
            ``image``), else None. ``context`` is a read-only copy.
    """

    image: np.ndarray
    labels: np.ndarray | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    name: str | None = None
    context: np.ndarray | None = None
    context_index: int | None = None
    _context_digest: str | None = field(default=None, init=False, repr=False, compare=False)

    def context_digest(self) -> str:
        """A hash of ``context`` (read-only, so it is computed once): "none" without one."""
        if self.context is None:
            return "none"
        if self._context_digest is None:
            digest = hashlib.sha1(str((self.context.shape, self.context.dtype.str, self.context_index)).encode())
            digest.update(np.ascontiguousarray(self.context).tobytes())
            self._context_digest = digest.hexdigest()
        return self._context_digest

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[:2])

    def prompted_classes(self) -> set[int]:
        """Class ids that have at least one prompt in this support."""
        found = {int(k) for k in self.points[:, 2]} | {int(k) for k in self.boxes[:, 4]}
        if self.labels is not None:
            found |= {int(v) for v in np.unique(self.labels) if v != 0}
        return found

    def prompt_counts(self, n_classes: int) -> dict[str, np.ndarray]:
        """Per class 0..N: painted pixels, points and boxes; each an (N+1,) int array."""
        return count_prompts(self.labels, self.points[:, 2], self.boxes[:, 4], n_classes)


def count_prompts(
    labels: np.ndarray | None, point_classes: np.ndarray, box_classes: np.ndarray, n_classes: int
) -> dict[str, np.ndarray]:
    """Painted pixels, points and boxes per class 0..N, each an (N+1,) int64 array.

    ``labels`` is a label image (any shape) or None; ``point_classes``/``box_classes`` hold one
    class id per prompt. Values outside 0..N are not counted; painted class 0 counts as 0.
    """
    size = n_classes + 1

    def per_class(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.int64).ravel()
        values = values[(values >= 0) & (values < size)]
        return np.bincount(values, minlength=size).astype(np.int64)

    pixels = per_class(labels) if labels is not None else np.zeros(size, dtype=np.int64)
    pixels[0] = 0
    return {"pixels": pixels, "points": per_class(point_classes), "boxes": per_class(box_classes)}


class Episode:
    """Classes plus support images with prompts: everything a few-shot prediction needs.

    >>> episode = Episode(classes=["nucleus", "membrane"])
    >>> episode.add_support(image, labels=painted)             # doctest: +SKIP
    >>> episode.add_support(image2, points=[(10, 20, 1)], boxes=[(0, 0, 30, 40, "membrane")])  # doctest: +SKIP
    """

    def __init__(
        self,
        classes: Sequence[str],
        model: str | None = None,
        channels: Sequence[int] | None = None,
        colors: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
            hint = f"; for one class write [{brief(classes)}]" if isinstance(classes, str) else ""
            got = f"{type(classes).__name__} {brief(classes)}"
            raise TypeError(f"classes must be a list of class names, got {got}{hint}")
        names = [c if isinstance(c, str) else _class_name(c) for c in classes]
        if not names:
            raise ValueError("an episode needs at least one class")
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {brief(names)}")
        if any(not n.strip() for n in names):
            raise ValueError(f"class names must not be empty or blank, got {brief(names)}")
        if model is not None and not isinstance(model, str):
            raise TypeError(f"model must be a model name or path (str), got {type(model).__name__}")
        self.classes: list[str] = names
        self.supports: list[Support] = []
        self.model = model
        self.channels = channels
        self.colors = colors

    @property
    def channels(self) -> tuple[int, ...] | None:
        """The colour channels the model sees of colour queries (None: all), as the napari
        widget's channel choice records it. Its supports are stored as the model saw them
        (already reduced); ``predict`` on the command line reduces colour queries the same way,
        and in Python ``preprocessing.select_channels(query, episode.channels)`` does (for a
        colour query; a grey one is used as it is)."""
        return self._channels

    @channels.setter
    def channels(self, value: Sequence[int] | None) -> None:
        from .preprocessing import MAX_COLOUR_CHANNELS, check_channels

        self._channels = check_channels(value, MAX_COLOUR_CHANNELS)

    @property
    def colors(self) -> dict[str, str]:
        """Display colours of classes, ``{class name: "#rrggbb"}`` (the napari widget's class
        colours; a class without one gets the default colour). Saved with the episode; models
        never see them."""
        return self._colors

    @colors.setter
    def colors(self, value: Mapping[str, str] | None) -> None:
        if value is None:
            self._colors: dict[str, str] = {}
            return
        if not isinstance(value, Mapping):
            raise TypeError(f"colors must map class names to '#rrggbb', got {type(value).__name__}")
        colors = {}
        for name, color in value.items():
            if name not in self.classes:
                classes = brief(self.classes)
                raise ValueError(f"colors names {brief(name)}, which is not a class of this episode ({classes})")
            if not isinstance(color, str) or not re.fullmatch(r"#[0-9a-fA-F]{6}", color):
                raise ValueError(f"the colour of class {brief(name)} must be '#rrggbb', got {brief(color)}")
            colors[name] = color.lower()
        self._colors = colors

    def __repr__(self) -> str:
        return f"Episode(classes={self.classes}, supports={len(self.supports)})"

    @property
    def n_classes(self) -> int:
        """Number of foreground classes N (the model sees N + 1 with the background)."""
        return len(self.classes)

    def add_support(
        self,
        image: Any,
        labels: Any = None,
        points: Any = None,
        boxes: Any = None,
        *,
        plane: int | tuple[int, ...] | None = None,
        name: str | None = None,
    ) -> Support:
        """Add a support image with mask, point and/or box prompts.

        Args:
            image: (Y, X) or (Y, X, 3|4) array; with ``plane``, a stack whose plane is taken.
            labels: (Y, X) integer array, 0 = unprompted, k = class k (a stack with ``plane``).
            points: iterable of (y, x, k); k is a class id 1..N or a class name.
            boxes: iterable of (y0, x0, y1, x1, k).
            plane: index into the leading axes of ``image`` (and of ``labels`` when it has the
                same shape as ``image``), for prompting one plane of a z-stack or time series.
                The planes around it along the last indexed axis are kept as the support's
                ``context`` (for segmenters that look across planes, e.g. the embedded default).
            name: display name.

        Raises:
            ValueError / TypeError: on any malformed input, naming what is wrong.
        """
        context = context_index = None
        if plane is not None:
            full = np.asarray(image)
            index = _plane_index(plane, full.shape)
            if labels is not None and np.shape(labels) == full.shape[: np.ndim(labels)] and np.ndim(labels) > 2:
                labels = np.asarray(labels)[index]
            image = full[index]
            context, context_index = _context_slab(full, index)
        image = check_image(image, "support image")
        if context is not None and context.dtype.kind == "f" and not np.isfinite(context).all():
            raise ValueError(f"the planes around support plane {plane!r} contain NaN or infinite values")
        shape = image.shape[:2]
        label_array = None
        if labels is not None:
            label_array = np.asarray(labels)
            if label_array.dtype.kind not in IMAGE_DTYPE_KINDS:
                raise TypeError(f"labels must hold integers, got dtype {label_array.dtype}")
            if label_array.shape != shape:
                raise ValueError(f"labels have shape {label_array.shape} but the support image is {shape}")
            if label_array.dtype.kind == "f":
                if not np.isfinite(label_array).all():
                    raise ValueError("labels contain NaN or infinite values")
                if not np.all(np.mod(label_array, 1) == 0):
                    raise TypeError(f"labels must hold integers, got non-integer values of dtype {label_array.dtype}")
            low, high = label_array.min().item(), label_array.max().item()
            if low < 0 or high > self.n_classes:
                raise ValueError(
                    f"labels hold values {low:g}..{high:g} but only 0..{self.n_classes} exist "
                    f"(0 = unprompted, 1..{self.n_classes} = {brief(self.classes)})"
                )
            label_array = label_array.astype(np.int64)
            if high == 0:
                label_array = None
        point_rows = _as_rows(points, 3, "points", self.classes)
        box_rows = _as_rows(boxes, 5, "boxes", self.classes)
        height, width = shape
        for i, (y, x, _) in enumerate(point_rows):
            if not (0 <= y < height and 0 <= x < width):
                raise ValueError(f"points[{i}] = ({y:g}, {x:g}) lies outside the {height}x{width} image")
        if len(box_rows):
            ys, xs = box_rows[:, [0, 2]], box_rows[:, [1, 3]]
            box_rows = np.column_stack([ys.min(1), xs.min(1), ys.max(1), xs.max(1), box_rows[:, 4]])
        for i, (y0, x0, y1, x1, _) in enumerate(box_rows):
            if y1 <= y0 or x1 <= x0:
                raise ValueError(f"boxes[{i}] = ({y0:g}, {x0:g}, {y1:g}, {x1:g}) is empty")
            if y0 < 0 or x0 < 0 or y1 > height or x1 > width:
                raise ValueError(
                    f"boxes[{i}] = ({y0:g}, {x0:g}, {y1:g}, {x1:g}) reaches outside the {height}x{width} image"
                )
        if label_array is None and not len(point_rows) and not len(box_rows):
            raise ValueError("a support needs at least one prompt: non-zero labels, points or boxes")
        support = Support(np.array(image), label_array, point_rows, box_rows, name, context, context_index)
        self.supports.append(support)
        return support

    def remove_support(self, index: int) -> Support:
        return self.supports.pop(index)

    def prompted_classes(self) -> set[int]:
        found: set[int] = set()
        for support in self.supports:
            found |= support.prompted_classes()
        return found

    def validate(self) -> None:
        """Check that the episode can be run: supports exist and every class is prompted.

        Raises:
            ValueError: naming the classes without any prompt.
        """
        if not self.supports:
            raise ValueError("the episode has no support image; add one with add_support()")
        missing = [self.classes[k - 1] for k in range(1, self.n_classes + 1) if k not in self.prompted_classes()]
        if missing:
            raise ValueError(
                f"class(es) {missing} have no prompt in any support; prompt them or remove them from the episode"
            )

    def signature(self) -> str:
        """A hash of classes, supports and prompts: equal episodes have equal signatures."""
        digest = hashlib.sha1()
        digest.update(json.dumps(self.classes).encode())
        for s in self.supports:
            digest.update(s.context_digest().encode())  # hashed once: up to 17 planes
            for array in (s.image, s.labels, s.points, s.boxes):
                if array is None:
                    digest.update(b"none")
                    continue
                digest.update(str((array.shape, array.dtype.str)).encode())
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the episode (classes, supports with images, prompts, model id, channels, class
        colours) to one file.

        The file is a NumPy ``.npz`` archive (arrays plus a JSON header); it is read back
        without pickle (``npz_reader``: numeric arrays only), so loading an episode never runs
        code. It is written
        atomically: an interrupted save leaves the previous file as it was.
        """
        path = Path(path)
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "classes": self.classes,
            "model": self.model,
            "channels": None if self.channels is None else list(self.channels),
            "colors": dict(self.colors),  # optional: files without it load with default colours
            "supports": [
                {"name": s.name, "has_labels": s.labels is not None, "context_index": s.context_index}
                for s in self.supports
            ],
        }
        arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        for i, s in enumerate(self.supports):
            arrays[f"support{i}.image"] = s.image
            arrays[f"support{i}.points"] = s.points
            arrays[f"support{i}.boxes"] = s.boxes
            if s.labels is not None:
                arrays[f"support{i}.labels"] = as_labels(s.labels, self.n_classes)
            if s.context is not None:
                arrays[f"support{i}.context"] = s.context
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        with atomic_write(path) as partial:
            partial.write_bytes(buffer.getvalue())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, max_pixels: int | None = None) -> Episode:
        """Read an episode written by ``save``.

        The file is untrusted: only the members its header names are read, and each one's
        declared size is checked before it is decompressed (``npz_reader``: at most
        ``max_pixels`` pixels an array, default ``limits.max_pixels()``, and the memory
        available); nothing is unpickled.

        Raises:
            FileNotFoundError: there is no such file.
            ValueError: the file is not an episode file, is truncated or damaged, declares
                arrays beyond the budget, or holds prompts that do not validate; one line
                naming the file and the problem.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such episode file: {path}")
        with NpzReader(path, "episode file", max_pixels) as archive:
            meta = _read_header(archive)
            supports = meta.get("supports")
            if not isinstance(supports, list) or not all(isinstance(info, dict) for info in supports):
                raise ValueError(f"{path} is damaged: its header's 'supports' is not a list of support records")
            try:
                episode = cls(meta.get("classes"), model=meta.get("model"), channels=meta.get("channels"),
                              colors=meta.get("colors"))  # fmt: skip
            except (TypeError, ValueError) as err:
                what = "bad classes, model or channels (or colours)"
                raise ValueError(f"{path} is damaged: {what} in its header: {short(str(err))}") from None
            data = archive.read(_members(supports))
        for i, info in enumerate(supports):
            try:
                labels = data[f"support{i}.labels"] if info.get("has_labels") else None
                points, boxes = data[f"support{i}.points"], data[f"support{i}.boxes"]
                context_index = info.get("context_index")
                if context_index is not None and not is_index(context_index):
                    raise ValueError(f"context_index must be an integer, got {brief(context_index)}")
                with_context = context_index is not None
                support = episode.add_support(
                    data[f"support{i}.context" if with_context else f"support{i}.image"],
                    labels=labels,
                    plane=context_index,
                    points=[(*row[:2], int(row[2])) for row in np.reshape(points, (-1, 3))],
                    boxes=[(*row[:4], int(row[4])) for row in np.reshape(boxes, (-1, 5))],
                    name=None if info.get("name") is None else str(info["name"]),
                )
                if with_context and not np.array_equal(support.image, data[f"support{i}.image"]):
                    raise ValueError("its image is not the plane its context names")
            except KeyError as err:
                raise ValueError(f"{path} is damaged: missing {short(str(err))}") from None
            except (TypeError, ValueError, OverflowError) as err:
                raise ValueError(f"{path} is damaged: support {i + 1}: {short(str(err))}") from None
        return episode


def _read_header(archive: NpzReader) -> dict[str, Any]:
    """An episode file's JSON header, its format and version checked."""
    path = archive.path
    try:
        meta = json.loads(bytes(archive.read(["meta"], max_pixels=HEADER_BYTES)["meta"]).decode())
    except NpzError:  # unreadable, or a header beyond the budget
        raise
    except (KeyError, TypeError, ValueError, RecursionError):  # none, not UTF-8 or JSON, nested too deep
        raise ValueError(f"{path} is not an episode file (no valid header)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path} is not an episode file (format {brief(found)})")
    version = meta.get("version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer version (format {brief(version)}); please upgrade")
    return meta


def _members(supports: list[dict[str, Any]]) -> list[str]:
    """The archive members the supports of a header need (nothing else is ever read)."""
    names = []
    for i, info in enumerate(supports):
        names += [f"support{i}.image", f"support{i}.points", f"support{i}.boxes"]
        names += [f"support{i}.labels"] * bool(info.get("has_labels"))
        names += [f"support{i}.context"] * (info.get("context_index") is not None)
    return names
