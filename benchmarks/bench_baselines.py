"""The embedded default (``ClassicSegmenter``) side by side with the usual baselines, across modalities.

Usage: python benchmarks/bench_baselines.py [--only SET[,SET...]] [--methods default,forest,otsu,convpaint]
       [--draws 5] [--repeats 1] [--seeds 1] [--tuning] [--markdown]

Sets (``--only``): nuclei2d, nuclei3d, textures (rows textures-3 and textures-4), dsb-fluorescence,
dsb-brightfield, dsb-histology, colour-textures. Each set gives one row per prompt kind.

Methods, each fitted on exactly the same prompted pixels of the support and scored on queries
it never saw:

- default: ``ClassicSegmenter()`` with its defaults, the way the plugin runs it (a stack goes
  through ``predict_stack``, so its planes share one intensity range; colour images are passed
  as (Y, X, 3)). Background is a class named "background" painted by the user, so it gets the
  same information as the forest.
- forest: what ``skimage.future.fit_segmenter`` does, as in scikit-image's own example:
  ``multiscale_basic_features`` with its defaults on the raw image (``channel_axis=-1`` for
  colour) plus ``RandomForestClassifier(n_estimators=50, n_jobs=-1, max_depth=10,
  max_samples=0.05)`` (``random_state=0``, see ``--seeds``); unpainted pixels are unlabelled (0).
- otsu: no prompts at all, on the grey value (``rgb2gray`` of colour images). Nuclei:
  ``threshold_otsu`` of each query, nuclei above it or below it (stained nuclei are dark),
  whichever scores better over the support's queries (for the stack also one threshold over
  all query planes; the best variant is reported). Textures: ``threshold_multiotsu`` with one
  class per texture and the best assignment of intensity bands to classes. Both choices use
  the ground truth, so Otsu's score is an upper bound for a threshold.
- convpaint: napari-convpaint (``ConvpaintModel(fe_name="gaussian_features",
  fe_scalings=[1, 2, 4, 8])``: its weight-free Gaussian-filter features on the largest pyramid
  it proposes, its default CatBoost classifier; colour as ``channel_mode="rgb"``). It is not a
  dependency of the project: it runs in its own environment through ``convpaint_worker.py``
  (one subprocess per set and prompt kind, images and prompts passed in a temporary .npz).
  Its interpreter is ``build/convpaint_env/bin/python`` (override with ``NLA_CONVPAINT_PYTHON``);
  where that is missing the column says "n/a". To create it (needs PyPI once, nothing at run
  time; it reuses the project venv's torch and napari)::

      python3 -m venv build/convpaint_env
      SITE=build/convpaint_env/lib/python3.11/site-packages
      echo "$PWD/.venv/lib/python3.11/site-packages" > $SITE/zz_main_venv.pth
      build/convpaint_env/bin/python -m pip install napari-convpaint

Data (nothing of it is committed to the repository):

- nuclei 2D / nuclei 3D: the labelled images shipped inside the ``stardist`` wheel on PyPI
  (``stardist/data/images/img2d.tif`` + ``mask2d.tif``, 512 x 512, and ``img3d.tif`` +
  ``mask3d.tif``, 31 x 61 x 57; instance labels, foreground = mask > 0). The wheel is fetched
  once with ``pip download --no-deps stardist`` into ``build/bench_data`` (ignored by git;
  override with ``NLA_BENCH_CACHE``) and read with ``zipfile`` + ``tifffile``; stardist itself
  is never imported. 2D: the support is one half of the image and the query the other half
  (both ways round, scores pooled). 3D: the support is the middle plane, prompted as a plane of
  the stack as in napari (so it keeps its neighbouring planes, which the default compares it
  with), every other plane is a query; IoU is pooled over all query planes.
- textures: mosaics of scikit-image's bundled brick, grass and gravel images (3 classes) and
  of those plus moon (4 classes) in wavy Voronoi regions; supports are cut from the top half of
  each source image and queries from the bottom half, so no pixel is shared.
- dsb-fluorescence / dsb-brightfield / dsb-histology: the 60-image subset of the 2018 Data
  Science Bowl (BBBC038, CC0) in ``/work/shared/benchmarks/dsb2018`` (override with
  ``NLA_DSB2018``; see its README), 20 images per group, nucleus = label 1. Fluorescence and
  brightfield images are grey stored as RGB and are passed as grey 2D images (all three
  channels equal); histology as RGB (Y, X, 3). Four brightfield images are colour and are
  passed as RGB; where a support and its queries mix grey and colour, the forest and convpaint
  get the grey ones repeated into RGB (the default takes the mix as it is, as in napari). Per
  group, 3 fixed images (a seeded choice) are prompted in turn, and each is scored on 8 other
  images of its group (a seeded choice), so the prompted image and its queries differ in cell
  type, magnification and size as a lab's experiments do. For speed every image (prompted or
  query) is centre-cropped to at most 512 x 512 (16 brightfield images of 1024 x 1024 and 3
  fluorescence images of 520 x 696 are cropped). IoU of the nucleus is pooled over all queries
  of the 3 supports (24 query images).
- colour-textures: mosaics (256 x 256, wavy Voronoi, two cells per class) of 5 real colour
  textures cut from hand-picked, fairly homogeneous regions of scikit-image's bundled colour
  photographs (``COLOUR_TEXTURES``): the cat's fur (chelsea), the wooden table (coffee), the
  orange suit (astronaut), the dusk sky (rocket) and stained epithelium (immunohistochemistry).
  Each region is split in two halves: support textures come from the first, query textures
  from the second (so no pixel is shared), mirrored where a half is smaller than the mosaic;
  support and query have different layouts. Two support/query pairs.

Prompts: "masks" is the complete ground truth of the support (every pixel labelled, background
included); "scribbles" is what a person paints with a 3-pixel brush (1 pixel on planes under
128 pixels): a short curved stroke through the interior of a few objects, and a few longer
background strokes that keep well away from objects (and for textures strokes inside each
region, away from its edges: two per class, one per class for colour-textures, about 2 % of the
pixels). The painted fraction is printed. Strokes are random, and one draw of them moves a
score by several hundredths (on the stack, 0.56 to 0.69 for the same method over ten draws),
so each scribble score pools ``--draws`` draws (default 5; draw 0 is the one earlier versions
used alone).

Scores: IoU of the nucleus class, or for textures the mean IoU over the texture classes; CPU
seconds (not wall time) of fit plus prediction of all queries of one support: for the methods
run in this process ``time.process_time()`` (all threads) plus ``resource.getrusage
(RUSAGE_CHILDREN)`` of finished children; for convpaint the ``time.process_time()`` its worker
measures around its fit and predictions (its interpreter start, imports and a warm-up are not
counted). Every method may use both CPUs here, so CPU seconds can exceed the wall time. The
median of ``--repeats`` passes; passes alternate method after method. Otsu's time includes its
search with the ground truth. The default and the forest draw pixels and trees at random from a
seed (``seed=`` and ``random_state=``, 0 unless told); ``--seeds N`` scores each with seeds
0..N-1 and prints the mean IoU, then the spread (standard deviation over seeds) in brackets: a
difference smaller than that spread is the methods' own noise. Otsu and convpaint are run once.

``--tuning`` runs held-out variants for choosing settings (left/right halves instead of
top/bottom, another support plane, other mosaic and scribble seeds, other prompted DSB
images), so the reported numbers are not the ones that were tuned on. ``--markdown`` prints
the table as Markdown (for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import functools
import glob
import io
import itertools
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from napari_label_anything.episode import Episode
from napari_label_anything.inference.classic import ClassicSegmenter

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


# -- methods ---------------------------------------------------------------------------------


def prompt_labels(case: Case, kind: str) -> np.ndarray:
    return (case.truth + 1).astype(np.uint8) if kind == "masks" else case.scribbles


def is_rgb(image: np.ndarray) -> bool:
    """A single colour image (Y, X, 3); stacks are never passed whole to the 2D methods."""
    return image.ndim == 3 and image.shape[-1] == 3


def same_channels(case: Case) -> tuple[np.ndarray, list[np.ndarray]]:
    """Support and queries, grey ones repeated into RGB where the others are colour (a few DSB
    brightfield images are colour) so that the forest and convpaint get the same features."""
    images = [case.support, *case.queries]
    if case.stack is None and any(map(is_rgb, images)) and not all(map(is_rgb, images)):
        images = [i if is_rgb(i) else np.repeat(i[..., None], 3, axis=-1) for i in images]
    return images[0], images[1:]


def run_default(case: Case, kind: str, seed: int = 0) -> list[np.ndarray]:
    """Predicted class map 0..K-1 of every query."""
    segmenter = ClassicSegmenter(seed=seed)
    episode = Episode(case.classes)
    if case.stack is not None:  # prompted on a plane of the stack, as in napari: it keeps its neighbours
        episode.add_support(case.stack, labels=prompt_labels(case, kind), plane=case.support_plane)
        planes = [i for i in range(len(case.stack)) if i != case.support_plane]
        labels = list(segmenter.predict_stack(episode, case.stack, planes=planes)[planes])
    else:
        episode.add_support(case.support, labels=prompt_labels(case, kind))
        labels = [segmenter.predict(episode, q) for q in case.queries]
    if case.nuclei:  # "background" is reported as 0, the nucleus as 2
        return [(lab == 2).astype(np.uint8) for lab in labels]
    return [lab.astype(np.int64) - 1 for lab in labels]


def run_forest(case: Case, kind: str, seed: int = 0) -> list[np.ndarray]:
    from skimage.feature import multiscale_basic_features
    from skimage.future import fit_segmenter, predict_segmenter
    from sklearn.ensemble import RandomForestClassifier

    def features(image: np.ndarray) -> np.ndarray:
        return multiscale_basic_features(image, channel_axis=-1 if is_rgb(image) else None)

    clf = RandomForestClassifier(n_estimators=50, n_jobs=-1, max_depth=10, max_samples=0.05, random_state=seed)
    support, queries = same_channels(case)
    clf = fit_segmenter(prompt_labels(case, kind), features(support), clf)
    return [predict_segmenter(features(q), clf) - 1 for q in queries]


def run_otsu(case: Case, kind: str, seed: int = 0) -> list[np.ndarray]:  # draws nothing: ``seed`` is unused
    from skimage.color import rgb2gray
    from skimage.filters import threshold_multiotsu, threshold_otsu

    greys = [rgb2gray(q) if is_rgb(q) else q for q in case.queries]
    if case.nuclei:
        candidates = []
        for bright in (True, False):  # nuclei brighter (fluorescence) or darker (stains) than the background
            candidates.append([((g > threshold_otsu(g)) == bright).astype(np.uint8) for g in greys])
            if case.stack is not None:
                t = threshold_otsu(np.stack(greys))
                candidates.append([((g > t) == bright).astype(np.uint8) for g in greys])
        return max(candidates, key=lambda c: iou_scores(flat(c), flat(case.query_truths), [1])[0])
    k = len(case.classes)
    bands = [np.digitize(g, threshold_multiotsu(g, classes=k)) for g in greys]
    pooled, truth = flat(bands), flat(case.query_truths)
    best = max(itertools.permutations(range(k)), key=lambda p: iou_scores(np.asarray(p)[pooled], truth, range(k)).sum())
    return [np.asarray(best)[b] for b in bands]


CONVPAINT_PYTHON = Path(os.environ.get("NLA_CONVPAINT_PYTHON", CACHE.parent / "convpaint_env" / "bin" / "python"))
CONVPAINT_SCALINGS = (1, 2, 4, 8)


def run_convpaint(cases: list[Case], kind: str, seed: int = 0) -> list[tuple[list[np.ndarray], float]]:
    """napari-convpaint (Gaussian features) on every case, in one subprocess of its own
    environment; each case's predictions and the CPU seconds the worker measured for it."""
    with tempfile.TemporaryDirectory() as tmp:
        arrays = {"scalings": np.asarray(CONVPAINT_SCALINGS)}
        for i, case in enumerate(cases):
            support, queries = same_channels(case)
            arrays[f"s{i}"], arrays[f"l{i}"], arrays[f"n{i}"] = support, prompt_labels(case, kind), len(queries)
            arrays.update({f"q{i}_{j}": q for j, q in enumerate(queries)})
        np.savez(Path(tmp) / "in.npz", **arrays)
        worker = Path(__file__).with_name("convpaint_worker.py")
        command = [str(CONVPAINT_PYTHON), str(worker), str(Path(tmp) / "in.npz"), str(Path(tmp) / "out.npz")]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"convpaint worker failed:\n{done.stderr[-3000:]}")
        out = np.load(Path(tmp) / "out.npz")
        results = []
        for i, case in enumerate(cases):
            preds = [out[f"p{i}_{j}"] for j in range(len(case.queries))]
            # "background" is reported as 0, the nucleus as 2; texture classes as 0..K-1
            preds = [(p == 2).astype(np.uint8) if case.nuclei else p.astype(np.int64) - 1 for p in preds]
            results.append((preds, float(out[f"t{i}"])))
        return results


