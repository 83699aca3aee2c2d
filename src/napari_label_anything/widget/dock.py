"""The Label Anything dock widget: classes, supports, query, run/cancel, objects, batch, files.

Thin by design: it collects prompts from layers into an ``Episode`` (``layers.py``), runs a
``Segmenter`` in a worker, one run at a time (``run_controller.py``, ``workers.py``), and
writes a Labels layer (``layers.write_output``); files go through ``episode_files.py``.
The controls are laid out by ``dock_layout.py`` (a scroll area between the class box and the
run bar, foldable sections). Every button reports a failure as one napari notification and on
the status line. Closing the widget (napari's × takes it out of its dock) or the viewer stops
its runs and takes back what they wrote; the state of a widget closed with × goes to the next
one opened in that viewer (``persistence.py``).
From napari's console::

    widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")[1]
    widget.classes.add("nucleus"); widget.add_support(viewer.layers["image"])
    worker = widget.run(viewer.layers["query"], scope="all")   # returns the napari worker
    widget.episode                                               # the Episode built from the layers
    layer, table = widget.split_objects()                        # "<query> objects" and its table
    worker = widget.run_batch("in/", "out/", format="ome-zarr")  # a folder, as `predict` runs it
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path

from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QFileDialog, QWidget

from ..stacks import stack_layout
from .batch import BatchActions
from .channels import ChannelControls
from .class_controls import BACKGROUND_NOT_PAINTABLE, KEY_NEXT_CLASS, KEY_PREVIOUS_CLASS, ClassControls
from .classes import ClassTable
from .dock_layout import KEY_RUN, SCOPES, build_ui
from .encoding import SupportEncoding
from .episode_files import export_output, load_episode_into
from .fast_encoder import FastEncoderPreparation
from .feedback import FeedbackActions, is_plugin_output, kept_planes
from .finetune import FinetuneActions
from .layers import (
    SupportLayers,
    find_output_layer,
    has_background_prompts,
    spatial_shape,
    supports_to_episode,
)
from .object_table import ObjectsActions
from .persistence import adopt_state, forget_state, keep_state
from .preview import PreviewActions
from .probability_export import ProbabilityExport
from .reporting import notify as _notify
from .reporting import set_status
from .run_controller import RunController, one_line
from .support_list import SupportActions
from .workers import import_torch_stack

logger = logging.getLogger(__name__)

__all__ = ["KEY_RUN", "SCOPES", "LabelAnythingWidget"]

PROGRESS_PER_PLANE = 100  # progress bar units per plane: it moves within a plane too


class LabelAnythingWidget(
    ClassControls,
    ChannelControls,
    PreviewActions,
    SupportEncoding,
    FastEncoderPreparation,
    SupportActions,
    FeedbackActions,
    FinetuneActions,
    ObjectsActions,
    BatchActions,
    ProbabilityExport,
    QWidget,
):
    """Few-shot multi-class segmentation from prompts on support images."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.classes = ClassTable()
        self.supports: list[SupportLayers] = []
        self.last_error: Exception | None = None
        self.status_history: list[str] = []  # status lines of the current run, for the console
        self.closed = False
        self._docked = False
        self._actions = {
            KEY_NEXT_CLASS: lambda *_: self.classes.set_active(self.classes.active + 1),
            KEY_PREVIOUS_CLASS: lambda *_: self.classes.set_active(self.classes.active - 1),
            KEY_RUN: lambda *_: self.run(),
        }
        self._build_ui()
        self.runs = RunController(self.viewer, self, self.classes)
        self._connect_classes()
        self.model_picker.model_combo.currentIndexChanged.connect(self._update_background_row)
        self.model_picker.model_combo.currentIndexChanged.connect(self._default_preview)
        picker = self.model_picker
        for signal in (picker.model_combo.currentIndexChanged, picker.device_combo.currentIndexChanged,
                       self.channel_combo.currentIndexChanged):  # fmt: skip
            signal.connect(self.schedule_encoding)  # encoding.py
        self._start_fast_encoder_preparation()  # fast_encoder.py: the chosen model's ONNX export
        self._default_preview()
        self._update_background_row()
        self._on_classes_changed()  # row 0, the background, before any class
        self._connect_viewer()
        self._refresh_layer_choices()
        if not adopt_state(self):  # persistence.py: the state of a panel closed with ×
            self.adopt_sample_layers()
        # The main window deletes its children when it closes (WA_DeleteOnClose): stop the runs
        # then. Not a bound method of self, which Qt would no longer call once deleted.
        runs, ref = self.runs, weakref.ref(self)
        self.destroyed.connect(lambda *_: _release_after_delete(runs, ref))

    # -- UI --------------------------------------------------------------------------------

    def _build_ui(self) -> None:
        self._query_picked = False  # whether the user (or a script) chose the query in its combo
        build_ui(self)  # dock_layout.py: class box, scroll area with the sections, run bar

    def _query_chosen(self, *_) -> None:
        """The query combo changed outside ``_refresh_layer_choices``: a choice (preview.py)."""
        self._query_picked = True

    def _connect_classes(self, connect: bool = True) -> None:
        classes = self.classes
        pairs = ((classes.changed, self._on_classes_changed), (classes.active_changed, self._on_active_class),
                 (classes.removed, self._on_class_removed), (classes.changed, self.schedule_encoding))  # fmt: skip
        for signal, slot in pairs:
            signal.connect(slot) if connect else signal.disconnect(slot)

    def adopt_classes(self, classes) -> None:
        """Use ``classes`` (a ClassTable kept from a closed panel) instead of this widget's own."""
        self._connect_classes(False)
        self.classes = self.runs.classes = classes
        self._connect_classes()
        self._update_background_row()
        self._on_classes_changed()

    def _refresh_layer_choices(self, event=None) -> None:
        from napari.layers import Image, Labels

        images = [lay.name for lay in self.viewer.layers if isinstance(lay, Image) and not is_plugin_output(lay)]
        labels = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        previous_query = self.query_combo.currentText()
        for combo, names, extra in (
            (self.support_image_combo, images, []),
            (self.query_combo, images, []),
            (self.support_labels_combo, labels, ["(new layer)"]),
        ):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(extra + names)
            if current in extra + names:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        if previous_query not in images:
            self._query_picked = False  # the chosen query went away
        support_images = {s.image.name for s in self.supports if not s.query_too}
        if self.query_combo.currentText() in support_images:
            others = [n for n in images if n not in support_images]
            if others:
                self.query_combo.setCurrentText(others[-1])
                self._query_picked = False  # a guess, not a choice
        self.supports = [s for s in self.supports if s.image in self.viewer.layers]
        self._refresh_support_list()
        self._bound_plane_range()
        self._update_channel_choices()

    def _bound_plane_range(self, *_) -> None:
        """The range spin boxes go from 0 to the query's last plane (disabled for a 2D query)."""
        name = self.query_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        depth = _depth(layer)
        for spin in (self.range_start, self.range_stop):
            spin.setRange(0, max(depth - 1, 0))
            spin.setEnabled(depth > 1)

    def set_model(self, name: str, device: str = "auto") -> None:
        """Choose the model (name, repo id or folder) and device, as the combo boxes do.

        A device this machine lacks is refused with one notification; the device stays as it was.
        """
        self._guard(lambda: self.model_picker.set_model(name, device), "cannot choose device")

    def _guard(self, action, what: str):
        """Run a user action; an error becomes one notification and the status line, never a traceback.

        Returns the action's result, or None when it failed. The widget stays usable.
        """
        try:
            return action()
        except Exception as err:  # noqa: BLE001 - the UI boundary: report, log, never re-raise
            self._report_error(what, err)
            return None

    def _report_error(self, what: str, err: BaseException) -> None:
        message, details = f"{what}: {one_line(err, limit=None)}", f"{what}: {err}"
        self.last_error = err
        if isinstance(err, (ValueError, TypeError, FileNotFoundError)):
            logger.info(message)  # the user's input: the message says it all
        else:
            logger.warning(message, exc_info=err)
        if not self.closed:
            set_status(self.status, message, details)
        _notify("error", message, details)

    # -- running ---------------------------------------------------------------------------

    @property
    def normalise(self) -> str:
        """How a stack's planes are normalised: "auto", "stack" or "plane" (``Segmenter.iter_predict_stack``)."""
        return self.normalise_combo.currentData()

    @property
    def episode(self):
        """The ``Episode`` the current layers describe (raises ValueError if incomplete).

        Background prompts, if any, are its last class, named "background" (``supports_to_episode``);
        colour supports are as the model sees them (the chosen ``channels``).
        """
        return self._build_episode(background=True, channels=self.channels)

    def _build_episode(self, background: bool, channels=None):
        if not len(self.classes):
            raise ValueError("define at least one class")
        episode = supports_to_episode(
            self.supports, self.classes, model=self.model_picker.model_name, background=background,
            channels=channels,
        )  # fmt: skip
        episode.validate()
        return episode

    def _run_episode(self):
        """The episode a run uses: background prompts only for a model that takes them."""
        paintable = self.classes.background_paintable
        if not paintable and has_background_prompts(self.supports):
            _notify("warning", f"background scribbles are not used: {BACKGROUND_NOT_PAINTABLE}")
        return self._build_episode(background=paintable, channels=self.channels)

    def _plane_indices(self, query_layer, scope: str) -> list[tuple[int, ...]]:
        layout = stack_layout(query_layer.data.shape, 0, rgb=query_layer.rgb)
        if not layout.plane_axes:
            return [()]
        current = tuple(
            int(round(c)) for c in query_layer.world_to_data(self.viewer.dims.point)[: len(layout.plane_axes)]
        )
        current = tuple(min(max(c, 0), layout.shape[a] - 1) for c, a in zip(current, layout.plane_axes, strict=True))
        if scope == "current plane":
            return [current]
        if scope == "plane range":
            start, stop = sorted((self.range_start.value(), self.range_stop.value()))
            last = layout.shape[0] - 1
            if start > last:  # the spin boxes prevent it; a script may not
                raise ValueError(f"plane range {start}-{stop} is past the last plane ({last}) of {query_layer.name!r}")
            return [(i, *current[1:]) for i in range(start, min(stop, last) + 1)]
        return layout.plane_indices()

    def run(self, query_layer=None, scope: str | None = None):
        """Segment ``query_layer`` (default: the widget's choice) in a worker; returns the worker.

        ``scope``: "current plane", "plane range" or "all planes" (default: the widget's choice).
        Each plane appears in the output layer as soon as it is done; cancel, an error, closing
        the widget or removing a layer the run reads takes them back: all layers are as they were. Returns None
        (after a notification) when the run cannot start, e.g. while another run is going.
        """
        if self.closed:
            _notify("warning", "the Label Anything widget is closed; open it again to run")
            return None
        if self.runs.busy or self.finetuning or self.batching:
            _notify("warning", "a run, batch or fine-tuning is in progress: wait for it or press Cancel / Stop")
            return None
        try:
            query_layer = query_layer or self._chosen_query()
            episode = self._run_episode()
            indices = self._plane_indices(query_layer, scope or self.scope_combo.currentText())
            import_torch_stack()
            download = self.model_picker.checkpoint_to_download()
            watched = [layer for support in self.supports for layer in (support.image, *support.layers())]
            self.warn_one_channel([query_layer, *(s.image for s in self.supports)])  # channels.py
            self.cancel_preview()  # the run wins: a preview in flight is dropped
            return self.runs.start(self.segmenter_after_encoding, episode, query_layer, indices, watched, download,
                                   uncertainty=self.uncertainty_check.isChecked(), channels=self.channels,
                                   kept=kept_planes(self.supports, query_layer),
                                   normalise=self.normalise)  # fmt: skip
        except Exception as err:  # noqa: BLE001 - the UI boundary
            self._report_error("cannot run", err)
            return None

    def cancel(self) -> None:
        """Stop the running prediction (within its plane where the model predicts it in steps,
        else after it); the planes it wrote are taken back."""
        if self.runs.busy:
            self.status.setText("cancelling…")
        self.runs.cancel()

    # RunView: how the run controller shows a run (never called after the widget closed).

    def run_started(self, total: int) -> None:
        self.last_error = None
        self.status_history = []
        self.progress.setRange(0, total * PROGRESS_PER_PLANE)
        self.progress.setValue(0)
        self.run_button.setEnabled(False)
        self.run_button.setText("running…")
        self.cancel_button.setEnabled(True)
        self.run_status("starting")

    def run_status(self, text: str, details: str | None = None) -> None:
        text = self.waiting_text(text)  # fast_encoder.py: a run waiting for the fast encoder says so
        set_status(self.status, text, details)
        self.status_history.append(text)

    def run_progress(self, done: float, total: int) -> None:
        self.progress.setValue(round(done * PROGRESS_PER_PLANE))
        whole = int(done)  # a fraction: the share of the plane in progress
        text = f"plane {whole}/{total}" if done == whole else f"plane {whole + 1}/{total}: {done - whole:.0%}"
        self.status.setText(text)

    def run_ended(self, kind: str, message: str, error: BaseException | None) -> None:
        self.run_button.setEnabled(True)
        self.run_button.setText(f"Run ({KEY_RUN})")
        self.cancel_button.setEnabled(False)
        details = f"Label Anything failed: {type(error).__name__}: {error}" if error is not None else None
        self.run_status(message, details)
        if error is not None:
            self.last_error = error
        self._preview_after_run(kind == "done")  # preview.py
        self.schedule_encoding()  # encoding.py: what changed during the run
        if kind == "done":
            if not self.hint.isHidden():  # the first run: show what comes next (the hint's last line)
                self.sections["feedback"].set_expanded(True)
            self.hint.hide()
        elif kind == "failed":
            _notify("error", message, details)
        elif kind == "stopped":
            _notify("warning", f"Label Anything: {message}")
        elif kind == "cancelled":
            _notify("info", f"Label Anything: {message}")

    def _output_layer(self):
        name = self.query_combo.currentText()
        return find_output_layer(self.viewer, self.viewer.layers[name]) if name in self.viewer.layers else None

    # -- files -----------------------------------------------------------------------------
    # The methods raise ValueError/OSError with a clear message (for the console); the buttons
    # go through ``_guard``, which turns any error into one notification.

    def save_episode(self, path: str | Path) -> Path:
        """Write classes, supports, prompts, the model id and the channel choice to an .episode
        file, the support images as the model saw them (one chosen channel: that channel), so
        ``predict`` on the command line sees colour queries as this widget does."""
        path = self._build_episode(background=True, channels=self.channels).save(path)
        self._saved_signature = self._signature()
        self.status.setText(f"saved episode to {path}")
        return path

    def load_episode(self, path: str | Path) -> None:
        """Recreate an episode's support images and prompt layers, and its classes.

        The file is read completely before anything changes: a damaged file changes nothing.
        """
        episode = load_episode_into(self, path)
        if episode is None:
            self.status.setText("loading cancelled: nothing changed")
            return
        self._refresh_support_list()
        self._saved_signature = self._signature()
        self.status.setText(f"loaded episode {Path(path).name}: {len(episode.supports)} support(s)")

    def _signature(self) -> str | None:
        """What would be saved, in short (None: nothing to save)."""
        if not len(self.classes) and not self.supports:
            return None
        try:
            episode = supports_to_episode(self.supports, self.classes)
            return f"{episode.signature()} channels {self.channels} colours {self.classes.colors}"
        except Exception:  # noqa: BLE001 - an incomplete episode still counts as changes
            return "incomplete"

    def has_unsaved_changes(self) -> bool:
        """Whether classes or prompts changed since the last save or load (or since opening)."""
        return self._signature() != getattr(self, "_saved_signature", None)

    def clear_episode(self) -> None:
        """Forget the classes and supports: prompt layers the plugin made and support images an
        episode file made are removed; your own images and labels layers stay."""
        from .episode_files import LOADED_KEY

        for support in list(self.supports):
            doomed = [support.points, support.shapes] + ([support.labels] if support.owns_labels else [])
            if support.image.metadata.get(LOADED_KEY):
                doomed.append(support.image)
            self.supports.remove(support)
            for layer in doomed:
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
        self.classes.reset([])
        self._refresh_support_list()

    def export_labels(self, path: str | Path, query_layer=None) -> Path:
        """Save the output layer of ``query_layer`` as TIFF with the class names in its metadata."""
        path, name = export_output(self.viewer, query_layer or self._chosen_query(), self.classes, path)
        self.status.setText(f"exported {name!r} to {path}")
        return path

    def _chosen_query(self):
        name = self.query_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("choose a query image layer")
        return self.viewer.layers[name]

    def _save_episode_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save episode", "run.episode", "Episodes (*.episode)")
        if path:
            self._guard(lambda: self.save_episode(path), "cannot save episode")

    def _load_episode_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load episode", "", "Episodes (*.episode)")
        if path:
            self._guard(lambda: self.load_episode(path), "cannot load episode")

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export labels", "labels.tif", "TIFF (*.tif *.tiff)")
        if path:
            self._guard(lambda: self.export_labels(path), "cannot export labels")

    # -- key bindings and closing ----------------------------------------------------------

    def _bind_layer_keys(self, layer) -> None:
        for key, action in self._actions.items():
            layer.bind_key(key, action, overwrite=True)

    def _connect_viewer(self) -> None:
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layer_choices)
        for key, action in self._actions.items():
            self.viewer.bind_key(key, action, overwrite=True)
        for support in self.supports:
            for layer in support.layers():
                self._bind_layer_keys(layer)

    def _release(self) -> None:
        """Stop the runs, unbind keys, stop listening to the viewer. Touches no Qt object."""
        from napari.utils.key_bindings import coerce_keybinding

        self.closed = True
        self.runs.close()
        self._connect_classes(False)  # the class table may go on in a new widget (persistence.py)
        self.cancel_preview()
        self.stop_encoding()
        self.stop_preparation()
        self._stop_finetuning()
        self._stop_batch()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.disconnect(self._refresh_layer_choices)
        for key, action in self._actions.items():
            # only our own binding: a widget opened since then may have bound the same key
            if self.viewer.keymap.get(coerce_keybinding(key)) is action:
                self.viewer.bind_key(key, None)
            for support in self.supports:
                for layer in support.layers():
                    if layer.keymap.get(coerce_keybinding(key)) is action:
                        layer.bind_key(key, None)

    def cleanup(self) -> None:
        """Stop workers and release key bindings and viewer events (called when the widget closes).

        A run in progress stops (as ``cancel`` does) and writes nothing. Safe to call twice.
        """
        if self.closed:
            return
        self._release()
        keep_state(self)  # persistence.py: a new widget for this viewer takes it over
        self.run_button.setEnabled(True)
        self.run_button.setText(f"Run ({KEY_RUN})")
        self.cancel_button.setEnabled(False)
        self.status.setText("closed")

    def _reopen(self) -> None:
        self.closed = False
        forget_state(self)
        self._connect_classes()
        self.runs.reopen()
        self._connect_viewer()
        self._refresh_layer_choices()
        self.status.setText("ready")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.cleanup()
        super().closeEvent(event)

    def event(self, event) -> bool:
        """Follow docking: napari's ``remove_dock_widget`` (the dock's × button) only takes the
        widget out of its dock (``setParent(None)``), it neither closes nor deletes it."""
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is None and self._docked:
                self._docked = False
                self.cleanup()
            elif self.parent() is not None:
                self._docked = True
                if self.closed:
                    self._reopen()
        return super().event(event)

    def sizeHint(self):  # noqa: N802 - Qt API
        hint = super().sizeHint()
        hint.setWidth(max(hint.width(), 360))
        return hint


def _depth(layer) -> int:
    """Planes along the first axis of an image layer's stack; 1 for a 2D image or no layer."""
    if layer is None:
        return 1
    shape = spatial_shape(layer)
    return shape[0] if len(shape) > 2 else 1


def _release_after_delete(runs: RunController, ref) -> None:
    """The widget's Qt object was deleted (e.g. with the viewer's window): stop everything."""
    runs.close()
    widget = ref()
    if widget is not None and not widget.closed:
        widget._release()
