"""ClassicSegmenter: accuracy against exact ground truth, prompt kinds, dtypes, colour, stacks, caching.

Images are synthetic (exact ground truth) or cut from images that ship with scikit-image, so
nothing is downloaded. IoU thresholds sit about 0.1 below what the defaults reach here.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_label_anything.episode import Episode
from napari_label_anything.inference.classic import ClassicSegmenter
from napari_label_anything.preprocessing import normalise_image


def iou(pred: np.ndarray, truth: np.ndarray, k: int) -> float:
    a, b = pred == k, truth == k
    return float((a & b).sum() / max((a | b).sum(), 1))


def nuclei(seed: int, size: int = 256, n_round: int = 14, n_long: int = 10, colour: bool = False):
    """16-bit fluorescence-like image: class 1 bright round nuclei, class 2 dimmer elongated
    textured cells, on an uneven background with noise. Returns (image, ground truth)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    placed = 0
    for _ in range(5000):
        if placed == n_round + n_long:
            break
        k = 1 if placed < n_round else 2
        cy, cx = rng.uniform(15, size - 15, 2)
        if k == 1:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(7, 11) ** 2
        else:
            a, b, angle = rng.uniform(14, 20), rng.uniform(4, 6), rng.uniform(0, np.pi)
            u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
            v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
            mask = (u / a) ** 2 + (v / b) ** 2 <= 1
        if (ndi.binary_dilation(mask, iterations=3) & (truth > 0)).any():
            continue
        truth[mask] = k
        placed += 1
    texture = ndi.gaussian_filter(rng.normal(0, 1, truth.shape), 1.0)
    texture /= texture.std()
    if colour:  # equal brightness, different hue: only colour tells the classes apart
        image = np.zeros((size, size, 3))
        image[truth == 1] = (0.9, 0.2, 0.2)
        image[truth == 2] = (0.1, 0.65, 0.1)
        image = ndi.gaussian_filter(image, (1, 1, 0)) + rng.normal(0, 0.05, image.shape) + 0.1
        return (np.clip(image, 0, 1) * 255).astype(np.uint8), truth
    image = 300.0 + 200 * xx / size
    image[truth == 1] += 3000
    image[truth == 2] += 1200 + 500 * texture[truth == 2]
    image = ndi.gaussian_filter(image, 1.0) + rng.normal(0, 120, truth.shape)
    return np.clip(image, 0, 65535).astype(np.uint16), truth


def scribbles(truth: np.ndarray, seed: int = 0, per_class: int = 4) -> np.ndarray:
    """A horizontal stroke through the (eroded) middle of a few objects of each class."""
    rng = np.random.default_rng(seed)
    regions, n = ndi.label(truth > 0)
    out = np.zeros(truth.shape, np.int32)
    for k in range(1, int(truth.max()) + 1):
        ids = [i for i in range(1, n + 1) if truth[regions == i][0] == k]
        for i in rng.permutation(ids)[:per_class]:
            ys, xs = np.nonzero(ndi.binary_erosion(regions == i, iterations=2))
            row = int(np.median(ys))
            out[row, xs[ys == row]] = k
    return out


def centre_points(truth: np.ndarray, seed: int = 0, per_class: int = 4) -> list[tuple[float, float, int]]:
    rng = np.random.default_rng(seed)
    regions, n = ndi.label(truth > 0)
    points = []
    for k in range(1, int(truth.max()) + 1):
        ids = [i for i in range(1, n + 1) if truth[regions == i][0] == k]
        points += [(*ndi.center_of_mass(regions == i), k) for i in rng.permutation(ids)[:per_class]]
    return points


def bounding_boxes(truth: np.ndarray, per_class: int = 4) -> list[tuple[int, int, int, int, int]]:
    regions, _ = ndi.label(truth > 0)
    boxes: list[tuple[int, int, int, int, int]] = []
    for i, (rows, cols) in enumerate(ndi.find_objects(regions), start=1):
        k = int(truth[regions == i][0])
        if sum(b[4] == k for b in boxes) < per_class:
            boxes.append((rows.start, cols.start, rows.stop, cols.stop, k))
    return boxes


