"""Time ClassicSegmenter: fit per episode and prediction per 512 x 512 plane.

Usage: python benchmarks/bench_classic.py [--runs 5] [--n-jobs N]

Fit is timed on a fresh cache each run (features of the support, both classifiers); predict is
the time of one ``predict`` call on a new 512 x 512 plane with the episode already fitted. The
first fit of a process also pays for imports; it is reported separately as "cold".
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from scipy import ndimage as ndi

from napari_label_anything.episode import Episode
from napari_label_anything.inference.classic import ClassicSegmenter

SIZE = 512


def blobs(seed: int, colour: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """512 x 512 fluorescence-like image with two object classes, and its ground truth."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((SIZE, SIZE), np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(90):
        cy, cx = rng.uniform(15, SIZE - 15, 2)
        radius = rng.uniform(7, 11) if i % 2 else rng.uniform(4, 6)
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1 + i % 2
    if colour:
        image = np.zeros((SIZE, SIZE, 3))
        image[truth == 1], image[truth == 2] = (0.9, 0.2, 0.2), (0.1, 0.6, 0.1)
        image = ndi.gaussian_filter(image, (1, 1, 0)) + rng.normal(0, 0.05, image.shape) + 0.1
        return (np.clip(image, 0, 1) * 255).astype(np.uint8), truth
    image = 300.0 + 3000 * (truth == 2) + 1200 * (truth == 1)
    image = ndi.gaussian_filter(image, 1.0) + rng.normal(0, 120, truth.shape)
    return np.clip(image, 0, 65535).astype(np.uint16), truth


def prompts(truth: np.ndarray, kind: str) -> dict:
    """Scribbles (a stroke through 8 objects per class), points (8 per class) or the full mask."""
    if kind == "mask":
        return {"labels": truth}
    regions, n = ndi.label(truth > 0)
    labels, points = np.zeros(truth.shape, np.int32), []
    for k in (1, 2):
        for i in [i for i in range(1, n + 1) if truth[regions == i][0] == k][:8]:
            ys, xs = np.nonzero(regions == i)
            row = int(np.median(ys))
            labels[row, xs[ys == row]] = k
            points.append((float(np.mean(ys)), float(np.mean(xs)), k))
    return {"labels": labels} if kind == "scribbles" else {"points": points}


def bench(colour: bool, kind: str, runs: int, n_jobs: int | None) -> tuple[float, float, float]:
    support, truth = blobs(0, colour)
    queries = [blobs(seed, colour)[0] for seed in range(1, runs + 1)]
    episode = Episode(["a", "b"])
    episode.add_support(support, **prompts(truth, kind))
    segmenter = ClassicSegmenter(n_jobs=n_jobs)
    fits, predicts = [], []
    for query in queries:
        segmenter.clear_cache()
        start = time.perf_counter()
        segmenter.fit(episode)
        fits.append(time.perf_counter() - start)
        start = time.perf_counter()
        segmenter.predict(episode, query)
        predicts.append(time.perf_counter() - start)
    return fits[0], statistics.median(fits[1:] or fits), statistics.median(predicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=None)
    args = parser.parse_args()
    print(f"ClassicSegmenter, {SIZE}x{SIZE} planes, {os.cpu_count()} CPUs, median of {args.runs} runs")
    print(f"{'image':<14}{'prompts':<11}{'fit cold s':>11}{'fit s':>8}{'predict s':>11}")
    for colour in (False, True):
        for kind in ("scribbles", "points", "mask"):
            cold, fit, predict = bench(colour, kind, args.runs, args.n_jobs)
            image = "RGB uint8" if colour else "grey uint16"
            print(f"{image:<14}{kind:<11}{cold:>11.2f}{fit:>8.2f}{predict:>11.2f}")


if __name__ == "__main__":
    main()
