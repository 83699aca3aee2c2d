"""The widget's files: read an .episode into layers (also for the npe2 reader while the widget is
open), export an output layer as TIFF.

Errors come out as ``ValueError``/``OSError`` with a message naming the file; the dock widget's
buttons turn them into one notification. A damaged episode changes nothing: the file is read
completely before any layer or class is touched.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from qtpy.QtWidgets import QFileDialog

from ..episode_layers import background_mapping
from ..labels import labels_dtype
from ..preprocessing import select_channels
from . import reporting
from .class_table import BACKGROUND_PROMPT, default_color
from .layer_conversion import same_layer, spatial_shape, supports_to_episode
from .output_layers import find_output_layer
from .reporting import one_line

LOADED_KEY = "label_anything_loaded_support"  # metadata of support images an episode file created
_WIDGETS: weakref.WeakSet = weakref.WeakSet()  # the dock widgets made so far (``register_widget``)


def register_widget(widget) -> None:
    """Make ``widget`` (a dock) a target of ``load_into_open_widget`` while it is open."""
    _WIDGETS.add(widget)


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

    viewer = viewer or napari.current_viewer()
    if viewer is None:
        return False
    docked = [getattr(w, "native", w) for w in viewer.window.dock_widgets.values()]
    widget = next((w for w in docked if w in _WIDGETS and not w.closed), None)
    if widget is None:
        return False
    widget.load_episode(path)
    return True


def export_output(viewer, query_layer, classes, path: str | Path) -> tuple[Path, str]:
    """Write the plugin's output layer for ``query_layer`` as TIFF; returns (path, layer name)."""
    from ..io.label_files import write_labels

    layer = find_output_layer(viewer, query_layer)
    if layer is None:
        raise ValueError(f"no prediction for {query_layer.name!r} yet: press Run first")
    path = write_labels(path, np.asarray(layer.data), classes.names, {"query": query_layer.name}, classes.colors)
    return path, layer.name


class FilesHost(Protocol):
    """What ``EpisodeFileActions`` uses of the dock (``load_episode_into`` uses the dock itself:
    its classes, supports, model choice and channels)."""

    viewer: Any
    classes: Any
    supports: list
    status: Any  # the status line (a QLabel)
    channels: tuple[int, ...] | None

    def guard(self, action: Callable[[], Any], what: str) -> Any: ...

    def build_episode(self, background: bool, channels=None) -> Any: ...

    def chosen_query(self) -> Any: ...

    def refresh_support_list(self, event=None) -> None: ...


class EpisodeFileActions:
    """The dock's Files box: save / load an episode, export the labels; the buttons go through
    ``guard``, the methods raise ValueError/OSError with a clear message (for the console)."""

    def __init__(self, host: FilesHost, parent=None) -> None:
        self.host = host
        self.parent = parent  # the dialogs' parent widget
        self.saved_signature: str | None = None  # what was saved or loaded last

    def save_episode(self, path: str | Path) -> Path:
        """Write classes, supports, prompts, the model id and the channel choice to an .episode
        file, the support images as the model saw them (one chosen channel: that channel), so
        ``predict`` on the command line sees colour queries as this widget does."""
        path = self.host.build_episode(background=True, channels=self.host.channels).save(path)
        self.saved_signature = self._signature()
        self.host.status.setText(f"saved episode to {path}")
        return path

    def load_episode(self, path: str | Path) -> None:
        """Recreate an episode's support images and prompt layers, and its classes.

        The file is read completely before anything changes: a damaged file changes nothing.
        """
        episode = load_episode_into(self.host, path)
        if episode is None:
            self.host.status.setText("loading cancelled: nothing changed")
            return
        self.host.refresh_support_list()
        self.saved_signature = self._signature()
        self.host.status.setText(f"loaded episode {Path(path).name}: {len(episode.supports)} support(s)")

    def _signature(self) -> str | None:
        """What would be saved, in short (None: nothing to save)."""
        if not len(self.host.classes) and not self.host.supports:
            return None
        try:
            episode = supports_to_episode(self.host.supports, self.host.classes)
            return f"{episode.signature()} channels {self.host.channels} colours {self.host.classes.colors}"
        except Exception:  # noqa: BLE001 - an incomplete episode still counts as changes
            return "incomplete"

    def has_unsaved_changes(self) -> bool:
        """Whether classes or prompts changed since the last save or load (or since opening)."""
        return self._signature() != self.saved_signature

    def clear_episode(self) -> None:
        """Forget the classes and supports: prompt layers the plugin made and support images an
        episode file made are removed; your own images and labels layers stay."""
        for support in list(self.host.supports):
            doomed = [support.points, support.shapes] + ([support.labels] if support.owns_labels else [])
            if support.image.metadata.get(LOADED_KEY):
                doomed.append(support.image)
            self.host.supports.remove(support)
            for layer in doomed:
                if layer in self.host.viewer.layers:
                    self.host.viewer.layers.remove(layer)
        self.host.classes.reset([])
        self.host.refresh_support_list()

    def export_labels(self, path: str | Path, query_layer=None) -> Path:
        """Save the output layer of ``query_layer`` as TIFF with the class names in its metadata."""
        path, name = export_output(self.host.viewer, query_layer or self.host.chosen_query(), self.host.classes, path)
        self.host.status.setText(f"exported {name!r} to {path}")
        return path

    def save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.parent, "Save episode", "run.episode", "Episodes (*.episode)")
        if path:
            self.host.guard(lambda: self.save_episode(path), "cannot save episode")

    def load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.parent, "Load episode", "", "Episodes (*.episode)")
        if path:
            self.host.guard(lambda: self.load_episode(path), "cannot load episode")

    def export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.parent, "Export labels", "labels.tif", "TIFF (*.tif *.tiff)")
        if path:
            self.host.guard(lambda: self.export_labels(path), "cannot export labels")
