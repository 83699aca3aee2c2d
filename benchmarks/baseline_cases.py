"""The labelled sets and prompts of ``bench_baselines.py``: stardist nuclei (2D, 3D), grey and
colour texture mosaics, the DSB 2018 subset per modality, and the scribbles a person paints.
``bench_baselines.py``'s docstring says where each comes from and how it is cut."""

from __future__ import annotations

import functools
import glob
import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

DRAW = 1000  # seed offset between scribble draws; draw 0 keeps the seeds of the first version
CACHE = Path(os.environ.get("NLA_BENCH_CACHE", Path(__file__).resolve().parents[1] / "build" / "bench_data"))


# -- data ------------------------------------------------------------------------------------


def stardist_images() -> dict[str, np.ndarray]:
    """img2d, mask2d, img3d, mask3d from the stardist wheel (downloaded once into CACHE)."""
    import tifffile

    wheels = sorted(glob.glob(str(CACHE / "stardist-*.whl")))
    if not wheels:
        CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "stardist", "-d", str(CACHE)]
        subprocess.run(cmd, check=True, capture_output=True)
        wheels = sorted(glob.glob(str(CACHE / "stardist-*.whl")))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        return {
            name: tifffile.imread(io.BytesIO(wheel.read(f"stardist/data/images/{name}.tif")))
            for name in ("img2d", "mask2d", "img3d", "mask3d")
        }


def mosaic(sources: list[np.ndarray], seed: int, size: int = 256) -> np.ndarray:
    """(size, size) class map 0..K-1 of wavy Voronoi regions, two cells per class."""
    rng = np.random.default_rng(seed)
    k = len(sources)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    wy = yy + 10 * np.sin(xx / 23 + rng.uniform(0, 6))
    wx = xx + 10 * np.sin(yy / 19 + rng.uniform(0, 6))
    while True:
        centres = rng.uniform(0, size, (2 * k, 2))
        d = (wy[..., None] - centres[:, 0]) ** 2 + (wx[..., None] - centres[:, 1]) ** 2
        truth = (np.argmin(d, axis=-1) % k).astype(np.uint8)
        if all(np.count_nonzero(truth == c) > 0.1 * size * size for c in range(k)):
            return truth


