"""Fine-tune on one episode's painted planes, scoring held-out planes before and after.

The one door from the napari widget to ``training`` (the widget never imports ``training``
itself): ``finetune_episode`` splits the episode's painted supports (planes the user painted or
corrected) into planes to learn from and held-out planes, fine-tunes with
``training.trainer.finetune``, and scores each held-out plane as a query against the remaining
supports with the model before and after (``evaluation.evaluate_episodes``, one confusion matrix).

Painted supports are taken as complete answers: every unpainted pixel of such a plane counts as
background, as on a corrected output plane. Supports with only points or boxes stay prompts of the
scoring episodes but are not learned from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .episode import Episode

MIN_PAINTED = 3  # two to learn from (a training episode needs a query and a support) + one held out


@dataclass
class FinetuneOutcome:
    """What ``finetune_episode`` did.

    Attributes:
        checkpoint: the fine-tuned checkpoint folder (``out/final``), or the resumable state saved
            at a cancel, or None when cancelled before the first step.
        before, after: mIoU of the held-out planes with the model before and after (None after a cancel).
        held_out: names of the held-out supports; trained_on: how many painted planes it learned from.
        losses: the training loss per step; steps: steps done; cancelled: stopped on request.
        registered_as: the model name it was registered under (model picker, CLI), or None.
    """

    checkpoint: Path | None
    before: float | None
    after: float | None
    held_out: list[str]
    trained_on: int
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    cancelled: bool = False
    registered_as: str | None = None


def split_held_out(episode: Episode, held_out: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """(indices of painted supports to learn from, indices held out), in episode order.

    By default the last quarter of the painted supports (at least one) is held out; ``held_out``
    names support indices instead. Raises ValueError with fewer than ``MIN_PAINTED`` painted
    supports or when the split leaves fewer than two to learn from.
    """
    painted = [i for i, s in enumerate(episode.supports) if s.labels is not None]
    if len(painted) < MIN_PAINTED:
        raise ValueError(
            f"fine-tuning needs at least {MIN_PAINTED} painted (or corrected) planes, {len(painted)} found: "
            "two to learn from and one held out to score the result; paint complete answers on more planes"
        )
    if held_out is None:
        held = painted[-max(1, len(painted) // 4) :]
    else:
        held = sorted({int(i) for i in held_out})
        bad = [i for i in held if i not in painted]
        if bad:
            raise ValueError(f"held_out {bad} are not painted supports; painted supports: {painted}")
    learn = [i for i in painted if i not in held]
    if len(learn) < 2 or not held:
        raise ValueError(f"the split leaves {len(learn)} painted plane(s) to learn from and {len(held)} held out; "
                         "at least 2 and 1 are needed")  # fmt: skip
    return learn, held


def episode_configurations(n_classes: int, n_planes: int) -> tuple[tuple[int, int, int], ...]:
    """(batch, ways, examples) triples an episode's own planes can serve: every way count up to its
    classes, one or two supports (a plane is the query, the others supports), batches of two."""
    examples = sorted({1, min(2, n_planes - 1)})
    return tuple((2, ways, m) for ways in range(1, n_classes + 1) for m in examples)


def _subset(episode: Episode, indices: Sequence[int]) -> Episode:
    part = Episode(episode.classes, model=episode.model)
    part.supports = [episode.supports[i] for i in indices]  # shared, never changed: nothing here mutates a support
    return part


def _scoring_episodes(episode: Episode, held: Sequence[int]):
    """Each held-out support as a query (a ``TrainingEpisode``); the supports are every other support."""
    from .training.sampler import TrainingEpisode

    others = [i for i in range(len(episode.supports)) if i not in held]
    class_ids = tuple(range(1, episode.n_classes + 1))
    return [
        TrainingEpisode(_subset(episode, others), episode.supports[i].image, episode.supports[i].labels, class_ids)
        for i in held
    ]


def held_out_miou(segmenter: Any, episode: Episode, held: Sequence[int]) -> float:
    """mIoU (foreground classes, one confusion matrix) of ``segmenter`` on the held-out supports."""
    from .training.evaluation import evaluate_episodes

    classes = dict(enumerate(episode.classes, start=1))
    return evaluate_episodes(segmenter, _scoring_episodes(episode, held), classes).miou


def finetune_episode(
    segmenter: Any,
    episode: Episode,
    out: str | os.PathLike,
    steps: int = 100,
    *,
    held_out: Sequence[int] | None = None,
    register_as: str | None = None,
    device: str = "auto",
    progress: Callable[[int, int, float, float], Any] | None = None,
    cancel: Any = None,
    **options: Any,
) -> FinetuneOutcome:
    """Fine-tune ``segmenter``'s model on the episode's painted planes (see the module docstring).

    Args:
        segmenter: a ``LabelAnythingSegmenter`` (its network is copied, never changed; one whose
            PyTorch encoder was released for ONNX Runtime is reloaded from its name).
        episode: classes and supports; at least ``MIN_PAINTED`` supports with painted labels.
        out: output folder; ``out/final`` is the new checkpoint (``config.json`` +
            ``model.safetensors``), ``out/finetune-data.episode`` the planes it learned from.
        steps: optimizer steps.
        held_out: support indices to hold out (default: the last quarter of the painted ones).
        register_as: register the checkpoint under this name (model picker, ``--model NAME``).
        progress: ``progress(step, total, loss, eta_seconds)`` after every step.
        cancel: a ``threading.Event`` or callable, checked between steps.
        options: further ``training.trainer.finetune`` / ``TrainConfig`` options.

    Returns:
        FinetuneOutcome with the held-out mIoU before and after.
    """
    from .inference import load_segmenter
    from .training.run_state import check_previous_run
    from .training.trainer import finetune

    if not hasattr(segmenter, "model") or not hasattr(segmenter.model, "encode_images"):
        raise ValueError(
            f"fine-tuning needs a Label Anything model, not {getattr(segmenter, 'name', segmenter)!r}; "
            "choose one in the model picker (the classic model learns from your prompts on every run)"
        )
    episode.validate()
    learn, held = split_held_out(episode, held_out)
    out = Path(out)
    check_previous_run(out, None, options.get("resume"), options.get("overwrite", False))  # before writing into out
    out.mkdir(parents=True, exist_ok=True)
    before = held_out_miou(segmenter, episode, held)
    data = _subset(episode, learn).save(out / "finetune-data.episode")
    options.setdefault("configurations", episode_configurations(episode.n_classes, len(learn)))
    # An ONNX-backed segmenter may have released its PyTorch encoder: train from its source then.
    start = segmenter if segmenter.model.image_encoder is not None else segmenter.name
    result = finetune(
        start, [str(data)], out, steps=steps, device=device, register_as=register_as,
        progress=progress, cancel=cancel, console=False, **options,
    )  # fmt: skip
    after = None
    if not result.cancelled and result.checkpoint is not None:
        # PyTorch: a few held-out planes cost less than a one-off ONNX export of the new weights.
        tuned = load_segmenter(os.fspath(result.checkpoint), device=device, encoder="torch")
        after = held_out_miou(tuned, episode, held)
    return FinetuneOutcome(
        checkpoint=result.checkpoint,
        before=before,
        after=after,
        held_out=[episode.supports[i].name or f"support {i + 1}" for i in held],
        trained_on=len(learn),
        losses=result.losses,
        steps=result.steps,
        cancelled=result.cancelled,
        registered_as=None if result.cancelled else register_as,
    )
