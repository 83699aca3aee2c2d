"""``napari-label-anything predict``: an episode over files, folders, stacks and zarr arrays.

Everything that can fail on the user's input (episode, inputs, output names and folder, plane
axes, dask.distributed being installed) is checked before the model loads, and the outputs are
claimed for the run (``batch.jobs.claimed_outputs``); the work itself is ``batch.jobs`` (one
process) or ``batch.cluster`` (``--workers`` / ``--scheduler``).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path


def add_encoder_option(parser: argparse.ArgumentParser) -> None:
    """``--encoder``, as ``predict`` and ``embed`` take it."""
    from ..inference.encoder_backends import ENCODER_OPTIONS

    parser.add_argument(
        "--encoder", choices=ENCODER_OPTIONS, default="auto",
        help="image encoder of Label Anything models: auto (default: onnx on a CPU when ONNX Runtime is "
        "installed, else torch; torch on CUDA/MPS); torch; onnx: exported once to ONNX (cached), the same "
        "results, faster on a CPU; onnx-int8: that export with int8 weights, faster still but approximate "
        "(docs/benchmarks.md). The ONNX ones run on the CPU only",
    )  # fmt: skip


def say(message: str) -> None:
    """A progress line of a one-off step (``load_segmenter``'s ``on_status``), on stderr."""
    import sys

    print(message, file=sys.stderr, flush=True)


def add_parser(sub) -> None:
    predict = sub.add_parser(
        "predict",
        help="segment images, stacks, folders and zarr arrays from an episode",
        description="Segment every input with one episode. A folder stands for the images in it "
        "(TIFF, PNG, JPEG, BMP, .zarr; CZI, ND2, LIF with the [bioio] extra); a .zarr path is a zarr array or "
        "an OME-Zarr image (first level), read plane by plane. Hyperstack and OME-TIFF axes come from the files: "
        "T and Z are planes, C the channels (docs/files.md).",
    )
    predict.add_argument("queries", nargs="+", help="images, stacks, folders or .zarr arrays / OME-Zarr images")
    predict.add_argument("--model", required=True, help="hub repo id or checkpoint folder")
    predict.add_argument("--episode", help="an .episode file saved from Python or napari")
    predict.add_argument("--classes", help="comma-separated class names (with --support)")
    predict.add_argument(
        "--support",
        action="append",
        help="IMAGE:LABELS support with painted prompts; a stack with a label stack of its shape gives one "
        "support per painted plane, which keeps the planes around it",
    )
    predict.add_argument("--out", default="predictions", help="output folder (default: ./predictions)")
    predict.add_argument(
        "--format", choices=("tiff", "ome-zarr"), default="tiff",
        help="tiff (<name>_labels.tif, default) or ome-zarr (<name>_labels.ome.zarr, written plane by plane)",
    )  # fmt: skip
    predict.add_argument("--recursive", action="store_true", help="also take the inputs in sub-folders of folders")
    predict.add_argument(
        "--objects", action="store_true",
        help="also split each output into objects (one label per object; touching objects of a class split by a "
        "watershed) and measure them: <name>_objects.tif and <name>_objects.csv (class, area/volume, mean "
        "intensity, centroid, bounding box) beside each output; 2D images and 3D stacks, in one process",
    )  # fmt: skip
    predict.add_argument(
        "--probabilities", nargs="?", const="float32", choices=("float32", "uint8"), metavar="DTYPE",
        help="also write each input's class probabilities, one channel per class with the background first: "
        "<name>_probabilities.tif (ImageJ hyperstack) or .ome.zarr (--format), plane by plane; DTYPE float32 "
        "(0..1, default) or uint8 (0..255); in one process",
    )  # fmt: skip
    predict.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    add_encoder_option(predict)
    predict.add_argument("--axis", type=int, default=0, help="plane axis of stacks (default 0)")
    predict.add_argument(
        "--channels",
        help="the channels the model sees of inputs with a channel axis other than colour (e.g. a 2-channel "
        "hyperstack): one (0) is read as a grey image, several (0,2) as their mean; docs/files.md",
    )
    predict.add_argument("--class-rows", help="class-token rows, e.g. 0,28,37 (default 0..N)")
    predict.add_argument(
        "--normalise",
        choices=("auto", "stack", "plane"),
        default="auto",
        help="intensity of a stack's planes: one range for the stack, each plane its own (for brightness "
        "that drifts), or auto (default: each plane its own where the planes differ in brightness, "
        "for models that support it)",
    )
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    predict.add_argument("--cache", help="folder of stored image features (see 'embed'); reused and filled")
    scale = predict.add_mutually_exclusive_group()
    scale.add_argument("--workers", type=int, help="run on a local dask.distributed cluster of N processes")
    scale.add_argument("--scheduler", metavar="ADDRESS", help="run on a running dask.distributed scheduler")
    predict.add_argument(
        "--planes-per-task", type=int, default=8, help="planes per cluster task for ome-zarr outputs (default 8)"
    )
    predict.set_defaults(func=run)


def episode_from_args(args: argparse.Namespace):
    from ..episode import Episode
    from ..io.label_files import read_image

    if args.episode:
        return Episode.load(args.episode)
    if not args.classes or not args.support:
        raise ValueError("give --episode FILE, or --classes and at least one --support IMAGE:LABELS")
    episode = Episode([c.strip() for c in args.classes.split(",")])
    for spec in args.support:
        image_path, sep, labels_path = spec.rpartition(":")
        if not sep or not image_path:
            raise ValueError(f"--support needs IMAGE:LABELS (a label image of painted prompts), got {spec!r}")
        add_supports(episode, read_image(image_path), read_image(labels_path), Path(image_path).name)
    return episode


def add_supports(episode, image, labels, name: str) -> None:
    """One support per prompted plane: a 2D image with its labels, or a stack with a label stack
    of its shape (minus colour), each painted plane added with ``plane=`` so that it keeps the
    planes around it (as the widget does)."""
    import numpy as np

    from ..stacks import stack_layout

    layout = stack_layout(image.shape)
    if not layout.plane_axes:  # one plane, grey or colour
        episode.add_support(image, labels=labels, name=name)
        return
    if labels.shape != layout.labels_shape:
        raise ValueError(
            f"support {name} is a stack of shape {image.shape}: its labels must be a label stack of shape "
            f"{layout.labels_shape} (prompts painted on some planes), got {labels.shape}"
        )
    painted = [index for index in layout.plane_indices() if np.any(labels[index])]
    if not painted:
        raise ValueError(f"the labels of support {name} have no prompt on any plane")
    for index in painted:
        episode.add_support(image, labels=labels, plane=index, name=f"{name} [{', '.join(map(str, index))}]")


def plan(args: argparse.Namespace) -> list:
    """The jobs of a run, every one checked (readable input, planes, unique free output)."""
    from ..batch import jobs as batch
    from ..batch.jobs import FORMATS, BatchJob, check_job, expand_inputs, output_paths
    from ..io.label_files import check_writable_folder

    try:
        rows = [int(r) for r in args.class_rows.split(",")] if args.class_rows else None
    except ValueError:
        raise ValueError(f"--class-rows must be comma-separated integers, got {args.class_rows!r}") from None
    options = {"class_rows": rows} if rows is not None else {}
    if args.normalise != "auto":
        options["normalise"] = args.normalise
    inputs = expand_inputs(args.queries, recursive=args.recursive, skip=[p for p in (args.out, args.cache) if p])
    targets = output_paths(inputs, args.out, FORMATS[args.format])
    metadata = {"model": args.model}
    if args.encoder != "torch":  # the outputs say how they were made (onnx-int8 is approximate)
        from ..hub.device import resolve_device
        from ..hub.registry import CLASSIC, resolve_model_name
        from ..inference.encoder_backends import resolve_encoder

        if resolve_model_name(args.model) != CLASSIC:  # classic has no image encoder to swap
            encoder = resolve_encoder(args.encoder, resolve_device(args.device).type)
            if encoder != "torch":
                metadata["encoder"] = encoder
        elif args.encoder != "auto":
            print(f"note: the {CLASSIC} model has no image encoder; --encoder {args.encoder} is not used")
    channels = batch.parse_channels(args.channels)
    more = {"probabilities": args.probabilities}
    jobs = [
        BatchJob(str(source), str(target), args.format, args.axis, options, metadata, args.objects, channels, **more)
        for source, target in zip(inputs, targets, strict=True)
    ]
    if not args.overwrite:
        batch.refuse_existing(jobs)
    check_writable_folder(args.out)
    for job in jobs:
        check_job(job)
    return jobs


def run(args: argparse.Namespace) -> int:
    episode = episode_from_args(args)
    episode.validate()
    distributed = args.workers is not None or args.scheduler
    if distributed and args.objects:
        raise ValueError("--objects runs in one process: leave out --workers / --scheduler")
    if distributed and args.probabilities:
        raise ValueError("--probabilities runs in one process: leave out --workers / --scheduler")
    jobs = plan(args)
    if distributed:
        from ..batch.cluster import require_distributed

        require_distributed()
        if args.planes_per_task < 1:
            raise ValueError(f"--planes-per-task must be at least 1, got {args.planes_per_task}")
    from ..batch.jobs import claimed_outputs

    with claimed_outputs(jobs, overwrite=args.overwrite) as notes:  # a second run into these names stops
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return _run_on_cluster(args, episode, jobs) if distributed else _run_here(args, episode, jobs)


def _run_here(args: argparse.Namespace, episode, jobs) -> int:
    from tqdm import tqdm

    from ..batch.jobs import run_job
    from ..inference import load_segmenter

    start = time.perf_counter()
    segmenter = load_segmenter(args.model, device=args.device, embeddings=args.cache, encoder=args.encoder,
                               on_status=say)  # fmt: skip
    print(f"model: {segmenter!r} loaded in {time.perf_counter() - start:.1f} s{encoder_summary(segmenter)}")
    if args.cache and getattr(segmenter, "store", None) is None:
        print(f"note: {segmenter.name} has no image features to cache; --cache is not used")
    for job in jobs:
        with tqdm(desc=Path(job.source).name, unit="plane", disable=args.quiet) as bar, missing_chunks_as_lines():

            def progress(done: int, total: int, bar=bar) -> None:
                bar.total = total
                bar.update(1)

            result = run_job(segmenter, episode, job, progress=progress)
        _report(result)
        if job.probabilities:
            from ..batch.jobs import probabilities_path

            print(f"  class probabilities ({job.probabilities}) -> {probabilities_path(job)}")
    return 0


@contextmanager
def missing_chunks_as_lines():
    """Within the block, a zarr input's ``MissingChunksWarning`` (one per plane) is printed as one
    line ``warning: ...`` on stderr, above the progress bar; other warnings as usual."""
    import warnings

    from tqdm import tqdm

    from ..io.ome_zarr import MissingChunksWarning

    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, MissingChunksWarning):
                return shown(message, category, filename, lineno, file, line)
            tqdm.write(f"warning: {' '.join(str(message).split())}", file=sys.stderr)

        warnings.simplefilter("always", MissingChunksWarning)  # the input warns once per plane itself
        warnings.showwarning = show
        yield


