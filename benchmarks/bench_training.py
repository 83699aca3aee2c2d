"""Training throughput (episodes/s): frozen encoder on cached features vs the encoder trained too.

Runs ``training.trainer.train`` on synthetic data with random weights (no downloads) and times
every optimizer step through the progress callback. Batches have a fixed number of episodes
(4; 2 for SAM-1024) and (N ways, M shots) drawn from the official shapes (tiny) or from small
ones (1-2 ways, 1-2 shots, so that a trained ViT-B fits in GPU memory). Reported per setting:

- ``first_step_s``: from the call to the end of step 1 (building the model and sampler, and
  for the frozen encoder the first batch's encoder pass);
- ``cold``: episodes/s over steps 2..k, while the frozen encoder's cache is still being filled
  (for the trained encoder every step is like this);
- ``steady``: episodes/s once every sample's features are cached (median step time over the
  second half of the run; the dataset is small so the cache warms within the first steps);
- ``ratio``: steady frozen / steady unfrozen for the same model.

Models: ``tiny`` (the test preset at 128 px, whose encoder costs next to nothing) and
``mae-480`` (the published ViT-B MAE architecture at 480 px, 1-way 1-shot batches of 2) on the
CPU; on a CUDA GPU ``tiny``, ``mae-480`` and ``sam-1024`` (SAM ViT-B at 1024 px) in bf16
autocast, and on that machine's CPU only ``tiny``. One run each, within ``--budget-s`` (default
270 s; what does not fit is skipped and listed), so the script stays under 5 minutes on an H100.

Usage:  python benchmarks/bench_training.py [--out FILE] [--budget-s 270] [--device cpu|cuda]
Prints a table; writes JSON to ``--out`` (default ``$OUT/bench_training.json`` when ``$OUT`` is set).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

OFFICIAL_SHAPES = ((1, 4), (4, 2), (1, 2), (2, 2), (4, 1), (1, 1))  # (N ways, M shots) of the official list
SMALL_SHAPES = ((1, 1), (2, 1), (1, 2))  # keeps a trained ViT-B's activations within one GPU
# (preset, device, episodes per batch, (N, M) shapes, samples, steps, steps counted as cold)
SETTINGS = [
    ("tiny", "cpu", 4, OFFICIAL_SHAPES, 24, 40, 8),
    ("mae-480", "cpu", 2, ((1, 1),), 8, 10, 3),
    ("tiny", "cuda", 4, OFFICIAL_SHAPES, 24, 40, 8),
    ("mae-480", "cuda", 4, SMALL_SHAPES, 24, 24, 6),
    ("sam-1024", "cuda", 2, SMALL_SHAPES, 24, 12, 4),
]


def run_setting(preset, device, batch, shapes, samples, steps, cold_steps, frozen: bool) -> dict:
    """Train ``steps`` steps; returns cold and steady episodes/s and the setup time."""
    from napari_label_anything.training.config import TrainConfig
    from napari_label_anything.training.trainer import train

    times: list[float] = []
    last = [0.0]

    def progress(step, total, loss, eta):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig.from_dict(
            {
                "model_config": preset,
                "freeze_encoder": frozen,
                # Few samples: the frozen cache holds every image after a few steps.
                "data": [{"kind": "synthetic", "n_samples": samples, "n_classes": 12, "size": 96}],
                "configurations": [[batch, n, m] for n, m in shapes],
                "steps": steps,
                "lr": 1e-4,
                "warmup_steps": 0,
                "checkpoint_every": 0,
                "device": device,
                "out": out,
            }
        )
        started = time.perf_counter()
        last[0] = started
        train(config, progress=progress, console=False)
        total = time.perf_counter() - started
    steady = statistics.median(times[len(times) // 2 :])
    cold = sum(times[1:cold_steps]) / (cold_steps - 1)
    return {
        "preset": preset,
        "frozen_encoder": frozen,
        "device": device,
        "steps": steps,
        "episodes_per_step": batch,
        "shapes": [list(s) for s in shapes],
        "first_step_s": times[0],
        "cold_episodes_per_s": batch / cold,
        "steady_episodes_per_s": batch / steady,
        "steady_step_s": steady,
        "run_s": total,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON output (default $OUT/bench_training.json when $OUT is set)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="skip settings that no longer fit")
    parser.add_argument("--quick", action="store_true", help="tiny preset only")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="only this device (default: cpu, and cuda if any)")
    args = parser.parse_args()

    import torch

    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    deadline = time.perf_counter() + args.budget_s
    rows, skipped = [], []
    for device in devices:
        for setting in SETTINGS:
            preset = setting[0]
            cpu_beside_gpu = device == "cpu" and "cuda" in devices
            if setting[1] != device or ((args.quick or cpu_beside_gpu) and preset != "tiny"):
                continue
            for frozen in (True, False):
                name = f"{preset} {'frozen' if frozen else 'unfrozen'} on {device}"
                # A rough guard: a big model needs about a minute per setting (H100, or 2 CPU cores).
                need = 15.0 if preset == "tiny" else 60.0
                if time.perf_counter() + need > deadline:
                    skipped.append(name)
                    continue
                row = run_setting(*setting, frozen=frozen)
                rows.append(row)
                print(
                    f"{name:34s} first step {row['first_step_s']:6.1f} s   "
                    f"cold {row['cold_episodes_per_s']:8.2f} ep/s   "
                    f"steady {row['steady_episodes_per_s']:8.2f} ep/s   ({row['run_s']:.1f} s)",
                    flush=True,
                )
    ratios = {}
    for row in rows:
        if not row["frozen_encoder"]:
            continue
        other = [r for r in rows if r["preset"] == row["preset"] and r["device"] == row["device"] and r is not row]
        if other:
            key = f"{row['preset']} {row['device']}"
            ratios[key] = row["steady_episodes_per_s"] / other[0]["steady_episodes_per_s"]
            print(f"frozen / unfrozen, {key}: {ratios[key]:.2f}x")
    if skipped:
        print("skipped (budget):", ", ".join(skipped))
    report = {
        "rows": rows,
        "ratios_frozen_over_unfrozen": ratios,
        "skipped": skipped,
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }
    out = args.out or (str(Path(os.environ["OUT"]) / "bench_training.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
