"""Where the segmenters lived before the ``inference`` package; these names keep working."""

from __future__ import annotations

from .inference.base import CancelCheck, PredictionCancelled, ProgressCallback, Segmenter
from .inference.label_anything import LabelAnythingSegmenter
from .inference.loading import load_segmenter
from .labels import labels_dtype

__all__ = [
    "CancelCheck",
    "LabelAnythingSegmenter",
    "PredictionCancelled",
    "ProgressCallback",
    "Segmenter",
    "labels_dtype",
    "load_segmenter",
]
