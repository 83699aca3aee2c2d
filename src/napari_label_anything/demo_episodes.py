"""Ready-made few-shot episodes on images that scikit-image ships (no download needed).

Each sample is a support image with scribble prompts, a query image (or stack) and the
query's known answer. The CLI demo, the napari sample-data contribution and the tests all
use these functions.

- ``textures``: patches of three textures (brick, grass, gravel) on a smooth background, in
  different arrangements on the support and the query; the answer is exact, because the
  images are built from it. Only the patches are scribbled; the background stays unprompted,
  as in a typical objects-on-background annotation. ``planes=`` makes the query a (Z, Y, X)
  stack of different arrangements, like a z stack whose planes differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_NAMES = ("textures",)


@dataclass
class Sample:
    """A ready episode: support image + scribbles, query image + known answer.

    support: (Y, X[, 3]) image; scribbles: (Y, X) uint8 prompts (0 = unprompted);
    query: (Y, X[, 3]) or (Z, Y, X[, 3]); answer: labels of the query (Y, X) or (Z, Y, X);
    support_answer: the support's complete labels (for placing extra prompts in examples).
    """

    name: str
    classes: list[str]
    support: np.ndarray
    scribbles: np.ndarray
    query: np.ndarray
    answer: np.ndarray
    description: str
    support_answer: np.ndarray | None = None

    def episode(self):
        from .episode import Episode

        episode = Episode(self.classes)
        episode.add_support(self.support, labels=self.scribbles, name=f"{self.name} support")
        return episode


def scribbles_from_answer(answer: np.ndarray, seed: int = 0, stroke_every: int = 10, keep: float = 0.7) -> np.ndarray:
    """Sparse strokes inside every labelled object, as a user would scribble.

    Each object (connected region) is eroded, so strokes stay off its border, and
    skeletonised; of the ``stroke_every``-pixel-high bands its skeleton crosses, a ``keep``
    fraction (at least one) keep their lines, drawn 3 pixels wide. Background (0) is never
    scribbled: it stays unprompted.
    """
    from scipy import ndimage
    from skimage.morphology import disk, skeletonize

    rng = np.random.default_rng(seed)
    out = np.zeros(answer.shape, dtype=np.uint8)
    band = np.arange(answer.shape[0]) // stroke_every
    for k in np.unique(answer):
        if k == 0:
            continue
        objects, count = ndimage.label(answer == k)
        for i in range(1, count + 1):
            region = objects == i
            lines = skeletonize(ndimage.binary_erosion(region, disk(3)))
            crossing = np.unique(band[np.nonzero(lines)[0]])
            if not len(crossing):
                continue
            kept = rng.choice(crossing, size=max(1, int(round(keep * len(crossing)))), replace=False)
            strokes = ndimage.binary_dilation(lines & np.isin(band, kept)[:, None], disk(1)) & region
            out[strokes] = k
    return out


def _blob_layout(shape: tuple[int, int], blobs: list[tuple[float, float, float, int]], seed: int) -> np.ndarray:
    """Labels of round patches with wavy borders: (centre y, centre x, radius, class) each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    for cy, cx, radius, k in blobs:
        angle = np.arctan2(yy - cy, xx - cx)
        wobble = 1 + 0.12 * np.sin(3 * angle + rng.uniform(0, 6)) + 0.06 * np.sin(5 * angle + rng.uniform(0, 6))
        labels[np.hypot(yy - cy, xx - cx) < radius * wobble] = k
    return labels


def _compose(labels: np.ndarray, sources: list[np.ndarray], offset: tuple[int, int], seed: int) -> np.ndarray:
    """Fill class k with texture k (taken at ``offset``) on a smooth, noisy background."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = labels.shape
    background = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 8)
    background = 110 + 60 * background / (np.abs(background).max() + 1e-9) + rng.normal(0, 4, (h, w))
    image = np.clip(background, 0, 255).astype(np.uint8)
    for k, texture in enumerate(sources, start=1):
        tile = np.roll(texture, offset, axis=(0, 1))[:h, :w]
        image[labels == k] = tile[labels == k]
    return image


def _random_blobs(shape: tuple[int, int], rng: np.random.Generator, per_class: int = 2) -> list:
    h, w = shape
    blobs: list[tuple[float, float, float, int]] = []
    for k in (1, 2, 3) * per_class:
        for _ in range(200):  # rejection sampling: patches must not touch
            r = rng.uniform(0.12, 0.16) * min(h, w)
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            if all(np.hypot(cy - y, cx - x) > 1.15 * (r + q) for y, x, q, _ in blobs):
                blobs.append((cy, cx, r, k))
                break
    return blobs


def textures(shape: tuple[int, int] = (256, 256), planes: int = 1) -> Sample:
    """Brick / grass / gravel patches on a smooth background; ``planes`` > 1 gives a (Z, Y, X) query."""
    from skimage import data

    sources = [data.brick(), data.grass(), data.gravel()]
    support_labels = _blob_layout(shape, _random_blobs(shape, np.random.default_rng(1)), seed=1)
    support = _compose(support_labels, sources, (0, 0), seed=1)
    queries, answers = [], []
    for z in range(planes):
        layout = _blob_layout(shape, _random_blobs(shape, np.random.default_rng(100 + z)), seed=10 + z)
        # Query patches come from other parts of the texture images than the support's.
        queries.append(_compose(layout, sources, (-256 - 17 * z, -256 + 11 * z), seed=50 + z))
        answers.append(layout)
    return Sample(
        "textures",
        ["brick", "grass", "gravel"],
        support,
        scribbles_from_answer(support_labels),
        queries[0] if planes == 1 else np.stack(queries),
        answers[0] if planes == 1 else np.stack(answers),
        "brick, grass and gravel patches (scikit-image textures) on a smooth background; exact answer",
        support_labels,
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
