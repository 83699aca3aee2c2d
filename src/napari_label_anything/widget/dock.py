"""The Label Anything dock widget: classes, supports, query, run/cancel, objects, batch, files.

Thin by design: it collects prompts from layers into an ``Episode`` (``layer_conversion.py``), runs a
``Segmenter`` in a worker, one run at a time (``run_controller.py``, ``workers.py``), and
writes a Labels layer (``output_layers.py``). The dock is made of parts, each a small class
with the controls and state of one concern and a ``Protocol`` naming what it uses of the dock
(``class_controls.ClassHost``, ...); it creates and wires them and keeps the names scripts use
(``widget.add_support``, ``widget.run_batch``, ...) as delegations. The controls are laid out
by ``dock_layout.py`` (a scroll area between the class box and the run bar, foldable sections).
Every button reports a failure as one napari notification and on the status line. Closing the
widget (napari's × takes it out of its dock) or the viewer stops its runs and takes back what
they wrote; the state of a widget closed with × goes to the next one opened in that viewer
(``persistence.py``).
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
from qtpy.QtWidgets import QWidget

from ..stacks import stack_layout
from .batch import BatchPanel
from .channels import ChannelControls
from .class_controls import BACKGROUND_NOT_PAINTABLE, KEY_NEXT_CLASS, KEY_PREVIOUS_CLASS, ClassControls
from .class_table import ClassTable
from .dock_layout import KEY_RUN, SCOPES, build_ui
from .encoding import SupportEncoding
from .fast_encoder import FastEncoderPreparation
from .feedback import FeedbackPanel, kept_planes
from .file_actions import EpisodeFileActions, register_widget
from .finetune import FinetunePanel
from .layer_conversion import SupportLayers, has_background_prompts, spatial_shape, supports_to_episode
from .messages import RunOutcome
from .object_table import ObjectsPanel
from .output_layers import find_output_layer, is_plugin_output
from .persistence import adopt_state, forget_state, keep_state
from .preview import LivePreview
from .probability_export import ProbabilityExporter
from .reporting import notify as _notify
from .reporting import one_line, set_status
from .run_controller import RunController
from .support_list import SupportActions
from .workers import import_torch_stack

logger = logging.getLogger(__name__)

__all__ = ["KEY_RUN", "SCOPES", "LabelAnythingWidget"]

PROGRESS_PER_PLANE = 100  # progress bar units per plane: it moves within a plane too


class LabelAnythingWidget(QWidget):
    """Few-shot multi-class segmentation from prompts on support images."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.classes = ClassTable()
        self.supports: list[SupportLayers] = []  # one list, changed in place (the parts read it)
        self.last_error: Exception | None = None
        self.status_history: list[str] = []  # status lines of the current run, for the console
        self.closed = False
        self.query_picked = False  # whether the user (or a script) chose the query in its combo
        self._docked = False
        self._actions = {
            KEY_NEXT_CLASS: lambda *_: self.classes.set_active(self.classes.active + 1),
            KEY_PREVIOUS_CLASS: lambda *_: self.classes.set_active(self.classes.active - 1),
            KEY_RUN: lambda *_: self.run(),
        }
        # the parts; each holds its controls and state and reaches the dock through its Protocol
        self.class_controls = ClassControls(self, parent=self)
        self.channel_controls = ChannelControls(self._query_layer_or_none)
        self.preview = LivePreview(self, parent=self)
        self.encoding = SupportEncoding(self, parent=self)
        self.fast_encoder = FastEncoderPreparation(self, parent=self)
        self.support_actions = SupportActions(self)
        self.feedback = FeedbackPanel(self)
        self.finetune_panel = FinetunePanel(self)
        self.objects = ObjectsPanel(self)
        self.batch = BatchPanel(self)
        self.probability_export = ProbabilityExporter(self, parent=self)
        self.files = EpisodeFileActions(self, parent=self)
        build_ui(self)  # dock_layout.py: class box, scroll area with the sections, run bar
        self.runs = RunController(self.viewer, self, self.classes)
        self._connect_classes()
        picker = self.model_picker
        picker.model_combo.currentIndexChanged.connect(self.class_controls.update_background_row)
        picker.model_combo.currentIndexChanged.connect(self.preview.default_preview)
        for signal in (picker.model_combo.currentIndexChanged, picker.device_combo.currentIndexChanged,
                       self.channel_combo.currentIndexChanged):  # fmt: skip
            signal.connect(self.schedule_encoding)  # encoding.py
        self.fast_encoder.start()  # fast_encoder.py: the chosen model's ONNX export
        self.preview.default_preview()
        self.class_controls.update_background_row()
        self.class_controls.on_classes_changed()  # row 0, the background, before any class
        self._connect_viewer()
        self.refresh_layer_choices()
        register_widget(self)  # file_actions.py: the npe2 reader loads into an open widget
        if not adopt_state(self):  # persistence.py: the state of a panel closed with ×
            self.support_actions.adopt_sample_layers()
        # The main window deletes its children when it closes (WA_DeleteOnClose): stop the runs
        # then. Not a bound method of self, which Qt would no longer call once deleted.
        runs, ref = self.runs, weakref.ref(self)
        self.destroyed.connect(lambda *_: _release_after_delete(runs, ref))

    # -- UI --------------------------------------------------------------------------------

    def query_chosen(self, *_) -> None:
        """The query combo changed outside ``refresh_layer_choices``: a choice (preview.py)."""
        self.query_picked = True

    def _query_layer_or_none(self):
        name = self.query_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    # -- the parts' names kept on the widget (the console, scripts, tests) ------------------

    def add_support(self, image_layer=None, labels_layer=None) -> SupportLayers:
        """Make ``image_layer`` (default: the one chosen in the widget) a support; ``labels_layer``:
        an existing Labels layer as its mask prompts (``SupportActions.add_support``)."""
        return self.support_actions.add_support(image_layer, labels_layer)

    def refresh_support_list(self, event=None) -> None:
        self.support_actions.refresh(event)

    def remove_class(self, k: int, ask: bool = True) -> bool:
        """Remove class ``k`` and its prompts (``ClassControls.remove_class``)."""
        return self.class_controls.remove_class(k, ask)

    def undo_remove_class(self) -> None:
        self.class_controls.undo_remove_class()

    @property
    def channels(self) -> tuple[int, ...] | None:
        """The chosen channels (a 1-tuple), or None for all (``ChannelControls``)."""
        return self.channel_controls.channels

    def set_channels(self, channels) -> None:
        self.channel_controls.set_channels(channels)

    @property
    def live_preview(self) -> bool:
        return self.preview.live_preview

    def set_live_preview(self, on: bool) -> None:
        self.preview.set_live_preview(on)

    @property
    def preview_busy(self) -> bool:
        """Whether a live preview is running."""
        return self.preview.busy

    def note_plane_seconds(self, seconds: float | None) -> None:
        self.preview.note_plane_seconds(seconds)

    def cancel_preview(self) -> None:
        self.preview.cancel()

    def watch_prompt_edits(self, support: SupportLayers) -> None:
        self.preview.watch_prompt_edits(support)

    @property
    def encoding_state(self) -> str:
        """The text under the support list (``SupportEncoding``)."""
        return self.encoding.encoding_state

    @property
    def encoding_busy(self) -> bool:
        """Whether the supports are being encoded in the background."""
        return self.encoding.busy

    def schedule_encoding(self, *_) -> None:
        self.encoding.schedule()

    def segmenter_after_encoding(self):
        return self.encoding.segmenter_after_encoding()

    @property
    def preparing(self) -> bool:
        """Whether the chosen model's fast encoder is being prepared (``FastEncoderPreparation``)."""
        return self.fast_encoder.preparing

    def preparation_pending(self) -> bool:
        return self.fast_encoder.pending()

    def suggest_planes(self, n: int = 1, query_layer=None) -> list[tuple[int, ...]]:
        """The ``n`` planes most worth correcting (``FeedbackPanel.suggest_planes``)."""
        return self.feedback.suggest_planes(n, query_layer)

    def add_prediction_as_support(self, plane=None, query_layer=None):
        """A plane of the output as a complete support (``FeedbackPanel.add_prediction_as_support``)."""
        return self.feedback.add_prediction_as_support(plane, query_layer)

    def finetune(self, steps: int | None = None, name: str | None = None):
        """Fine-tune the chosen model on the episode in a worker (``FinetunePanel.finetune``)."""
        return self.finetune_panel.finetune(steps, name)

    def cancel_finetune(self) -> None:
        self.finetune_panel.cancel_finetune()

    @property
    def finetuning(self) -> bool:
        return self.finetune_panel.finetuning

    @property
    def finetune_outcome(self):
        """The last fine-tuning's ``finetune_session.FinetuneOutcome`` (None before one ended)."""
        return self.finetune_panel.finetune_outcome

    def split_objects(self, query_layer=None, watershed: bool | None = None, min_distance: int | None = None):
        """The output split into ``"<query> objects"`` and measured (``ObjectsPanel.split_objects``)."""
        return self.objects.split_objects(query_layer, watershed, min_distance)

    def save_objects_csv(self, path: str | Path) -> Path:
        return self.objects.save_objects_csv(path)

    @property
    def objects_table(self):
        return self.objects.objects_table

    def run_batch(self, folder, out, recursive: bool = False, format: str = "tiff", overwrite: bool = False,
                  objects: bool = False):  # fmt: skip
        """Segment every image of ``folder`` into ``out`` in a worker (``BatchPanel.run_batch``)."""
        return self.batch.run_batch(folder, out, recursive, format, overwrite, objects)

    def cancel_batch(self) -> None:
        self.batch.cancel_batch()

    @property
    def batching(self) -> bool:
        return self.batch.batching

    @property
    def batch_outcome(self) -> RunOutcome | None:
        """How the last batch ended (None while one runs or before any)."""
        return self.batch.batch_outcome

    @property
    def batch_results(self) -> list:
        """Each file's ``JobResult`` of the last batch."""
        return self.batch.batch_results

    def export_probabilities(self, path: str | Path, query_layer=None, dtype: str = "float32"):
        """The query's class probabilities to a file, in a worker (``ProbabilityExporter``)."""
        return self.probability_export.export_probabilities(path, query_layer, dtype)

    # -- classes and layers ----------------------------------------------------------------

    def _connect_classes(self, connect: bool = True) -> None:
        classes, part = self.classes, self.class_controls
        pairs = ((classes.changed, part.on_classes_changed), (classes.active_changed, part.on_active_class),
                 (classes.removed, part.on_class_removed), (classes.changed, self.schedule_encoding))  # fmt: skip
        for signal, slot in pairs:
            signal.connect(slot) if connect else signal.disconnect(slot)

    def adopt_classes(self, classes) -> None:
        """Use ``classes`` (a ClassTable kept from a closed panel) instead of this widget's own."""
        self._connect_classes(False)
        self.classes = self.runs.classes = classes
        self._connect_classes()
        self.class_controls.update_background_row()
        self.class_controls.on_classes_changed()

    def refresh_layer_choices(self, event=None) -> None:
        """Offer the viewer's image and labels layers in the combos; forget removed supports."""
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
            self.query_picked = False  # the chosen query went away
        support_images = {s.image.name for s in self.supports if not s.query_too}
        if self.query_combo.currentText() in support_images:
            others = [n for n in images if n not in support_images]
            if others:
                self.query_combo.setCurrentText(others[-1])
                self.query_picked = False  # a guess, not a choice
        self.supports[:] = [s for s in self.supports if s.image in self.viewer.layers]
        self.refresh_support_list()
        self.bound_plane_range()
        self.channel_controls.update_choices()

    def bound_plane_range(self, *_) -> None:
        """The range spin boxes go from 0 to the query's last plane (disabled for a 2D query)."""
        name = self.query_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        shape = spatial_shape(layer) if layer is not None else ()
        depth = shape[0] if len(shape) > 2 else 1  # planes along the first axis
        for spin in (self.range_start, self.range_stop):
            spin.setRange(0, max(depth - 1, 0))
            spin.setEnabled(depth > 1)

    def set_model(self, name: str, device: str = "auto") -> None:
        """Choose the model (name, repo id or folder) and device, as the combo boxes do.

        A device this machine lacks is refused with one notification; the device stays as it was.
        """
        self.guard(lambda: self.model_picker.set_model(name, device), "cannot choose device")

    def guard(self, action, what: str):
        """Run a user action; an error becomes one notification and the status line, never a traceback.

        Returns the action's result, or None when it failed. The widget stays usable.
        """
        try:
            return action()
        except Exception as err:  # noqa: BLE001 - the UI boundary: report, log, never re-raise
            self.report_error(what, err)
            return None

    def report_error(self, what: str, err: BaseException) -> None:
        """One failure: the status line, one notification, the log; kept as ``last_error``."""
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
        return self.build_episode(background=True, channels=self.channels)

    def build_episode(self, background: bool, channels=None):
        """The episode of the layers, with background prompts or not (raises ValueError)."""
        if not len(self.classes):
            raise ValueError("define at least one class")
        episode = supports_to_episode(
            self.supports, self.classes, model=self.model_picker.model_name, background=background,
            channels=channels,
        )  # fmt: skip
        episode.validate()
        return episode

    def run_episode(self):
        """The episode a run uses: background prompts only for a model that takes them."""
        paintable = self.classes.background_paintable
        if not paintable and has_background_prompts(self.supports):
            _notify("warning", f"background scribbles are not used: {BACKGROUND_NOT_PAINTABLE}")
        return self.build_episode(background=paintable, channels=self.channels)

    def plane_indices(self, query_layer, scope: str) -> list[tuple[int, ...]]:
        """The planes of ``query_layer`` that ``scope`` names ("current plane", "plane range", ...)."""
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
            query_layer = query_layer or self.chosen_query()
            episode = self.run_episode()
            indices = self.plane_indices(query_layer, scope or self.scope_combo.currentText())
            import_torch_stack()
            download = self.model_picker.checkpoint_to_download()
            watched = [layer for support in self.supports for layer in (support.image, *support.layers())]
            self.channel_controls.warn_one_channel([query_layer, *(s.image for s in self.supports)])  # channels.py
            self.preview.cancel()  # the run wins: a preview in flight is dropped
            return self.runs.start(self.segmenter_after_encoding, episode, query_layer, indices, watched, download,
                                   uncertainty=self.uncertainty_check.isChecked(), channels=self.channels,
                                   kept=kept_planes(self.supports, query_layer),
                                   normalise=self.normalise)  # fmt: skip
        except Exception as err:  # noqa: BLE001 - the UI boundary
            self.report_error("cannot run", err)
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
        text = self.fast_encoder.waiting_text(text)  # fast_encoder.py: a run waiting for the fast encoder says so
        set_status(self.status, text, details)
        self.status_history.append(text)

    def run_progress(self, done: float, total: int) -> None:
        self.progress.setValue(round(done * PROGRESS_PER_PLANE))
        whole = int(done)  # a fraction: the share of the plane in progress
        text = f"plane {whole}/{total}" if done == whole else f"plane {whole + 1}/{total}: {done - whole:.0%}"
        self.status.setText(text)

    def reset_run_bar(self) -> None:
        """Run enabled, Cancel disabled: nothing runs."""
        self.run_button.setEnabled(True)
        self.run_button.setText(f"Run ({KEY_RUN})")
        self.cancel_button.setEnabled(False)

    def run_ended(self, outcome: RunOutcome, message: str, error: BaseException | None) -> None:
        self.reset_run_bar()
        details = f"Label Anything failed: {type(error).__name__}: {error}" if error is not None else None
        self.run_status(message, details)
        if error is not None:
            self.last_error = error
        self.preview.after_run(outcome is RunOutcome.DONE)  # preview.py
        self.schedule_encoding()  # encoding.py: what changed during the run
        if outcome is RunOutcome.DONE:
            if not self.hint.isHidden():  # the first run: show what comes next (the hint's last line)
                self.sections["feedback"].set_expanded(True)
            self.hint.hide()
        elif outcome is RunOutcome.FAILED:
            _notify("error", message, details)
        elif outcome is RunOutcome.STOPPED:
            _notify("warning", f"Label Anything: {message}")
        elif outcome is RunOutcome.CANCELLED:
            _notify("info", f"Label Anything: {message}")

    def output_layer(self):
        """The output layer of the query chosen in the combo, or None."""
        name = self.query_combo.currentText()
        return find_output_layer(self.viewer, self.viewer.layers[name]) if name in self.viewer.layers else None

    # -- files (file_actions.EpisodeFileActions): ValueError/OSError with a clear message ---

    def save_episode(self, path: str | Path) -> Path:
        """Write the episode (classes, supports, prompts, model, channels) to an .episode file."""
        return self.files.save_episode(path)

    def load_episode(self, path: str | Path) -> None:
        """Recreate an episode's support images, prompt layers and classes (a damaged file changes nothing)."""
        self.files.load_episode(path)

    def has_unsaved_changes(self) -> bool:
        """Whether classes or prompts changed since the last save or load (or since opening)."""
        return self.files.has_unsaved_changes()

    def clear_episode(self) -> None:
        """Forget the classes and supports (prompt layers the plugin made are removed)."""
        self.files.clear_episode()

    def export_labels(self, path: str | Path, query_layer=None) -> Path:
        """Save the output layer of ``query_layer`` as TIFF with the class names in its metadata."""
        return self.files.export_labels(path, query_layer)

    def chosen_query(self):
        """The query image layer chosen in the combo (ValueError when there is none)."""
        name = self.query_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("choose a query image layer")
        return self.viewer.layers[name]

    # -- key bindings and closing ----------------------------------------------------------

    def bind_layer_keys(self, layer) -> None:
        """The dock's keys (next / previous class, Run) on ``layer`` too."""
        for key, action in self._actions.items():
            layer.bind_key(key, action, overwrite=True)

    def _connect_viewer(self) -> None:
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.refresh_layer_choices)
        for key, action in self._actions.items():
            self.viewer.bind_key(key, action, overwrite=True)
        for support in self.supports:
            for layer in support.layers():
                self.bind_layer_keys(layer)

    def _release(self) -> None:
        """Stop the runs, unbind keys, stop listening to the viewer. Touches no Qt object."""
        from napari.utils.key_bindings import coerce_keybinding

        self.closed = True
        self.runs.close()
        self._connect_classes(False)  # the class table may go on in a new widget (persistence.py)
        self.preview.cancel()
        self.encoding.stop()
        self.fast_encoder.stop()
        self.finetune_panel.stop()
        self.batch.stop()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.disconnect(self.refresh_layer_choices)
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
        self.reset_run_bar()
        self.status.setText("closed")

    def _reopen(self) -> None:
        self.closed = False
        forget_state(self)
        self._connect_classes()
        self.runs.reopen()
        self._connect_viewer()
        self.refresh_layer_choices()
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


def _release_after_delete(runs: RunController, ref) -> None:
    """The widget's Qt object was deleted (e.g. with the viewer's window): stop everything."""
    runs.close()
    widget = ref()
    if widget is not None and not widget.closed:
        widget._release()