def texture_mosaic(seed: int, size: int = 256):
    """Three textures from scikit-image's bundled images in wavy vertical bands: gravel (0),
    brick (1), moon (2); the ground truth is exact by construction."""
    from skimage import data

    rng = np.random.default_rng(seed)
    tiles = []
    for source in (data.gravel(), data.brick(), data.moon()):
        y, x = rng.integers(0, 512 - size + 1, 2)
        tiles.append(source[y : y + size, x : x + size])
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((size, size), np.uint8)
    for k in (1, 2):
        truth[xx + 12 * np.sin(yy / 20 + k) > k * size / 3] = k
    return np.choose(truth, tiles), truth


def strokes(truth: np.ndarray, seed: int, n: int = 3, length: int = 30) -> np.ndarray:
    """n short diagonal strokes inside each region of ``truth``, labelled region + 1."""
    rng = np.random.default_rng(seed)
    out = np.zeros(truth.shape, np.int32)
    for k in range(int(truth.max()) + 1):
        inside = ndi.binary_erosion(truth == k, iterations=6)
        ys, xs = np.nonzero(inside)
        for j in rng.choice(len(ys), n, replace=False):
            step = np.arange(-length // 2, length // 2)
            rows = np.clip(ys[j] + step // 2, 0, truth.shape[0] - 1)
            cols = np.clip(xs[j] + step, 0, truth.shape[1] - 1)
            keep = inside[rows, cols]
            out[rows[keep], cols[keep]] = k + 1
    return out


@pytest.fixture(scope="module")
def pair():
    (support, support_truth), (query, query_truth) = nuclei(0), nuclei(1)
    return support, support_truth, query, query_truth


@pytest.fixture(scope="module")
def segmenter():
    return ClassicSegmenter()


# -- accuracy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, minimum",
    [("scribbles", (0.75, 0.7)), ("points", (0.8, 0.6)), ("boxes", (0.7, 0.4)), ("masks", (0.9, 0.7))],
)
def test_nuclei_two_classes(segmenter, pair, prompt, minimum):
    support, truth, query, query_truth = pair
    episode = Episode(["nucleus", "cell"])
    if prompt == "scribbles":
        episode.add_support(support, labels=scribbles(truth))
    elif prompt == "points":
        episode.add_support(support, points=centre_points(truth))
    elif prompt == "boxes":
        episode.add_support(support, boxes=bounding_boxes(truth))
    else:
        episode.add_support(support, labels=truth)
    labels = segmenter.predict(episode, query)
    assert labels.shape == query.shape and labels.dtype == np.uint8
    scores = (iou(labels, query_truth, 1), iou(labels, query_truth, 2))
    assert scores[0] >= minimum[0] and scores[1] >= minimum[1], scores
    assert iou(labels, query_truth, 0) >= 0.9


def test_texture_mosaic_with_explicit_background(segmenter):
    image, truth = texture_mosaic(0)
    query, query_truth = texture_mosaic(10)
    episode = Episode(["Background", "brick", "moon"])
    episode.add_support(image, labels=strokes(truth, seed=0))
    proba = segmenter.predict_proba(episode, query)
    assert proba.shape == (4, *query.shape) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=0), 1, atol=1e-4)
    assert not proba[1].any()  # the "background" class is reported as class 0
    labels = segmenter.predict(episode, query)
    expected = np.where(query_truth > 0, query_truth + 1, 0)  # brick = 2, moon = 3
    scores = [iou(labels, expected, k) for k in (0, 2, 3)]
    assert min(scores) >= 0.75 and np.mean(scores) >= 0.8, scores


def test_classes_that_tile_the_image_leave_no_background(segmenter):
    image, truth = texture_mosaic(0)
    query, query_truth = texture_mosaic(10)
    episode = Episode(["gravel", "brick", "moon"])  # every pixel belongs to a prompted class
    episode.add_support(image, labels=strokes(truth, seed=0))
    proba = segmenter.predict_proba(episode, query)
    assert not proba[0].any()
    labels = proba.argmax(axis=0)
    scores = [iou(labels, query_truth + 1, k) for k in (1, 2, 3)]
    assert min(scores) >= 0.75, scores


