"""One table of Label Anything inference costs: config x backend, each row in a fresh subprocess.

Rows are a model configuration (``tiny-sam`` / ``tiny-mae``: the checkpoints in
``tests/data/reference/{sam_like,mae_like}`` loaded with ``hub.model_files.load_model``; ``mae480`` /
``sam1024``: the full-size release configurations with random weights, nothing downloaded)
times an encoder backend (``torch``, ``onnx``, ``onnx-int8`` on the CPU; ``torch``, ``torch-bf16``,
``torch-fp16`` on CUDA, each at every ``--batch-sizes``; ``auto``: the default, whichever of them it
resolves to). Columns:

- ``setup s``: building the segmenter (the ONNX export and int8 quantisation on first use, cached
  afterwards);
- ``enc s/img``: the encoder + neck alone on preprocessed pixels, per image (batch / batch size);
- ``proto s/ep``: the class prototypes of one episode (2 supports, 3 classes) from cached features;
- ``dec s/plane``: ``predict`` on a query whose features are cached (mask decoder + upscale + argmax);
- ``e2e s/plane``: ``predict_stack`` on a fresh cache over ``--planes`` 512x512 uint16 planes
  (supports encoded once, amortised), divided by the number of planes;
- ``cached s/plane``: the steady state of that run once the prototypes exist (a "cached query
  plane": preprocessing + query encoder + decoder + upscale);
- ``peak GB``: peak RSS of the row's process (``resource``), or ``torch.cuda.max_memory_allocated``;
- ``x official``: official-path proxy time / ours, per plane. The proxy is the official batch
  interface on the same model: ``plain`` encodes the query and every support for each plane;
  ``cached`` encodes the supports once and then, per plane, the query and the whole prompt
  encoder + decoder again (the official support-caching path). It is measured in the same run
  (``official`` rows) unless ``--official-reference`` gives numbers (e.g. from GUIDE.md §3).

Usage:
    python benchmarks/bench_table.py --configs tiny-sam,tiny-mae,mae480 --backends torch,onnx
    python benchmarks/bench_table.py --configs mae480,sam1024 --backends torch,onnx,onnx-int8 --no-official
    python benchmarks/bench_table.py --configs sam1024 --planes 3 --official-planes 1
    python benchmarks/bench_table.py --configs sam1024 --official-reference guide
    python benchmarks/bench_table.py --device cuda --backends torch,torch-bf16,torch-fp16 --batch-sizes 1,8

Report ratios from one run: on a shared CPU absolute times move with the load.
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

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "reference"
CONFIGS = ("tiny-sam", "tiny-mae", "mae480", "sam1024")
PRECISION_OF = {
    "auto": "float32",  # the default: onnx on a CPU, torch on CUDA (encoder_backends.resolve_encoder)
    "torch": "float32",
    "onnx": "float32",
    "onnx-int8": "float32",  # the network around the int8 encoder runs float32
    "torch-bf16": "bfloat16",
    "torch-fp16": "float16",
}
# GUIDE.md §3: the official implementation with full-size configs and random weights on this CPU
# (2 threads, float32), seconds per query plane: (plain, support-cached).
GUIDE_OFFICIAL = {"sam1024": (78.0, 18.2), "mae480": (5.5, 1.44)}
SIZE = 512
SUPPORTS = 2


# -- building blocks (also used by bench_gpu.py) -------------------------------------------


def build_model(config: str, seed: int = 0):
    """The LabelAnything model of a config name (random weights for the full-size ones)."""
    import torch

    if config.startswith("tiny-"):
        from napari_label_anything.hub.model_files import load_model

        folder = {"tiny-sam": "sam_like", "tiny-mae": "mae_like"}[config]
        return load_model(REFERENCE / folder, local_files_only=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_label_anything import CONFIGS as FULL

    from napari_label_anything.model.config import LabelAnythingConfig
    from napari_label_anything.model.label_anything import LabelAnything

    torch.manual_seed(seed)
    return LabelAnything(LabelAnythingConfig.from_dict(FULL[{"mae480": "mae", "sam1024": "sam"}[config]])).eval()


def make_episode(rng: np.random.Generator, n_supports: int = SUPPORTS, size: int = SIZE):
    """3 classes, ``n_supports`` 16-bit supports with masks and a point each."""
    import napari_label_anything as nla

    episode = nla.Episode(["a", "b", "c"])
    for _ in range(n_supports):
        image = rng.integers(0, 60000, (size, size)).astype(np.uint16)
        labels = np.zeros((size, size), np.uint8)
        labels[10:60, 10:60], labels[100:150, 100:150], labels[200:240, 30:90] = 1, 2, 3
        episode.add_support(image, labels=labels, points=[(300, 300, 1)])
    return episode


def make_stack(rng: np.random.Generator, planes: int, size: int = SIZE) -> np.ndarray:
    """A (planes, size, size) uint16 stack with some structure (blobs on noise)."""
    yy, xx = np.mgrid[:size, :size]
    stack = rng.integers(0, 20000, (planes, size, size)).astype(np.float32)
    for z in range(planes):
        for cy, cx in rng.integers(40, size - 40, (6, 2)):
            stack[z] += 35000 * (((yy - cy) ** 2 + (xx - cx) ** 2) < (25 + 2 * z) ** 2)
    return np.clip(stack, 0, 65535).astype(np.uint16)


class Clock:
    """``perf_counter`` with ``torch.cuda.synchronize`` on both ends when the device is CUDA."""

    def __init__(self, device_type: str) -> None:
        self.cuda = device_type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def time(self, fn, reps: int = 1, budget_s: float = float("inf")) -> float:
        """Median seconds of ``fn()`` over up to ``reps`` calls (fewer when over ``budget_s``)."""
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < reps and (not times or time.perf_counter() - start < budget_s):
            t0 = self.now()
            fn()
            times.append(self.now() - t0)
        return statistics.median(times)


def peak_memory_gb(device_type: str) -> float:
    if device_type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


# -- one row (run in its own process) ------------------------------------------------------


def run_row(config: str, backend: str, batch: int, planes: int, device: str, reps: int) -> dict:
    """Time one config x backend x batch size; returns the row as a dict."""
    import torch

    from napari_label_anything.inference import LabelAnythingSegmenter

    rng = np.random.default_rng(0)
    model = build_model(config)
    t0 = time.perf_counter()
    segmenter = LabelAnythingSegmenter(
        model,
        device=device,
        name=config,
        encoder=backend if backend.startswith("onnx") or backend == "auto" else "torch",
        batch_size=batch,
        precision=PRECISION_OF[backend],
        cache_size=max(32, batch),
        release_torch_encoder=True,  # as load_segmenter does: this row's model is its own
    )
    setup = time.perf_counter() - t0
    clock = Clock(segmenter.device_obj.type)
    row = {
        "config": config,
        "backend": backend,
        "batch": batch,
        "device": segmenter.device,
        "threads": torch.get_num_threads(),
        "setup_s": setup,
        "encoder_backend": segmenter.encoder_backend,  # what "auto" ran
        "onnx_exported_now": getattr(segmenter.encoder, "exported_now", None),
        "onnx_quantized_now": getattr(segmenter.encoder, "quantized_now", None),
    }
    if clock.cuda:
        row["gpu"] = torch.cuda.get_device_name()
        torch.cuda.reset_peak_memory_stats()

    # Warm up once: one encoder batch of the row's size, prototypes, a decode (not timed).
    warm = make_episode(np.random.default_rng(1), 1)
    segmenter.encode_batch([warm.supports[0].image] + [make_stack(rng, 1)[0] for _ in range(batch - 1)])
    segmenter.predict(warm, warm.supports[0].image)
    segmenter.clear_cache()

    # End to end: predict_stack on a fresh cache; plane timestamps give the steady state.
    episode = make_episode(rng)
    stack = make_stack(rng, planes)
    stamps: list[float] = []
    t0 = clock.now()
    segmenter.predict_stack(episode, stack, progress=lambda done, total: stamps.append(clock.now()))
    total = clock.now() - t0
    row["planes"] = planes
    row["e2e_s_per_plane"] = total / planes
    first = min(batch, planes)  # the first batch also pays for the supports and prototypes
    row["first_batch_s"] = stamps[first - 1] - t0
    row["cached_s_per_plane"] = (stamps[-1] - stamps[first - 1]) / (planes - first) if planes > first else None

    # Parts, each on what the run above left cached.
    from napari_label_anything.preprocessing import stack_value_range

    value_range = stack_value_range(stack)  # what predict_stack used: the stack's planes are cached
    fresh = make_stack(np.random.default_rng(2), batch)
    row["preprocess_s_per_image"] = clock.time(lambda: segmenter._model_input(fresh[0], value_range), reps=3)
    pixels = torch.from_numpy(np.stack([segmenter._model_input(p, value_range) for p in fresh])).to(
        segmenter.device_obj
    )

    def encode():
        with segmenter._autocast():
            segmenter.encoder(pixels)

    big = config == "sam1024" and not clock.cuda
    row["encoder_s_per_image"] = clock.time(encode, reps=1 if big else reps, budget_s=10) / batch

    def prototypes():
        segmenter._prototypes.clear()
        segmenter.class_embeddings(episode)

    row["prototype_s_per_episode"] = clock.time(prototypes, reps=reps, budget_s=10)
    query = stack[-1]
    encoded = segmenter.stats["encoded_images"]
    row["decode_s_per_plane"] = clock.time(lambda: segmenter.predict(episode, query, value_range=value_range), reps)
    assert segmenter.stats["encoded_images"] == encoded, "decode timing re-encoded the query"
    classes = segmenter.class_embeddings(episode)
    features = segmenter.features(query, value_range)
    with torch.inference_mode():

        def mask_decoder():
            with segmenter._autocast():
                return segmenter.model.decode(features, classes)

        row["mask_decoder_s"] = clock.time(mask_decoder, reps)
        lowres = mask_decoder().float()
        row["upscale_argmax_s"] = clock.time(
            lambda: segmenter.model.upscale_logits(lowres, query.shape).argmax(1).cpu(), reps
        )
    row["peak_gb"] = peak_memory_gb(clock.cuda and "cuda" or "cpu")
    row["stats"] = dict(segmenter.stats)
    return row


def run_official(config: str, planes: int, device: str) -> dict:
    """The official-path proxies on the same model: plain and support-cached, seconds per plane."""
    import torch

    from napari_label_anything.inference import LabelAnythingSegmenter
    from napari_label_anything.inference.label_anything.model_inputs import build_prompt_arrays

    rng = np.random.default_rng(0)
    segmenter = LabelAnythingSegmenter(build_model(config), device=device, name=config, encoder="torch")
    model, clock = segmenter.model, Clock(segmenter.device_obj.type)
    episode = make_episode(rng)
    stack = make_stack(rng, planes)
    arrays = build_prompt_arrays(episode, segmenter.config.image_size, segmenter.config.custom_preprocess)
    prompts = {k: torch.from_numpy(v) for k, v in arrays.items()}
    for key in ("prompt_points", "prompt_bboxes", "prompt_masks"):
        prompts[key] = prompts[key].float()
    dims = torch.tensor([[stack.shape[1:]] + [s.shape for s in episode.supports]])

    def pixels(images) -> torch.Tensor:  # the official demo normalises each image on its own
        return torch.from_numpy(np.stack([segmenter._model_input(i, None) for i in images]))

    def batch(**extra) -> dict:
        return {k: v.to(segmenter.device_obj) for k, v in {**prompts, "dims": dims, **extra}.items()}

    row = {"config": config, "backend": "official", "batch": 1, "device": segmenter.device, "planes": planes}
    with torch.inference_mode():
        t0 = clock.now()  # the supports, once (also the warm-up of the encoder)
        support_embeddings = model.encode_images(pixels([s.image for s in episode.supports]).to(segmenter.device_obj))
        row["setup_s"] = clock.now() - t0
        plain = [
            clock.time(lambda q=q: model(batch(images=pixels([q, *(s.image for s in episode.supports)])[None])))
            for q in stack
        ]

        def cached(q):
            query = model.encode_images(pixels([q]).to(segmenter.device_obj))
            return model(batch(embeddings=torch.cat([query, support_embeddings])[None]))

        cached_times = [clock.time(lambda q=q: cached(q)) for q in stack]
    row["plain_s_per_plane"] = statistics.median(plain)
    row["cached_s_per_plane"] = statistics.median(cached_times)
    row["peak_gb"] = peak_memory_gb(clock.cuda and "cuda" or "cpu")
    return row


# -- driver ----------------------------------------------------------------------------------


def in_subprocess(args: list[str], env: dict) -> dict:
    """Run this script with ``--_row ...`` in a fresh process (its own peak memory) -> the row."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    try:
        proc = subprocess.run([sys.executable, __file__, *args, "--_out", out], env=env, text=True, capture_output=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            return {"error": tail[0][:200]}
        return json.loads(Path(out).read_text())
    finally:
        Path(out).unlink(missing_ok=True)


def parse_reference(text: str | None) -> dict[str, tuple[float, float]]:
    """``guide`` or ``sam1024=78:18.2,mae480=5.5:1.44`` -> {config: (plain, cached)} seconds per plane."""
    if not text:
        return {}
    if text == "guide":
        return dict(GUIDE_OFFICIAL)
    result = {}
    for item in text.split(","):
        name, values = item.split("=")
        plain, cached = values.split(":")
        result[name.strip()] = (float(plain), float(cached))
    return result


def fmt(value, digits: int = 3) -> str:
    """A table cell: ``digits`` decimals under 100, one decimal above; None or NaN as "-"."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def print_grid(title: str | None, header: list[str], lines: list[list[str]]) -> None:
    """Print a table: an optional title line, then columns padded to their widest cell (a short
    line, such as an error row, leaves its last cells empty)."""
    if title:
        print(f"\n{title}")
    lines = [line + [""] * (len(header) - len(line)) for line in lines]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for line in lines:
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))


def load_line() -> str:
    load = os.getloadavg()
    return f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"


def print_table(rows: list[dict], official: dict[str, dict]) -> None:
    header = [
        "config",
        "backend",
        "batch",
        "setup s",
        "enc s/img",
        "proto s/ep",
        "dec s/plane",
        "planes",
        "e2e s/plane",
        "cached s/plane",
        "peak GB",
        "x official plain",
        "x official cached",
    ]
    lines = []
    for row in rows:
        ref = official.get(row["config"], {})
        if "error" in row:
            lines.append([row["config"], row["backend"], str(row.get("batch", "")), "error: " + row["error"]])
            continue
        if row["backend"] == "official":
            lines.append(
                [row["config"], f"official ({ref.get('source', 'measured')})", "1", fmt(row.get("setup_s")), "-", "-"]
                + ["-", fmt(row.get("planes")), fmt(row["plain_s_per_plane"]), fmt(row["cached_s_per_plane"])]
                + [fmt(row.get("peak_gb"), 2), "1.00", "1.00"]
            )
            continue
        cached = row.get("cached_s_per_plane") or row["e2e_s_per_plane"]
        plain_x = ref.get("plain_s_per_plane", float("nan")) / row["e2e_s_per_plane"]
        cached_x = ref.get("cached_s_per_plane", float("nan")) / cached
        lines.append(
            [row["config"], row["backend"], str(row["batch"]), fmt(row["setup_s"], 2)]
            + [fmt(row[k]) for k in ("encoder_s_per_image", "prototype_s_per_episode", "decode_s_per_plane")]
            + [str(row["planes"]), fmt(row["e2e_s_per_plane"]), fmt(row.get("cached_s_per_plane"))]
            + [fmt(row["peak_gb"], 2), fmt(plain_x, 2), fmt(cached_x, 2)]
        )
    print_grid(None, header, lines)


def print_breakdown(rows: list[dict]) -> None:
    """Where a cached plane's time goes: preprocessing, encoder, mask decoder, upscale+argmax."""
    print("\nbreakdown of a cached plane (s): preprocess | encoder | mask decoder | upscale+argmax | rest")
    for row in rows:
        if "error" in row or row["backend"] == "official":
            continue
        parts = [row[k] for k in ("preprocess_s_per_image", "encoder_s_per_image", "mask_decoder_s")]
        parts.append(row["upscale_argmax_s"])
        cached = row.get("cached_s_per_plane") or row["e2e_s_per_plane"]
        print(
            f"  {row['config']:8s} {row['backend']:10s} b{row['batch']:<3d} "
            + " | ".join(fmt(p) for p in parts)
            + f" | {fmt(cached - sum(parts))}  (cached plane {fmt(cached)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny-sam,tiny-mae,mae480", help=f"comma-separated: {', '.join(CONFIGS)}")
    parser.add_argument(
        "--backends", default=None, help="torch, onnx, onnx-int8 (CPU); torch, torch-bf16, torch-fp16 (CUDA)"
    )
    parser.add_argument("--batch-sizes", default="1", help="comma-separated query batch sizes (CUDA: e.g. 1,8)")
    parser.add_argument("--planes", type=int, default=32, help="planes of the end-to-end stack")
    parser.add_argument("--sam-planes", type=int, default=3, help="planes for sam1024 on the CPU (32 x ~9 s is long)")
    parser.add_argument("--official-planes", type=int, default=3, help="planes timed on the official-path proxy")
    parser.add_argument("--official-reference", default=None, help="'guide' or 'sam1024=78:18.2,mae480=5.5:1.44'")
    parser.add_argument("--no-official", action="store_true", help="no official-path proxy rows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cache-dir", default=None, help="NLA_CACHE_DIR for the ONNX export (default: a temp dir)")
    parser.add_argument("--json", default=None, help="write every row (with the breakdown) here")
    parser.add_argument("--_row", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._row:  # child: one row
        config, backend, batch, planes = args._row.split(":")
        if backend == "official":
            row = run_official(config, int(planes), args.device)
        else:
            row = run_row(config, backend, int(batch), int(planes), args.device, args.reps)
        Path(args._out).write_text(json.dumps(row))
        return

    cuda = args.device.startswith("cuda")
    backends = (args.backends or ("torch,torch-bf16,torch-fp16" if cuda else "torch,onnx")).split(",")
    batches = [int(b) for b in args.batch_sizes.split(",")]
    configs = args.configs.split(",")
    for name in configs:
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
    for backend in backends:
        if backend not in PRECISION_OF:
            parser.error(f"unknown backend {backend!r}; choose from {', '.join(PRECISION_OF)}")
    env = dict(os.environ)
    env["NLA_CACHE_DIR"] = args.cache_dir or env.get("NLA_CACHE_DIR") or tempfile.mkdtemp(prefix="nla-bench-")
    references = parse_reference(args.official_reference)

    print(f"# {load_line()}; device {args.device}; {SUPPORTS} supports, 3 classes, {SIZE}x{SIZE} uint16 planes")
    rows: list[dict] = []
    official: dict[str, dict] = {}
    started = time.perf_counter()
    for config in configs:
        planes = args.sam_planes if config == "sam1024" and not cuda else args.planes
        if planes != args.planes:
            print(f"# {config}: end-to-end over {planes} planes, not {args.planes} (--sam-planes; CPU too slow)")
        if config in references:
            plain, cached = references[config]
            official[config] = {"plain_s_per_plane": plain, "cached_s_per_plane": cached, "source": "reference"}
            row = {"config": config, "backend": "official", "plain_s_per_plane": plain, "cached_s_per_plane": cached}
            rows.append({**row, "batch": 1, "setup_s": None, "planes": None, "peak_gb": None})
        elif not args.no_official:
            row = in_subprocess(["--_row", f"{config}:official:1:{args.official_planes}", "--device", args.device], env)
            row.setdefault("config", config)
            row.setdefault("backend", "official")
            rows.append(row)
            if "error" not in row:
                official[config] = {**row, "source": f"measured, {args.official_planes} planes"}
            print(f"# {config} official proxy done ({time.perf_counter() - started:.0f} s)", flush=True)
        for backend in backends:
            if backend.startswith("onnx") and cuda:
                continue
            for batch in batches if cuda else batches[:1]:
                spec = f"{config}:{backend}:{batch}:{planes}"
                cmd = ["--_row", spec, "--device", args.device, "--reps", str(args.reps)]
                row = in_subprocess(cmd, env)
                row.setdefault("config", config)
                row.setdefault("backend", backend)
                rows.append(row)
                print(f"# {spec} done ({time.perf_counter() - started:.0f} s; {load_line()})", flush=True)

    print()
    print_table(rows, official)
    print_breakdown(rows)
    print(f"\n# total {time.perf_counter() - started:.0f} s; {load_line()}")
    print("# x official plain = official plain / our e2e (s/plane); x official cached = official cached / our cached")
    for config, ref in official.items():
        print(f"# official proxy for {config}: {ref['source']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "official": official, "load": load_line()}, indent=2))


if __name__ == "__main__":
    main()
