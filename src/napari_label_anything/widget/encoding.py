"""Supports encoded in the background, as soon as they are added or their prompts change.

A Label Anything model spends most of a first run on the supports: each support image goes
through the image encoder, then the prompts through the prompt encoder. Both are cached by
the segmenter (image features by image content, class prototypes by episode content), so the
widget computes them in a worker shortly after each change (``ENCODE_DELAY_MS`` of quiet time),
and a Run or a live preview started afterwards pays only for its query planes. The line under
the support list says "encoding supports…" and then "supports encoded (ready)".

Rules: never while a Run, a preview or the chosen model's fast-encoder preparation
(``fast_encoder.py``, which loads the model) is busy (the encoding waits for them, so the model is
used by one thread at a time; a Run or preview started from the moment an encoding is started
waits for it to end, through ``segmenter_after_encoding``); never downloads a model (a model still to download is
encoded at its first Run); nothing for the embedded 'classic' model, which has no features. A
2D support without prompts yet has its image encoded already; an episode still incomplete
(a class without prompts) has its images encoded and its prompts waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel

from .layer_conversion import model_data, spatial_shape, supports_to_episode
from .messages import EncodingEnded, EncodingOutcome, SupportsEncoded
from .reporting import one_line
from .workers import WorkerLauncher, import_torch_stack

logger = logging.getLogger(__name__)

ENCODE_DELAY_MS = 300  # quiet time after the last change before the supports are encoded
READY_TEXT = "supports encoded (ready)"
BUSY_TEXT = "encoding supports…"
ENCODING_TOOLTIP = (
    "Label Anything models encode every support image and its prompts once; this happens in the\n"
    "background as soon as a support is added or its prompts change, so that Run then only pays\n"
    "for the image to segment. The 'classic' model has nothing to encode."
)


def encode_supports_job(
    get_segmenter: Callable[[], Any], lock: threading.Lock, idle: threading.Event, images: list[np.ndarray], episode
) -> Iterator[SupportsEncoded | EncodingEnded]:
    """Worker generator: the features of ``images`` (the supports' planes), then the class
    prototypes of ``episode`` (None: incomplete, prompts not encoded). Yields ``SupportsEncoded(n)``
    after each image, then ``EncodingEnded`` (ready, incomplete, or nothing for a segmenter
    without features). Sets ``idle`` when it ends (the GUI thread cleared it)."""
    try:
        with lock:  # loading the model: one thread at a time
            segmenter = get_segmenter()
        if not hasattr(segmenter, "class_embeddings"):
            yield EncodingEnded(EncodingOutcome.NOTHING)
            return
        for done, image in enumerate(images, start=1):
            segmenter.features(image)
            yield SupportsEncoded(done)
        if episode is None:
            yield EncodingEnded(EncodingOutcome.INCOMPLETE)
            return
        segmenter.class_embeddings(episode)
    finally:
        idle.set()
    yield EncodingEnded(EncodingOutcome.READY)


class EncodingHost(Protocol):
    """What ``SupportEncoding`` uses of the dock."""

    closed: bool
    supports: list
    classes: Any
    model_picker: Any
    runs: Any  # the RunController: ``busy``
    channels: tuple[int, ...] | None

    @property
    def finetuning(self) -> bool: ...

    @property
    def batching(self) -> bool: ...

    @property
    def preview_busy(self) -> bool: ...

    def preparation_pending(self) -> bool: ...


class SupportEncoding:
    """The dock's background encoding of the supports and its line under the support list."""

    def __init__(self, host: EncodingHost, parent=None) -> None:
        self.host = host
        self.parent = parent  # the timer's parent object

    def build(self) -> QLabel:
        self.encoding_label = QLabel("")
        self.encoding_label.setWordWrap(True)
        self.encoding_label.setToolTip(ENCODING_TOOLTIP)
        self.encoding_label.hide()
        self.encode_timer = QTimer(self.parent)
        self.encode_timer.setSingleShot(True)
        self.encode_timer.setInterval(ENCODE_DELAY_MS)
        self.encode_timer.timeout.connect(self._encode_now)
        self._encodings = WorkerLauncher()
        self._segmenter_lock = threading.Lock()
        self._encoding_idle = threading.Event()  # cleared while an encoding may use the model
        self._encoding_idle.set()
        self._encoded_key: tuple | None = None  # what the last successful encoding covered
        self.encoding_stats = {"started": 0, "ready": 0}
        return self.encoding_label

    @property
    def busy(self) -> bool:
        """Whether an encoding is running."""
        return self._encodings.busy

    @property
    def encoding_state(self) -> str:
        """The text under the support list ("" when there is nothing to say)."""
        return self.encoding_label.text()

    def segmenter_after_encoding(self):
        """The chosen segmenter, once a background encoding in progress has ended (worker threads)."""
        self._encoding_idle.wait(timeout=900)
        with self._segmenter_lock:
            return self.host.model_picker.get_segmenter()

    def schedule(self, *_) -> None:
        """Something the encoding depends on changed: encode once the changes pause."""
        if self.host.closed or not hasattr(self, "encode_timer"):
            return
        self.encode_timer.start()

    def stop(self) -> None:
        self.encode_timer.stop()
        self._encodings.stop_all()
        self._encoding_idle.set()

    def _set_encoding_text(self, text: str) -> None:
        self.encoding_label.setText(text)
        self.encoding_label.setVisible(bool(text))

    def _encode_now(self) -> None:
        host = self.host
        if self.host.closed:
            return
        if self.host.finetuning or self.host.batching:  # they use the same segmenter; encode at the next edit or Run
            return
        if host.runs.busy or host.preview_busy or self.busy or host.preparation_pending():
            self.encode_timer.start()  # after them: the model is used by one worker at a time
            return
        if not self.host.supports or self.host.model_picker.is_classic():
            self._set_encoding_text("")
            return
        try:
            if self.host.model_picker.checkpoint_to_download() is not None:
                self._set_encoding_text("supports are encoded at the first Run (the model is downloaded then)")
                return
        except Exception:  # noqa: BLE001 - offline: Run says so, once
            self._set_encoding_text("")
            return
        try:
            images, episode = self._encoding_inputs()
        except Exception as err:  # noqa: BLE001 - e.g. a bad channel: Run reports it
            self._set_encoding_text(f"supports not encoded: {one_line(err)}")
            return
        key = (self.host.model_picker._key(), tuple(_digest(i) for i in images), _signature(episode))
        if key == self._encoded_key:
            self._set_encoding_text(READY_TEXT if episode is not None else self.encoding_state)
            return
        import_torch_stack()  # native extensions load on the GUI thread (workers.py)
        self._set_encoding_text(BUSY_TEXT)
        self.encoding_stats["started"] += 1
        state: dict[str, Any] = {}

        def yielded(message: SupportsEncoded | EncodingEnded) -> None:
            if isinstance(message, EncodingEnded):
                state["outcome"] = message.outcome
            elif not self.host.closed:
                self._set_encoding_text(f"{BUSY_TEXT} {message.count}/{len(images)}")

        def returned(_value) -> None:
            if self.host.closed:
                return
            outcome = state.get("outcome")
            if outcome is EncodingOutcome.NOTHING:
                self._set_encoding_text("")
            elif outcome is EncodingOutcome.INCOMPLETE:
                self._set_encoding_text("support images encoded; the prompts once every class has some")
            else:
                self._set_encoding_text(READY_TEXT)
                self.encoding_stats["ready"] += 1
            self._encoded_key = key

        def errored(error) -> None:
            logger.info("encoding the supports failed: %s", error)
            if not self.host.closed:
                self._set_encoding_text(f"supports not encoded: {one_line(error)}")

        self._encoding_idle.clear()  # from now: a Run or preview waits for this encoding
        idle = self._encoding_idle
        self._encodings.start(
            encode_supports_job, self.host.model_picker.get_segmenter, self._segmenter_lock, idle, images, episode,
            yielded=yielded, returned=returned, errored=errored, finished=idle.set,
        )  # fmt: skip

    def _encoding_inputs(self) -> tuple[list[np.ndarray], Any]:
        """The images to encode (every prompted plane, and each 2D support not yet prompted) and
        the episode a Run would use (None while it is incomplete)."""
        episode = supports_to_episode(
            self.host.supports, self.host.classes, model=self.host.model_picker.model_name,
            background=self.host.classes.background_paintable, channels=self.host.channels,
        )  # fmt: skip
        images = [s.image for s in episode.supports]
        prompted = {s.name for s in episode.supports}
        for support in self.host.supports:
            if len(spatial_shape(support.image)) == 2 and support.name not in prompted:
                images.append(np.asarray(model_data(support.image, self.host.channels)[0]))
        try:
            if not len(self.host.classes):
                raise ValueError("no class")
            episode.validate()
        except ValueError:
            episode = None
        return images, episode


def _digest(image: np.ndarray) -> str:
    from ..inference.embedding_store import image_digest

    return image_digest(image)


def _signature(episode) -> str | None:
    return None if episode is None else episode.signature()
