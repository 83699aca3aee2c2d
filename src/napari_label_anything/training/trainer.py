"""The training loop: episodes -> focal loss -> AdamW, with checkpoints, resume, logs and validation.

``train(config)`` runs a ``TrainConfig``; ``finetune(model, data, out)`` is the short Python call
for adapting a model to one's own annotations. One step:

1. plan a batch of episodes with a generator seeded by (seed, step): the batch depends only on
   the seed and the step, so a resumed run and every distributed rank plan what a plain
   uninterrupted run plans; a rank builds (reads) only its share (``distributed.share``);
2. collate it; with a frozen encoder the images' encoder features come from the cache
   (``features.EncoderFeatureCache``), else the images go through the encoder;
3. forward (bf16 autocast on CUDA), focal loss (``distributed.global_focal_loss``: the plain
   ``loss.focal_loss`` in one process), backward, gradient-norm clipping, AdamW, scheduler.

Checkpoints (``run_state.py``) are the published format plus the resume state; validation
scores the model with ``evaluation.evaluate`` on held-out data; ``out/log.csv`` gets one row per
step. Only distributed rank 0 writes anything.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig

ProgressCallback = Callable[[int, int, float, float], Any]
LOG_COLUMNS = ("step", "loss", "lr", "seconds", "val_miou", "val_fb_iou")


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        checkpoint: ``out/final`` (or, after a cancel, the ``checkpoint-STEP`` saved then).
        history: one dict per step (``step``, ``loss``, ``lr``, ``seconds``), validation steps
            with ``val_miou`` and ``val_fb_iou`` too (also those before the first step: step 0).
        best: the best validation (``step``, ``miou``, ``fb_iou``), or None without validation.
        before, after: validation metrics (``miou``, ``fb_iou``) before the first and after the
            last step, when validation data was given.
        steps: the last step done; cancelled: the run stopped early on request.
    """

    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    before: dict[str, float] | None = None
    after: dict[str, float] | None = None
    steps: int = 0
    cancelled: bool = False

    @property
    def losses(self) -> list[float]:
        return [row["loss"] for row in self.history if "loss" in row]


