"""napari-label-anything: multi-class few-shot segmentation from visual prompts.

The public API (importing it does not import torch)::

    import napari_label_anything as nla
    episode = nla.Episode(classes=["nucleus", "membrane"])
    episode.add_support(image, labels=painted)
    seg = nla.load_segmenter("pasqualedem/label_anything_sam_1024_coco", device="auto")
    labels = seg.predict(episode, query)
    objects = nla.split_objects(labels)                        # one label per object
    table = nla.measure_objects(objects, labels, query, episode.classes)
    nla.write_measurements(table, "objects.csv")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .episode import Episode, Support

__version__ = "0.1.0"

_LAZY = {
    "load_segmenter": "inference",
    "Segmenter": "inference",
    "LabelAnythingSegmenter": "inference",
    "PredictionCancelled": "inference",
    "PlaneSteps": "inference",
    "resolve_device": "hub.device",
    "available_devices": "hub.device",
    "CheckpointNotAvailableError": "hub.model_files",
    "split_objects": "objects",
    "measure_objects": "objects",
    "write_measurements": "objects",
}

__all__ = [
    "CheckpointNotAvailableError",
    "Episode",
    "LabelAnythingSegmenter",
    "PlaneSteps",
    "PredictionCancelled",
    "Segmenter",
    "Support",
    "__version__",
    "available_devices",
    "load_segmenter",
    "measure_objects",
    "resolve_device",
    "split_objects",
    "write_measurements",
]

if TYPE_CHECKING:
    from .hub.device import available_devices, resolve_device
    from .hub.model_files import CheckpointNotAvailableError
    from .inference import LabelAnythingSegmenter, PlaneSteps, PredictionCancelled, Segmenter, load_segmenter
    from .objects import measure_objects, split_objects, write_measurements


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