def texture_images(sources, truth: np.ndarray, rows: slice, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = truth.shape[0]
    tiles = []
    for s in sources:
        part = s[rows]
        y, x = rng.integers(0, part.shape[0] - size + 1), rng.integers(0, part.shape[1] - size + 1)
        tiles.append(part[y : y + size, x : x + size])
    return np.choose(truth, tiles)


DSB = Path(os.environ.get("NLA_DSB2018", "/work/shared/benchmarks/dsb2018"))
DSB_GROUPS = ("fluorescence", "brightfield", "histology")
DSB_SUPPORTS = 3  # prompted images per group
DSB_QUERIES = 8  # scored images per prompted image
DSB_CROP = 512  # centre crop of every image, for speed


def centre_crop(image: np.ndarray, size: int = DSB_CROP) -> np.ndarray:
    y, x = (max(0, (n - size) // 2) for n in image.shape[:2])
    return image[y : y + size, x : x + size]


@functools.cache
def dsb_group(group: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images (grey 2D when the three channels are equal, else RGB (Y, X, 3)) and nucleus masks
    (uint8 0/1) of one group of the DSB 2018 subset, centre-cropped to at most 512 x 512."""
    import csv

    from skimage import io

    with open(DSB / "index.csv", newline="") as f:
        ids = [row["id"] for row in csv.DictReader(f) if row["group"] == group]
    images, masks = [], []
    for i in ids:
        rgb = io.imread(DSB / "images" / f"{i}.png")[..., :3]
        grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
        images.append(centre_crop(rgb[..., 0] if grey else rgb))
        masks.append(centre_crop((io.imread(DSB / "labels" / f"{i}.png") > 0).astype(np.uint8)))
    return images, masks


def dsb_cases(group: str, tuning: bool, draw: int = 0) -> list[Case]:
    """Per prompted image of ``group`` (3, fixed), 8 other images of the group as queries."""
    images, masks = dsb_group(group)
    n = len(images)
    rng = np.random.default_rng(DSB_GROUPS.index(group) + 50 * tuning)
    cases = []
    for k, s in enumerate(rng.choice(n, DSB_SUPPORTS, replace=False)):
        others = [i for i in rng.permutation(n) if i != s][:DSB_QUERIES]
        instances = ndi.label(masks[s])[0]  # touching nuclei merge: fine for strokes
        scribbles = nuclei_scribbles(instances, seed=20 + k + 7 * tuning + DRAW * draw)
        cases.append(Case(images[s], masks[s], [images[i] for i in others], [masks[i] for i in others],
                          ["background", "nucleus"], scribbles, info={"support": int(s)}))  # fmt: skip
    return cases


# Hand-picked, fairly homogeneous regions (rows, cols) of scikit-image's bundled colour photos;
# each is split in two halves along its longer side: supports are cut from the first half,
# queries from the second, so no pixel is shared.
COLOUR_TEXTURES = {
    "fur": ("chelsea", slice(165, 300), slice(0, 220)),  # the cat's cheek
    "wood": ("coffee", slice(0, 400), slice(490, 600)),  # the table right of the saucer
    "suit": ("astronaut", slice(250, 470), slice(50, 124)),  # the orange suit, left of the badge
    "sky": ("rocket", slice(0, 320), slice(205, 300)),  # dusk sky between the towers
    "tissue": ("immunohistochemistry", slice(40, 240), slice(10, 140)),  # stained epithelium
}
COLOUR_SIZE = 256  # mosaic side


def colour_halves(name: str) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    photo, rows, cols = COLOUR_TEXTURES[name]
    region = getattr(data, photo)()[rows, cols, :3]
    axis = 0 if region.shape[0] >= region.shape[1] else 1
    half = region.shape[axis] // 2
    return (region[:half], region[half:]) if axis == 0 else (region[:, :half], region[:, half:])


def colour_tile(part: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size, 3) tile of ``part``: mirrored where ``part`` is smaller, at a random offset."""
    h, w = part.shape[:2]
    y, x = rng.integers(0, h), rng.integers(0, w)
    tiled = np.pad(part, ((0, size + h), (0, size + w), (0, 0)), mode="symmetric")
    return tiled[y : y + size, x : x + size]


def colour_textures(tuning: bool, draw: int = 0) -> list[Case]:
    names = list(COLOUR_TEXTURES)
    halves = [colour_halves(n) for n in names]
    base = 300 if tuning else 200
    cases = []
    for j in range(2):
        seed = base + 2 * j
        st, qt = mosaic(names, seed, COLOUR_SIZE), mosaic(names, seed + 1, COLOUR_SIZE)
        rng_s, rng_q = np.random.default_rng(seed), np.random.default_rng(seed + 1)
        support = np.choose(st[..., None], [colour_tile(h[0], COLOUR_SIZE, rng_s) for h in halves])
        query = np.choose(qt[..., None], [colour_tile(h[1], COLOUR_SIZE, rng_q) for h in halves])
        cases.append(Case(support, st, [query], [qt], names, region_scribbles(st, seed + DRAW * draw, per_class=1)))
    return cases


# -- scribbles -------------------------------------------------------------------------------


def walk(allowed: np.ndarray, start, length: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """A smooth random stroke from ``start`` in both directions that stays inside ``allowed``."""
    path = [tuple(int(v) for v in start)]
    theta = rng.uniform(0, 2 * np.pi)
    for heading in (theta, theta + np.pi):
        y, x, h = float(start[0]), float(start[1]), heading
        for _ in range(length // 2):
            h += rng.normal(0, 0.12)
            for turn in (0, 0.4, -0.4, 0.8, -0.8, 1.2, -1.2):  # steer along an edge, as a hand does
                r, c = int(round(y + np.sin(h + turn))), int(round(x + np.cos(h + turn)))
                if 0 <= r < allowed.shape[0] and 0 <= c < allowed.shape[1] and allowed[r, c]:
                    break
            else:
                break
            h += turn
            y, x = y + np.sin(h), x + np.cos(h)
            path.append((r, c))
    return path


def paint(out: np.ndarray, path, value: int, brush: int, inside: np.ndarray) -> None:
    stroke = np.zeros(out.shape, bool)
    rows, cols = zip(*path, strict=True)
    stroke[list(rows), list(cols)] = True
    if brush:
        stroke = ndi.binary_dilation(stroke, iterations=brush)
    out[stroke & inside] = value


def nuclei_scribbles(mask: np.ndarray, seed: int) -> np.ndarray:
    """Labels 1 = background, 2 = nucleus: strokes through a few nuclei (one in five, at least
    three) and background strokes more than 6 pixels (3 on small planes) from every nucleus."""
    rng = np.random.default_rng(seed)
    brush = 1 if min(mask.shape) >= 128 else 0
    margin = 6 if brush else 3
    out = np.zeros(mask.shape, np.uint8)
    ids = [i for i in np.unique(mask) if i > 0]
    chosen = 0
    for i in rng.permutation(ids):
        obj = mask == i
        core = ndi.binary_erosion(obj, iterations=2 + brush)
        if not core.any():
            continue
        ys, xs = np.nonzero(core)
        j = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
        paint(out, walk(core, (ys[j], xs[j]), 24, rng), 2, brush, obj)
        chosen += 1
        if chosen >= max(3, len(ids) // 5):
            break
    distance = ndi.distance_transform_edt(mask == 0)
    ys, xs = np.nonzero(distance > margin)
    length = min(200, max(mask.shape) // 2)
    for j in rng.choice(len(ys), max(3, mask.size // 25000), replace=False):
        paint(out, walk(distance > margin, (ys[j], xs[j]), length, rng), 1, brush, distance > margin / 2)
    return out


def region_scribbles(truth: np.ndarray, seed: int, per_class: int = 2) -> np.ndarray:
    """Labels k + 1 for class k: ``per_class`` strokes inside each class, 10+ pixels from its edges."""
    rng = np.random.default_rng(seed)
    out = np.zeros(truth.shape, np.uint8)
    for k in range(int(truth.max()) + 1):
        inside = ndi.distance_transform_edt(truth == k) > 10
        ys, xs = np.nonzero(inside)
        for j in rng.choice(len(ys), per_class, replace=False):
            paint(out, walk(inside, (ys[j], xs[j]), 100, rng), k + 1, 1, truth == k)
    return out


# -- cases -----------------------------------------------------------------------------------


@dataclass
class Case:
    """One support with ground truth ``truth`` (0..K-1; nuclei: 0 background, 1 nucleus) and queries."""

    support: np.ndarray
    truth: np.ndarray
    queries: np.ndarray | list[np.ndarray]  # (Q, Y, X[, 3]), or a list when their sizes differ
    query_truths: np.ndarray | list[np.ndarray]
    classes: list[str]
    scribbles: np.ndarray  # labels 1..K, 0 = unpainted
    stack: np.ndarray | None = None  # the whole stack, when the queries are its planes
    support_plane: int | None = None
    info: dict = field(default_factory=dict)

    @property
    def nuclei(self) -> bool:
        return self.classes[0] == "background"


def nuclei_2d(data, tuning: bool, draw: int = 0) -> list[Case]:
    img, mask = data["img2d"], data["mask2d"]
    half = img.shape[0] // 2
    if tuning:
        img, mask = img.T, mask.T  # left/right halves instead of top/bottom
    parts = [(img[:half], mask[:half]), (img[half:], mask[half:])]
    cases = []
    for s, q in ((0, 1), (1, 0)):
        support, smask = parts[s]
        query, qmask = parts[q]
        scribbles = nuclei_scribbles(smask, seed=10 + s + 7 * tuning + DRAW * draw)
        cases.append(Case(support, (smask > 0).astype(np.uint8), query[None], (qmask > 0).astype(np.uint8)[None],
                          ["background", "nucleus"], scribbles))  # fmt: skip
    return cases


def nuclei_3d(data, tuning: bool, draw: int = 0) -> list[Case]:
    img, mask = data["img3d"], data["mask3d"]
    z = img.shape[0] // 2 - (5 if tuning else 0)
    others = [i for i in range(img.shape[0]) if i != z]
    truth = (mask > 0).astype(np.uint8)
    return [Case(img[z], truth[z], img[others], truth[others], ["background", "nucleus"],
                 nuclei_scribbles(mask[z], seed=3 + 7 * tuning + DRAW * draw), stack=img, support_plane=z)]  # fmt: skip


def textures(names: list[str], tuning: bool, draw: int = 0) -> list[Case]:
    from skimage import data

    sources = [getattr(data, n)() for n in names]
    base = 100 if tuning else 0
    cases = []
    for j in range(2):
        seed = base + 2 * j
        st, qt = mosaic(sources, seed), mosaic(sources, seed + 1)
        support = texture_images(sources, st, slice(0, 256), seed)
        query = texture_images(sources, qt, slice(256, 512), seed + 1)
        cases.append(Case(support, st, query[None], qt[None], list(names), region_scribbles(st, seed + DRAW * draw)))
    return cases
