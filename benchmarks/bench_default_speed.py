"""The default settings on a CPU: a cached query plane against one eager pass of the encoder.

For each full-size configuration (``mae480``, ``sam1024``: the release configurations with random
weights, saved once to a temporary checkpoint folder so that every process loads it the way
users do), fresh processes one after the other, each with its own peak memory:

- ``eager``: ``load_model`` then ``model.encode_images`` on one preprocessed 512x512 uint16 plane:
  the official encoder's arithmetic in PyTorch eager (the denominator), median of ``--reps``
  passes after a warm-up;
- ``first use``: ``load_segmenter(folder, device="cpu")`` with every default (``encoder="auto"``)
  on an empty ONNX cache: the one-off export, then one prediction (2 supports, 3 classes) — the
  peak of a first session;
- ``default``: the same once the export is cached (every later session): ``predict_stack`` over
  ``--planes`` planes; the cached query plane is the median time between two planes after the
  first (supports and prototypes cached), with the parts of one such plane (preprocessing, image
  encoder, prompt encoder, mask decoder, upscale + argmax) timed on their own.

``--rounds 2`` alternates eager and default twice (medians over the rounds): on a shared CPU the
load changes between processes. Wall and CPU seconds (all threads of the process) are both
reported; the CPU-time ratio moves less with other processes' load (ONNX Runtime's threads spin
while waiting, so its CPU time is an upper bound of its work).

Usage:
    python benchmarks/bench_default_speed.py                       # mae480 and sam1024
    python benchmarks/bench_default_speed.py --configs mae480 --planes 8 --json out.json

Targets (the issue "Fast by default"): cached plane <= 0.5 x eager pass; sam1024 peak <= 3 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_table import SIZE, build_model, fmt, load_line, make_episode, make_stack, peak_memory_gb, print_grid  # noqa: E402

TARGET_RATIO = 0.5
TARGET_PEAK_GB = {"sam1024": 3.0}


class Stopwatch:
    """Wall and process CPU seconds of a call (CPU: every thread of this process)."""

    @staticmethod
    def measure(fn, reps: int = 1) -> tuple[float, float]:
        walls, cpus = [], []
        for _ in range(reps):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        return statistics.median(walls), statistics.median(cpus)


# -- children ----------------------------------------------------------------------------------


def child_eager(folder: str, reps: int) -> dict:
    import torch

    from napari_label_anything.hub.model_files import load_model
    from napari_label_anything.preprocessing import image_to_model_input, to_uint8_rgb

    model = load_model(folder).eval()
    plane = make_stack(np.random.default_rng(5), 1)[0]
    pixels = torch.from_numpy(image_to_model_input(to_uint8_rgb(plane, None), model.config.image_size,
                                                   model.config.custom_preprocess))[None]  # fmt: skip
    with torch.inference_mode():
        model.encode_images(pixels)  # warm-up
        wall, cpu = Stopwatch.measure(lambda: model.encode_images(pixels), reps)
    return {"eager_wall": wall, "eager_cpu": cpu, "threads": torch.get_num_threads(), "peak_gb": peak_memory_gb("cpu")}


def child_default(folder: str, planes: int, reps: int, first_use: bool) -> dict:
    import torch

    import napari_label_anything as nla
    from napari_label_anything.preprocessing import stack_value_range

    messages: list[str] = []
    t0 = time.perf_counter()
    segmenter = nla.load_segmenter(folder, device="cpu", on_status=messages.append)  # every default
    row = {"setup_s": time.perf_counter() - t0, "backend": segmenter.encoder_backend, "note": segmenter.encoder_note,
           "exported_now": getattr(segmenter.encoder, "exported_now", None), "messages": messages}  # fmt: skip
    rng = np.random.default_rng(0)
    episode = make_episode(rng)
    stack = make_stack(rng, 1 if first_use else planes)
    stamps: list[tuple[float, float]] = []

    def stamp(*_):
        stamps.append((time.perf_counter(), time.process_time()))

    stamp()
    segmenter.predict_stack(episode, stack, progress=stamp)
    row["first_plane_s"] = stamps[1][0] - stamps[0][0]  # supports, prototypes and the first plane
    if first_use:
        row["peak_gb"] = peak_memory_gb("cpu")
        return row
    walls = [b[0] - a[0] for a, b in zip(stamps[1:], stamps[2:], strict=False)]
    cpus = [b[1] - a[1] for a, b in zip(stamps[1:], stamps[2:], strict=False)]
    row["cached_wall"], row["cached_cpu"] = statistics.median(walls), statistics.median(cpus)
    row["cached_walls"] = walls

    # The parts of a cached plane, each on what the run left cached.
    value_range = stack_value_range(stack)
    query = stack[-1]
    parts = {}
    parts["preprocess"] = Stopwatch.measure(lambda: segmenter._model_input(query, value_range), 3)
    pixels = torch.from_numpy(segmenter._model_input(query, value_range))[None]
    parts["image encoder"] = Stopwatch.measure(lambda: segmenter.encoder(pixels), reps)

    def prompts():
        segmenter._prototypes.clear()
        segmenter.class_embeddings(episode)

    parts["prompt encoder (once per episode)"] = Stopwatch.measure(prompts, 1)
    classes = segmenter.class_embeddings(episode)
    features = segmenter.features(query, value_range)
    with torch.inference_mode():
        parts["mask decoder"] = Stopwatch.measure(lambda: segmenter.model.decode(features, classes), 3)
        lowres = segmenter.model.decode(features, classes).float()
        parts["upscale + argmax"] = Stopwatch.measure(
            lambda: segmenter.model.upscale_logits(lowres, query.shape)[0].argmax(0).numpy().astype(np.uint8), 3
        )
    row["parts"] = parts
    row["peak_gb"] = peak_memory_gb("cpu")
    return row


# -- driver ------------------------------------------------------------------------------------


def in_child(args: list[str], env: dict) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    try:
        proc = subprocess.run([sys.executable, __file__, *args, "--_out", out], env=env, text=True, capture_output=True)
        if proc.returncode != 0:
            return {"error": ((proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"])[-1][:300]}
        return json.loads(Path(out).read_text())
    finally:
        Path(out).unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="mae480,sam1024")
    parser.add_argument("--planes", type=int, default=4, help="planes of a default run (1st: + supports)")
    parser.add_argument("--reps", type=int, default=2, help="eager passes / encoder repetitions (median)")
    parser.add_argument("--rounds", type=int, default=1, help="eager and default processes alternated this often")
    parser.add_argument("--json", default=None)
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child:
        kind = args._child
        row = (child_eager(args._folder, args.reps) if kind == "eager"
               else child_default(args._folder, args.planes, args.reps, first_use=kind == "first"))  # fmt: skip
        Path(args._out).write_text(json.dumps(row))
        return

    from napari_label_anything.hub.model_files import save_model

    started = time.perf_counter()
    print(f"# {load_line()}; 2 supports, 3 classes, {SIZE}x{SIZE} uint16 planes; default settings", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="nla-default-speed-") as work:
        for config in args.configs.split(","):
            folder = str(Path(work) / config)
            save_model(build_model(config), folder)  # random full-size weights, loaded as a checkpoint
            env = dict(os.environ, NLA_CACHE_DIR=str(Path(work) / f"cache-{config}"))
            common = ["--_folder", folder, "--planes", str(args.planes), "--reps", str(args.reps)]
            first = in_child(["--_child", "first", *common], env)  # empty cache: the export
            print(f"# {config}: first use done ({time.perf_counter() - started:.0f} s; {load_line()})", flush=True)
            eager, default = [], []
            for _ in range(args.rounds):
                eager.append(in_child(["--_child", "eager", *common], env))
                default.append(in_child(["--_child", "default", *common], env))
                print(f"# {config}: a round done ({time.perf_counter() - started:.0f} s; {load_line()})", flush=True)
            results[config] = {"first": first, "eager": eager, "default": default}
    print()
    report(results)
    print(f"\n# total {time.perf_counter() - started:.0f} s; {load_line()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "load": load_line()}, indent=2))


def median_of(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if key in row]
    return statistics.median(values) if values else None


def report(results: dict) -> None:
    header = ["config", "encoder", "eager pass s", "cached plane s", "ratio", "ratio (CPU s)", "target",
              "peak GB", "first use: setup s, peak GB"]  # fmt: skip
    lines, parts = [], []
    for config, result in results.items():
        errors = [r["error"] for r in (result["first"], *result["eager"], *result["default"]) if "error" in r]
        if errors:
            lines.append([config, "error: " + errors[0]])
            continue
        eager, default = result["eager"], result["default"]
        eager_wall, eager_cpu = median_of(eager, "eager_wall"), median_of(eager, "eager_cpu")
        cached_wall, cached_cpu = median_of(default, "cached_wall"), median_of(default, "cached_cpu")
        ratio, ratio_cpu = cached_wall / eager_wall, cached_cpu / eager_cpu
        peak = max(r["peak_gb"] for r in result["default"])
        first = result["first"]
        met = ratio <= TARGET_RATIO and peak <= TARGET_PEAK_GB.get(config, float("inf"))
        backend = result["default"][0]["backend"] + (" (fallback)" if result["default"][0]["note"] else "")
        lines.append([config, backend, f"{fmt(eager_wall, 2)} ({fmt(eager_cpu, 1)} CPU)",
                      f"{fmt(cached_wall, 2)} ({fmt(cached_cpu, 1)} CPU)", fmt(ratio, 2), fmt(ratio_cpu, 2),
                      "met" if met else "not met", fmt(peak, 2),
                      f"{fmt(first['setup_s'], 1)}, {fmt(first['peak_gb'], 2)}"])  # fmt: skip
        for name, (wall, cpu) in result["default"][0]["parts"].items():
            parts.append([config, name, fmt(wall, 3), fmt(cpu, 3)])
    print_grid(None, header, lines)
    print_grid("where a cached plane's time goes (first default process)", ["config", "part", "wall s", "CPU s"], parts)
    print(f"\n# ratio = cached query plane / one eager pass of the encoder (target <= {TARGET_RATIO});"
          " peak: the default process once the export is cached")  # fmt: skip


if __name__ == "__main__":
    main()