def test_one_prompted_class_never_tiles_the_image(segmenter):
    """Strokes of one class on a field it nearly fills: the rule finds almost every candidate
    like the strokes, which for two or more classes means they tile the image. One class cannot:
    labelling every pixel with it would answer nothing, so the dark holes must stay background."""

    def field(seed: int, size: int = 128):
        rng = np.random.default_rng(seed)
        holes = np.zeros((size, size), bool)
        rows, cols = np.mgrid[:size, :size]
        while holes.mean() < 0.10:
            y, x, radius = *rng.uniform(0, size, 2), rng.uniform(3, 6)
            holes |= (rows - y) ** 2 + (cols - x) ** 2 <= radius**2
        image = ndi.gaussian_filter(np.where(holes, 0.25, 0.7), 1.0) + rng.normal(0, 0.04, (size, size))
        return image.astype(np.float32), holes

    support, holes = field(0)
    query, query_holes = field(1)
    far = ndi.distance_transform_edt(~holes) > 4
    painted = np.zeros(support.shape, np.uint8)
    for y, x in np.random.default_rng(3).integers(10, 118, (4, 2)):
        rows, cols = np.minimum(127, y + np.arange(25) // 3), np.minimum(127, x + np.arange(25))
        painted[rows, cols] = far[rows, cols]
    episode = Episode(["cell"])
    episode.add_support(support, labels=painted)
    background = segmenter.predict(episode, query) == 0
    assert (background & query_holes).sum() >= 0.95 * query_holes.sum()  # every hole found
    assert background.mean() < 0.6  # and most of the field stays the class


def test_colour_is_used(segmenter):
    support, truth = nuclei(0, colour=True)
    query, query_truth = nuclei(1, colour=True)
    episode = Episode(["red", "green"])
    episode.add_support(support, labels=scribbles(truth))
    labels = segmenter.predict(episode, query)
    assert labels.shape == query.shape[:2]
    scores = (iou(labels, query_truth, 1), iou(labels, query_truth, 2))
    assert min(scores) >= 0.75, scores
    rgba = np.concatenate([query, np.full((*query.shape[:2], 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(segmenter.predict(episode, rgba), labels)


def test_stack_shares_one_fit(pair):
    support, truth, _, _ = pair
    planes = [nuclei(seed) for seed in (1, 2, 3)]
    stack = np.stack([p[0] for p in planes])
    episode = Episode(["nucleus", "cell"])
    episode.add_support(support, labels=scribbles(truth))
    segmenter = ClassicSegmenter()
    labels = segmenter.predict_stack(episode, stack)
    assert labels.shape == stack.shape and labels.dtype == np.uint8
    assert segmenter.stats["fits"] == 1
    for plane, (_, plane_truth) in zip(labels, planes, strict=True):
        assert iou(plane, plane_truth, 1) >= 0.75 and iou(plane, plane_truth, 2) >= 0.65


# -- intensity handling ----------------------------------------------------------------------


def test_dtypes_and_scaling_agree(segmenter, pair):
    support, truth, query, _ = pair
    reference = Episode(["nucleus", "cell"])
    reference.add_support(support, labels=scribbles(truth))
    expected = segmenter.predict(reference, query)
    scaled = Episode(["nucleus", "cell"])  # the same data as float in other units
    scaled.add_support(support.astype(np.float64) / 1000 - 3, labels=scribbles(truth))
    got = segmenter.predict(scaled, query.astype(np.float32) / 1000 - 3)
    assert np.mean(got == expected) > 0.99


def test_value_range_is_applied():
    image = np.array([[0, 1000], [2000, 4000]], np.uint16)
    np.testing.assert_allclose(normalise_image(image, (0, 2000)), [[0, 0.5], [1, 1]])
    assert normalise_image(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert normalise_image(np.ones((3, 3))).max() == 0  # constant image: no contrast
    assert normalise_image(np.zeros((4, 4, 4), np.uint8)).shape == (4, 4, 3)  # alpha dropped


# -- caching, determinism, validation ----------------------------------------------------------


def test_fits_once_per_episode(pair):
    support, truth, query, _ = pair
    segmenter = ClassicSegmenter()
    episode = Episode(["nucleus", "cell"])
    episode.add_support(support, points=centre_points(truth))
    for plane in (query, query[::-1], query.T):
        segmenter.predict(episode, plane)
    assert segmenter.stats["fits"] == 1 and segmenter.stats["fit_cache_hits"] == 2
    episode.add_support(query, points=[(10, 10, 1)])  # new content: a new fit
    segmenter.predict(episode, query)
    assert segmenter.stats["fits"] == 2


def test_deterministic(pair):
    support, truth, query, _ = pair
    episode = Episode(["nucleus", "cell"])
    episode.add_support(support, labels=scribbles(truth))
    first = ClassicSegmenter().predict_proba(episode, query)
    np.testing.assert_array_equal(ClassicSegmenter(n_jobs=1).predict_proba(episode, query), first)


def test_seed_sets_the_draw(pair):
    """One seed always gives the same result; another draws other pixels and trees (so the
    probabilities differ) of the same quality (so the labels hardly do). Both the implicit
    background rule (no "background" class) and the training draw follow it."""
    support, truth, query, _ = pair
    episode = Episode(["nucleus", "cell"])
    episode.add_support(support, labels=scribbles(truth))
    first = ClassicSegmenter(seed=0).predict_proba(episode, query)
    np.testing.assert_array_equal(ClassicSegmenter().predict_proba(episode, query), first)
    other = ClassicSegmenter(seed=np.int64(7)).predict_proba(episode, query)
    assert np.abs(other - first).max() > 0.05
    assert np.mean(other.argmax(0) == first.argmax(0)) > 0.97


def test_changing_the_seed_refits(pair):
    support, truth, query, _ = pair
    episode = Episode(["nucleus", "cell"])
    episode.add_support(support, labels=truth)
    segmenter = ClassicSegmenter()
    first = segmenter.predict_proba(episode, query)
    segmenter.seed = 3
    assert np.abs(segmenter.predict_proba(episode, query) - first).max() > 0
    assert segmenter.stats["fits"] == 2


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True, None])
def test_bad_seed_is_named(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        ClassicSegmenter(seed=seed)


def test_validation(segmenter, pair):
    support, truth, query, _ = pair
    episode = Episode(["nucleus", "cell"])
    episode.add_support(support, points=[(50, 50, 1)])
    with pytest.raises(ValueError, match="cell"):
        segmenter.predict(episode, query)  # class 2 has no prompt
    episode.add_support(support, points=[(80, 80, "cell")])
    with pytest.raises(ValueError, match="2D"):
        segmenter.predict(episode, np.zeros((4, 32, 32)))
    with pytest.raises(ValueError, match="NaN"):
        segmenter.predict(episode, np.full((32, 32), np.nan))
    with pytest.warns(UserWarning, match="class_rows"):
        segmenter.predict_proba(episode, query[:64, :64], class_rows=[0, 1, 2])


def test_trees_are_the_same_whichever_threads_grow_them():
    """Trees draw their seed from a per-thread state reseeded for each tree; interleaving fits
    on several threads must not change a single split."""
    from concurrent.futures import ThreadPoolExecutor

    from napari_label_anything.inference.classic.trees import BalancedExtraTrees

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 12)).astype(np.float32)
    y = rng.integers(0, 3, 1500)
    x[:, 0] += y
    weight = rng.uniform(0.5, 1.0, 1500)

    def splits(seed: int, n_jobs: int) -> list[np.ndarray]:
        trees = BalancedExtraTrees(8, seed=seed, n_jobs=n_jobs).fit(x, y, weight)
        return [t.tree_.threshold for t in trees.trees_]

    alone = [splits(seed, 1) for seed in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(splits, range(4), [2] * 4))
    for one, other in zip(alone, together, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(one, other, strict=True))
    assert not np.array_equal(alone[0][0], alone[1][0])  # another seed, other trees


def test_trees_read_only_their_column_sets():
    """``column_sets``: trees are dealt round the sets and each reads only its columns, so a set
    without the informative column learns nothing and one with it learns the classes."""
    from napari_label_anything.inference.classic.trees import BalancedExtraTrees

    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        return np.stack([y + rng.normal(0, 0.1, n), rng.normal(0, 1, n)], axis=1).astype(np.float32), y

    (x, y), (x_new, y_new) = draw(400), draw(400)
    weight = np.ones(400)

    def accuracy(sets) -> float:  # on pixels the trees never saw
        trees = BalancedExtraTrees(8, 1, None, 1, 0, column_sets=[np.array(s) for s in sets]).fit(x, y, weight)
        return float((trees.predict_proba(x_new).argmax(axis=1) == y_new).mean())

    assert accuracy([[0]]) == 1.0
    assert accuracy([[1]]) < 0.65
    informed = BalancedExtraTrees(8, 1, None, 1, 0, column_sets=[np.array([0]), np.array([1])]).fit(x, y, weight)
    assert informed.tree_sets_ == [0, 1] * 4
