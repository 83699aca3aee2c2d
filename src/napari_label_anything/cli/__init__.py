"""The ``napari-label-anything`` command line: demo, batch prediction, embeddings, model management,
training, fine-tuning and evaluation.

A thin layer over the public API; every option maps to an argument of ``Episode``,
``load_segmenter`` or ``Segmenter.predict_stack``. ``predict`` (batches, OME-Zarr, dask) lives in
``cli/predict.py``, ``train``/``finetune``/``evaluate`` in ``cli/train.py``; ``main`` is the console
script's entry point.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import predict, train


def _embed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..inference import load_segmenter
    from ..io.label_files import read_image

    missing = [q for q in args.images if not Path(q).is_file()]
    if missing:
        raise FileNotFoundError(f"no such image file(s): {', '.join(missing)}")
    segmenter = load_segmenter(args.model, device=args.device, embeddings=args.cache, encoder=args.encoder,
                               on_status=predict.say)  # fmt: skip
    if getattr(segmenter, "store", None) is None:
        raise ValueError(f"{segmenter.name} has no image features to precompute; choose a Label Anything model")
    for path in args.images:
        start = time.perf_counter()
        image = read_image(path)
        before = segmenter.stats["encoded_images"]
        with tqdm(desc=Path(path).name, unit="plane", disable=args.quiet) as bar:
            planes = segmenter.embed_stack(image, axis=args.axis, progress=lambda done, total: bar.update(1))
        encoded = segmenter.stats["encoded_images"] - before
        print(f"{path}: {planes} plane(s), {encoded} encoded, {planes - encoded} already stored, "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    print(f"embeddings in {Path(args.cache).resolve()} ({len(segmenter.store)} entries)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..hub.model_files import load_model

    model = load_model(args.model)
    c = model.config
    n = sum(p.numel() for p in model.parameters())
    print(
        f"{args.model}: encoder {c.encoder}, image size {c.image_size}, embed dim {c.embed_dim}, "
        f"class-token pool {c.class_bank_size or 'none'}, {n / 1e6:.1f} M parameters"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..demo_episodes import iou_per_class, load_sample
    from ..inference import load_segmenter
    from ..io.label_files import check_writable_folder, overlay_png, write_labels

    clock = time.perf_counter()

    def step(message: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        print(f"  {message:<58s} {now - clock:6.2f} s")
        clock = now

    print(f"napari-label-anything demo (sample {args.sample!r}, model {args.model!r}, device {args.device!r})")
    out = check_writable_folder(args.out)
    sample = load_sample(args.sample, planes=args.planes)
    episode = sample.episode()
    prompted = int((sample.scribbles > 0).sum())
    step(f"loaded sample: {sample.description[:30]}..., {prompted} scribbled px")
    segmenter = load_segmenter(args.model, device=args.device, on_status=predict.say)
    step(f"loaded model {segmenter.name!r} on {segmenter.device}{predict.encoder_summary(segmenter)}")
    if sample.query.ndim == sample.support.ndim:
        segmenter.predict(episode, sample.support)  # fits / encodes the supports once
        step("prepared the episode (fit or encode supports)")
        labels = segmenter.predict(episode, sample.query)
        step(f"predicted the {sample.query.shape[0]}x{sample.query.shape[1]} query")
    else:
        labels = segmenter.predict_stack(episode, sample.query)
        step(f"predicted a stack of {sample.query.shape[0]} planes")
    tiff = write_labels(out / f"{sample.name}_labels.tif", labels, episode.classes, {"model": segmenter.name})
    first = labels if labels.ndim == 2 else labels[0]
    query0 = sample.query if labels.ndim == 2 else sample.query[0]
    png = overlay_png(out / f"{sample.name}_overlay.png", query0, first)
    overlay_png(out / f"{sample.name}_support.png", sample.support, sample.scribbles)
    step(f"wrote {tiff.name}, {png.name}")
    scores = iou_per_class(labels, sample.answer, episode.n_classes)
    print("IoU per class against the known answer:")
    for k, name in enumerate(episode.classes, start=1):
        print(f"  {name:<20s} {scores[k]:.3f}")
    foreground = [scores[k] for k in range(1, episode.n_classes + 1)]
    print(f"  {'mean (classes)':<20s} {np.nanmean(foreground):.3f}")
    print(f"outputs in {out.resolve()}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from ..hub.model_files import hub_cache_dir, is_offline
    from ..hub.registry import list_models, register_local_model, unregister_local_model

    if args.add:
        name, folder = args.add
        print(f"registered {name!r} -> {register_local_model(name, folder)}")
        return 0
    if args.remove:
        unregister_local_model(args.remove)
        print(f"removed {args.remove!r}")
        return 0
    print(f"hub cache: {hub_cache_dir()}{'  (offline: HF_HUB_OFFLINE is set)' if is_offline() else ''}")
    print(f"{'name':<20s} {'cached':<7s} {'size':>8s}  source / description")
    for row in list_models():
        size = f"{row.size_mb:.0f} MB" if row.size_mb else "-"
        print(f"{row.name:<20s} {'yes' if row.cached else 'no':<7s} {size:>8s}  {row.source}: {row.description}")
        if row.path is not None:
            print(f"{'':<38s}{row.path}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from ..hub.model_files import cached_checkpoint, download_checkpoint
    from ..hub.registry import find_known

    known = find_known(args.name)
    repo_id = known.repo_id if known else args.name
    cached = cached_checkpoint(repo_id)
    if cached is not None and not args.force:
        print(f"{repo_id} is already cached in {cached}")
        return 0
    folder = download_checkpoint(repo_id, progress=not args.quiet)
    print(f"downloaded {repo_id} to {folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-label-anything",
        description="Few-shot multi-class segmentation with visual prompts (Label Anything).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    predict.add_parser(sub)
    train.add_parsers(sub)

    embed = sub.add_parser("embed", help="precompute and store the image features of images or stacks")
    embed.add_argument("images", nargs="+", help="images or stacks (TIFF, PNG, JPEG)")
    embed.add_argument("--model", required=True, help="a Label Anything model name, repo id or folder")
    embed.add_argument("--cache", required=True, help="folder of the embedding store (zarr entries)")
    embed.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    predict.add_encoder_option(embed)  # entries are kept per encoder: embed with the one predict will use
    embed.add_argument("--axis", type=int, default=0, help="plane axis of stacks (default 0)")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(func=_embed)

    demo = sub.add_parser("demo", help="run a complete few-shot episode on a bundled sample")
    demo.add_argument("--model", default="auto", help="auto (default), classic, a model name, repo id or folder")
    demo.add_argument("--sample", default="textures", help="bundled sample (default: textures)")
    demo.add_argument("--planes", type=int, default=1, help="make the query a stack of this many planes")
    demo.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
    demo.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    demo.set_defaults(func=_demo)

    models = sub.add_parser("models", help="list known models, their cache status and size")
    models.add_argument("--add", nargs=2, metavar=("NAME", "FOLDER"), help="register a local checkpoint folder")
    models.add_argument("--remove", metavar="NAME", help="forget a registered local folder")
    models.set_defaults(func=_models)

    download = sub.add_parser("download", help="download a published checkpoint into the hub cache")
    download.add_argument("name", help="model name (see 'models') or hub repo id")
    download.add_argument("--force", action="store_true", help="download even if cached")
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    download.set_defaults(func=_download)

    info = sub.add_parser("info", help="describe a checkpoint")
    info.add_argument("model", help="hub repo id or checkpoint folder")
    info.set_defaults(func=_info)
    return parser


MAX_ERROR_CHARS = 600  # an error line longer than this keeps its start and its end (what to do)
TRACEBACK_VARIABLE = "NAPARI_LABEL_ANYTHING_TRACEBACK"  # set to 1: unexpected errors show their traceback
# The user's input or environment, not our bugs: one line, no traceback.
EXPECTED_ERRORS = (ValueError, TypeError, OSError, RuntimeError, MemoryError, ArithmeticError, ImportError)


def error_line(err: BaseException) -> str:
    """``error: ...``: the message of ``err`` on one line (whitespace runs become one space),
    at most ``MAX_ERROR_CHARS`` characters: a longer one keeps its first and last characters
    around an ellipsis (an episode of 100,000 classes does not print them all)."""
    message = " ".join(str(err).split()) or type(err).__name__
    if not isinstance(err, EXPECTED_ERRORS):
        message = f"{type(err).__name__}: {message} (unexpected; {TRACEBACK_VARIABLE}=1 shows the traceback)"
    if len(message) > MAX_ERROR_CHARS:
        tail = MAX_ERROR_CHARS // 3
        message = f"{message[: MAX_ERROR_CHARS - tail - 3]} … {message[-tail:]}"
    return f"error: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        if not isinstance(err, EXPECTED_ERRORS) and os.environ.get(TRACEBACK_VARIABLE):
            raise
        print(error_line(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; files written so far are complete, none is half-written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
