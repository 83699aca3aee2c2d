"""napari sample-data contribution: the demo's episodes as layers, ready to run.

Returns napari ``LayerDataTuple``s only, so napari itself is never imported here.
"""

from __future__ import annotations

from .labels import class_names
from .samples import load_sample


def _layers(name: str, **options) -> list[tuple]:
    sample = load_sample(name, **options)
    classes = list(class_names(sample.classes).values())
    return [
        (sample.support, {"name": f"{sample.name} support"}, "image"),
        (
            sample.scribbles,
            {"name": f"{sample.name} support prompts", "metadata": {"label_anything_classes": classes}},
            "labels",
        ),
        (sample.query, {"name": f"{sample.name} query"}, "image"),
    ]


def textures_sample() -> list[tuple]:
    """Brick / grass / gravel: a scribbled support and a 2D query."""
    return _layers("textures")


def textures_stack_sample() -> list[tuple]:
    """The same support with a 5-plane query stack."""
    return _layers("textures", planes=5)
