"""The embedded ``classic`` segmenter: a per-episode pixel classifier that needs no weights.

- ``segmenter``: ``ClassicSegmenter`` (prompts -> training pixels, fit cache, prediction, stacks)
- ``features``: multi-scale pixel features in row bands, bounded memory
- ``trees``: ``BalancedExtraTrees``, the class-balanced forest
- ``background``: the implicit background rule (positive-unlabelled detection)
- ``boundaries``: labels snapped to the image's edges where the prompts leave boundaries open

docs/classic.md describes the method in full.
"""

from .segmenter import ClassicSegmenter

__all__ = ["ClassicSegmenter"]
