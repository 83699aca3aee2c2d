"""napari's own contribution points (``napari.yaml``) but the widget: a reader of ``.episode``
files, a writer of Labels layers as label TIFFs with class names, and the sample data.

Reader: drag-and-drop or File > Open of an ``.episode`` restores the episode into the Label
Anything widget of the current viewer when it is open (``widget.load_episode``, the widget's
"load episode…"); otherwise it opens the episode's support images and prompt layers as layers
(``episode_layers.py``). Writer: File > Save Selected Layer(s) of a Labels layer with "label
TIFF with class names" writes ``io.label_files.write_labels`` (ImageJ TIFF; the class names the plugin
keeps in the layer's metadata or features, its colours as the LUT).

Neither napari nor Qt is imported at module level: the widget is reached only when one was
built in this process.

Sample data: the demo's episodes (``demo_episodes.py``) as layer data tuples, ready to run
(napari is never imported for them either).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

EPISODE_SUFFIX = ".episode"


def get_episode_reader(path: str | Sequence[str]) -> Callable[[Any], list] | None:
    """The reader of one ``.episode`` file, or None (napari then asks other readers)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    return read_episode if str(path).lower().endswith(EPISODE_SUFFIX) else None


def read_episode(path: str | Sequence[str]) -> list[tuple]:
    """Restore the episode into the open widget (returns napari's "nothing to add" ``[(None,)]``),
    or return its support images and prompt layers as ``(data, kwargs, layer type)`` tuples."""
    path = str(path[0] if isinstance(path, (list, tuple)) else path)
    if _load_into_open_widget(path):
        return [(None,)]
    from .episode import Episode
    from .episode_layers import episode_layer_data

    return episode_layer_data(Episode.load(path))


def _load_into_open_widget(path: str) -> bool:
    if "napari_label_anything.widget" not in sys.modules:  # no widget was ever built here: none is open
        return False
    from .widget.file_actions import load_into_open_widget

    return load_into_open_widget(path)


def write_labels_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: a Labels layer as a label TIFF with class names; returns [path]."""
    from .io.label_files import write_labels

    if attributes.get("multiscale"):
        data = data[0]  # the full-resolution level
    classes, colors = layer_classes(attributes)
    extra = {"layer": str(attributes.get("name", ""))}
    return [str(write_labels(path, np.asarray(data), classes, extra, colors))]


def layer_classes(attributes: dict[str, Any]) -> tuple[list[str], list[str | None]]:
    """Names and '#rrggbb' colours of classes 1..N of a Labels layer's state: the names from its
    metadata (``labels.CLASSES_KEY``: {value: name} or [background, name 1, ...]) or its features
    (columns "index" and "class"), else none; the colours from a direct colormap."""
    from .labels import CLASSES_KEY

    stored = (attributes.get("metadata") or {}).get(CLASSES_KEY)
    named: dict[int, str] = {}
    if isinstance(stored, dict):
        named = {int(k): str(v) for k, v in stored.items()}
    elif isinstance(stored, (list, tuple)):
        named = dict(enumerate(map(str, stored)))
    else:
        features = attributes.get("features")
        if features is not None and {"index", "class"} <= set(getattr(features, "columns", ())):
            named = {int(k): str(v) for k, v in zip(features["index"], features["class"], strict=True)}
    top = max(named, default=0)
    classes = [named.get(k, f"class {k}") for k in range(1, top + 1)]
    return classes, [_hex(attributes.get("colormap"), k) for k in range(1, top + 1)]


def _hex(colormap: Any, value: int) -> str | None:
    colors = getattr(colormap, "color_dict", None)
    rgba = colors.get(value) if isinstance(colors, dict) else None
    if rgba is None:
        return None
    return "#" + "".join(f"{round(255 * float(c)):02x}" for c in np.asarray(rgba)[:3])


def _sample_layers(name: str, **options) -> list[tuple]:
    from .demo_episodes import load_sample
    from .labels import class_names

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
    """Sample data: brick / grass / gravel, a scribbled support and a 2D query."""
    return _sample_layers("textures")


def textures_stack_sample() -> list[tuple]:
    """Sample data: the same support with a 5-plane query stack."""
    return _sample_layers("textures", planes=5)
