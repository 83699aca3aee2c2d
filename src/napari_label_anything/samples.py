"""Ready-made few-shot episodes on images that scikit-image ships (no download needed).

Each sample is a support image with scribble prompts, a query image (or stack) and the
query's known answer. The CLI demo, the napari sample-data contribution and the tests all
use these functions.

- ``textures``: three textures (brick, grass, gravel) laid out in two different mosaics; the
  answer is exact, because the mosaics are built from it. ``planes=`` makes the query a
  (Z, Y, X) stack of different mosaics, like a z-stack to propagate through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_NAMES = ("textures",)


@dataclass
class Sample:
    """A ready episode: support image + scribbles, query image + known answer.

    support: (Y, X[, 3]) image; scribbles: (Y, X) uint8 prompts (0 = unprompted);
    query: (Y, X[, 3]) or (Z, Y, X[, 3]); answer: labels of the query (Y, X) or (Z, Y, X).
    """

    name: str
    classes: list[str]
    support: np.ndarray
    scribbles: np.ndarray
    query: np.ndarray
    answer: np.ndarray
    description: str

    def episode(self):
        from .episode import Episode

        episode = Episode(self.classes)
        episode.add_support(self.support, labels=self.scribbles, name=f"{self.name} support")
        return episode


def scribbles_from_answer(answer: np.ndarray, seed: int = 0, stroke_every: int = 16, keep: float = 0.6) -> np.ndarray:
    """Sparse strokes inside each labelled region, as a user would scribble.

    Regions are eroded (strokes stay away from borders) and skeletonised into lines; of the
    ``stroke_every``-pixel-high bands that cross a region, a ``keep`` fraction (at least two)
    keep their lines, drawn 3 pixels wide, so the prompts cover a few percent of the image.
    """
    from scipy import ndimage
    from skimage.morphology import disk, skeletonize

    rng = np.random.default_rng(seed)
    out = np.zeros(answer.shape, dtype=np.uint8)
    band = np.arange(answer.shape[0]) // stroke_every
    for k in np.unique(answer):
        if k == 0:
            continue
        lines = skeletonize(ndimage.binary_erosion(answer == k, disk(3)))
        crossing = np.unique(band[np.nonzero(lines)[0]])
        if not len(crossing):
            continue
        n_keep = max(2, int(round(keep * len(crossing))))
        kept = rng.choice(crossing, size=min(n_keep, len(crossing)), replace=False)
        strokes = ndimage.binary_dilation(lines & np.isin(band, kept)[:, None], disk(1)) & (answer == k)
        out[strokes] = k
    return out


def _mosaic(layout: np.ndarray, textures: list[np.ndarray], offsets: list[tuple[int, int]], shape) -> np.ndarray:
    image = np.zeros(shape, dtype=np.uint8)
    for k, (texture, (dy, dx)) in enumerate(zip(textures, offsets, strict=True), start=1):
        tile = np.roll(texture, (dy, dx), axis=(0, 1))[: shape[0], : shape[1]]
        image[layout == k] = tile[layout == k]
    return image


def _layout(shape, centres, seed) -> np.ndarray:
    """Voronoi-like regions around labelled seed points, with wavy borders."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    yy += 6 * np.sin(xx / 17.0 + rng.random() * 6)
    xx += 6 * np.sin(yy / 13.0 + rng.random() * 6)
    distances = np.stack([(yy - cy) ** 2 + (xx - cx) ** 2 for cy, cx, _ in centres])
    labels = np.array([k for _, _, k in centres], dtype=np.uint8)
    return labels[distances.argmin(0)]


def textures(shape: tuple[int, int] = (256, 256), planes: int = 1) -> Sample:
    """Brick / grass / gravel mosaics; ``planes`` > 1 gives a (Z, Y, X) query stack."""
    from skimage import data

    sources = [data.brick(), data.grass(), data.gravel()]
    h, w = shape
    support_layout = _layout(shape, [(h * 0.25, w * 0.3, 1), (h * 0.7, w * 0.2, 2), (h * 0.6, w * 0.8, 3)], seed=1)
    support = _mosaic(support_layout, sources, [(0, 0)] * 3, shape)
    queries, answers = [], []
    for z in range(planes):
        rng = np.random.default_rng(100 + z)
        centres = [(rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w, k) for k in (1, 2, 3, 1, 2, 3)]
        layout = _layout(shape, centres, seed=10 + z)
        # Query tiles come from other parts of the source images than the support's.
        queries.append(_mosaic(layout, sources, [(-256 - 17 * z, -256 + 11 * z)] * 3, shape))
        answers.append(layout)
    query = queries[0] if planes == 1 else np.stack(queries)
    answer = answers[0] if planes == 1 else np.stack(answers)
    return Sample(
        "textures",
        ["brick", "grass", "gravel"],
        support,
        scribbles_from_answer(support_layout),
        query,
        answer,
        "three scikit-image textures in two different mosaics (exact answer)",
    )


def load_sample(name: str, **options) -> Sample:
    """One of ``SAMPLE_NAMES``."""
    makers = {"textures": textures}
    if name not in makers:
        raise ValueError(f"unknown sample {name!r}; choose one of {', '.join(SAMPLE_NAMES)}")
    return makers[name](**options)


def iou_per_class(predicted: np.ndarray, answer: np.ndarray, n_classes: int) -> dict[int, float]:
    """IoU of each class 0..N between two label arrays of the same shape (NaN if absent in both)."""
    if predicted.shape != answer.shape:
        raise ValueError(f"shapes differ: {predicted.shape} vs {answer.shape}")
    scores = {}
    for k in range(n_classes + 1):
        p, a = predicted == k, answer == k
        union = np.logical_or(p, a).sum()
        scores[k] = float(np.logical_and(p, a).sum() / union) if union else float("nan")
    return scores
