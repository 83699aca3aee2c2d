"""An ``Episode`` as napari layer data tuples: support images and their prompt layers.

What the napari reader of ``.episode`` files (``_npe2.py``) opens while the Label Anything widget
is closed: per support an image layer (the saved neighbouring planes of a stack support, with
the prompts on their plane), ``"<image> prompts"`` (painted prompts; its metadata names the
classes, so a widget opened later adopts it as a support), and the point and box prompts. A
class named "background" (background scribbles) becomes ``labels.BACKGROUND_PROMPT`` and the
classes after it move down, as the widget keeps them (``background_mapping``). Returns tuples
only: napari is never imported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .labels import (
    BACKGROUND_COLOR,
    BACKGROUND_PROMPT,
    CLASSES_KEY,
    class_names,
    default_color,
    is_background_name,
    labels_dtype,
)


def background_mapping(classes: list[str]) -> tuple[list[str], np.ndarray]:
    """An episode's classes without the one named "background", and a lookup table (int64,
    one entry per label value 0..N) from its label values to the widget's: that class becomes
    ``BACKGROUND_PROMPT``, the classes after it move down by one."""
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


def episode_layer_data(episode) -> list[tuple[Any, dict[str, Any], str]]:
    """``(data, kwargs, layer type)`` tuples of every support of ``episode``: image, painted
    prompts (Labels, values 1..N and ``BACKGROUND_PROMPT``), point prompts (Points, (row, col)
    or (plane, row, col); ``features["class"]``) and box prompts (rectangles of Shapes)."""
    names, lookup = background_mapping(list(episode.classes))
    colors = {k: episode.colors.get(name, default_color(k)) for k, name in enumerate(names, start=1)}
    colors[BACKGROUND_PROMPT], colors[0] = BACKGROUND_COLOR, "transparent"
    metadata = {CLASSES_KEY: list(class_names(names).values())}
    layers: list[tuple[Any, dict[str, Any], str]] = []
    for i, support in enumerate(episode.supports):
        name = support.name or f"support {i + 1}"
        if support.context is not None:  # a stack support: its saved neighbouring planes
            image, plane, name = support.context, (support.context_index,), f"{name} with neighbours"
        else:
            image, plane = support.image, ()
        rgb = image.ndim == len(plane) + 3
        layers.append((image, {"name": name, "rgb": rgb}, "image"))
        shape = image.shape[:-1] if rgb else image.shape
        painted = np.zeros(shape, dtype=labels_dtype(max(BACKGROUND_PROMPT, len(names))))
        if support.labels is not None:
            painted[plane] = lookup[support.labels]
        kwargs = {"name": f"{name} prompts", "metadata": dict(metadata), "colormap": {None: "transparent", **colors}}
        layers.append((painted, kwargs, "labels"))
        if len(support.points):
            points = np.asarray(support.points, dtype=np.float64)
            ks = lookup[points[:, 2].astype(np.int64)]
            coords = np.column_stack([np.tile(plane, (len(points), 1)), points[:, :2]]) if plane else points[:, :2]
            kwargs = {"name": f"{name} point prompts", "features": {"class": ks}, "face_color": [colors[k] for k in ks]}
            layers.append((coords, kwargs, "points"))
        if len(support.boxes):
            boxes = np.asarray(support.boxes, dtype=np.float64)
            ks = lookup[boxes[:, 4].astype(np.int64)]
            corners = [
                np.array([[*plane, y, x] for y, x in ((y0, x0), (y0, x1), (y1, x1), (y1, x0))])
                for y0, x0, y1, x1 in boxes[:, :4]
            ]
            kwargs = {
                "name": f"{name} box prompts",
                "shape_type": "rectangle",
                "features": {"class": ks},
                "face_color": "transparent",
                "edge_color": [colors[k] for k in ks],
            }
            layers.append((corners, kwargs, "shapes"))
    return layers
