"""Label Anything on one CUDA GPU: encoder throughput, planes per second, bf16/fp16 agreement.

Full-size SAM-1024 and MAE-480 with random weights (nothing is downloaded, no network), in
about 4-6 minutes on an H100/H200 (a deadline, ``--budget-s``, default 420 s, skips what is left
rather than overrun 8 minutes):

1. FLOPs of the encoder + neck per image, counted once with ``torch.utils.flop_counter``
   (SAM ViT-B at 1024 is about 0.97 TFLOP per image, i.e. ~487 GMAC x 2);
2. encoder throughput (images/s) at batch 1, 4, 8, 16 in float32 / bfloat16 / float16
   (autocast), the achieved TFLOP/s and its fraction of the card's dense peak for that dtype
   (float32: the non-tensor-core peak, since TF32 matmuls are off unless ``--tf32``);
3. end to end: ``predict_stack`` on a 32-plane 512x512 uint16 stack (2 supports, 3 classes,
   fresh cache, supports included) at batch_size 1 and 8 -> planes/s, and the steady state
   once the prototypes exist;
4. agreement of bf16 / fp16 with float32 on that stack: fraction of equal label pixels, and the
   max absolute logit difference on 4 planes (random weights give near-tied logits, so these are
   lower bounds on what trained weights show);
5. peak GPU memory (``torch.cuda.max_memory_allocated``) of every measurement.

Usage:  python benchmarks/bench_gpu.py [--out bench_gpu.json] [--budget-s 420]
Prints one table; writes JSON to ``--out`` (default ``$OUT/bench_gpu.json`` when ``$OUT`` is set).
Exits with a one-line message (status 0) when no CUDA device is present.
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
from bench_table import fmt, print_grid  # noqa: E402  (one table format for the benchmarks)

SAM_TFLOP_PER_IMAGE = 0.97  # SAM ViT-B at 1024, the usual figure (2 x MACs)
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# Dense peak TFLOP/s per dtype (float32 without tensor cores; bf16 = fp16 with tensor cores).
PEAKS = [  # (name substrings, fp32, bf16/fp16)
    (("H200",), 67.0, 989.4),
    (("H100", "PCIE"), 51.2, 756.5),
    (("H100", "NVL"), 60.0, 835.0),
    (("H100",), 67.0, 989.4),
    (("A100",), 19.5, 312.0),
    (("L40S",), 91.6, 362.0),
]


def card_peaks(name: str, override: str | None) -> tuple[float, float]:
    """(fp32, bf16/fp16) dense peak TFLOP/s of the card, nan when unknown (see ``--peak-tflops``)."""
    if override:
        fp32, half = (float(v) for v in override.split(","))
        return fp32, half
    upper = name.upper()
    for keys, fp32, half in PEAKS:
        if all(k in upper for k in keys):
            return fp32, half
    return float("nan"), float("nan")


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def allows(self, what: str, need_s: float) -> bool:
        if self.left() >= need_s:
            return True
        self.skipped.append(what)
        return False


def count_flops(model, device, side: int) -> float:
    """FLOPs of encoder + neck for one image (flop counter: 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    pixels = torch.zeros(1, 3, side, side, device=device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.apply_neck(model.encode_images(pixels))
    return float(counter.get_total_flops())


def encoder_throughput(model, device, side, precision, batch, clock, min_s: float = 1.0) -> dict:
    """Images/s of encoder + neck on random pixels (after one warm-up call), peak memory."""
    import torch

    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    pixels = torch.randn(batch, 3, side, side, device=device)

    def run():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            model.apply_neck(model.encode_images(pixels))

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    run()  # warm-up (kernel selection, allocator)
    iters, t0 = 0, clock.now()
    while iters < 3 or (clock.now() - t0 < min_s and iters < 50):
        run()
        iters += 1
    seconds = (clock.now() - t0) / iters
    return {
        "s_per_batch": seconds,
        "images_per_s": batch / seconds,
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30,
    }


def end_to_end(model, device, precision, batch, episode, stack, warm_stack, clock) -> dict:
    """predict_stack on a fresh cache: planes/s (supports included) and the steady state."""
    import torch

    from napari_label_anything.inference import LabelAnythingSegmenter

    segmenter = LabelAnythingSegmenter(model, device=device, batch_size=batch, precision=precision, cache_size=32)
    segmenter.predict_stack(episode, warm_stack)  # warm-up at this batch size
    segmenter.clear_cache()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    stamps: list[float] = []
    t0 = clock.now()
    labels = segmenter.predict_stack(episode, stack, progress=lambda done, total: stamps.append(clock.now()))
    total = clock.now() - t0
    first = min(batch, len(stack))
    steady = (len(stack) - first) / (stamps[-1] - stamps[first - 1]) if len(stack) > first else float("nan")
    result = {
        "total_s": total,
        "planes_per_s": len(stack) / total,
        "steady_planes_per_s": steady,
        "first_batch_s": stamps[first - 1] - t0,
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30,
    }
    return result, labels, segmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON path (default $OUT/bench_gpu.json when $OUT is set)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting new parts after this")
    parser.add_argument("--configs", default="sam1024,mae480", help="sam1024, mae480 (tiny-sam, tiny-mae: smoke tests)")
    parser.add_argument("--batches", default="1,4,8,16", help="encoder-throughput batch sizes")
    parser.add_argument("--e2e-batches", default="1,8", help="predict_stack batch sizes")
    parser.add_argument("--precisions", default="fp32,bf16,fp16")
    parser.add_argument("--planes", type=int, default=32)
    parser.add_argument("--peak-tflops", default=None, help="'fp32,bf16' dense peaks of an unlisted card")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in float32 (off by default)")
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)  # smoke test of the script
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("bench_gpu: no CUDA device (torch.cuda.is_available() is False); nothing measured")
        return
    from bench_table import Clock, build_model, make_episode, make_stack

    from napari_label_anything.preprocessing import stack_value_range

    started = time.perf_counter()
    budget = Budget(args.budget_s)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    if not cuda:  # smoke test: make the CUDA calls no-ops
        torch.cuda.empty_cache = lambda: None
        torch.cuda.reset_peak_memory_stats = lambda: None
        torch.cuda.max_memory_allocated = lambda: 0
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    clock = Clock(device.type)
    card = torch.cuda.get_device_name() if cuda else "cpu (smoke test)"
    peak_fp32, peak_half = card_peaks(card, args.peak_tflops)
    precisions = args.precisions.split(",")
    result = {
        "card": card,
        "torch": torch.__version__,
        "peak_tflops": {"fp32": peak_fp32, "bf16/fp16": peak_half},
        "tf32_matmul": bool(args.tf32),
        "encoder": [],
        "e2e": [],
        "agreement": [],
    }
    print(f"# {card}; torch {torch.__version__}; dense peak fp32 {peak_fp32} / bf16,fp16 {peak_half} TFLOP/s")

    rng = np.random.default_rng(0)
    episode = make_episode(rng)
    stack = make_stack(rng, args.planes)
    warm_stack = make_stack(np.random.default_rng(1), max(int(b) for b in args.e2e_batches.split(",")))
    value_range = stack_value_range(stack)  # what predict_stack uses, so logits hit the feature cache
    for config in args.configs.split(","):
        if not budget.allows(f"{config}: everything", 30):
            continue
        model = build_model(config).to(device).eval()
        side = model.config.image_size
        flops = count_flops(model, device, side)
        result.setdefault("flops_per_image", {})[config] = flops
        print(f"# {config}: encoder + neck {flops / 1e12:.3f} TFLOP per image (counted; SAM ViT-B ref 0.97)")

        # 2. encoder throughput
        for name in precisions:
            for batch in (int(b) for b in args.batches.split(",")):
                if not budget.allows(f"{config} encoder {name} b{batch}", 15):
                    continue
                row = {"config": config, "precision": name, "batch": batch}
                try:
                    row.update(encoder_throughput(model, device, side, PRECISIONS[name], batch, clock))
                    peak = peak_fp32 if name == "fp32" else peak_half
                    row["tflops"] = row["images_per_s"] * flops / 1e12
                    row["fraction_of_peak"] = row["tflops"] / peak
                except torch.cuda.OutOfMemoryError:
                    row["error"] = "out of memory"
                    torch.cuda.empty_cache()
                result["encoder"].append(row)
                print(f"#   encoder {name} b{batch}: {fmt(row.get('images_per_s'))} img/s", flush=True)

        # 3./4. end to end, then agreement with float32 at the same batch size
        reference: dict[int, tuple] = {}
        for name in precisions:
            for batch in (int(b) for b in args.e2e_batches.split(",")):
                if not budget.allows(f"{config} e2e {name} b{batch}", 25):
                    continue
                row = {"config": config, "precision": name, "batch": batch, "planes": args.planes}
                try:
                    timing, labels, segmenter = end_to_end(
                        model, device, PRECISIONS[name], batch, episode, stack, warm_stack, clock
                    )
                except torch.cuda.OutOfMemoryError:
                    row["error"] = "out of memory"
                    result["e2e"].append(row)
                    torch.cuda.empty_cache()
                    continue
                row.update(timing)
                result["e2e"].append(row)
                print(f"#   e2e {name} b{batch}: {row['planes_per_s']:.2f} planes/s", flush=True)
                logits = [
                    segmenter.logits(episode, stack[i], value_range=value_range).float()
                    for i in range(min(4, len(stack)))
                ]
                if name == "fp32":
                    reference[batch] = (labels, logits)
                    if batch != min(reference):  # fp32 batch invariance: same labels as the smallest batch
                        base = reference[min(reference)]
                        result["agreement"].append(
                            {
                                "config": config,
                                "precision": f"fp32 b{batch} vs fp32 b{min(reference)}",
                                "batch": batch,
                                "label_agreement": float(np.mean(labels == base[0])),
                                "max_abs_logit_diff": max(
                                    float((a - b).abs().max()) for a, b in zip(logits, base[1], strict=True)
                                ),
                            }
                        )
                elif batch in reference:
                    ref_labels, ref_logits = reference[batch]
                    diffs = [float((a - b).abs().max()) for a, b in zip(logits, ref_logits, strict=True)]
                    spread = max(float(b.max() - b.min()) for b in ref_logits)
                    result["agreement"].append(
                        {
                            "config": config,
                            "precision": f"{name} vs fp32",
                            "batch": batch,
                            "label_agreement": float(np.mean(labels == ref_labels)),
                            "max_abs_logit_diff": max(diffs),
                            "fp32_logit_range": spread,
                        }
                    )
                del segmenter
        del model
        torch.cuda.empty_cache()

    # one table (three parts)
    print_grid(
        "encoder + neck throughput (random pixels)",
        ["config", "prec", "batch", "s/batch", "img/s", "TFLOP/s", "of peak", "peak GB"],
        [
            [r["config"], r["precision"], str(r["batch"])]
            + (
                [r["error"], "-", "-", "-", "-"]
                if "error" in r
                else [fmt(r["s_per_batch"], 4), fmt(r["images_per_s"], 1), fmt(r["tflops"], 1)]
                + [f"{100 * r['fraction_of_peak']:.1f}%" if np.isfinite(r["fraction_of_peak"]) else "-"]
                + [fmt(r["peak_gb"], 2)]
            )
            for r in result["encoder"]
        ],
    )
    print_grid(
        f"end to end: predict_stack, {args.planes} planes 512x512 uint16, 2 supports, 3 classes, fresh cache",
        ["config", "prec", "batch", "total s", "planes/s", "steady planes/s", "first batch s", "peak GB"],
        [
            [r["config"], r["precision"], str(r["batch"])]
            + (
                [r["error"], "-", "-", "-", "-"]
                if "error" in r
                else [fmt(r["total_s"], 2), fmt(r["planes_per_s"], 2), fmt(r["steady_planes_per_s"], 2)]
                + [fmt(r["first_batch_s"], 3), fmt(r["peak_gb"], 2)]
            )
            for r in result["e2e"]
        ],
    )
    print_grid(
        "agreement with float32 (same stack; logits on 4 planes; random weights: a lower bound)",
        ["config", "compared", "batch", "label agreement", "max |logit diff|", "fp32 logit range"],
        [
            [r["config"], r["precision"], str(r["batch"]), f"{100 * r['label_agreement']:.3f}%"]
            + [fmt(r["max_abs_logit_diff"], 4), fmt(r.get("fp32_logit_range"), 2)]
            for r in result["agreement"]
        ],
    )
    result["total_s"] = time.perf_counter() - started
    result["skipped"] = budget.skipped
    print(
        f"\n# total {result['total_s']:.0f} s"
        + (f"; skipped (budget): {', '.join(budget.skipped)}" if budget.skipped else "")
    )
    out = args.out or (str(Path(os.environ["OUT"]) / "bench_gpu.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
        print(f"# JSON: {out}")


if __name__ == "__main__":
    main()
