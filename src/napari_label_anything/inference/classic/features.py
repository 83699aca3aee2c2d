"""Pixel features of the embedded classic segmenter, computed in row bands so memory stays bounded.

``pixel_features`` gives the (Y, X, F) float32 features of a whole normalised image, and
``depth_features`` those a plane of a stack adds from its neighbouring planes (``Depth``);
``feature_bands`` yields them band by band (each band computed with a margin of
``feature_margin`` rows and cropped, so bands join without seams); ``features_at`` gathers the
features of chosen pixels without holding the whole stack. ``check_memory`` refuses, before
allocating, an image whose features would not fit in the memory this process may still use
(``limits.available_memory``: free memory, cgroup limits and rlimits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

from ...limits import available_memory
from ..thread_pools import run_threaded

_LUMA = np.array([0.2125, 0.7154, 0.0721], np.float32)
BAND_PIXELS = 1 << 21  # pixels per band (plus margins): about 0.3 GB of features and temporaries
BYTES_PER_FEATURE_PIXEL = 4 * 2  # a band's features plus the temporaries of computing them
_ALIGN = 64  # band starts and margins: a multiple of every pyramid block size (sigma < 512)


class FeatureMemoryError(MemoryError):
    """The features of an image would not fit in the available memory."""


def sigmas(sigma_min: float, sigma_max: float) -> np.ndarray:
    """sigma_min, 2 * sigma_min, ... up to sigma_max."""
    return sigma_min * 2.0 ** np.arange(int(np.floor(np.log2(sigma_max / sigma_min) + 1e-9)) + 1)


BRIGHTNESS_COLUMN = 0  # the above-threshold column comes first, before every scale's block
_STRUCTURE = 2  # structure-tensor eigenvalues per scale
_COLOUR = 5  # per scale: each channel's blur and two colour-opponent axes


def scale_width(i: int, colour: bool) -> int:
    """Columns of the i-th scale's block (``pixel_features``): 5 + 2 structure-tensor columns at
    the first scale, 7 + 2 from the second, plus ``_COLOUR`` (and a difference of Gaussians per
    channel from the second scale) for colour images."""
    grey = (5 if i == 0 else 7) + _STRUCTURE
    return grey + ((_COLOUR + (3 if i else 0)) if colour else 0)


def plane_width(n_scales: int, colour: bool) -> int:
    """Columns of ``pixel_features`` with ``n_scales`` scales. The layout is prefix-closed: the
    features of the first k scales are the first ``plane_width(k)`` columns of those of more."""
    return 1 + sum(scale_width(i, colour) for i in range(n_scales))


def depth_width(depth_sigmas: Sequence[float]) -> int:
    """Columns ``depth_features`` adds: two per depth scale."""
    return 2 * len(depth_sigmas)


def n_features(sigma_min: float, sigma_max: float, colour: bool, depth: Depth | None = None) -> int:
    n = len(sigmas(sigma_min, sigma_max))
    return plane_width(n, colour) + (depth_width(depth.sigmas) if depth is not None else 0)


def scale_columns(sigma_min: float, sigma_max: float, up_to: float, colour: bool, n_depth: int) -> np.ndarray:
    """Column indices, in the features of scales sigma_min..sigma_max followed by ``n_depth``
    depth columns, of the features of scales sigma_min..up_to and the depth columns: what the
    same image gives with ``up_to`` as its largest scale."""
    wide = plane_width(len(sigmas(sigma_min, sigma_max)), colour)
    narrow = plane_width(len(sigmas(sigma_min, up_to)), colour)
    return np.concatenate([np.arange(narrow), wide + np.arange(n_depth)])


def brightness_threshold(images01: Sequence[np.ndarray], sigma_min: float) -> float:
    """Otsu's threshold of the (luminance) images blurred by ``sigma_min``, pooled: the cut
    ``pixel_features`` compares each pixel with. The classic segmenter takes it from an
    episode's supports, so every image is cut at one value (a per-image cut would jump between
    the modes of an image with several kinds of object, as their proportions change)."""
    fine = np.concatenate([_blur(np.ascontiguousarray(_grey(im), dtype=np.float32), sigma_min).ravel()
                           for im in images01])  # fmt: skip
    return _otsu_cut(fine)


def _otsu_cut(fine: np.ndarray) -> float:
    """Otsu's threshold of blurred values (their value when all are equal)."""
    from skimage.filters import threshold_otsu

    low, high = float(fine.min()), float(fine.max())
    return low if high <= low else float(threshold_otsu(fine))