def encoder_summary(segmenter) -> str:
    """The end of the model line: the image encoder that runs (for Label Anything models)."""
    from ..inference.encoder_backends import encoder_label

    label = encoder_label(segmenter)
    return "" if label is None else f"; image encoder: {label}"


def _report(result) -> None:
    print(f"{result.source}: {result.planes} plane(s) in {result.seconds:.1f} s -> {result.target}  {result.counts}")


def _run_on_cluster(args: argparse.Namespace, episode, jobs) -> int:
    from tqdm import tqdm

    from ..batch.cluster import ModelSpec, close, connect, run_batch
    from ..batch.jobs import probe

    total = sum(job.layout(probe(job.source)[0]).n_planes for job in jobs)
    # Workers may run in another folder (--scheduler): they get absolute paths; the outputs'
    # metadata keeps each query as given, as the single-process run writes it.
    jobs = [
        replace(job, source=str(Path(job.source).resolve()), target=str(Path(job.target).resolve()),
                metadata={**job.metadata, "query": job.source})
        for job in jobs
    ]  # fmt: skip
    start = time.perf_counter()
    client = connect(workers=args.workers, scheduler=args.scheduler)
    try:
        where = args.scheduler or f"a local cluster of {args.workers} worker process(es)"
        print(f"dask: {where}, started in {time.perf_counter() - start:.1f} s; each worker loads {args.model!r} once")
        cache = str(Path(args.cache).resolve()) if args.cache else None
        spec = ModelSpec(args.model, args.device, cache, args.encoder)
        with tqdm(total=total, desc=f"{len(jobs)} input(s)", unit="plane", disable=args.quiet) as bar:

            def done(result, planes: int) -> None:
                bar.update(planes)
                if result is not None:
                    bar.write(f"{result.source}: {result.planes} plane(s) -> {result.target}  {result.counts}")

            run_batch(client, spec, episode, jobs, planes_per_task=args.planes_per_task, done=done)
    finally:
        close(client)
    print(f"{len(jobs)} input(s) in {time.perf_counter() - start:.1f} s")
    return 0
