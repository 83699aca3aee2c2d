"""The widget's files: read an .episode into layers (also for the npe2 reader while the widget is
open), export an output layer as TIFF.

Errors come out as ``ValueError``/``OSError`` with a message naming the file; the dock widget's
buttons turn them into one notification. A damaged episode changes nothing: the file is read
completely before any layer or class is touched.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..episode_layers import background_mapping
from ..labels import labels_dtype
from ..preprocessing import select_channels
from . import reporting
from .classes import BACKGROUND_PROMPT, default_color
from .layers import find_output_layer, same_layer, spatial_shape
from .run_controller import one_line

LOADED_KEY = "label_anything_loaded_support"  # metadata of support images an episode file created


def read_episode(path: str | Path):
    """``Episode.load``, with any failure to read a damaged file raised as ValueError."""
    from ..episode import Episode

    try:
        return Episode.load(path)
    except (ValueError, OSError):
        raise
    except Exception as err:  # noqa: BLE001 - a damaged file can fail in many ways
        raise ValueError(f"{path} is not a readable episode file ({type(err).__name__}: {one_line(err)})") from err


def _stack_plane(viewer, support, channels=None):
    """(stack layer, plane) when the support is "<name> [i, ...]" and layer <name> has that plane
    with the same pixels as the model saw them (the episode's ``channels`` of a colour stack;
    the stack was opened again), else (None, None)."""
    match = re.fullmatch(r"(.+) \[(\d+(?:, \d+)*)\]", support.name or "")
    if match is None or match.group(1) not in viewer.layers:
        return None, None
    layer, plane = viewer.layers[match.group(1)], tuple(int(i) for i in match.group(2).split(", "))
    shape = spatial_shape(layer) if layer.__class__.__name__ == "Image" else ()
    if len(shape) != len(plane) + 2 or any(not 0 <= i < n for i, n in zip(plane, shape, strict=False)):
        return None, None
    pixels = np.asarray(layer.data[plane])
    if channels is not None and getattr(layer, "rgb", False):
        pixels = select_channels(pixels, channels)
    if not np.array_equal(pixels, support.image):
        return None, None
    return layer, plane


def load_episode_into(widget, path: str | Path):
    """Recreate an episode's classes (with their colours), model, support images, prompt layers
    and channel choice.

    A class named "background" (what ``supports_to_episode`` writes for background prompts)
    becomes the built-in background row again.
    """
    episode = read_episode(path)
    if widget.has_unsaved_changes() and not reporting.confirm(
        widget, "Load episode", "Loading replaces the current classes and supports, which have unsaved changes. Load?"
    ):
        return None
    widget.clear_episode()
    names, lookup = background_mapping(list(episode.classes))
    widget.classes.reset(names, [episode.colors.get(name, default_color(k)) for k, name in enumerate(names, 1)])
    if episode.model:
        widget.set_model(episode.model, widget.model_picker.device)
    for i, support in enumerate(episode.supports):
        stack, plane = _stack_plane(widget.viewer, support, episode.channels)
        if stack is not None:  # "<stack> [z]": the prompts go back onto plane z of that stack
            layers = next((s for s in widget.supports if same_layer(s.image, stack)), None) or widget.add_support(stack)
        elif support.context is not None:  # its stack is not open: the saved planes around it come back
            image = widget.viewer.add_image(
                support.context,
                name=f"{support.name or f'support {i + 1}'} with neighbours",
                rgb=support.context.ndim == 4,
            )
            image.metadata[LOADED_KEY] = True
            layers, plane = widget.add_support(image), (support.context_index,)
        else:
            image = widget.viewer.add_image(
                support.image, name=support.name or f"support {i + 1}", rgb=support.image.ndim == 3
            )
            image.metadata[LOADED_KEY] = True
            layers, plane = widget.add_support(image), ()
        if support.labels is not None:
            data = np.array(layers.labels.data, dtype=labels_dtype(max(BACKGROUND_PROMPT, len(names))))
            data[plane] = lookup[support.labels]
            layers.labels.data = data
        if len(support.points):
            layers.points.add(np.column_stack([np.tile(plane, (len(support.points), 1)), support.points[:, :2]]))
            layers.points.features.loc[len(layers.points.data) - len(support.points) :, "class"] = lookup[
                support.points[:, 2].astype(np.int64)
            ]
        for y0, x0, y1, x1, k in support.boxes:
            corners = [(y0, x0), (y0, x1), (y1, x1), (y1, x0)]  # four: napari's rectangles in a stack
            layers.shapes.add_rectangles(np.array([[*plane, y, x] for y, x in corners]))
            layers.shapes.features.loc[len(layers.shapes.data) - 1, "class"] = int(lookup[int(k)])
        layers.recolor(widget.classes)
    try:  # the channel the supports were seen through (None: all, as files before it did), for queries too
        widget.set_channels(episode.channels)
    except ValueError:  # the current query lacks that channel
        reporting.notify(
            "warning",
            f"the episode was saved with channel(s) {list(episode.channels)} chosen; choose a colour query "
            "and that channel, so queries are seen as its supports were",
        )
    return episode


def load_into_open_widget(path: str | Path, viewer=None) -> bool:
    """Load an .episode into the Label Anything widget docked in ``viewer`` (default: napari's
    current viewer), as its "load episode…" does; False when no open widget is there (the npe2
    reader then opens the episode as layers)."""
    import napari

    from .dock import LabelAnythingWidget

    viewer = viewer or napari.current_viewer()
    if viewer is None:
        return False
    docked = [getattr(w, "native", w) for w in viewer.window.dock_widgets.values()]
    widget = next((w for w in docked if isinstance(w, LabelAnythingWidget) and not w.closed), None)
    if widget is None:
        return False
    widget.load_episode(path)
    return True


def export_output(viewer, query_layer, classes, path: str | Path) -> tuple[Path, str]:
    """Write the plugin's output layer for ``query_layer`` as TIFF; returns (path, layer name)."""
    from ..files import write_labels

    layer = find_output_layer(viewer, query_layer)
    if layer is None:
        raise ValueError(f"no prediction for {query_layer.name!r} yet: press Run first")
    path = write_labels(path, np.asarray(layer.data), classes.names, {"query": query_layer.name}, classes.colors)
    return path, layer.name
