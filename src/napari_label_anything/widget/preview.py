"""Live preview: the shown plane of the query re-predicts shortly after each prompt edit.

Every edit of a support's prompts (a paint stroke, a point, a box, replaced prompt data)
restarts a single-shot timer of ``PREVIEW_DELAY_MS``; when it fires, the plane of the query
that the viewer shows is predicted in a worker and written into the output layer (created if
needed; the other planes keep their values). Only the latest edit counts: an edit while a
preview runs stops that one (its result is dropped) and previews again once it has ended, so
two previews never run at once and an older result never overwrites a newer one.

A full Run always wins: no preview starts while it is busy, starting it drops any preview in
flight, and an edit made during the run is previewed after it. A preview never downloads a
model. The "live preview" check box is on by default when a plane costs under ``FAST_PLANE_S``
(timed on the last run or preview of the chosen model; before any, for the embedded
'classic' model only), unless the user set it (the box or ``set_live_preview``); when it turns
itself off, the status line says why.

The image previewed is the query chosen in the query combo (by the user or a script), else the
top-most visible image (``shown_query``): the one on screen. Writing a preview never changes
the selected layer nor its mode (``layers.place_output_layer``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox

from ..corrections import keep_planes
from .feedback import kept_note, kept_planes
from .layer_conversion import model_data, same_layer
from .messages import ModelReady, PlaneResult, PreviewPlane
from .output_layers import is_plugin_output, write_preview
from .reporting import one_line, set_status
from .workers import WorkerLauncher, predict_planes

logger = logging.getLogger(__name__)

PREVIEW_DELAY_MS = 500  # quiet time after the last edit before the preview starts
FAST_PLANE_S = 2.0  # a plane faster than this turns the preview on by default
PREVIEW_TOOLTIP = (
    "Re-segment the plane shown shortly after each scribble, point or box.\n"
    "On by default for a model that predicts a plane quickly (e.g. 'classic');\n"
    "it never runs while a full Run is busy and only writes the plane shown."
)


def preview_job(get_segmenter, episode, data, index, rgb, normalise="auto", cancel=None) -> Iterator[PreviewPlane]:
    """Worker generator: ``predict_planes`` for one plane, yielded as a ``PreviewPlane`` with its
    time measured from the model being ready to the plane being done (loading excluded).
    ``cancel``: see ``predict_planes`` (a newer edit stops a preview within its plane)."""
    ready = time.perf_counter()
    for message in predict_planes(get_segmenter, episode, data, [index], rgb, None, False, normalise, cancel):
        if isinstance(message, ModelReady):
            ready = time.perf_counter()
        elif isinstance(message, PlaneResult):
            yield PreviewPlane(message.index, message.labels, time.perf_counter() - ready)


class PreviewHost(Protocol):
    """What ``LivePreview`` uses of the dock."""

    closed: bool
    viewer: Any
    supports: list
    classes: Any
    model_picker: Any
    runs: Any  # the RunController: ``busy`` and ``last_plane_seconds``
    status: Any  # the status line (a QLabel)
    channels: tuple[int, ...] | None
    query_picked: bool  # whether the user (or a script) chose the query in its combo

    @property
    def normalise(self) -> str: ...

    @property
    def finetuning(self) -> bool: ...

    @property
    def batching(self) -> bool: ...

    def chosen_query(self) -> Any: ...

    def build_episode(self, background: bool, channels=None) -> Any: ...

    def plane_indices(self, query_layer, scope: str) -> list[tuple[int, ...]]: ...

    def schedule_encoding(self, *_) -> None: ...

    def segmenter_after_encoding(self) -> Any: ...


class LivePreview:
    """The dock's "live preview": its check box, timer and worker."""

    def __init__(self, host: PreviewHost, parent=None) -> None:
        self.host = host
        self.parent = parent  # the timer's parent object

    def build(self) -> QCheckBox:
        self.preview_check = QCheckBox("live preview")
        self.preview_check.setToolTip(PREVIEW_TOOLTIP)
        self.preview_check.clicked.connect(lambda checked: self.set_live_preview(checked))
        self.preview_timer = QTimer(self.parent)
        self.preview_timer.setSingleShot(True)
        self.preview_timer.setInterval(PREVIEW_DELAY_MS)
        self.preview_timer.timeout.connect(self.preview_now)
        self._previews = WorkerLauncher()
        self._preview_generation = 0  # bumped by every start and cancel: older results are dropped
        self._preview_again = False  # an edit came while a preview or a run was busy
        self.user_choice: bool | None = None
        self.plane_seconds: dict[tuple, float] = {}  # (model, device) -> seconds of a plane, last measured
        self.preview_stats = {"started": 0, "written": 0}
        return self.preview_check

    @property
    def busy(self) -> bool:
        """Whether a preview is running (a waiting one is ``preview_timer.isActive()``)."""
        return self._previews.busy

    @property
    def live_preview(self) -> bool:
        return self.preview_check.isChecked()

    def set_live_preview(self, on: bool) -> None:
        """Turn the live preview on or off (the user's choice: timings no longer change it)."""
        self.user_choice = bool(on)
        self.preview_check.setChecked(bool(on))
        if not on:
            self.cancel()

    def _model_key(self) -> tuple:
        return (str(self.host.model_picker.model_name), str(self.host.model_picker.device))

    def note_plane_seconds(self, seconds: float | None) -> None:
        """Remember what a plane of the chosen model costs and set the default accordingly."""
        if seconds is not None:
            self.plane_seconds[self._model_key()] = float(seconds)
        self.default_preview()

    def default_preview(self, *_) -> None:
        if self.user_choice is not None:
            return
        seconds = self.plane_seconds.get(self._model_key())
        was_on = self.preview_check.isChecked()
        fast = seconds < FAST_PLANE_S if seconds is not None else self.host.model_picker.is_classic()
        self.preview_check.setChecked(fast)
        if was_on and not self.preview_check.isChecked():
            self._say_preview_off(seconds)

    def _say_preview_off(self, seconds: float | None) -> None:
        """The preview turned itself off: say why on the status line (after what it said)."""
        if seconds is not None:
            why = f"a plane took {seconds:.1f} s (over {FAST_PLANE_S:g} s)"
        else:
            model = self.host.model_picker.model_name
            why = f"no plane of {model} measured yet (on once a plane takes under {FAST_PLANE_S:g} s)"
        note = f"live preview off: {why}; tick 'live preview' to turn it back on"
        before = self.host.status.text()
        set_status(self.host.status, f"{before} · {note}" if before and before != "ready" else note)

    def watch_prompt_edits(self, support) -> None:
        for layer in support.layers():
            layer.events.data.connect(self.prompt_edited)
        support.labels.events.paint.connect(self.prompt_edited)

    def prompt_edited(self, event=None) -> None:
        """A prompt changed: encode the supports (encoding.py) and preview once the edits pause
        (a later edit restarts the wait)."""
        self.host.schedule_encoding()
        if self.host.closed or not self.live_preview:
            return
        self.preview_timer.start()

    def cancel(self) -> None:
        """Stop the waiting and running previews; a result still on its way is dropped."""
        self.preview_timer.stop()
        self._preview_generation += 1
        self._preview_again = False
        self._previews.stop_all()

    def preview_now(self) -> None:
        """Preview now (the timer's end): the plane shown of the query, in a worker."""
        host = self.host
        if self.host.closed or not self.live_preview or host.finetuning or host.batching:  # one segmenter user
            return
        if self.host.runs.busy or self._previews.busy:  # after the run (run_ended) or that preview
            self._preview_again = True
            if self._previews.busy:
                self._preview_generation += 1
                self._previews.stop_all()
            return
        try:
            query = self._preview_query()
            episode = host.build_episode(background=host.classes.background_paintable, channels=host.channels)
            if self.host.model_picker.checkpoint_to_download() is not None:
                raise ValueError("the model must be downloaded first: press Run once")
            index = host.plane_indices(query, "current plane")[0]
            kept = kept_planes(self.host.supports, query).get(index)  # a corrected plane is shown as corrected
            data, rgb = model_data(query, self.host.channels)
        except Exception as err:  # noqa: BLE001 - an incomplete episode: say why, no notification
            set_status(self.host.status, f"live preview waits: {one_line(err)}")
            return
        self._preview_generation += 1
        generation, names, plane = self._preview_generation, tuple(self.host.classes.names), {}
        self.preview_stats["started"] += 1

        def yielded(message: PreviewPlane) -> None:
            plane["labels"], plane["seconds"] = message.labels, message.seconds

        def returned(_value) -> None:
            live = generation == self._preview_generation and not self.host.closed and not self.host.runs.busy
            if not live or "labels" not in plane or tuple(self.host.classes.names) != names:
                return
            if not any(same_layer(layer, query) for layer in self.host.viewer.layers):
                return
            labels, note = plane["labels"], ""
            if kept is not None:
                shown = {index: labels}
                note = "; " + kept_note(keep_planes(shown, {index: kept}))
                labels = shown[index]
            layer = write_preview(self.host.viewer, query, index, labels, self.host.classes)
            self.preview_stats["written"] += 1
            where = f" plane {index[0] if len(index) == 1 else index}" if index else ""
            set_status(self.host.status, f"live preview{where} -> {layer.name!r} ({plane['seconds']:.2f} s){note}")
            self.note_plane_seconds(plane["seconds"])

        def errored(error) -> None:
            if generation == self._preview_generation and not self.host.closed:
                logger.info("live preview failed: %s", error)
                set_status(self.host.status, f"live preview failed: {one_line(error)}")

        def finished() -> None:
            if self._preview_again and not self.host.closed:
                self._preview_again = False
                self.preview_timer.start(0)

        self._previews.start(
            preview_job, host.segmenter_after_encoding, episode, data, index, rgb, host.normalise,
            yielded=yielded, returned=returned, errored=errored, finished=finished, cancellable=True,
        )  # fmt: skip

    def _preview_query(self):
        """The image a preview predicts: the query combo's layer when the user (or a script)
        chose it, else the image on screen (``shown_query``), else the combo's layer."""
        if not self.host.query_picked:
            shown = shown_query(self.host.viewer, self.host.supports)
            if shown is not None:
                return shown
        return self.host.chosen_query()

    def after_run(self, done: bool) -> None:
        """A full run ended: take its plane time and, when it succeeded, preview the edits made
        during it (a cancelled or failed run leaves every layer as it was)."""
        self.note_plane_seconds(self.host.runs.last_plane_seconds)
        if not done:
            self._preview_again = False
        elif self._preview_again:
            self._preview_again = False
            self.prompt_edited()


def shown_query(viewer, supports):
    """The top-most visible image layer that can be a query (None: none is visible).

    Plugin outputs never are (the labels are no Image layer; the uncertainty layer is skipped);
    an image that is only a support counts only when no other image is visible (a stack can be
    its own query: the planes not prompted).
    """
    from napari.layers import Image

    visible = [layer for layer in reversed(viewer.layers)
               if isinstance(layer, Image) and layer.visible and not is_plugin_output(layer)]  # fmt: skip
    only_supports = [support.image for support in supports if not support.query_too]
    others = [layer for layer in visible if not any(same_layer(layer, image) for image in only_supports)]
    return (others or visible or [None])[0]
