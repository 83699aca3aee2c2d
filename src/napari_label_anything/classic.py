"""Where the embedded default lived before the ``inference`` package; these names keep working."""

from __future__ import annotations

from .inference.classic import ClassicSegmenter

__all__ = ["ClassicSegmenter"]
