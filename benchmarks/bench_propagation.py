"""Propagation through z (``propagate_stack``) against plain ``predict_stack`` on a real stack.

Usage: python benchmarks/bench_propagation.py [--json PATH] [--thresholds 0.6 0.7 ...]

Data: the nuclei 3D stack shipped in the ``stardist`` wheel (``img3d`` / ``mask3d``, 31 x 61 x
57, foreground = mask > 0), obtained as ``bench_baselines.stardist_images`` does (cached in
``build/bench_data``). Model: the embedded ``ClassicSegmenter()`` with its defaults, classes
["background", "nucleus"] as in ``bench_baselines``. Prompts on one plane only: "masks" (the
complete ground truth of that plane, background included) and "scribbles"
(``bench_baselines.nuclei_scribbles``, what a person paints). The reported support plane is the
middle one (15); plane 10 (``bench_baselines --tuning``'s plane) is run as a held-out check.

Methods: plain ``predict_stack``; ``propagate_stack`` at each threshold (confidence = mean
max-probability over the nucleus pixels, every confident plane's prediction added as complete
masks; all added supports used), and at the reported threshold also with ``max_added=4`` and
with ``confident_pixels_only``.

Scores: nucleus IoU per plane, averaged over all 31 planes (a plane with no nucleus in truth
and prediction counts 1), and pooled over the 30 query planes (as ``bench_baselines``); the
number of added supports; seconds for the whole stack (2 CPU threads). A JSON with every
number (per-plane IoU included) is written next to the printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_cases import nuclei_scribbles, stardist_images  # noqa: E402
from propagation import propagate_stack  # noqa: E402

from napari_label_anything.episode import Episode  # noqa: E402
from napari_label_anything.inference.classic import ClassicSegmenter  # noqa: E402

CLASSES = ["background", "nucleus"]
NUCLEUS = 2  # label of "nucleus" in the output ("background" is reported as 0)


def plane_ious(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    scores = []
    for p, t in zip(pred == NUCLEUS, truth, strict=True):
        union = np.count_nonzero(p | t)
        scores.append(np.count_nonzero(p & t) / union if union else 1.0)
    return scores


def pooled_iou(pred: np.ndarray, truth: np.ndarray, skip: int) -> float:
    keep = [i for i in range(len(truth)) if i != skip]
    p, t = pred[keep] == NUCLEUS, truth[keep]
    return float(np.count_nonzero(p & t) / max(np.count_nonzero(p | t), 1))


def episode_for(img: np.ndarray, truth: np.ndarray, mask: np.ndarray, z: int, prompts: str) -> Episode:
    labels = (truth[z] + 1).astype(np.uint8) if prompts == "masks" else nuclei_scribbles(mask[z], seed=3)
    episode = Episode(CLASSES)
    episode.add_support(img, labels=labels, plane=z)
    return episode


def run(method: str, episode: Episode, img: np.ndarray, z: int, **kwargs) -> tuple[np.ndarray, list[int], float]:
    segmenter = ClassicSegmenter(n_jobs=2)  # a fresh one: no fit cached from another method
    start = time.perf_counter()
    if method == "plain":
        labels, added = segmenter.predict_stack(episode, img), []
    else:
        labels, added = propagate_stack(segmenter, episode, img, start_planes=[z], **kwargs)
    return labels, added, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_json = Path(__file__).resolve().parents[1] / "build" / "bench_propagation.json"
    parser.add_argument("--json", type=Path, default=default_json, help="where to write the results")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.9])
    parser.add_argument("--reported", type=float, default=0.8, help="threshold of the variant rows")
    args = parser.parse_args()
    data = stardist_images()
    img, mask = data["img3d"], data["mask3d"]
    truth = (mask > 0).astype(np.uint8)
    middle = img.shape[0] // 2
    variants = [("plain", {})]
    variants += [(f"propagate t={t:g}", {"threshold": t}) for t in args.thresholds]
    variants += [
        (f"propagate t={args.reported:g} max_added=4", {"threshold": args.reported, "max_added": 4}),
        (f"propagate t={args.reported:g} px>={args.reported:g} only",
         {"threshold": args.reported, "confident_pixels_only": True}),
        (f"propagate t={args.reported:g} px>=0.95 only",
         {"threshold": args.reported, "confident_pixels_only": True, "pixel_threshold": 0.95}),
    ]  # fmt: skip
    print(f"nuclei 3D {img.shape}, classic default, {os.cpu_count()} CPUs; nucleus IoU (mean over planes / pooled)")
    print(f"{'plane':<7}{'prompts':<11}{'method':<36}{'mean IoU':>9}{'pooled':>8}{'added':>7}{'s':>7}")
    rows = []
    for z, role in ((middle, "reported"), (middle - 5, "held-out")):
        for prompts in ("masks", "scribbles"):
            episode = episode_for(img, truth, mask, z, prompts)
            for name, kwargs in variants:
                labels, added, seconds = run("plain" if name == "plain" else "propagate", episode, img, z, **kwargs)
                per_plane = plane_ious(labels, truth)
                row = {"support_plane": z, "role": role, "prompts": prompts, "method": name, **kwargs,
                       "mean_iou": float(np.mean(per_plane)), "pooled_iou": pooled_iou(labels, truth, z),
                       "added_planes": [int(p) for p in added], "seconds": seconds,
                       "plane_iou": [round(s, 4) for s in per_plane]}  # fmt: skip
                rows.append(row)
                print(f"{z:<7}{prompts:<11}{name:<36}{row['mean_iou']:>9.3f}{row['pooled_iou']:>8.3f}"
                      f"{len(added):>7}{seconds:>7.2f}", flush=True)  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"stack": list(img.shape), "cpus": os.cpu_count(), "rows": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
