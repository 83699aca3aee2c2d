"""The widget's state outlives its dock: closed with × and opened again in the same viewer.

napari's × on a dock takes the widget out (``dock.py`` then releases it), and the Plugins menu
builds a *new* widget afterwards. So when a widget is released, its state is kept for its
viewer (``keep_state``): the class table itself (names, colours, active row, its undo), the
supports with their prompt layers, the model choice with its loaded models (no reload), the
channel, preview and query choices, which dock sections are open, what was last saved, and
whether the first-run hint was dismissed. A new widget for that viewer adopts it
(``adopt_state``); a widget docked again takes its own state back. The state is held per
viewer, weakly: a closed viewer drops it.
"""

from __future__ import annotations

import weakref
from typing import Any

_STATES: dict[int, tuple[weakref.ref, dict[str, Any]]] = {}  # id(viewer) -> (viewer ref, state)


def _viewer(widget):
    viewer = widget.viewer
    return getattr(viewer, "__wrapped__", viewer)


def _prune() -> None:
    for key, (ref, _) in list(_STATES.items()):
        if ref() is None:
            del _STATES[key]


def keep_state(widget) -> None:
    """Remember ``widget``'s state for its viewer (called when the widget is released)."""
    _prune()
    viewer = _viewer(widget)
    picker = widget.model_picker
    state = {
        "owner": weakref.ref(widget),
        "classes": widget.classes,
        "supports": list(widget.supports),
        "model": (picker.model_name, picker.device),
        "encoder": picker.encoder,
        "neighbours": picker.compare_neighbours,
        "embeddings": picker.embeddings_folder,
        "segmenters": picker._segmenters,
        "channel": widget.channel_combo.currentText(),
        "preview_choice": widget.preview.user_choice,
        "plane_seconds": dict(widget.plane_seconds),
        "query": widget.query_combo.currentText(),
        "query_picked": widget.query_picked,
        "sections": {key: section.expanded for key, section in widget.sections.items()},
        "scope": widget.scope_combo.currentText(),
        "saved_signature": widget.files.saved_signature,
        "hint_hidden": widget.hint.dismissed or widget.hint.isHidden(),
        "uncertainty": widget.uncertainty_check.isChecked(),
    }
    _STATES[id(viewer)] = (weakref.ref(viewer), state)


def forget_state(widget) -> None:
    """The widget is in use again (docked again): its kept state is no longer offered."""
    entry = _STATES.get(id(_viewer(widget)))
    if entry is not None and entry[1]["owner"]() is widget:
        del _STATES[id(_viewer(widget))]


def adopt_state(widget) -> bool:
    """Give a new widget the state kept for its viewer, if any; returns whether it did."""
    _prune()
    viewer = _viewer(widget)
    entry = _STATES.pop(id(viewer), None)
    if entry is None or entry[0]() is not viewer:
        return False
    state = entry[1]
    picker = widget.model_picker
    name, device = state["model"]
    try:
        picker.set_model(name, device)
    except ValueError:  # the device went away meanwhile: keep the default device
        picker.set_model(name)
    picker.set_encoder(state["encoder"])
    picker.neighbours_check.setChecked(state["neighbours"])
    picker.set_embeddings_folder(state["embeddings"])
    picker._segmenters = state["segmenters"]  # the models loaded so far: no reload
    widget.adopt_classes(state["classes"])
    present = {id(getattr(layer, "__wrapped__", layer)) for layer in viewer.layers}
    for support in state["supports"]:
        if id(getattr(support.image, "__wrapped__", support.image)) in present:
            widget.support_actions.attach_support(support)
    widget.refresh_layer_choices()
    if state["query"] in viewer.layers:
        widget.query_combo.setCurrentText(state["query"])
    widget.query_picked = state["query_picked"] and widget.query_combo.currentText() == state["query"]
    widget.scope_combo.setCurrentText(state["scope"])
    for key, expanded in state["sections"].items():
        widget.sections[key].set_expanded(expanded)
    widget.channel_controls.update_choices()
    if widget.channel_combo.findText(state["channel"]) >= 0:
        widget.channel_combo.setCurrentText(state["channel"])
    widget.plane_seconds.update(state["plane_seconds"])
    if state["preview_choice"] is not None:
        widget.set_live_preview(state["preview_choice"])
    else:
        widget.preview.default_preview()
    widget.uncertainty_check.setChecked(state["uncertainty"])
    widget.files.saved_signature = state["saved_signature"]
    if state["hint_hidden"]:
        widget.hint.dismiss()
    widget.status.setText(f"state kept from the closed panel: {len(widget.supports)} support(s)")
    return True
