"""Large planes: the model's own resize, or overlapping tiles blended into one answer.

Pure NumPy (no torch, no model), so every rule here is tested on synthetic data.

The policy (``choose_tiling``)
------------------------------
The published Label Anything models were trained on COCO photos (about 640 x 480) that the
official preprocessing brings to the model input: SAM encoders resize the long side to 1024
and pad, ViT-MAE encoders squash the image to 480 x 480. The image encoder then sees a 64 x 64
(SAM) or 30 x 30 (MAE) grid of 16-pixel patches. Resizing a whole 8000-pixel plane to 1024
shrinks it about 8 times: one feature cell covers 125 plane pixels, and objects a few cells
wide or smaller (nuclei, grains, cells in a slide scan) vanish. Tiling feeds the model crops of
``image_size`` pixels, so every crop keeps the plane's own resolution.

* ``mode="resize"``: the official behaviour for every plane (one encoder pass, the published
  numbers, the whole plane as context).
* ``mode="tile"``: always tile, with tiles of ``image_size`` (``tile=`` overrides) overlapping by
  ``image_size // 4`` (``overlap=`` overrides).
* ``mode="auto"`` (the default): resize while the plane's long side is at most
  ``AUTO_TILE_FACTOR`` (2) times ``image_size`` -- 2048 pixels for SAM models, 960 for MAE
  models -- and tile above. Up to 2x the resize loses at most half the linear resolution,
  which the models tolerate (COCO objects come at many scales), and the plane stays one pass
  with global context; beyond it small objects start to disappear while the number of tiles
  (their cost) stays modest when tiling begins (a 2049-pixel square is 3 x 3 tiles).

A caveat worth knowing: the supports are still resized as a whole, so tiling a query changes
the apparent object size relative to them. Supports cropped from the same kind of plane at
about ``tile`` pixels keep both at one scale.

Blending
--------
Tiles of side ``tile`` advance by ``tile - overlap``; the last row and column are shifted
inward so every tile is full-size (a plane smaller than a tile is one tile, the plane). Each
tile's values are weighted by a separable window that ramps linearly over ``overlap`` pixels
from ``1 / (overlap + 1)`` up to 1 on every edge that has a neighbour, and is 1 everywhere else
-- never 0, and never lowered on an edge at the plane border. Where two tiles overlap by exactly
``overlap`` their ramps add up to 1, a partition of unity. ``Stitcher`` accumulates a weighted sum
and a weight sum as the tiles come (memory O(C * Y * X), whatever the number of tiles) and
divides at the end, so a model that agrees with itself in the overlaps is reproduced exactly,
and one that does not is blended smoothly (per-pixel steps of at most about
``1 / (overlap + 1)`` of the disagreement) instead of showing seams. Blend logits (or
probabilities), never labels.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODES = ("auto", "resize", "tile")
AUTO_TILE_FACTOR = 2.0  # "auto" tiles a plane whose long side exceeds this many model inputs
DEFAULT_OVERLAP_FRACTION = 4  # default overlap: tile // 4


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    values = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(values) != 2:
        raise ValueError(f"{name} must be one integer or a (y, x) pair, got {value!r}")
    return _as_int(values[0], name), _as_int(values[1], name)


def _as_int(value: Any, name: str) -> int:
    """An integer (NumPy's included); ValueError naming ``name`` for floats, strings, bools."""
    try:
        if isinstance(value, bool | np.bool_):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be integers, got {value!r}") from None


def _check(tile: tuple[int, int], overlap: tuple[int, int]) -> None:
    if min(tile) < 1:
        raise ValueError(f"tile must be at least 1 pixel, got tile={tile}, overlap={overlap}")
    if min(overlap) < 0:
        raise ValueError(f"overlap must be >= 0, got tile={tile}, overlap={overlap}")
    if overlap[0] >= tile[0] or overlap[1] >= tile[1]:
        raise ValueError(f"overlap must be smaller than tile, got tile={tile}, overlap={overlap}")


def _ramp(length: int, overlap: int, taper_start: bool, taper_end: bool) -> np.ndarray:
    """1D window of ``length``: linear ramps (1/(overlap+1) .. overlap/(overlap+1)) on tapered ends."""
    weights = np.ones(length, np.float32)
    if overlap == 0:
        return weights
    ramp = np.arange(1, overlap + 1, dtype=np.float64) / (overlap + 1)
    n = min(overlap, length)
    if taper_start:
        weights[:n] = np.minimum(weights[:n], ramp[:n])
    if taper_end:
        weights[length - n :] = np.minimum(weights[length - n :], ramp[:n][::-1])
    return weights


@dataclass(frozen=True, eq=False)
class Tile:
    """One tile of a plan: its place in the plane and its blending window.

    ``y``, ``x`` is its top-left pixel, ``h``, ``w`` its size; ``weight`` (h, w) is built on
    demand from the 1D windows ``wy`` (h,) and ``wx`` (w,).
    """

    index: tuple[int, int]
    y: int
    x: int
    h: int
    w: int
    wy: np.ndarray = field(repr=False)
    wx: np.ndarray = field(repr=False)

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)

    @property
    def offset(self) -> tuple[int, int]:
        return self.y, self.x

    @property
    def shape(self) -> tuple[int, int]:
        return self.h, self.w

    @property
    def weight(self) -> np.ndarray:
        return np.outer(self.wy, self.wx)


