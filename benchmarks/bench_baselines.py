"""The embedded default (``ClassicSegmenter``) side by side with the usual baselines.

Usage: python benchmarks/bench_baselines.py [--tuning] [--only NAME] [--draws 5] [--repeats 1] [--seeds 1]

Methods, each fitted on exactly the same prompted pixels of the support and scored on queries
it never saw:

- default: ``ClassicSegmenter()`` with its defaults, the way the plugin runs it (a stack goes
  through ``predict_stack``, so its planes share one intensity range). Background is a class
  named "background" painted by the user, so it gets the same information as the forest.
- forest: what ``skimage.future.fit_segmenter`` does, as in scikit-image's own example:
  ``multiscale_basic_features`` with its defaults on the raw image plus
  ``RandomForestClassifier(n_estimators=50, n_jobs=-1, max_depth=10, max_samples=0.05)``
  (``random_state=0``, see ``--seeds``); unpainted pixels are unlabelled (0) for it.
- otsu: no prompts at all. Nuclei: ``threshold_otsu`` of each query plane, foreground above it
  (for the stack, one threshold over all query planes when that scores better than one per
  plane; the better one is reported). Textures: ``threshold_multiotsu`` with one class per
  texture and the best assignment of intensity bands to classes (chosen with the ground truth,
  so it is an upper bound for a threshold).

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

Prompts: "masks" is the complete ground truth of the support (every pixel labelled, background
included); "scribbles" is what a person paints with a 3-pixel brush (1 pixel on planes under
128 pixels): a short curved stroke through the interior of a few objects, and a few longer
background strokes that keep well away from objects (and for textures a few strokes inside
each region, away from its edges). The painted fraction is printed. Strokes are random, and
one draw of them moves a score by several hundredths (on the stack, 0.56 to 0.69 for the same
method over ten draws), so each scribble score pools ``--draws`` draws (default 5; draw 0 is the
one earlier versions used alone).

Scores: IoU of the nucleus class, or for textures the mean IoU over the texture classes; seconds
of fit plus prediction of all queries of one support (2 CPU threads here for every method), the
median of ``--repeats`` passes (timings on a shared machine wander by a tenth from run to run).
The methods' passes alternate (default, forest, Otsu, then the next pass), so a machine that
slows down during a cell slows all of them; the last column is the median over paired passes
of the forest's time over the default's (above 1: the default is faster).
The default and the forest draw pixels and trees at random from a seed (``seed=`` and
``random_state=``, 0 unless told); ``--seeds N`` scores each with seeds 0..N-1 and prints the
mean IoU, then the spread (standard deviation over seeds) in brackets: a difference smaller
than that spread is the methods' own noise. Otsu draws nothing.

``--tuning`` runs held-out variants for choosing settings (left/right halves instead of
top/bottom, another support plane, other mosaic and scribble seeds), so the reported numbers
are not the ones that were tuned on.
"""

from __future__ import annotations

import argparse
import glob
import io
import itertools
import os
import subprocess
import sys
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
    queries: np.ndarray  # (Q, Y, X)
    query_truths: np.ndarray
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


def run_default(case: Case, kind: str, seed: int = 0) -> np.ndarray:
    """Predicted class map 0..K-1 of every query."""
    segmenter = ClassicSegmenter(seed=seed)
    episode = Episode(case.classes)
    if case.stack is not None:  # prompted on a plane of the stack, as in napari: it keeps its neighbours
        episode.add_support(case.stack, labels=prompt_labels(case, kind), plane=case.support_plane)
    else:
        episode.add_support(case.support, labels=prompt_labels(case, kind))
    if case.stack is not None:
        planes = [i for i in range(len(case.stack)) if i != case.support_plane]
        labels = segmenter.predict_stack(episode, case.stack, planes=planes)[planes]
    else:
        labels = np.stack([segmenter.predict(episode, q) for q in case.queries])
    if case.nuclei:  # "background" is reported as 0, the nucleus as 2
        return (labels == 2).astype(np.uint8)
    return labels.astype(np.int64) - 1


def run_forest(case: Case, kind: str, seed: int = 0) -> np.ndarray:
    from skimage.feature import multiscale_basic_features
    from skimage.future import fit_segmenter, predict_segmenter
    from sklearn.ensemble import RandomForestClassifier

    clf = RandomForestClassifier(n_estimators=50, n_jobs=-1, max_depth=10, max_samples=0.05, random_state=seed)
    clf = fit_segmenter(prompt_labels(case, kind), multiscale_basic_features(case.support), clf)
    return np.stack([predict_segmenter(multiscale_basic_features(q), clf) for q in case.queries]) - 1


def run_otsu(case: Case, kind: str, seed: int = 0) -> np.ndarray:  # draws nothing: ``seed`` is unused
    from skimage.filters import threshold_multiotsu, threshold_otsu

    if case.nuclei:
        per_plane = np.stack([q > threshold_otsu(q) for q in case.queries])
        if len(case.queries) == 1:
            return per_plane.astype(np.uint8)
        pooled = case.queries > threshold_otsu(case.queries)
        best = max((per_plane, pooled), key=lambda p: iou_scores(p, case.query_truths, [1])[0])
        return best.astype(np.uint8)
    k = len(case.classes)
    bands = np.stack([np.digitize(q, threshold_multiotsu(q, classes=k)) for q in case.queries])
    perms = list(itertools.permutations(range(k)))
    return max((np.asarray(p)[bands] for p in perms), key=lambda p: iou_scores(p, case.query_truths, range(k)).sum())