def flat(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a).ravel() for a in arrays])


def iou_scores(pred: np.ndarray, truth: np.ndarray, classes) -> np.ndarray:
    return np.array([np.count_nonzero((pred == k) & (truth == k)) / max(np.count_nonzero((pred == k) | (truth == k)), 1)
                     for k in classes])  # fmt: skip


def cpu_seconds() -> float:
    """CPU seconds of this process (all its threads) and of its finished child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class Method(NamedTuple):
    run: Callable
    seeded: bool  # draws pixels or trees from its seed (else it runs once, seed 0)
    batch: bool = False  # run(cases, kind, seed) -> [(predictions, CPU seconds)] instead of one case
    available: Callable[[], bool] = lambda: True


METHODS = {
    "default": Method(run_default, True),
    "forest": Method(run_forest, True),
    "otsu": Method(run_otsu, False),
    "convpaint": Method(run_convpaint, False, batch=True, available=CONVPAINT_PYTHON.exists),
}


class Score(NamedTuple):
    iou: float  # mean over seeds (nan: not run)
    spread: float  # standard deviation over seeds
    seconds: float  # median pass, CPU seconds per case


def evaluate(cases: list[Case], kind: str, methods: dict[str, Method], repeats: int = 1,
             seeds: int = 1) -> dict[str, Score]:  # fmt: skip
    """Pooled IoU (nuclei: the nucleus; textures: mean over classes) of each method, its mean
    over seeds 0..``seeds``-1 and standard deviation, and CPU seconds per case (the median over
    ``repeats`` passes of each seed; a seed's IoU is its first pass's). Passes are interleaved,
    method after method within each seed and repeat."""
    classes = [1] if cases[0].nuclei else range(len(cases[0].classes))
    truth = flat([t for case in cases for t in case.query_truths])
    scores = {name: [] for name in methods}
    passes = {name: [] for name in methods}
    for seed in range(seeds):
        preds = {name: [] for name in methods}
        for repeat in range(repeats):
            for name, method in methods.items():
                if (seed and not method.seeded) or not method.available():
                    continue
                if method.batch:
                    results = method.run(cases, kind, seed)
                else:
                    results = []
                    for case in cases:
                        start = cpu_seconds()
                        pred = method.run(case, kind, seed)
                        results.append((pred, cpu_seconds() - start))
                if repeat == 0:
                    preds[name] = [flat(pred) for pred, _ in results]
                passes[name].append(sum(t for _, t in results) / len(cases))
        for name, pred in preds.items():
            if pred:
                scores[name].append(iou_scores(np.concatenate(pred), truth, classes).mean())
    nan = float("nan")
    return {name: Score(float(np.mean(scores[name])) if scores[name] else nan,
                        float(np.std(scores[name])) if scores[name] else nan,
                        float(np.median(passes[name])) if passes[name] else nan)
            for name in methods}  # fmt: skip


def sets(tuning: bool) -> dict[str, list[tuple[str, Callable[[int], list[Case]]]]]:
    """Set name -> its rows: (row name, draw -> cases)."""
    data = functools.cache(stardist_images)
    return {
        "nuclei2d": [("nuclei 2D", lambda draw: nuclei_2d(data(), tuning, draw))],
        "nuclei3d": [("nuclei 3D", lambda draw: nuclei_3d(data(), tuning, draw))],
        "textures": [("textures-3", lambda draw: textures(["brick", "grass", "gravel"], tuning, draw)),
                     ("textures-4", lambda draw: textures(["brick", "grass", "gravel", "moon"], tuning, draw))],
        **{f"dsb-{g}": [(f"dsb {g}", functools.partial(dsb_cases, g, tuning))] for g in DSB_GROUPS},
        "colour-textures": [("colour textures", lambda draw: colour_textures(tuning, draw))],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    all_sets = list(sets(False))
    parser.add_argument("--tuning", action="store_true", help="held-out variants for tuning")
    parser.add_argument("--only", default=None, help=f"comma-separated sets to run, of: {', '.join(all_sets)}")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to run")
    parser.add_argument("--draws", type=int, default=5, help="scribble draws pooled per dataset (1 = the first only)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per cell; seconds are their median")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per method; IoU is their mean (spread in brackets)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else all_sets
    unknown = [name for name in chosen if name not in all_sets]
    methods = {name: METHODS[name] for name in args.methods.split(",") if name in METHODS}
    if unknown or not methods:
        parser.error(f"unknown set(s) {unknown}" if unknown else "no known method")
    warnings.filterwarnings("ignore", message=".*max_samples.*")  # the forest on few scribbled pixels
    missing = [name for name, m in methods.items() if not m.available()]
    print(f"{'tuning variants' if args.tuning else 'reported variants'}, {os.cpu_count()} CPUs; pooled IoU and CPU"
          f" seconds of fit + prediction per support (scribbles: {args.draws} draws pooled; {args.seeds} seed(s))"
          + (f"; not installed: {', '.join(missing)}" if missing else ""))  # fmt: skip
    if args.markdown:
        print("\n| set | prompts | painted | " + " | ".join(f"{m} IoU" for m in methods) + " | "
              + " | ".join(f"{m} CPU s" for m in methods) + " |")  # fmt: skip
        print("|" + "---|" * 3 + "---:|" * (2 * len(methods)))
    else:
        width = 15 if args.seeds == 1 else 21
        print(f"{'set':<18}{'prompts':<11}{'painted':>8}" + "".join(f"{m + ' IoU':>{width}}" for m in methods)
              + "".join(f"{m + ' s':>{max(len(m) + 3, 9)}}" for m in methods))  # fmt: skip
    for set_name, rows in sets(args.tuning).items():
        if set_name not in chosen:
            continue
        for row_name, make in rows:
            for kind in ("masks", "scribbles"):
                started = time.perf_counter()
                draws = range(args.draws) if kind == "scribbles" else [0]
                cases = [case for draw in draws for case in make(draw)]
                painted = np.mean([np.count_nonzero(prompt_labels(c, kind)) / c.truth.size for c in cases])
                results = evaluate(cases, kind, methods, args.repeats, args.seeds)

                def iou(r: Score) -> str:
                    if np.isnan(r.iou):
                        return "n/a"
                    return f"{r.iou:.3f}" if args.seeds == 1 else f"{r.iou:.4f} ({r.spread:.4f})"

                def secs(r: Score) -> str:
                    return "n/a" if np.isnan(r.seconds) else f"{r.seconds:.2f}"

                if args.markdown:
                    print(f"| {row_name} | {kind} | {painted:.1%} | " + " | ".join(iou(r) for r in results.values())
                          + " | " + " | ".join(secs(r) for r in results.values()) + " |", flush=True)  # fmt: skip
                else:
                    print(f"{row_name:<18}{kind:<11}{painted:>8.1%}"
                          + "".join(f"{iou(r):>{width}}" for r in results.values())
                          + "".join(f"{secs(r):>{max(len(m) + 3, 9)}}" for m, r in results.items())
                          + f"   [{time.perf_counter() - started:.0f} s wall]", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
