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
import itertools
import os
import resource
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from baseline_cases import (  # noqa: E402  (beside this script)
    CACHE,
    DSB_GROUPS,
    Case,
    colour_textures,
    dsb_cases,
    nuclei_2d,
    nuclei_3d,
    stardist_images,
    textures,
)

from napari_label_anything.episode import Episode
from napari_label_anything.inference.classic import ClassicSegmenter

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
