"""Inference: every segmenter behind one interface, and how one is loaded.

- ``base``: the ``Segmenter`` interface (predict, predict_proba, stacks, cancel, progress;
  ``PlaneSteps``: progress and cancel within a plane)
- ``label_anything``: ``LabelAnythingSegmenter`` (the network, with feature and prototype caches)
- ``cache``: ``LRUCache``, the one bounded cache, and ``tiered_lookup`` (memory, then disk, then compute)
- ``loading``: ``load_segmenter`` (name, repo id, folder, ``classic`` or ``auto``)

The embedded default (``classic``) plugs into the same interface.
"""

from __future__ import annotations

from .base import CancelCheck, PlaneSteps, PredictionCancelled, ProgressCallback, Segmenter
from .label_anything.segmenter import LabelAnythingSegmenter
from .loading import load_segmenter

__all__ = [
    "CancelCheck",
    "LabelAnythingSegmenter",
    "PlaneSteps",
    "PredictionCancelled",
    "ProgressCallback",
    "Segmenter",
    "load_segmenter",
]