def train(
    config: TrainConfig,
    progress: ProgressCallback | None = None,
    cancel: Any = None,
    *,
    console: bool | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Run a training configuration (see ``TrainConfig`` for every option).

    Args:
        config: the run; ``config.data`` and ``config.validation`` are dataset specs.
        progress: called after every step as ``progress(step, total_steps, loss, eta_seconds)``.
        cancel: a ``threading.Event`` or a callable returning True to stop between steps; the
            state reached is saved as ``out/checkpoint-STEP`` (resumable), never half-written.
        console: show a progress bar with ETA on the console (default: when ``progress`` is None).
        overwrite: replace an earlier run in ``config.out`` (its files are removed first); without
            it (or ``config.resume``) a folder holding a run is refused (``run_state.claimed_run``).

    Returns:
        ``TrainResult``. The model in ``result.checkpoint`` loads with ``load_segmenter(folder)``.
    """
    from .dataset_specs import datasets_from_specs

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (TrainConfig.from_file(path)), got {type(config).__name__}")
    config.validate()
    data = datasets_from_specs(config.data, "data")
    validation = datasets_from_specs(config.validation, "validation")
    return run(config, data, validation, progress=progress, cancel=cancel, console=console, overwrite=overwrite)


def finetune(
    model: Any,
    data: Any,
    out: str | os.PathLike,
    steps: int = 200,
    *,
    validation: Any = None,
    lr: float = 1e-4,
    freeze_encoder: bool = True,
    device: str = "auto",
    seed: int = 0,
    register_as: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: Any = None,
    console: bool | None = None,
    overwrite: bool = False,
    **options: Any,
) -> TrainResult:
    """Fine-tune a model on your own annotations; scores held-out data before and after.

    Args:
        model: a model name, hub repo id or checkpoint folder, a ``LabelAnything`` (copied, never
            changed in place) or a ``LabelAnythingSegmenter`` (its model is copied).
        data: a dataset, a folder of images and label images, ``.episode`` file(s), or a list of
            these (merged by class name).
        out: output folder (``out/final`` is the fine-tuned checkpoint).
        steps: optimizer steps; lr: peak learning rate (warm-up over 10% of the steps, then cosine).
        validation: held-out data in any form ``data`` takes; scored before and after
            (``result.before`` / ``result.after``) and every ``validate_every`` steps.
        freeze_encoder: train only neck, prompt encoder and decoder on cached features (default).
        register_as: register the result under this model name (model picker, CLI).
        overwrite: replace an earlier run in ``out``; without it (or ``resume=``) one is refused.
        options: any other ``TrainConfig`` option (``configurations``, ``prompt_types``,
            ``augment``, ``val_episodes``, ``val_ways``, ``val_shots``, ``checkpoint_every``, ...).

    Returns:
        ``TrainResult`` with ``before`` and ``after`` when ``validation`` is given.
    """
    from .dataset_specs import as_dataset

    start, name = _model_from_any(model)
    values = {
        "model": name or "(in memory)",
        "steps": steps,
        "lr": lr,
        "freeze_encoder": freeze_encoder,
        "device": device,
        "seed": seed,
        "out": os.fspath(out),
        "register_as": register_as,
        "checkpoint_every": 0,
        "validate_every": 0,
        "val_episodes": 50,
        **options,
    }
    allowed = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"unknown fine-tuning option(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    config = TrainConfig(**values)
    config.validate(require_data=False)
    train_data = as_dataset(data)
    held_out = as_dataset(validation) if validation is not None else None
    return run(config, train_data, held_out, model=start, progress=progress, cancel=cancel, console=console,
               overwrite=overwrite)  # fmt: skip


def _model_from_any(model: Any):
    """(a LabelAnything to start from or None, a name for the config or None)."""
    if isinstance(model, str | os.PathLike):
        return None, os.fspath(model)
    inner = getattr(model, "model", model)  # a LabelAnythingSegmenter holds its network in .model
    if hasattr(inner, "config") and hasattr(inner, "encode_images"):
        return copy.deepcopy(inner).cpu(), None
    raise TypeError(f"model must be a name, a folder or a LabelAnything model, got {type(model).__name__}")


# -- the run -------------------------------------------------------------------------------------


def build_model(config: TrainConfig, resume_folder: Path | None = None, start=None):
    """The network to train: from the resume checkpoint, ``start``, ``config.model`` or scratch."""
    import torch

    from ..hub.model_files import load_model, load_sam_image_encoder
    from ..hub.registry import CLASSIC, resolve_model_name
    from ..model.config import LabelAnythingConfig
    from ..model.label_anything import LabelAnything

    if resume_folder is not None:
        return load_model(resume_folder)
    if start is not None:
        return start
    if config.model is not None:
        resolved = resolve_model_name(config.model, "cpu")
        if resolved == CLASSIC:
            raise ValueError("the classic segmenter has no weights to train; choose a Label Anything model")
        return load_model(resolved)
    torch.manual_seed(config.seed)
    model = LabelAnything(LabelAnythingConfig.from_dict(config.model_arguments()))
    if config.encoder_checkpoint is not None:
        load_sam_image_encoder(model, config.encoder_checkpoint)
    return model


def _resume_folder(config: TrainConfig) -> Path | None:
    from .run_state import latest_checkpoint

    if config.resume is None or config.resume is False:
        return None
    if config.resume is True or config.resume == "latest":
        return latest_checkpoint(config.out)  # none yet: a fresh start (handy for preemptible jobs)
    folder = Path(config.resume).expanduser()
    if not folder.is_dir():
        raise ValueError(f"resume: {folder} is not a checkpoint folder")
    return folder


def _autocast_dtype(config: TrainConfig, device):
    import torch

    if config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _training_dataset(config: TrainConfig, data, frozen: bool):
    """(dataset the sampler reads, sampler's augment flag): fixed views of ``data`` when the
    encoder is frozen and augmentation is on (the sampler reseeds them per episode)."""
    from .features import FixedViews

    augment = bool(getattr(data, "augment", False)) if config.augment is None else config.augment
    if augment and frozen:
        return FixedViews(data, config.augment_views, config.seed), False
    return data, augment


def run(
    config: TrainConfig,
    data,
    validation=None,
    *,
    model=None,
    progress: ProgressCallback | None = None,
    cancel: Any = None,
    console: bool | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """The loop behind ``train`` and ``finetune``: ``data``/``validation`` are dataset objects.
    ``config.out`` is claimed for the run and an earlier run there refused unless resumed or
    ``overwrite`` (``run_state.claimed_run``)."""
    from ..hub.device import import_torch, resolve_device
    from . import distributed
    from .run_state import claimed_run, remove_partials

    torch = import_torch()
    if data is None or len(data) == 0:
        raise ValueError("no training data: give at least one dataset with samples")
    context = distributed.setup(resolve_device(config.device))
    try:
        with claimed_run(config.out, config.log_path(), config.resume, overwrite, context.is_main) as notes:
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
            torch.manual_seed(config.seed)  # the class-token pool draws rows from torch's generator
            resume = _resume_folder(config)
            network = build_model(config, resume, model)
            loop = _Loop(config, data, validation, network, context, resume)
            if context.is_main:
                Path(config.out).mkdir(parents=True, exist_ok=True)
                remove_partials(config.out)
            return loop.run(progress, cancel, console if console is not None else progress is None)
    finally:
        distributed.teardown(context)


class _Loop:
    """State of one run (model, optimizer, sampler, cache, log); ``run`` executes it."""

    def __init__(self, config: TrainConfig, data, validation, network, context, resume: Path | None) -> None:
        import torch

        from .distributed import wrap_model
        from .features import EncoderFeatureCache
        from .run_state import read_training_state
        from .sampler import EpisodeSampler
        from .schedule import lr_schedule

        self.config, self.validation, self.context = config, validation, context
        self.device = context.device
        self.model = network.to(self.device)
        self.autocast_dtype = _autocast_dtype(config, self.device)
        self.frozen = bool(config.freeze_encoder) and self.model.image_encoder is not None
        if self.model.image_encoder is None:
            raise ValueError("this model has no image encoder (use_vit=False): training reads images, it needs one")
        if self.frozen:
            self.model.image_encoder.requires_grad_(False)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.lr, weight_decay=config.weight_decay)
        self.total = config.total_steps(len(data))
        self.scheduler = lr_schedule(self.optimizer, config.warmup(self.total), self.total, config.schedule)
        source, augment = _training_dataset(config, data, self.frozen)
        self.sampler = EpisodeSampler(
            source,
            configurations=[tuple(c) for c in config.configurations],
            prompt_types=tuple(config.prompt_types),
            augment=augment,
            seed=config.seed,
        )
        self.cache = None
        if self.frozen:
            self.cache = EncoderFeatureCache(
                self.model, self.device, config.feature_cache_size, config.feature_cache, self.autocast_dtype
            )
        self.step, self.history, self.best = 0, [], None
        if resume is not None:
            state = read_training_state(resume, self.optimizer, self.scheduler)
            self.step = int(state["step"])
            self.history = list(state.get("history", []))
            self.best = state.get("best")
        self.ddp = wrap_model(self.model, context)

    # -- one step ---------------------------------------------------------------------------

    def _batch(self, step: int):
        from .distributed import share

        rng = np.random.default_rng([self.config.seed, step])
        active = []

        def mine(batch: int) -> list[int]:  # only this rank's share of the batch is read
            part = share(range(batch), self.context)
            active.append(bool(part))
            # A rank left without episodes (world size > batch) still joins the gradient exchange.
            return part or [0]

        episodes = self.sampler.sample_batch(rng, select=mine)
        return episodes, active[0]

    def train_step(self, step: int) -> float:
        """One optimizer step; returns the loss of the whole (global) batch."""
        import torch

        from .collate import collate
        from .distributed import global_focal_loss

        config, c = self.config, self.model.config
        episodes, active = self._batch(step)
        if self.cache is not None:
            self.cache.warm([image for e in episodes for image in (e.query, *(s.image for s in e.episode.supports))])
        batch, target = collate(episodes, c.image_size, c.custom_preprocess, features=self.cache)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        target = target.to(self.device, non_blocking=True)
        self.model.train()
        if self.frozen:
            self.model.image_encoder.eval()
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            logits = self.ddp(batch)["logits"]
        loss, reported = global_focal_loss(
            logits,
            target,
            self.context,
            gamma=config.focal_gamma,
            class_weighting=config.class_weighting,
            official_weight_squared=config.official_weight_squared,
            active=active,
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        value = float(reported)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"the loss became {value} at step {step}; lower lr (now {config.lr}) or keep grad_clip on"
            )
        return value

    # -- validation and checkpoints -----------------------------------------------------------

    def validate(self) -> dict[str, float] | None:
        """mIoU and FB-IoU of the current model on the validation data (rank 0 only)."""
        if self.validation is None or not self.context.is_main:
            return None
        from ..inference.label_anything.segmenter import LabelAnythingSegmenter
        from .evaluation import evaluate
        from .features import CachedEncoderBackend

        precision = "bfloat16" if self.autocast_dtype is not None else "float32"
        segmenter = LabelAnythingSegmenter(  # PyTorch: these weights change between validations
            self.model, device=self.device, precision=precision, tiling="resize", encoder="torch"
        )
        if self.frozen:
            if not hasattr(self, "_validation_encoder"):
                self._validation_encoder = CachedEncoderBackend(self.model)
            segmenter.encoder = self._validation_encoder
        c = self.config
        try:
            result = evaluate(segmenter, self.validation, c.val_ways, c.val_shots, c.val_episodes, seed=c.seed)
        finally:
            self.model.train()
        return {"miou": float(result.miou), "fb_iou": float(result.fb_iou)}

    def save(self, folder: Path, resumable: bool) -> Path:
        from .run_state import write_checkpoint

        state = {"step": self.step, "total_steps": self.total, "history": self.history, "best": self.best}
        summary = {"step": self.step, "best": self.best, "config": self.config.to_dict()}
        if resumable:
            return write_checkpoint(folder, self.model, self.optimizer, self.scheduler, state, summary)
        return write_checkpoint(folder, self.model, summary=summary)

    def checkpoint(self) -> Path | None:
        from .distributed import barrier
        from .run_state import prune_checkpoints

        folder = Path(self.config.out) / f"checkpoint-{self.step}"
        if self.context.is_main:
            self.save(folder, resumable=True)
            prune_checkpoints(self.config.out, self.config.keep_checkpoints)
        barrier(self.context)
        return folder

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, progress, cancel, console: bool) -> TrainResult:
        from ..inference.base import is_cancelled
        from .distributed import any_rank

        config, main = self.config, self.context.is_main
        log = _CsvLog(config.log_path(), self.step) if main else None
        if main:
            from ..io.label_files import atomic_write

            with atomic_write(Path(config.out) / "train_config.json") as partial:
                partial.write_text(json.dumps(config.to_dict(), indent=2))
        if self.step == 0:
            before = self.validate()
            if before is not None:
                self._record({"step": 0, "val_miou": before["miou"], "val_fb_iou": before["fb_iou"]}, log)
        else:  # resumed: the scores before the first step are in the history, when there was validation
            start = next((row for row in self.history if row.get("step") == 0 and "val_miou" in row), None)
            before = None if start is None else {"miou": start["val_miou"], "fb_iou": start["val_fb_iou"]}
        bar = _console_bar(self.total, self.step) if console and main else None
        started, first_step = time.perf_counter(), self.step
        cancelled = False
        try:
            while self.step < self.total:
                if any_rank(is_cancelled(cancel), self.context):
                    cancelled = True
                    break
                tick = time.perf_counter()
                loss = self.train_step(self.step + 1)
                self.step += 1
                row = {"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0]}
                row["seconds"] = time.perf_counter() - tick
                every = config.validate_every
                if self.step == self.total or (every and self.step % every == 0):
                    self._add_validation(row)
                self._record(row, log)
                if config.checkpoint_every and self.step % config.checkpoint_every == 0 and self.step < self.total:
                    self.checkpoint()
                done = self.step - first_step
                eta = (time.perf_counter() - started) / done * (self.total - self.step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{row['lr']:.2e}")
                if progress is not None and main:
                    progress(self.step, self.total, loss, eta)
            if cancelled:
                saved = self.checkpoint() if self.step > 0 else None
                return TrainResult(saved, self.history, self.best, before, None, self.step, True)
            last = self.history[-1] if self.history else {}
            after = {"miou": last["val_miou"], "fb_iou": last["val_fb_iou"]} if "val_miou" in last else None
            final = Path(config.out) / "final"
            if main:
                self.save(final, resumable=False)
                if config.register_as:
                    from ..hub.registry import register_local_model

                    register_local_model(config.register_as, final)
            return TrainResult(final, self.history, self.best, before, after, self.step, False)
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()

    def _add_validation(self, row: dict[str, Any]) -> None:
        metrics = self.validate()
        if metrics is None:
            return
        row["val_miou"], row["val_fb_iou"] = metrics["miou"], metrics["fb_iou"]
        if self.best is None or metrics["miou"] > self.best["miou"]:
            self.best = {"step": row["step"], **metrics}

    def _record(self, row: dict[str, Any], log) -> None:
        self.history.append(row)
        if log is not None:
            log.write(row)


class _CsvLog:
    """``log.csv``: one row per step; a resumed run first drops rows after its checkpoint's step
    (the kept rows written atomically: a run killed then leaves the log as it was)."""

    def __init__(self, path: Path, resumed_step: int) -> None:
        from ..io.label_files import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, str]] = []
        if resumed_step > 0 and path.is_file():
            with open(path, newline="") as handle:
                kept = [r for r in csv.DictReader(handle) if r.get("step") and int(r["step"]) <= resumed_step]
        with atomic_write(path) as partial, open(partial, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        self.handle = open(path, "a", newline="")  # noqa: SIM115 - kept open for the whole run
        self.writer = csv.DictWriter(self.handle, fieldnames=LOG_COLUMNS, extrasaction="ignore")

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: _short(v) for k, v in row.items()})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _short(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _console_bar(total: int, done: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="training", unit="step", file=sys.stderr, dynamic_ncols=True)
