"""Where the embedded default draws the line between classes when the prompts do not.

Complete masks show the trees where the user puts every boundary. Strokes, points and box
cores do not: a person paints them inside objects and away from them, so the pixels in between
are never seen in training and the trees' 50 % line falls wherever the features happen to
split (typically a halo around bright objects, or a rim cut off dim ones). For such episodes
the pixels the trees are sure of keep their class and the others are flooded from them along
the image's own edges: a marker-controlled watershed on the gradient magnitude, so each open
boundary settles where the image changes most between a sure pixel of one class and one of
another.

``outlined_share`` measures how much of the prompts' outline is a drawn boundary;
``snap_to_edges`` does the flooding. NumPy, SciPy and scikit-image only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .features import sobel_magnitude

# Share of the prompts' outline that must touch another class's prompts for the prompts to
# count as drawing the boundaries: complete masks score about 1, strokes 0.
OUTLINED_SHARE = 0.5
SNAP_BYTES_PER_PIXEL = 36  # gradient, markers, the flood's output and its queue


def outlined_share(targets: Sequence[np.ndarray]) -> float:
    """The share of the prompts' outline that is a boundary the user drew.

    ``targets``: per support, a (Y, X) int array of prompted classes (0..N) with -1 where
    nothing was prompted. Each pair of 4-neighbours inside the image where a prompted pixel
    meets a pixel not of its class is a piece of outline; it is drawn when the other pixel is
    prompted with another class. Returns drawn / all pieces over all supports (0 when nothing
    has an outline, e.g. one class painted over the whole image).
    """
    drawn = outline = 0
    for target in targets:
        target = np.asarray(target)
        for axis in (0, 1):
            a = np.moveaxis(target, axis, 0)
            first, second = a[:-1], a[1:]
            differs = first != second
            both = (first >= 0) & (second >= 0)
            # each side of a differing pair that is prompted has an outline pixel there
            outline += np.count_nonzero(differs & (first >= 0)) + np.count_nonzero(differs & (second >= 0))
            drawn += 2 * np.count_nonzero(differs & both)
    return drawn / outline if outline else 0.0


def prompts_outline_boundaries(targets: Sequence[np.ndarray]) -> bool:
    """Whether the prompts draw the boundaries between classes (see ``outlined_share``)."""
    return outlined_share(targets) >= OUTLINED_SHARE


def edge_strength(image01: np.ndarray, sigma: float) -> np.ndarray:
    """(Y, X) float32 Sobel gradient magnitude of a (Y, X) or (Y, X, C) image in 0..1, after a
    Gaussian of ``sigma`` pixels (colour: root mean square over channels)."""
    from scipy.ndimage import gaussian_filter

    channels = image01[..., None] if image01.ndim == 2 else image01
    squares = np.zeros(channels.shape[:2], np.float32)
    for c in range(channels.shape[-1]):
        squares += sobel_magnitude(gaussian_filter(channels[..., c].astype(np.float32, copy=False), sigma)) ** 2
    return np.sqrt(squares / channels.shape[-1], out=squares)


def snap_to_edges(proba: np.ndarray, image01: np.ndarray, confidence: float, sigma: float,
                  min_area: int = 64, check: Callable[[], None] | None = None) -> np.ndarray:  # fmt: skip
    """Labels from class probabilities, with the unsure pixels assigned along the image's edges.

    Args:
        proba: (K, Y, X) float class probabilities.
        image01: (Y, X) or (Y, X, C) float image in 0..1 they were predicted from.
        confidence: pixels whose top probability is at least this keep their argmax class;
            the others take the class of the sure pixels they are flooded from.
        sigma: Gaussian (pixels) applied before the gradient, against noise.
        min_area: a region of at least this many pixels whose argmax class is nowhere sure in it
            keeps that class from its innermost pixel (``_seed_unsure_objects``).
        check: called before the flood (e.g. ``PlaneSteps.check``: raising there stops early).

    Returns:
        (Y, X) int32 labels 0..K-1. Where fewer than two classes have sure pixels there is no
        boundary to place and the argmax is returned.
    """
    from scipy.ndimage import binary_dilation
    from skimage.segmentation import watershed

    labels = proba.argmax(axis=0).astype(np.int32)
    markers = np.where(proba.max(axis=0) >= confidence, labels + 1, 0).astype(np.int32)
    sure_classes = np.unique(markers)
    if np.count_nonzero(sure_classes) < 2 or sure_classes[0] != 0:
        return labels
    _seed_unsure_objects(labels, markers, min_area)
    # only the unsure pixels and the sure ones beside them take part, so the flood's cost
    # follows the width of the open boundaries rather than the plane's size
    region = binary_dilation(markers == 0, iterations=1)
    edges = edge_strength(image01, sigma)
    if check is not None:
        check()
    flooded = watershed(edges, markers, mask=region)
    return np.where(flooded > 0, flooded - 1, labels).astype(np.int32, copy=False)


def _seed_unsure_objects(labels: np.ndarray, markers: np.ndarray, min_area: int) -> None:
    """Give each region the argmax gives a class, but where that class is nowhere sure, one
    marker at its innermost pixel (in place), so a dim object the trees lean towards grows from
    its middle along its edges instead of being flooded by its surroundings. Regions under
    ``min_area`` pixels are left to the flood (noise)."""
    from scipy.ndimage import distance_transform_edt, find_objects
    from scipy.ndimage import label as connected

    for k in np.unique(labels[markers == 0]):
        regions, n = connected(labels == k)
        sizes = np.bincount(regions.ravel(), minlength=n + 1)
        sure = np.bincount(regions[markers == k + 1], minlength=n + 1)
        seeded = np.flatnonzero((sure == 0) & (sizes >= min_area))
        boxes = find_objects(regions) if np.any(seeded > 0) else []
        for region in seeded[seeded > 0]:
            box = boxes[region - 1]
            inside = np.pad(regions[box] == region, 1)  # the crop's border counts as outside
            depth = distance_transform_edt(inside)[1:-1, 1:-1]
            row, col = np.unravel_index(np.argmax(depth), depth.shape)
            markers[box[0].start + row, box[1].start + col] = k + 1
