"""Iterating the 2D planes of a stack: (Z, Y, X), (T, Z, Y, X), with or without trailing RGB."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# A last axis shorter than this, not named as a plane axis, is taken for channels, not for X.
MIN_PLANE_SIDE = 8


def reach_window(centre: int, size: int, reach: int) -> range:
    """The planes within ``reach`` of plane ``centre`` on an axis of ``size`` planes, clipped to
    it: a support's saved neighbourhood and a query plane's window alike."""
    return range(max(0, centre - reach), min(size, centre + reach + 1))


def is_index(value) -> bool:
    """Whether ``value`` is a plane index: a Python or NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class StackLayout:
    """Where the planes of a stack are.

    shape: the stack's full shape.
    plane_axes: the axes iterated over (in the caller's array), outermost first.
    spatial_shape: (Y, X) of each plane.
    rgb: whether the last axis is a colour channel.
    """

    shape: tuple[int, ...]
    plane_axes: tuple[int, ...]
    spatial_shape: tuple[int, int]
    rgb: bool

    @property
    def n_planes(self) -> int:
        return int(np.prod([self.shape[a] for a in self.plane_axes])) if self.plane_axes else 1

    def plane_indices(self) -> list[tuple[int, ...]]:
        """Index tuples (one entry per plane axis) of every plane, in C order."""
        return list(itertools.product(*(range(self.shape[a]) for a in self.plane_axes)))

    def check_planes(self, planes) -> list[tuple[int, ...]]:
        """Validate user-given plane indices (ints or tuples, one entry per plane axis).

        Returns them as tuples of non-negative ints. Raises ValueError/TypeError naming the
        first bad index and the valid range.
        """
        if isinstance(planes, (str, bytes)) or not isinstance(planes, Iterable):
            raise TypeError(f"planes must be a list of plane indices, got {planes!r}")
        checked = []
        sizes = [self.shape[a] for a in self.plane_axes]
        for plane in planes:
            index = plane if isinstance(plane, (tuple, list)) else (plane,)
            if not all(is_index(i) for i in index):
                raise TypeError(f"plane index {plane!r} must be an integer or a tuple of integers")
            if len(index) != len(sizes):
                raise ValueError(
                    f"plane index {plane!r} has {len(index)} entries but the stack {self.shape} has "
                    f"{len(sizes)} plane axis/axes {self.plane_axes}"
                )
            if any(not -n <= i < n for i, n in zip(index, sizes, strict=True)):
                raise ValueError(f"plane index {plane!r} is out of range for plane axes of sizes {tuple(sizes)}")
            checked.append(tuple(int(i) % n for i, n in zip(index, sizes, strict=True)))
        if not checked:
            raise ValueError("planes is empty: give at least one plane index, or None for every plane")
        return checked

    def take(self, stack, index: tuple[int, ...]) -> np.ndarray:
        """The plane at ``index`` as a (Y, X[, C]) NumPy array; a lazy stack reads only that plane."""
        selector: list[object] = [slice(None)] * len(self.shape)
        for axis, i in zip(self.plane_axes, index, strict=True):
            selector[axis] = i
        return np.asarray(stack[tuple(selector)])

    def context_indices(self, index: tuple[int, ...], reach: int) -> tuple[list[tuple[int, ...]], int]:
        """The indices of the planes within ``reach`` of ``index`` along the last plane axis of the
        array (the z of a (T, Z, Y, X) stack), clipped to the stack, and the position of ``index``
        among them: the neighbourhood ``Episode.add_support(stack, plane=...)`` keeps as context."""
        if not self.plane_axes:
            return [index], 0
        # the plane axis nearest (Y, X) in the array, whatever order ``axis`` named them in
        which = self.plane_axes.index(max(self.plane_axes))
        window = reach_window(index[which], self.shape[self.plane_axes[which]], reach)
        return [(*index[:which], i, *index[which + 1 :]) for i in window], index[which] - window.start

    def labels_index(self, index: tuple[int, ...]) -> tuple[object, ...]:
        """Selector of one plane in the (stack shape without channel) label array."""
        ndim = len(self.shape) - (1 if self.rgb else 0)
        selector: list[object] = [slice(None)] * ndim
        for axis, i in zip(self.plane_axes, index, strict=True):
            selector[axis] = i
        return tuple(selector)

    @property
    def labels_shape(self) -> tuple[int, ...]:
        return self.shape[:-1] if self.rgb else self.shape