class Depth(NamedTuple):
    """The neighbourhood of a plane in its stack, for ``depth_features``.

    planes: (D, Y, X) float32, the planes around it (itself included), each normalised, grey
    and blurred by ``depth_plane``; position: its index in ``planes``; sigmas: the depth scales
    in planes; reach: how many planes each side the kernels may use (the neighbourhood a support
    keeps, so a support and a query plane see their stacks the same way).
    """

    planes: np.ndarray
    position: int
    sigmas: tuple[float, ...]
    reach: int


def depth_plane(grey01: np.ndarray, sigma_xy: float) -> np.ndarray:
    """A normalised grey (Y, X) plane as ``Depth.planes`` holds it: blurred in (Y, X) by
    ``sigma_xy`` (float32), once per plane however many neighbourhoods it belongs to."""
    return _blur(np.ascontiguousarray(grey01, dtype=np.float32), sigma_xy)


def depth_features(depth: Depth, rows: slice) -> np.ndarray:
    """(R, X, 2 * len(sigmas)) float32 features of the plane rows ``rows`` from its neighbours.

    At each depth scale s, the (blurred) plane minus its Gaussian average over depth (bright
    against the planes around it: an object centred here rather than the out-of-focus light of
    one above or below) and the second derivative over depth (negative at an intensity peak in
    depth). Kernels are truncated to ``reach`` planes and reflect at the ends of ``planes``, so
    a support's saved neighbourhood and a query's full stack give the same values.
    """
    from scipy.ndimage import gaussian_filter1d

    blurred = depth.planes[:, rows]
    here = blurred[depth.position]
    impulses = np.eye(len(blurred), dtype=np.float64)
    out = np.empty((*here.shape, depth_width(depth.sigmas)), np.float32)
    for i, s in enumerate(depth.sigmas):
        truncate = min(4.0, depth.reach / s)
        for j, order in enumerate((0, 2)):
            # row ``position`` of the filter applied to impulses = its weights over the planes
            weights = gaussian_filter1d(impulses, s, axis=0, order=order, mode="reflect", truncate=truncate)
            value = np.tensordot(weights[depth.position].astype(np.float32), blurred, axes=1)
            out[..., 2 * i + j] = here - value if order == 0 else value
    return out