def iou_scores(pred: np.ndarray, truth: np.ndarray, classes) -> np.ndarray:
    return np.array([np.count_nonzero((pred == k) & (truth == k)) / max(np.count_nonzero((pred == k) | (truth == k)), 1)
                     for k in classes])  # fmt: skip


class Method(NamedTuple):
    run: Callable[[Case, str, int], np.ndarray]
    seeded: bool  # draws pixels or trees from its seed (else it runs once, seed 0)


METHODS = {"default": Method(run_default, True), "forest": Method(run_forest, True), "otsu": Method(run_otsu, False)}


class Score(NamedTuple):
    iou: float  # mean over seeds
    spread: float  # standard deviation over seeds
    seconds: float  # median pass, per case
    ratio: float  # median over passes of this pass's seconds / the first method's (same seed and pass)


def evaluate(cases: list[Case], kind: str, methods: dict[str, Method], repeats: int = 1,
             seeds: int = 1) -> dict[str, Score]:  # fmt: skip
    """Pooled IoU (nuclei: the nucleus; textures: mean over classes) of each method, its mean
    over seeds 0..``seeds``-1 and standard deviation, and seconds per case (the median over
    ``repeats`` passes of each seed; a seed's IoU is its first pass's).

    Passes are interleaved, method after method within each seed and repeat, so a machine that
    slows down during a cell slows every method alike; ``ratio`` compares paired passes.
    """
    classes = [1] if cases[0].nuclei else range(len(cases[0].classes))
    truth = np.concatenate([case.query_truths.ravel() for case in cases])
    scores = {name: [] for name in methods}
    passes = {name: {} for name in methods}
    for seed in range(seeds):
        preds = {name: [] for name in methods}
        for repeat in range(repeats):
            for name, method in methods.items():
                if seed and not method.seeded:
                    continue
                seconds = 0.0
                for case in cases:
                    start = time.perf_counter()
                    pred = method.run(case, kind, seed).ravel()
                    seconds += time.perf_counter() - start
                    if repeat == 0:
                        preds[name].append(pred)
                passes[name][seed, repeat] = seconds / len(cases)
        for name, pred in preds.items():
            if pred:
                scores[name].append(iou_scores(np.concatenate(pred), truth, classes).mean())
    first = passes[next(iter(methods))]
    return {name: Score(float(np.mean(scores[name])), float(np.std(scores[name])), float(np.median(list(p.values()))),
                        float(np.median([t / first[key] for key, t in p.items()])))
            for name, p in passes.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuning", action="store_true", help="held-out variants for tuning")
    parser.add_argument("--only", default=None, help="run only datasets whose name contains this")
    parser.add_argument("--draws", type=int, default=5, help="scribble draws pooled per dataset (1 = the first only)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per cell; seconds are their median")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per method; IoU is their mean (spread in brackets)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*max_samples.*")  # the forest on few scribbled pixels
    data = stardist_images()
    datasets = {
        "nuclei 2D": lambda draw: nuclei_2d(data, args.tuning, draw),
        "nuclei 3D": lambda draw: nuclei_3d(data, args.tuning, draw),
        "textures-3": lambda draw: textures(["brick", "grass", "gravel"], args.tuning, draw),
        "textures-4": lambda draw: textures(["brick", "grass", "gravel", "moon"], args.tuning, draw),
    }
    print(f"{'tuning variants' if args.tuning else 'reported variants'}, {os.cpu_count()} CPUs; IoU / seconds"
          f" (scribbles: {args.draws} draws pooled; {args.seeds} seed(s))")  # fmt: skip
    width = 13 if args.seeds == 1 else 21
    head = "".join(f"{m + ' IoU':>{width}}{'s':>7}" for m in METHODS)
    print(f"{'dataset':<12}{'prompts':<11}{'painted':>8}{head}{'forest/default time':>21}")
    for name, make in datasets.items():
        if args.only and args.only not in name:
            continue
        for kind in ("masks", "scribbles"):
            draws = range(args.draws) if kind == "scribbles" else [0]
            cases = [case for draw in draws for case in make(draw)]
            painted = np.mean([np.count_nonzero(prompt_labels(c, kind)) / c.truth.size for c in cases])
            row = f"{name:<12}{kind:<11}{painted:>8.1%}"
            results = evaluate(cases, kind, METHODS, args.repeats, args.seeds)
            for result in results.values():
                shown = f"{result.iou:.3f}" if args.seeds == 1 else f"{result.iou:.4f} ({result.spread:.4f})"
                row += f"{shown:>{width}}{result.seconds:>7.3f}"
            print(f"{row}{results['forest'].ratio:>21.2f}", flush=True)


if __name__ == "__main__":
    main()