def _starts(n: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis of length n: stride tile - overlap, the last one at n - tile."""
    if n <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride))
    starts.append(n - tile)
    return starts


def plan_tiles(shape_yx: Sequence[int], tile: int | Sequence[int], overlap: int | Sequence[int] = 0) -> list[Tile]:
    """Tiles covering a (Y, X) plane, row by row.

    Every tile is ``tile`` pixels along an axis at least that long (the last row/column is
    shifted inward, overlapping its neighbour by more than ``overlap``); along a shorter axis a
    tile spans the whole axis. A plane smaller than a tile is one tile: the plane.

    Args:
        shape_yx: (Y, X) of the plane (extra trailing axes, e.g. colour, are ignored).
        tile: tile side, one integer or (y, x).
        overlap: pixels shared by neighbouring tiles (at least), one integer or (y, x);
            0 <= overlap < tile, else ValueError.
    """
    shape = tuple(shape_yx)
    if len(shape) < 2:
        raise ValueError(f"shape_yx must be (Y, X), got {shape_yx!r}")
    ny, nx = _pair(shape[:2], "shape_yx")
    if ny < 1 or nx < 1:
        raise ValueError(f"the plane must have at least one pixel, got shape {(ny, nx)}")
    ty, tx = _pair(tile, "tile")
    oy, ox = _pair(overlap, "overlap")
    _check((ty, tx), (oy, ox))
    ys, xs = _starts(ny, ty, oy), _starts(nx, tx, ox)
    hy, wx = min(ty, ny), min(tx, nx)
    rows = [_ramp(hy, oy, i > 0, i < len(ys) - 1) for i in range(len(ys))]
    cols = [_ramp(wx, ox, j > 0, j < len(xs) - 1) for j in range(len(xs))]
    return [Tile((i, j), y, x, hy, wx, rows[i], cols[j]) for i, y in enumerate(ys) for j, x in enumerate(xs)]


class Stitcher:
    """Streaming weighted average of per-tile values: ``add`` each tile, then ``result``.

    Holds one (C, Y, X) weighted sum and one (Y, X) weight sum, float32.
    """

    def __init__(self, shape_yx: Sequence[int], channels: int) -> None:
        ny, nx = (int(s) for s in tuple(shape_yx)[:2])
        self.shape = (ny, nx)
        self.channels = int(channels)
        if self.channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        self._sum = np.zeros((self.channels, ny, nx), np.float32)
        self._weight = np.zeros((ny, nx), np.float32)
        self.added = 0

    def add(self, tile: Tile, values: Any) -> None:
        """Add one tile's values, (C, h, w) (anything ``np.asarray`` reads, e.g. a CPU tensor)."""
        values = np.asarray(values)
        expected = (self.channels, tile.h, tile.w)
        if values.shape != expected:
            raise ValueError(f"tile {tile.index} values must have shape {expected} (C, h, w), got {values.shape}")
        if tile.y + tile.h > self.shape[0] or tile.x + tile.w > self.shape[1]:
            raise ValueError(f"tile {tile.index} at {tile.offset} size {tile.shape} lies outside {self.shape}")
        weight = tile.weight
        ys, xs = tile.slices
        self._sum[:, ys, xs] += values.astype(np.float32, copy=False) * weight
        self._weight[ys, xs] += weight
        self.added += 1

    def result(self) -> np.ndarray:
        """(C, Y, X) float32: the weighted average. ValueError if a pixel got no tile.

        Divides in place: the Stitcher is spent afterwards.
        """
        if not np.all(self._weight > 0):
            missing = int(np.count_nonzero(self._weight <= 0))
            raise ValueError(f"{missing} pixels of the {self.shape} plane are covered by no tile")
        self._sum /= self._weight
        return self._sum


@dataclass(frozen=True)
class TilingChoice:
    """What ``choose_tiling`` decided: ``tiled`` or not, and the tile and overlap when tiled."""

    tiled: bool
    tile: int | None = None
    overlap: int | None = None
    reason: str = ""


def choose_tiling(
    shape_yx: Sequence[int],
    image_size: int,
    mode: str = "auto",
    tile: int | None = None,
    overlap: int | None = None,
) -> TilingChoice:
    """Resize the whole plane (the official behaviour) or tile it: see the module docstring.

    Args:
        shape_yx: (Y, X) of the plane.
        image_size: the model's input side (``config.image_size``: 1024 SAM, 480 MAE).
        mode: "auto" (resize up to ``AUTO_TILE_FACTOR * image_size`` on the long side, tile
            above), "resize" or "tile".
        tile: tile side when tiling (default ``image_size``).
        overlap: overlap when tiling (default ``tile // 4``).
    """
    if mode not in MODES:
        raise ValueError(f"tiling mode must be one of {', '.join(MODES)}, got {mode!r}")
    image_size = _as_int(image_size, "image_size")
    if image_size < 1:
        raise ValueError(f"image_size must be at least 1, got {image_size}")
    ny, nx = _pair(tuple(shape_yx)[:2], "shape_yx")
    tile = image_size if tile is None else _as_int(tile, "tile")
    overlap = tile // DEFAULT_OVERLAP_FRACTION if overlap is None else _as_int(overlap, "overlap")
    _check((tile, tile), (overlap, overlap))
    long_side = max(ny, nx)
    limit = AUTO_TILE_FACTOR * image_size
    if mode == "resize":
        return TilingChoice(False, reason="mode 'resize': the model's own resize of the whole plane")
    if mode == "auto" and long_side <= limit:
        return TilingChoice(False, reason=f"long side {long_side} <= {limit:g} ({AUTO_TILE_FACTOR:g} x {image_size})")
    why = (
        "mode 'tile'" if mode == "tile" else f"long side {long_side} > {limit:g} ({AUTO_TILE_FACTOR:g} x {image_size})"
    )
    n = len(plan_tiles((ny, nx), tile, overlap))
    return TilingChoice(True, tile, overlap, reason=f"{why}: {n} tiles of {tile} px, overlap {overlap}")