def feature_margin(sigma_max: float) -> int:
    """Rows of context a band needs on each side: the Gaussian kernels reach 4 sigma, plus derivatives
    (rounded up so bands start on pyramid blocks)."""
    return -(-(int(np.ceil(4 * sigma_max)) + 3) // _ALIGN) * _ALIGN


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur, the image extended beyond its edges by its edge pixels. From sigma 8 on,
    computed on a pyramid level: f x f block means (f a power of two, f <= sigma / 4), blurred
    with the remaining sigma and interpolated back linearly, within about 1 % of the exact blur
    at a fraction of its cost.

    Edges are extended rather than mirrored: a mirror doubles whatever touches the edge (half a
    nucleus cut by the frame becomes a whole one at the large scales), and images are often
    crops of larger ones.
    """
    from scipy.ndimage import gaussian_filter

    f = 1
    while sigma / (2 * f) >= 4:
        f *= 2
    if f == 1:
        return gaussian_filter(image, sigma, mode="nearest")
    h, w = image.shape
    pad = ((0, -h % f), (0, -w % f))
    padded = np.pad(image, pad, mode="edge") if any(p for _, p in pad) else image
    small = gaussian_filter(_block_means(padded, f), np.sqrt(sigma * sigma - (f * f - 1) / 12) / f, mode="nearest")
    return _upsample_linear(_upsample_linear(small, f, 0)[:h], f, 1)[:, :w]


def _block_means(image: np.ndarray, f: int) -> np.ndarray:
    """Means of the f x f blocks of a (Y, X) float32 image whose sides are multiples of f.

    Summed as f strided slices per axis, which is much faster than a reduction over the axes of
    a reshaped view."""
    rows = image[0::f].copy()
    for k in range(1, f):
        rows += image[k::f]
    means = rows[:, 0::f].copy()
    for k in range(1, f):
        means += rows[:, k::f]
    means *= np.float32(1 / (f * f))
    return means


def _upsample_linear(image: np.ndarray, f: int, axis: int) -> np.ndarray:
    """``image`` (float32) f times longer along ``axis``, interpolated linearly between pixel
    centres, with the edge pixels extended beyond the edges: what
    ``scipy.ndimage.zoom(image, f, order=1, grid_mode=True, mode="nearest")`` gives along that
    axis, up to float32 rounding, in less time.

    Output pixel f * i + k lies (k + 0.5) / f - 0.5 of a pixel from input pixel i, so each of the
    f phases is one weighted sum of two shifted slices."""
    n = image.shape[axis]

    def along(part: slice) -> tuple[slice, ...]:
        return (slice(None),) * axis + (part,)

    padded = np.concatenate([image[along(slice(0, 1))], image, image[along(slice(n - 1, n))]], axis)
    out = np.empty((*image.shape[: axis + 1], f, *image.shape[axis + 1 :]), np.float32)
    for k in range(f):
        offset = (k + 0.5) / f - 0.5
        if offset < 0:  # between pixel i - 1 and pixel i
            low, high, weight = padded[along(slice(0, -2))], padded[along(slice(1, -1))], offset + 1
        else:  # between pixel i and pixel i + 1
            low, high, weight = padded[along(slice(1, -1))], padded[along(slice(2, None))], offset
        phase = out[(slice(None),) * (axis + 1) + (k,)]
        np.subtract(high, low, out=phase)
        phase *= np.float32(weight)
        phase += low
    return out.reshape(*image.shape[:axis], n * f, *image.shape[axis + 1 :])


def _grey(image01: np.ndarray) -> np.ndarray:
    return image01 if image01.ndim == 2 else image01 @ _LUMA


def pixel_features(image01: np.ndarray, sigma_min: float = 1.0, sigma_max: float = 16.0, n_jobs: int = 1,
                   threshold: float | None = None, check: Callable[[], None] | None = None) -> np.ndarray:  # fmt: skip
    """Multi-scale features of a normalised (Y, X) or (Y, X, 3) image: (Y, X, F) float32.

    Column ``BRIGHTNESS_COLUMN`` says whether G_sigma_min, the finest blur of the (luminance)
    image, lies above ``threshold`` (default: ``brightness_threshold`` of this image): a cut
    between the dark and the bright pixels, which a classifier trained on strokes far from every
    edge cannot place by itself (it would split anywhere between the strokes). Then one block
    per sigma s in sigma_min, 2 * sigma_min, ..., sigma_max (``scale_width`` columns), from the
    Gaussian blur G_s of the luminance: G_s itself, its Sobel gradient magnitude, the two
    eigenvalues of its Hessian (blobs and ridges), the local standard deviation over s, the two
    eigenvalues of the structure tensor (gradients of G_s/2 averaged over s: oriented texture
    and corners) and, from the second sigma on, the local energy of the finest detail (image
    minus G_sigma_min, RMS over s) and the difference of Gaussians G_sigma_min - G_s (brightness
    against its surroundings, blind to slow shading). Colour images add, per scale, each
    channel's G_s, two colour-opponent axes of them (red - green, yellow - blue: a tree splits
    one axis at a time, and hue differences lie across the channels) and, from the second
    sigma on, each channel's difference of Gaussians. The layout is prefix-closed
    (``plane_width``). The scales are computed on ``n_jobs`` threads; the result does not depend
    on it. ``check`` (e.g. ``PlaneSteps.check``) is called before each scale, so raising there
    stops the work early.
    """
    colour = image01.ndim == 3
    grey = np.ascontiguousarray(_grey(image01), dtype=np.float32)
    steps = sigmas(sigma_min, sigma_max)
    out = np.empty((*grey.shape, plane_width(len(steps), colour)), np.float32)
    fine = _blur(grey, steps[0])
    if threshold is None:  # this image's own (``fine`` is the blur brightness_threshold would make)
        threshold = _otsu_cut(fine)
    _write_columns(out, BRIGHTNESS_COLUMN, [fine > threshold])
    detail = grey - fine
    detail *= detail
    squared = grey * grey
    channels = [np.ascontiguousarray(image01[..., c], dtype=np.float32) for c in range(3)] if colour else []
    fine_channels = [_blur(c, steps[0]) for c in channels]

    def scale(i: int) -> None:  # writes the columns of sigma i (scipy's filters release the GIL)
        if check is not None:
            check()
        s, j = steps[i], plane_width(i, colour)
        blur = fine if i == 0 else _blur(grey, s)
        columns = [blur, *_edges_and_hessian(blur)]
        columns.append(np.sqrt(np.maximum(_blur(squared, s) - blur * blur, 0)))
        columns += _structure_tensor(grey, s)
        if i:
            columns += [np.sqrt(np.maximum(_blur(detail, s), 0)), fine - blur]
        _write_columns(out, j, columns)
        if colour:
            blurs = fine_channels if i == 0 else [_blur(c, s) for c in channels]
            red, green, blue = blurs
            columns = [*blurs, red - green, 0.5 * (red + green) - blue]
            if i:
                columns += [f - b for f, b in zip(fine_channels, blurs, strict=True)]
            _write_columns(out, j + scale_width(i, False), columns)

    run_threaded(scale, range(len(steps) - 1, -1, -1), min(n_jobs, len(steps)))  # largest (slowest) sigma first
    return out


def _structure_tensor(grey: np.ndarray, sigma: float) -> list[np.ndarray]:
    """The two eigenvalues (larger first) of the structure tensor at ``sigma``: the outer products
    of the gradient of the image blurred by sigma / 2, averaged by a Gaussian of sigma."""
    inner = _blur(grey, sigma / 2)
    d_rows, d_cols = _derivative(inner, 0), _derivative(inner, 1)
    rr, rc, cc = _blur(d_rows * d_rows, sigma), _blur(d_rows * d_cols, sigma), _blur(d_cols * d_cols, sigma)
    half_trace, half_diff = (rr + cc) / 2, (rr - cc) / 2
    root = np.sqrt(half_diff * half_diff + rc * rc)
    return [half_trace + root, np.maximum(half_trace - root, 0)]


def _write_columns(out: np.ndarray, start: int, columns: list[np.ndarray]) -> None:
    """``out[..., start + k] = columns[k]`` for (Y, X) columns of a (Y, X, F) array, a few rows
    at a time: each pixel's F values share cache lines, so filling the block of rows with every
    column while it is cached is faster than one column over the whole image after another."""
    step = max(1, (1 << 15) // max(out.shape[1], 1))
    for r0 in range(0, out.shape[0], step):
        block = out[r0 : r0 + step]
        for k, column in enumerate(columns):
            block[..., start + k] = column[r0 : r0 + step]


def _edges_and_hessian(blur: np.ndarray) -> list[np.ndarray]:
    """Sobel gradient magnitude and the two Hessian eigenvalues (larger first) of a blurred image."""
    d_rows = _derivative(blur, 0)
    h_rr, h_rc = _derivative(d_rows, 0), _derivative(d_rows, 1)
    h_cc = _derivative(_derivative(blur, 1), 1)
    half_trace, half_diff = (h_rr + h_cc) / 2, (h_rr - h_cc) / 2
    root = np.sqrt(half_diff * half_diff + h_rc * h_rc)
    return [sobel_magnitude(blur), half_trace + root, half_trace - root]


def _derivative(image: np.ndarray, axis: int) -> np.ndarray:
    """``np.gradient(image, axis=axis)`` of a (Y, X) float32 image (central differences, one-sided
    at the edges), bit for bit, written straight into its output (no temporaries). A
    single pixel along ``axis`` has derivative 0 (np.gradient refuses it)."""
    out = np.empty_like(image)
    moved, source = np.moveaxis(out, axis, 0), np.moveaxis(image, axis, 0)
    if source.shape[0] < 2:
        moved[...] = 0
        return out
    np.subtract(source[2:], source[:-2], out=moved[1:-1])
    moved[1:-1] *= np.float32(0.5)
    np.subtract(source[1], source[0], out=moved[0])
    np.subtract(source[-1], source[-2], out=moved[-1])
    return out


def sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """The Sobel gradient magnitude of a (Y, X) float32 image, mirrored at its edges: what
    ``np.hypot(scipy.ndimage.sobel(image, 0), scipy.ndimage.sobel(image, 1))`` gives, up to
    float32 rounding, from slices of one padded copy."""
    padded = np.pad(image, 1, mode="symmetric")  # scipy.ndimage's "reflect"
    across_rows = padded[2:] - padded[:-2]
    across_cols = padded[:, 2:] - padded[:, :-2]
    d_rows = across_rows[:, :-2] + 2 * across_rows[:, 1:-1] + across_rows[:, 2:]
    d_cols = across_cols[:-2] + 2 * across_cols[1:-1] + across_cols[2:]
    d_rows *= d_rows
    d_cols *= d_cols
    d_rows += d_cols
    return np.sqrt(d_rows, out=d_rows)


def band_rows(height: int, width: int, max_pixels: int) -> int:
    """Rows per band: about ``max_pixels`` pixels, and never fewer than 32 rows."""
    return max(32, max_pixels // max(width, 1) // _ALIGN * _ALIGN)


def band_count(height: int, width: int) -> int:
    """How many bands ``feature_bands`` cuts a (height, width) image into by default."""
    return -(-height // band_rows(height, width, BAND_PIXELS))


def feature_bands(
    image01: np.ndarray,
    sigma_min: float,
    sigma_max: float,
    max_pixels: int | None = None,
    n_jobs: int = 1,
    depth: Depth | None = None,
    threshold: float | None = None,
    check: Callable[[], None] | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (row0, row1, (row1 - row0, X, F) features) covering the image top to bottom.

    Each band is computed on rows widened by ``feature_margin`` on both sides (as far as the
    image goes) and cropped, so the result matches ``pixel_features`` of the whole image up to
    the truncation of the Gaussian tails (well under 1e-3). With ``depth``, the band's
    ``depth_features`` follow its plane features. Every band is cut at ``threshold`` (default:
    the whole image's ``brightness_threshold``). ``check`` goes to ``pixel_features``.
    """
    height, width = image01.shape[:2]
    step = band_rows(height, width, BAND_PIXELS if max_pixels is None else max_pixels)
    margin = feature_margin(sigma_max)
    if threshold is None:
        threshold = brightness_threshold([image01], sigma_min)
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        a, b = (0, height) if step >= height else (max(0, r0 - margin), min(height, r1 + margin))
        band = pixel_features(image01[a:b], sigma_min, sigma_max, n_jobs, threshold, check)[r0 - a : r1 - a]
        if depth is not None:
            band = np.concatenate([band, depth_features(depth, slice(r0, r1))], axis=-1)
        yield r0, r1, band


