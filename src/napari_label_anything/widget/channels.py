"""Which colour channels the model sees: the dock widget's "channels" combo and its warning.

The choice applies to the query and to every colour support alike (``layer_conversion.model_data``, one
rule for both); the core is ``preprocessing.select_channels`` (one channel -> grey). "all" (the
default) gives the model the image as it is. When the query or a support holds (nearly) all its
signal in one channel (``preprocessing.signal_in_one_channel``, e.g. a DAPI image exported as
RGB with only blue non-zero) while "all" is chosen, one warning per layer names that channel
and suggests choosing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QComboBox

from ..preprocessing import channel_label, check_channels, signal_in_one_channel
from .layer_conversion import colour_channels
from .reporting import notify

ALL_CHANNELS = "all"
CHANNEL_TOOLTIP = (
    "The colour channel(s) the model sees, for the query and every colour example alike.\n"
    "'all': the image as it is. One channel: that channel alone, as a grey image; use it when the\n"
    "signal is in one channel only (e.g. DAPI exported as blue), which mixing would dilute."
)


class ChannelControls:
    """The dock's channel combo, ``channels``, ``set_channels`` and the one-channel warning.

    ``query_layer``: the query chosen in the dock (None: none), whose channels are offered.
    """

    def __init__(self, query_layer: Callable[[], Any]) -> None:
        self.query_layer = query_layer

    def build(self) -> QComboBox:
        self.channel_combo = QComboBox()
        self.channel_combo.addItem(ALL_CHANNELS)
        self.channel_combo.setEnabled(False)
        self.channel_combo.setToolTip(CHANNEL_TOOLTIP)
        self._one_channel_cache: dict[int, int | None] = {}  # id(layer data) -> signal_in_one_channel
        self._channel_warned: set[int] = set()  # id(layer data) already warned about
        return self.channel_combo

    @property
    def channels(self) -> tuple[int, ...] | None:
        """The chosen channels (a 1-tuple), or None for all."""
        index = self.channel_combo.currentIndex()
        return None if index <= 0 else (index - 1,)

    def set_channels(self, channels) -> None:
        """Choose the channel the model sees (None or "all": all channels), as the combo does.

        Only channels of the chosen query can be chosen; a bad one raises ValueError.
        """
        if channels is None or channels == ALL_CHANNELS:
            self.channel_combo.setCurrentIndex(0)
            return
        chosen = check_channels(channels, self.channel_combo.count() - 1)
        if len(chosen) != 1:
            raise ValueError(f"choose one channel (or all), got {channels!r}")
        self.channel_combo.setCurrentIndex(chosen[0] + 1)

    def update_choices(self, *_) -> None:
        """Offer the chosen query's channels (kept when the new query has it), then warn if needed."""
        layer = self.query_layer()
        n = colour_channels(layer) if layer is not None else 0
        current = self.channel_combo.currentIndex()
        wanted = [ALL_CHANNELS] + [channel_label(c, n) for c in range(n)]
        if [self.channel_combo.itemText(i) for i in range(self.channel_combo.count())] != wanted:
            self.channel_combo.blockSignals(True)
            self.channel_combo.clear()
            self.channel_combo.addItems(wanted)
            self.channel_combo.setCurrentIndex(current if 0 <= current < len(wanted) else 0)
            self.channel_combo.blockSignals(False)
        self.channel_combo.setEnabled(n > 0)
        if layer is not None:
            self.warn_one_channel([layer])

    def one_channel_of(self, layer) -> int | None:
        """The channel of a colour layer that holds (nearly) all its signal, or None (cached)."""
        if not colour_channels(layer):
            return None
        key = id(layer.data)
        if key not in self._one_channel_cache:
            self._one_channel_cache[key] = signal_in_one_channel(layer.data)
        return self._one_channel_cache[key]

    def warn_one_channel(self, layers) -> list[str]:
        """With "all" chosen, one warning per layer whose signal sits in one channel (once per
        layer); returns the names warned about now."""
        if self.channels is not None:
            return []
        warned = []
        for layer in layers:
            channel = self.one_channel_of(layer)
            if channel is None or id(layer.data) in self._channel_warned:
                continue
            self._channel_warned.add(id(layer.data))
            label = channel_label(channel, colour_channels(layer))
            notify(
                "warning",
                f"{layer.name!r} has nearly all its signal in channel {label}; with channels 'all' the model "
                f"mixes it with the nearly empty channels and may find nothing. Choose '{label}' under "
                "Query > channels.",
            )
            warned.append(layer.name)
        return warned
