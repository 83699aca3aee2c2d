"""What the opt-in ``onnx-int8`` encoder costs in accuracy: int8 against float32 on real images.

For each model (``tiny-sam`` / ``tiny-mae``: the golden fixtures in ``tests/data/reference``;
``mae480`` / ``sam1024``: the full-size release configurations with random weights, see
``bench_table.build_model``) and each episode below, the same episode is predicted by the
PyTorch float32 encoder (the reference), float ONNX (a control: it should match to ~1e-5) and
``onnx-int8``. Reported per backend against the reference:

- ``feat rel``: relative L2 error of the query's neck features;
- ``logit max`` / ``logit mean``: max and mean absolute difference of the (N+1, Y, X) logits,
  next to the reference logits' spread (``logit std``) and median top-1 minus top-2 margin;
- ``agree``: fraction of query pixels with the same label;
- ``agree>med``: the same among the pixels whose reference margin is above its median (the
  less tied half): how much of the disagreement lies at near-ties.

Episodes (``skimage.data``, nothing downloaded; 3 classes = multi-Otsu intensity bands of the
grey image, given as mask prompts eroded by 3 px so that borders stay unlabelled):

- ``natural``: supports astronaut and coffee, query chelsea;
- ``tissue``: the immunohistochemistry image, left half as the support, right half as the query.

Random weights give near-tied logits (margins far smaller than a trained model's), so the
agreement of the full-size configs is a pessimistic approximation; the feature error is the
more transferable figure. Usage:

    python benchmarks/bench_int8_accuracy.py --configs tiny-sam,tiny-mae,mae480,sam1024
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_table import CONFIGS, build_model, load_line, print_grid  # noqa: E402

BACKENDS = ("onnx", "onnx-int8")


def three_bands(image: np.ndarray) -> np.ndarray:
    """Mask prompts of 3 classes: the multi-Otsu bands of the grey image, each eroded by 3 px."""
    from scipy import ndimage
    from skimage.color import rgb2gray
    from skimage.filters import threshold_multiotsu

    grey = rgb2gray(image) if image.ndim == 3 else image.astype(float)
    bands = np.digitize(grey, threshold_multiotsu(grey, classes=3)) + 1
    labels = np.zeros(grey.shape, np.uint8)
    for label in (1, 2, 3):
        labels[ndimage.binary_erosion(bands == label, iterations=3)] = label
    return labels


def episodes() -> dict:
    """name -> (Episode, query image)."""
    import skimage.data

    import napari_label_anything as nla

    natural = nla.Episode(["dark", "mid", "bright"])
    for image in (skimage.data.astronaut(), skimage.data.coffee()):
        natural.add_support(image, labels=three_bands(image))
    tissue_image = skimage.data.immunohistochemistry()
    half = tissue_image.shape[1] // 2
    tissue = nla.Episode(["dark", "mid", "bright"])
    tissue.add_support(tissue_image[:, :half], labels=three_bands(tissue_image[:, :half]))
    return {"natural": (natural, skimage.data.chelsea()), "tissue": (tissue, tissue_image[:, half:])}


def compare(reference, other, episode, query) -> dict:
    """The figures of the module docstring, ``other`` against ``reference`` (two segmenters)."""
    import torch

    expected, features = reference.features(query), other.features(query)
    ref_logits, logits = reference.logits(episode, query), other.logits(episode, query)
    diff = (logits - ref_logits).abs()
    top2 = ref_logits.topk(2, dim=0).values
    margin = top2[0] - top2[1]
    return {
        "feat_rel": float((features - expected).norm() / expected.norm()),
        "logit_max": float(diff.max()),
        "logit_mean": float(diff.mean()),
        "logit_std": float(ref_logits.std()),
        "median_margin": float(margin.median()),
        "agree": float((logits.argmax(0) == ref_logits.argmax(0)).float().mean()),
        "agree_above_median": float(
            (logits.argmax(0) == ref_logits.argmax(0))[margin > margin.median()].float().mean()
        ),
        "pixels": int(torch.tensor(query.shape[:2]).prod()),
    }


def run_config(config: str, cases: dict) -> list[dict]:
    from napari_label_anything.inference import LabelAnythingSegmenter

    model = build_model(config)
    reference = LabelAnythingSegmenter(model, device="cpu", name=config, encoder="torch")
    rows = []
    for backend in BACKENDS:
        t0 = time.perf_counter()
        other = LabelAnythingSegmenter(model, device="cpu", name=config, encoder=backend)
        setup = time.perf_counter() - t0
        for name, (episode, query) in cases.items():
            row = {"config": config, "backend": backend, "episode": name, "setup_s": setup}
            rows.append({**row, **compare(reference, other, episode, query)})
            print(f"# {config} {backend} {name} done; {load_line()}", flush=True)
        del other
    return rows


def print_table(rows: list[dict]) -> None:
    header = ["config", "backend", "episode", "feat rel", "logit max", "logit mean", "logit std", "margin", "agree"]
    header.append("agree>med")
    keys = ["feat_rel", "logit_max", "logit_mean", "logit_std", "median_margin", "agree", "agree_above_median"]
    lines = [[r["config"], r["backend"], r["episode"]] + [f"{r[k]:.4g}" for k in keys] for r in rows]
    print_grid(None, header, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny-sam,tiny-mae,mae480,sam1024", help=", ".join(CONFIGS))
    parser.add_argument("--cache-dir", default=None, help="NLA_CACHE_DIR for the ONNX exports (default: a temp dir)")
    parser.add_argument("--json", default=None, help="write every row here")
    args = parser.parse_args()
    configs = args.configs.split(",")
    for config in configs:
        if config not in CONFIGS:
            parser.error(f"unknown config {config!r}; choose from {', '.join(CONFIGS)}")
    os.environ["NLA_CACHE_DIR"] = args.cache_dir or os.environ.get("NLA_CACHE_DIR") or tempfile.mkdtemp()
    print(f"# {load_line()}; reference: the PyTorch float32 encoder")
    cases = episodes()
    rows = [row for config in configs for row in run_config(config, cases)]
    print()
    print_table(rows)
    print("\n# margin: median top-1 minus top-2 reference logit; agree>med: agreement where the margin is above it")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
