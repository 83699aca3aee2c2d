"""The widget's files: read an .episode into layers, export an output layer as TIFF.

Errors come out as ``ValueError``/``OSError`` with a message naming the file; the dock widget's
buttons turn them into one notification. A damaged episode changes nothing: the file is read
completely before any layer or class is touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..labels import as_labels
from .layers import find_output_layer
from .run_controller import one_line


def read_episode(path: str | Path):
    """``Episode.load``, with any failure to read a damaged file raised as ValueError."""
    from ..episode import Episode

    try:
        return Episode.load(path)
    except (ValueError, OSError):
        raise
    except Exception as err:  # noqa: BLE001 - a damaged file can fail in many ways
        raise ValueError(f"{path} is not a readable episode file ({type(err).__name__}: {one_line(err)})") from err


def load_episode_into(widget, path: str | Path):
    """Recreate an episode's classes, model, support images and prompt layers in ``widget``."""
    episode = read_episode(path)
    widget.classes.reset(episode.classes)
    if episode.model:
        widget.set_model(episode.model, widget.model_picker.device)
    for i, support in enumerate(episode.supports):
        image = widget.viewer.add_image(
            support.image, name=support.name or f"support {i + 1}", rgb=support.image.ndim == 3
        )
        layers = widget.add_support(image)
        if support.labels is not None:
            layers.labels.data = as_labels(support.labels, episode.n_classes)
        if len(support.points):
            layers.points.add(support.points[:, :2])
            layers.points.features["class"] = support.points[:, 2].astype(np.int64)
        for y0, x0, y1, x1, k in support.boxes:
            layers.shapes.add_rectangles(np.array([[y0, x0], [y1, x1]]))
            layers.shapes.features.loc[len(layers.shapes.data) - 1, "class"] = int(k)
        layers.recolor(widget.classes)
    return episode


def export_output(viewer, query_layer, classes, path: str | Path) -> tuple[Path, str]:
    """Write the plugin's output layer for ``query_layer`` as TIFF; returns (path, layer name)."""
    from ..files import write_labels

    layer = find_output_layer(viewer, query_layer)
    if layer is None:
        raise ValueError(f"no prediction for {query_layer.name!r} yet: press Run first")
    path = write_labels(path, np.asarray(layer.data), classes.names, {"query": query_layer.name})
    return path, layer.name