def as_stack(stack):
    """``stack`` itself when it is an array-like that reads lazily (NumPy, memmap, zarr, dask,
    napari layer data: anything with ``shape``, ``dtype`` and slicing), else ``np.asarray(stack)``.

    Lazy stacks are never read whole: planes are read one at a time as they are predicted.
    """
    if all(hasattr(stack, name) for name in ("shape", "dtype", "__getitem__")) and not np.isscalar(stack):
        return stack
    return np.asarray(stack)


def stack_layout(
    shape: tuple[int, ...], axis: int | tuple[int, ...] | None = 0, rgb: bool | None = None
) -> StackLayout:
    """Work out the planes of an array of ``shape``.

    Args:
        shape: the stack's shape.
        axis: the plane axis, or a tuple of them. With the default 0, every axis in front of
            the two spatial axes is a plane axis, so (T, Z, Y, X) iterates over T and Z.
            Use e.g. ``axis=2`` for a (Y, X, Z) stack.
        rgb: whether the last axis is colour; by default, when it has size 3 or 4 and the
            array has at least three dimensions (a 2D (Y, X) image is never RGB).

    Raises:
        ValueError: when the shape cannot hold planes along ``axis``.
    """
    shape = tuple(int(s) for s in shape)
    if 0 in shape:
        raise ValueError(f"the stack is empty: shape {shape} has an axis of length 0")
    if isinstance(axis, (bool, np.bool_)) or not (
        axis is None or isinstance(axis, (int, np.integer)) or all(isinstance(a, (int, np.integer)) for a in axis)
    ):
        raise TypeError(f"axis must be an integer or a tuple of integers, got {axis!r}")
    requested = (int(axis),) if isinstance(axis, (int, np.integer)) else tuple(int(a) for a in axis or ())
    rgb_given = rgb is not None
    if rgb is None:
        # A last axis named as a plane axis is a (Y, X, Z) stack, not colour.
        names_last_axis = any(a % len(shape) == len(shape) - 1 for a in requested if -len(shape) <= a < len(shape))
        rgb = len(shape) >= 3 and shape[-1] in (3, 4) and not names_last_axis
    ndim = len(shape) - (1 if rgb else 0)
    if ndim < 2:
        raise ValueError(f"a stack needs two spatial axes; got shape {shape}")
    axes = tuple(a % ndim if -ndim <= a < ndim else _bad_axis(a, shape) for a in requested)
    if axis == 0 or axis is None:
        axes = tuple(range(ndim - 2))
    spatial = tuple(a for a in range(ndim) if a not in axes)
    if len(spatial) != 2:
        raise ValueError(
            f"stack of shape {shape} with plane axes {axes} leaves {len(spatial)} spatial axes; "
            "exactly two (Y, X) must remain: pass every non-spatial axis in axis=(...)"
        )
    spatial_shape = (shape[spatial[0]], shape[spatial[1]])
    if not rgb_given and len(shape) >= 3 and spatial[-1] == len(shape) - 1 and shape[-1] < MIN_PLANE_SIDE:
        raise ValueError(
            f"a stack of shape {shape} would have {spatial_shape[0]}x{spatial_shape[1]} planes: its last axis "
            f"(size {shape[-1]}) looks like a channel axis, and only grey (no channel axis), RGB (3) and RGBA (4) "
            "images are supported; pick one channel (e.g. stack[..., 0]), or pass rgb=False if the planes "
            "really are this narrow"
        )
    return StackLayout(shape, axes, spatial_shape, bool(rgb))


def _bad_axis(axis: int, shape: tuple[int, ...]) -> int:
    raise ValueError(f"axis {axis} is out of range for a stack of shape {shape}")


def sample_planes(stack, layout: StackLayout, n: int = 32) -> list[np.ndarray]:
    """Up to ``n`` evenly spaced planes of ``stack`` (read one at a time, lazily for zarr/dask)."""
    indices = layout.plane_indices()
    chosen = np.unique(np.linspace(0, len(indices) - 1, min(n, len(indices))).round().astype(int))
    return [np.asarray(layout.take(stack, indices[i])) for i in chosen]
