"""What the dock's workers yield to the GUI thread, and how a run or batch ended.

Every worker generator (``workers.predict_planes``, the preview, the support encoding, the fast
encoder's preparation, fine-tuning, batches, the probability export) yields one of these frozen
dataclasses; the GUI side tells them apart with ``isinstance`` / ``match`` and reads fields by
name. The core's own tuples (``Segmenter.iter_predict_stack`` yields ``(index, labels[,
uncertainty])``) become messages at the widget's boundary (``workers.stream_planes``).
No Qt and no napari here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np


class RunOutcome(enum.StrEnum):
    """How a run, a batch or a probability export ended (equal to its value as a string)."""

    DONE = "done"
    CANCELLED = "cancelled"  # the user pressed Cancel / Stop: nothing of the file or run in progress kept
    STOPPED = "stopped"  # a layer the run reads went away, or the classes changed
    FAILED = "failed"


class EncodingOutcome(enum.StrEnum):
    """How a background encoding of the supports ended."""

    READY = "ready"  # images and prompts encoded
    INCOMPLETE = "incomplete"  # images encoded; the prompts wait for every class to have some
    NOTHING = "nothing"  # the segmenter has nothing to encode (classic)


@dataclass(frozen=True)
class Status:
    """A one-line status text (loading, downloading ..., "cancelled")."""

    text: str


CANCELLED = Status("cancelled")  # the last message of a worker whose work was cancelled


@dataclass(frozen=True)
class ModelReady:
    """The segmenter is loaded: what runs (for "auto", what it resolved to)."""

    name: str
    device: str
    encoder: str | None = None  # the image encoder's label (``encoder_backends.ENCODER_LABELS``)


@dataclass(frozen=True)
class Normalised:
    """What a run's normalisation resolved to for its query: "stack" or "plane"."""

    mode: str


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units (planes, files' planes): a fraction is the finished share of
    the unit in progress."""

    done: float
    total: int


@dataclass(frozen=True)
class PlaneResult:
    """One predicted plane: its index, (Y, X) labels, planes done so far, and its uncertainty
    map when asked for and given."""

    index: tuple[int, ...]
    labels: np.ndarray
    done: int
    total: int
    uncertainty: np.ndarray | None = None


@dataclass(frozen=True)
class PreviewPlane:
    """The preview's plane and the seconds it took once the model was ready."""

    index: tuple[int, ...]
    labels: np.ndarray
    seconds: float


@dataclass(frozen=True)
class SupportsEncoded:
    """``count`` support images are encoded so far."""

    count: int


@dataclass(frozen=True)
class EncodingEnded:
    outcome: EncodingOutcome


@dataclass(frozen=True)
class EncoderReady:
    """The fast encoder's preparation ended: the backend that runs and None, or the note saying
    why PyTorch runs instead."""

    backend: str | None
    note: str | None


@dataclass(frozen=True)
class FinetuneStep:
    step: int
    total: int
    loss: float
    eta: float  # seconds left, estimated


@dataclass(frozen=True)
class FileStarted:
    """A batch starts file ``number`` (from 0) of ``count``."""

    number: int
    count: int
    source: str


@dataclass(frozen=True)
class FileDone:
    """A batch wrote one file: its ``batch.jobs.JobResult``."""

    result: Any