def features_at(
    image01: np.ndarray,
    flat_index: np.ndarray,
    sigma_min: float,
    sigma_max: float,
    n_jobs: int = 1,
    depth: Depth | None = None,
    threshold: float | None = None,
) -> np.ndarray:
    """(n, F) features of the pixels at ``flat_index`` (row-major), computed band by band."""
    width = image01.shape[1]
    flat_index = np.asarray(flat_index, np.intp)
    out = np.empty((len(flat_index), n_features(sigma_min, sigma_max, image01.ndim == 3, depth)), np.float32)
    rows = flat_index // width
    for r0, r1, band in feature_bands(image01, sigma_min, sigma_max, n_jobs=n_jobs, depth=depth, threshold=threshold):
        pick = np.flatnonzero((rows >= r0) & (rows < r1))
        if len(pick):
            out[pick] = band.reshape(-1, band.shape[-1])[flat_index[pick] - r0 * width]
    return out


def check_memory(shape: tuple[int, ...], n_bytes: int, what: str) -> None:
    """Raise ``FeatureMemoryError`` naming the plane size, the need and what is available, before
    allocating ``n_bytes`` for ``what`` on a plane of ``shape``, if they do not fit."""
    available = available_memory()
    if available is not None and n_bytes > available:
        raise FeatureMemoryError(
            f"{what} of a {shape[0]} x {shape[1]} plane needs about {n_bytes / 2**30:.1f} GiB, "
            f"but only {available / 2**30:.1f} GiB of memory is available; crop or downscale the image, "
            "or prompt with a 'background' class (then only prompted pixels are featurised)"
        )
