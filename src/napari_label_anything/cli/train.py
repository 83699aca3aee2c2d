"""``train``, ``finetune`` and ``evaluate``: thin wrappers over ``training`` and ``evaluation``.

Data on the command line: ``--data`` takes folders of images + label images and ``.episode``
files (``training.dataset_specs.as_dataset``), ``--coco ANNOTATIONS IMAGES`` a COCO-format
dataset (with ``--fold`` for the COCO-20i split) and ``--synthetic N`` N generated samples.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def _dataset(args: argparse.Namespace, split: str = "val"):
    """The dataset named by ``--data`` / ``--coco`` / ``--synthetic`` (exactly one of them)."""
    given = [bool(args.data), bool(args.coco), args.synthetic is not None]
    if sum(given) != 1:
        raise ValueError("give the data as exactly one of --data PATH..., --coco ANNOTATIONS IMAGES, --synthetic N")
    if args.coco:
        from ..training.datasets.coco import CocoDataset

        annotations, images = args.coco
        return CocoDataset(annotations, images, fold=args.fold, split=split)
    if args.synthetic is not None:
        from ..training.datasets.synthetic import SyntheticDataset

        return SyntheticDataset(args.synthetic, seed=args.data_seed)
    from ..training.dataset_specs import as_dataset

    missing = [p for p in args.data if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"no such data: {', '.join(missing)}")
    return as_dataset(list(args.data))


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", metavar="PATH", help="folders of images + label images, .episode files")
    parser.add_argument("--coco", nargs=2, metavar=("ANNOTATIONS", "IMAGES"), help="a COCO instances JSON + images")
    parser.add_argument("--fold", type=int, help="with --coco: the COCO-20i fold (0-3); default all classes")
    parser.add_argument("--synthetic", type=int, metavar="N", help="N generated samples of the synthetic dataset")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of --synthetic (default 0)")


def _evaluate(args: argparse.Namespace) -> int:
    from ..inference import load_segmenter
    from ..training.evaluation import evaluate

    dataset = _dataset(args, split="val")
    # Whole images resized to the model's input, as the official validation does (no tiling).
    segmenter = load_segmenter(args.model, device=args.device, tiling="resize")
    seeds = [args.seed + r for r in range(args.reruns)]
    results = []
    for seed in seeds:
        result = evaluate(segmenter, dataset, args.ways, args.shots, args.episodes, seed=seed, official=args.official)
        print(result.table())
        results.append(result)
    summary: dict[str, Any] = {
        "model": segmenter.name,
        "ways": args.ways,
        "shots": args.shots,
        "episodes": args.episodes,
        "seeds": seeds,
        "runs": [r.as_dict() for r in results],
        "miou": _mean([r.miou for r in results]),
        "fb_iou": _mean([r.fb_iou for r in results]),
    }
    if args.official:
        summary["official"] = {k: _mean([r.official[k] for r in results]) for k in results[0].official}
    if len(results) > 1:
        print(f"mean over seeds {seeds[0]}..{seeds[-1]}: mIoU {_score(summary['miou'])}, "
              f"FB-IoU {_score(summary['fb_iou'])}")  # fmt: skip
        if args.official:
            print("official: " + ", ".join(f"{k} {_score(v)}" for k, v in summary["official"].items()))
    if args.json:
        from ..io.label_files import atomic_write

        with atomic_write(args.json) as partial:
            partial.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def _score(value: float | None) -> str:
    """A score for the console: 4 decimals, or "n/a" where it is undefined (None or NaN; e.g.
    FB-IoU on data without background)."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _mean(values: list[float | None]) -> float | None:
    """Mean of the finite values (None when there are none: JSON has no NaN)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def _train(args: argparse.Namespace) -> int:
    from ..training.config import TrainConfig
    from ..training.trainer import train

    config = TrainConfig.from_file(args.config)
    changes = {k: v for k, v in (("out", args.out), ("device", args.device), ("resume", _resume(args))) if v}
    if changes:
        config = config.replace(**changes)
    result = train(config, overwrite=args.overwrite)
    _report(result)
    return 0


def _resume(args: argparse.Namespace):
    """``--resume``: True for latest / true (the newest checkpoint in out), else the folder given."""
    return True if str(args.resume).lower() in ("true", "latest") else args.resume


def _finetune(args: argparse.Namespace) -> int:
    from ..training.trainer import finetune

    data = _dataset(args, split="train")
    validation = None
    if args.validation:
        from ..training.dataset_specs import as_dataset

        validation = as_dataset(list(args.validation))
    result = finetune(
        args.model, data, args.out, steps=args.steps, validation=validation, lr=args.lr,
        freeze_encoder=not args.unfreeze_encoder, device=args.device, seed=args.seed, register_as=args.register,
        overwrite=args.overwrite, **({"resume": _resume(args)} if args.resume else {}),
    )  # fmt: skip
    _report(result)
    if args.register:
        print(f"registered as {args.register!r} (model picker, --model {args.register})")
    return 0


def _report(result) -> None:
    losses = result.losses
    if losses:
        print(f"{result.steps} step(s); loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    if result.before is not None and result.after is not None:
        print(f"held-out mIoU {_score(result.before['miou'])} -> {_score(result.after['miou'])}, "
              f"FB-IoU {_score(result.before['fb_iou'])} -> {_score(result.after['fb_iou'])}")  # fmt: skip
    if result.cancelled:
        print("stopped early; the state reached is saved and resumable")
    print(f"checkpoint: {result.checkpoint}")


def _add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace an earlier run in the output folder (its final/, checkpoints and log are removed first); "
        "without it, or --resume, a folder holding a run is refused",
    )  # fmt: skip


def add_parsers(sub) -> None:
    """Add ``train``, ``finetune`` and ``evaluate`` to the command line's subparsers."""
    train = sub.add_parser("train", help="train or continue training from a config file (YAML or JSON)")
    train.add_argument("--config", required=True, help="the run's options (see docs/training.md)")
    train.add_argument("--out", help="output folder (overrides the config's out)")
    train.add_argument("--device", help="auto, cuda, mps or cpu (overrides the config)")
    train.add_argument("--resume", help="a checkpoint folder, or latest (= true) for the newest in out")
    _add_overwrite_option(train)
    train.set_defaults(func=_train)

    finetune = sub.add_parser("finetune", help="fine-tune a model on your own labelled images or episodes")
    finetune.add_argument("--model", required=True, help="model name, hub repo id or checkpoint folder")
    _add_data_options(finetune)
    finetune.add_argument("--validation", nargs="+", metavar="PATH", help="held-out data, scored before and after")
    finetune.add_argument("--out", required=True, help="output folder (OUT/final is the new checkpoint)")
    finetune.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    finetune.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    finetune.add_argument("--unfreeze-encoder", action="store_true", help="also train the image encoder")
    finetune.add_argument("--register", metavar="NAME", help="register the result under NAME (model picker)")
    finetune.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    finetune.add_argument("--seed", type=int, default=0, help="seed of episodes and initialisation (default 0)")
    finetune.add_argument("--resume", help="continue the run in --out: latest (its newest checkpoint) or a folder")
    _add_overwrite_option(finetune)
    finetune.set_defaults(func=_finetune)

    evaluate = sub.add_parser("evaluate", help="N-way K-shot mIoU / FB-IoU of a model on a dataset")
    evaluate.add_argument("--model", default="classic", help="model name, repo id, folder, or classic (default)")
    _add_data_options(evaluate)
    evaluate.add_argument("--ways", type=int, default=1, help="classes per episode, N (default 1)")
    evaluate.add_argument("--shots", type=int, default=1, help="support images per class, K (default 1)")
    evaluate.add_argument("--episodes", type=int, default=100, help="episodes per run (default 100)")
    evaluate.add_argument("--seed", type=int, default=42, help="episode seed (default 42)")
    evaluate.add_argument("--reruns", type=int, default=1, help="runs with seeds SEED..SEED+R-1, averaged")
    evaluate.add_argument("--official", action="store_true", help="also the official StrictMeanIoU/BmIoU/FBIoU")
    evaluate.add_argument("--json", help="write the scores to this JSON file")
    evaluate.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    evaluate.set_defaults(func=_evaluate)
