"""Label Anything inference cost per query plane, with and without the segmenter's caches.

Builds a full-size model (the MAE-480 or SAM-1024 release configuration) with random weights,
so nothing is downloaded, and times in one run:

- ``official path``: the official batch interface, which encodes the query and every support
  image again for each plane (what the official demo does per image);
- ``first plane``: ``LabelAnythingSegmenter.predict`` on a fresh cache (supports + query encoded);
- ``next planes``: further planes of the same stack (only the query is encoded; prototypes reused);
- ``prompt change``: new prompts on the same supports (no image is re-encoded).

Each encoder backend in ``--encoders`` (torch, onnx) is timed on the same model in the same run.

Usage:  python benchmarks/bench_label_anything.py [--config mae|sam] [--planes 3] [--device cpu]
                                                  [--encoders torch,onnx] [--skip-official]
Report ratios from one run; absolute times only mean something on the GPU machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import numpy as np
import torch

import napari_label_anything as nla
from napari_label_anything.inference import LabelAnythingSegmenter
from napari_label_anything.inference.label_anything.model_inputs import build_prompt_arrays
from napari_label_anything.model.config import LabelAnythingConfig
from napari_label_anything.model.label_anything import LabelAnything

CONFIGS = {
    "mae": {
        "encoder": "vit_b_mae",
        "image_embed_dim": 768,
        "embed_dim": 256,
        "image_size": 480,
        "spatial_convs": 3,
        "class_attention": False,
        "example_attention": False,
        "example_class_attention": False,
        "custom_preprocess": False,
    },
    "sam": {
        "encoder": "vit_b",
        "use_vit_sam_neck": False,
        "image_embed_dim": 768,
        "embed_dim": 512,
        "image_size": 1024,
        "spatial_convs": 3,
        "class_attention": False,
        "example_attention": True,
        "example_class_attention": False,
        "class_encoder": {"name": "RandomMatrixEncoder", "bank_size": 100, "embed_dim": 512},
    },
}


def make_episode(rng: np.random.Generator, n_supports: int, shape: tuple[int, int]) -> nla.Episode:
    episode = nla.Episode(["a", "b", "c"])
    for _ in range(n_supports):
        image = rng.integers(0, 60000, shape).astype(np.uint16)
        labels = np.zeros(shape, np.uint8)
        labels[10:60, 10:60], labels[100:150, 100:150], labels[200:240, 30:90] = 1, 2, 3
        episode.add_support(image, labels=labels, points=[(300, 300, 1)])
    return episode


def official_batch(segmenter, episode, query) -> dict[str, torch.Tensor]:
    images = [segmenter._model_input(img, None) for img in [query, *(s.image for s in episode.supports)]]
    arrays = build_prompt_arrays(episode, segmenter.config.image_size, segmenter.config.custom_preprocess)
    batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
    for key in ("prompt_points", "prompt_bboxes", "prompt_masks"):
        batch[key] = batch[key].float()
    batch["images"] = torch.from_numpy(np.stack(images))[None]
    batch["dims"] = torch.tensor([[query.shape[:2]] + [s.shape for s in episode.supports]])
    return {k: v.to(segmenter.device_obj) for k, v in batch.items()}


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="mae")
    parser.add_argument("--planes", type=int, default=3)
    parser.add_argument("--supports", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=512, help="side of the synthetic 16-bit images")
    parser.add_argument("--encoders", default="torch", help="comma-separated: torch, onnx (same run, same model)")
    parser.add_argument("--skip-official", action="store_true", help="do not time the official path")
    args = parser.parse_args()

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = LabelAnything(LabelAnythingConfig.from_dict(CONFIGS[args.config]))
    shape = (args.size, args.size)
    episode = make_episode(rng, args.supports, shape)
    stack = rng.integers(0, 60000, (args.planes, *shape)).astype(np.uint16)
    result = {"config": args.config, "supports": args.supports, "planes": args.planes}

    reference = LabelAnythingSegmenter(model, device=args.device, name=f"random-{args.config}", encoder="torch")
    result["device"] = reference.device
    per_plane_official = float("nan")
    if not args.skip_official:
        with torch.inference_mode():
            official = [timed(lambda q=q: reference.model(official_batch(reference, episode, q))) for q in stack]
        per_plane_official = statistics.median(official)
        result["official_path_s_per_plane"] = round(per_plane_official, 3)

    for encoder in args.encoders.split(","):
        start = time.perf_counter()
        segmenter = LabelAnythingSegmenter(model, device=args.device, name=f"random-{args.config}", encoder=encoder)
        setup = time.perf_counter() - start  # the ONNX export on first use (cached afterwards)
        run = dict(episode=copy.deepcopy(episode))
        first = timed(lambda s=segmenter, r=run: s.predict(r["episode"], stack[0]))
        following = [timed(lambda q=q, s=segmenter, r=run: s.predict(r["episode"], q)) for q in stack[1:]]
        run["episode"].supports[0].points = np.array([[50.0, 50.0, 2.0]])
        prompt_change = timed(lambda s=segmenter, r=run: s.predict(r["episode"], stack[0]))
        per_plane = statistics.median(following) if following else float("nan")
        result[encoder] = {
            "setup_s": round(setup, 2),
            "first_plane_s": round(first, 3),
            "next_planes_s_per_plane": round(per_plane, 3),
            "prompt_change_s": round(prompt_change, 3),
            "speedup_next_planes_vs_official": round(per_plane_official / per_plane, 2),
            "cache_stats": segmenter.stats,
        }
    result["peak_rss_gb"] = round(peak_rss_gb(), 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
