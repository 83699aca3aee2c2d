"""The widget's files: read an .episode into layers, export an output layer as TIFF.

Errors come out as ``ValueError``/``OSError`` with a message naming the file; the dock widget's
buttons turn them into one notification. A damaged episode changes nothing: the file is read
completely before any layer or class is touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..labels import as_labels
from .classes import BACKGROUND_PROMPT, is_background_name
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


def background_mapping(classes: list[str]) -> tuple[list[str], np.ndarray]:
    """An episode's classes without the one named "background", and a lookup table from its
    label values to the widget's: that class becomes ``BACKGROUND_PROMPT`` (the background
    row), the classes after it move down by one."""
    names = [c for c in classes if not is_background_name(c)]
    lookup = np.zeros(len(classes) + 1, dtype=np.int64)
    k = 0
    for value, name in enumerate(classes, start=1):
        if is_background_name(name):
            lookup[value] = BACKGROUND_PROMPT
        else:
            k += 1
            lookup[value] = k
    return names, lookup


def load_episode_into(widget, path: str | Path):
    """Recreate an episode's classes, model, support images and prompt layers in ``widget``.

    A class named "background" (what ``supports_to_episode`` writes for background prompts)
    becomes the built-in background row again.
    """
    episode = read_episode(path)
    names, lookup = background_mapping(list(episode.classes))
    widget.classes.reset(names)
    if episode.model:
        widget.set_model(episode.model, widget.model_picker.device)
    for i, support in enumerate(episode.supports):
        image = widget.viewer.add_image(
            support.image, name=support.name or f"support {i + 1}", rgb=support.image.ndim == 3
        )
        layers = widget.add_support(image)
        if support.labels is not None:
            layers.labels.data = as_labels(lookup[support.labels], max(BACKGROUND_PROMPT, len(names)))
        if len(support.points):
            layers.points.add(support.points[:, :2])
            layers.points.features["class"] = lookup[support.points[:, 2].astype(np.int64)]
        for y0, x0, y1, x1, k in support.boxes:
            layers.shapes.add_rectangles(np.array([[y0, x0], [y1, x1]]))
            layers.shapes.features.loc[len(layers.shapes.data) - 1, "class"] = int(lookup[int(k)])
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
