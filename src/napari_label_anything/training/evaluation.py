"""Score any ``Segmenter`` on seeded N-way K-shot episodes of a dataset.

Every episode's prediction (local ids 0..N) and answer are mapped to the dataset's global ids and
added to one confusion matrix; the metrics come from that matrix at the end (``training/metrics.py``), never
from averaging episodes. Global ids are compact: 0 = background, 1..K = the dataset's class ids in
sorted order (for a COCO-20i fold: the fold's 20 classes in annotation-file order, as the official
validation numbers them). ``official=True`` also gives the official Label Anything numbers, computed
as its validation does: the official sequential remap and the StrictMeanIoU / BmIoU / FBIoU formulas.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..inference.base import CancelCheck, PredictionCancelled, ProgressCallback, is_cancelled
from ..io.label_files import atomic_write
from . import metrics

OFFICIAL_NAMES = ("strict_miou", "bmiou", "official_fbiou")


class EpisodeLike(Protocol):
    """What scoring needs of an episode (``training.sampler.TrainingEpisode`` has it)."""

    episode: Any  # napari_label_anything.episode.Episode
    query: np.ndarray  # (Y, X) or (Y, X, 3)
    target: np.ndarray  # (Y, X) int, local ids 0..N
    class_ids: tuple[int, ...]  # global class id of local class 1..N


@dataclass
class EvaluationResult:
    """Dataset-level scores of one evaluation run.

    Attributes:
        miou: mean IoU over the foreground classes with a non-empty union (``metrics.mean_iou``).
        fb_iou: mean of foreground and background IoU (``metrics.fb_iou``); NaN where the data
            holds no background (the table prints n/a, JSON null).
        per_class: class name -> IoU, for the foreground classes with a non-empty union (those a
            run never met nor predicted have no IoU and are left out), in compact-id order.
        confusion: (K+1, K+1) int64, rows = ground truth, columns = prediction, compact ids.
        official: ``{"strict_miou", "bmiou", "official_fbiou"}`` as the official validation
            computes them, or None unless requested.
        episodes: number of episodes scored.
        seconds: wall time of the run.
        ways, shots, seed: the episode settings (None where the episodes were given ready-made).
        model: the segmenter's name.
        class_names: name of compact id 1..K.
        background_iou: IoU of class 0.
        official_confusion: the matrix behind ``official`` (official remap), or None.
    """

    miou: float
    fb_iou: float
    per_class: dict[str, float]
    confusion: np.ndarray = field(repr=False)
    official: dict[str, float] | None
    episodes: int
    seconds: float
    ways: int | None = None
    shots: int | None = None
    seed: int | None = None
    model: str = ""
    class_names: tuple[str, ...] = ()
    background_iou: float = float("nan")
    official_confusion: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None; the confusion matrix a list of lists)."""
        return {
            "model": self.model,
            "ways": self.ways,
            "shots": self.shots,
            "episodes": self.episodes,
            "seed": self.seed,
            "seconds": _finite(self.seconds),
            "miou": _finite(self.miou),
            "fb_iou": _finite(self.fb_iou),
            "background_iou": _finite(self.background_iou),
            "per_class": {name: _finite(value) for name, value in self.per_class.items()},
            "official": None if self.official is None else {k: _finite(v) for k, v in self.official.items()},
            "class_names": list(self.class_names),
            "confusion": self.confusion.tolist(),
        }

    def to_json(self, path: str | Path) -> Path:
        """Write ``as_dict()`` to ``path`` atomically (a crash leaves any earlier file intact)."""
        path = Path(path)
        with atomic_write(path) as partial:
            partial.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def table(self) -> str:
        """A plain-text table for the console: per-class IoU, then the summary numbers."""
        settings = []
        if self.ways is not None and self.shots is not None:
            settings.append(f"{self.ways}-way {self.shots}-shot")
        settings.append(f"{self.episodes} episode{'s' if self.episodes != 1 else ''}")
        if self.seed is not None:
            settings.append(f"seed {self.seed}")
        title = f"Evaluation of {self.model or 'segmenter'}: {', '.join(settings)} ({self.seconds:.1f} s)"
        width = max([len("background"), len("FB-IoU (mean fg/bg)"), *(len(name) for name in self.per_class)])
        rule = "-" * (width + 10)
        lines = [title, rule, f"{'class':<{width}}  {'IoU':>7}", rule]
        lines.append(f"{'background':<{width}}  {_format(self.background_iou)}")
        lines += [f"{name:<{width}}  {_format(value)}" for name, value in self.per_class.items()]
        unseen = len(self.class_names) - len(self.per_class)
        lines.append(rule)
        lines.append(f"{'mIoU':<{width}}  {_format(self.miou)}  over {len(self.per_class)} foreground classes")
        lines.append(f"{'FB-IoU (mean fg/bg)':<{width}}  {_format(self.fb_iou)}")
        if unseen:
            lines.append(f"({unseen} of {len(self.class_names)} classes never occurred nor were predicted)")
        if self.official is not None:
            lines.append(rule)
            lines.append("official Label Anything numbers (sequential remap, its formulas):")
            labels = {"strict_miou": "mIoU (Strict)", "bmiou": "BmIoU", "official_fbiou": "FBIoU (fg only)"}
            lines += [f"{labels[name]:<{width}}  {_format(value)}" for name, value in self.official.items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _format(value: float) -> str:
    return "    n/a" if math.isnan(value) else f"{value:7.4f}"


def compact_ids(classes: Mapping[int, str]) -> dict[int, int]:
    """Dataset class id -> compact id 1..K, in sorted order of the dataset ids."""
    return {int(class_id): i for i, class_id in enumerate(sorted(int(c) for c in classes), start=1)}


def _check_segmenter(segmenter: Any) -> None:
    if not callable(getattr(segmenter, "predict", None)):
        raise TypeError(
            f"segmenter must have predict(episode, query) (a napari_label_anything Segmenter), "
            f"got {type(segmenter).__name__}"
        )


def evaluate_episodes(
    segmenter: Any,
    episodes: Iterable[EpisodeLike],
    classes: Mapping[int, str],
    total: int | None = None,
    official: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> EvaluationResult:
    """Score ``segmenter`` on ready-made episodes (e.g. held-out planes before and after fine-tuning).

    Args:
        segmenter: anything with ``predict(episode, query) -> (Y, X) int labels 0..N``.
        episodes: objects with ``.episode``, ``.query``, ``.target`` ((Y, X) int local ids 0..N)
            and ``.class_ids`` (global id of local class 1..N, each a key of ``classes``).
        classes: global class id -> name for every class that may occur (the dataset's classes).
        total: the episode count reported to ``progress`` (``len(episodes)`` when it has one).
        official: also compute the official numbers (``EvaluationResult.official``).
        progress: called ``progress(done, total)`` after every episode.
        cancel: a ``threading.Event`` or a callable, checked before every episode; when it turns
            true the run stops with ``PredictionCancelled``.

    Returns:
        EvaluationResult (``ways``, ``shots`` and ``seed`` None).
    """
    _check_segmenter(segmenter)
    if not isinstance(classes, Mapping) or not classes:
        raise ValueError(f"classes must be a non-empty mapping of global class id -> name, got {classes!r}")
    compact = compact_ids(classes)
    names_by_compact = {compact[int(c)]: str(name) for c, name in classes.items()}
    names = tuple(names_by_compact[i] for i in range(1, len(compact) + 1))
    if total is None and hasattr(episodes, "__len__"):
        total = len(episodes)
    confusion = metrics.ConfusionMatrix(len(compact) + 1)
    official_confusion = metrics.ConfusionMatrix(len(compact) + 1) if official else None
    started = time.perf_counter()
    done = 0
    for item in episodes:
        if is_cancelled(cancel):
            raise PredictionCancelled("evaluation cancelled")
        global_ids = _global_ids(item.class_ids, compact)
        pred = np.asarray(segmenter.predict(item.episode, item.query))
        target = np.asarray(item.target)
        if pred.shape != target.shape:
            raise ValueError(
                f"episode {done}: the prediction has shape {pred.shape} but the target {target.shape}; "
                "predict must return one label per query pixel"
            )
        confusion.update(metrics.remap_to_global(pred, global_ids), metrics.remap_to_global(target, global_ids))
        if official_confusion is not None:
            official_confusion.update(
                metrics.official_remap(pred, global_ids), metrics.official_remap(target, global_ids)
            )
        done += 1
        if progress is not None:
            progress(done, total if total is not None else done)
    seconds = time.perf_counter() - started
    return _result(confusion, official_confusion, names, done, seconds, getattr(segmenter, "name", ""))


def _global_ids(class_ids: Iterable[int], compact: dict[int, int]) -> list[int]:
    try:
        return [compact[int(class_id)] for class_id in class_ids]
    except KeyError as err:
        raise ValueError(
            f"episode class id {err.args[0]} is not a class of the dataset (known: {sorted(compact)})"
        ) from None


def _result(
    confusion: metrics.ConfusionMatrix,
    official_confusion: metrics.ConfusionMatrix | None,
    names: tuple[str, ...],
    episodes: int,
    seconds: float,
    model: str,
) -> EvaluationResult:
    iou = confusion.iou_per_class()
    labels = _unique_labels(names)
    per_class = {labels[k - 1]: float(iou[k]) for k in range(1, len(iou)) if not np.isnan(iou[k])}
    official = None
    if official_confusion is not None:
        official = {name: float(getattr(metrics, name)(official_confusion)) for name in OFFICIAL_NAMES}
    return EvaluationResult(
        miou=confusion.mean_iou(),
        fb_iou=confusion.fb_iou(),
        per_class=per_class,
        confusion=confusion.matrix.copy(),
        official=official,
        episodes=episodes,
        seconds=seconds,
        model=str(model),
        class_names=names,
        background_iou=float(iou[0]),
        official_confusion=None if official_confusion is None else official_confusion.matrix.copy(),
    )


def _unique_labels(names: tuple[str, ...]) -> list[str]:
    """Class names as keys; a name shared by several classes gets its compact id appended."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [name if counts[name] == 1 else f"{name} ({k})" for k, name in enumerate(names, start=1)]


def evaluate(
    segmenter: Any,
    dataset: Any,
    ways: int,
    shots: int,
    episodes: int,
    seed: int = 42,
    official: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> EvaluationResult:
    """Score ``segmenter`` on ``episodes`` seeded ``ways``-way ``shots``-shot episodes of ``dataset``.

    Episodes are drawn by ``training.sampler.sample_eval_episodes`` (official validation style:
    the query holds the first class, masks as prompts); the same seed gives the same episodes.

    Args:
        segmenter: any ``Segmenter`` (Label Anything, the embedded classic default, ...).
        dataset: a dataset of the ``training.datasets.base`` protocol (``classes``, ``index``, items).
        ways, shots: N classes per episode and K support images per class (>= 1).
        episodes: number of episodes (>= 1).
        seed: episode seed (the official validation reruns with 42..46).
        official: also compute the official Label Anything numbers (``EvaluationResult.official``).
        progress: ``progress(done, total)`` after every episode.
        cancel: ``threading.Event`` or callable; the run stops with ``PredictionCancelled``.

    Returns:
        EvaluationResult with dataset-level mIoU, FB-IoU, per-class IoU and the confusion matrix.
    """
    from .sampler import sample_eval_episodes

    _check_segmenter(segmenter)
    if isinstance(episodes, bool) or not isinstance(episodes, int | np.integer) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if not hasattr(dataset, "classes"):
        raise TypeError(f"dataset {type(dataset).__name__} lacks 'classes' (see training.datasets.base protocol)")
    drawn = sample_eval_episodes(dataset, ways, shots, int(episodes), seed)
    result = evaluate_episodes(
        segmenter, drawn, dataset.classes, total=int(episodes), official=official, progress=progress, cancel=cancel
    )
    result.ways, result.shots, result.seed = int(ways), int(shots), int(seed)
    return result
