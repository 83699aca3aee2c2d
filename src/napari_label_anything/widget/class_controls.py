"""The class list of the dock widget: add, rename, recolour, remove, and the active class.

``ClassControls`` is the dock's part (its host described by ``ClassHost``); the classes live in a
``ClassTable`` (``class_table.py``), and the prompt layers follow its edits. List row k is label
value k of the output: row 0 is the built-in background, paintable when the model takes
background prompts ('classic' does: its explicit background class; the Label Anything models
learned the background without prompts, so their row 0 is shown but cannot be selected).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QColorDialog,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

from ..labels import BACKGROUND
from . import reporting

KEY_NEXT_CLASS, KEY_PREVIOUS_CLASS = "Alt-N", "Alt-P"
BACKGROUND_PAINTABLE = (
    "Label 0 of the output. Paint, click or box what is NOT an object, close to the objects\n"
    "(the gaps between touching cells, a rim around each object): the model learns the borders from it."
)
BACKGROUND_NOT_PAINTABLE = (
    "Label 0 of the output. The Label Anything models find the background themselves: they were\n"
    "trained without background prompts, so there is nothing to paint here. Choose the 'classic'\n"
    "model to paint background."
)


def takes_background_prompts(model_name: str, device: str = "cpu") -> bool:
    """Whether ``model_name`` uses background prompts: only 'classic' (directly or via 'auto')."""
    from ..hub.registry import CLASSIC, resolve_model_name

    try:
        return resolve_model_name(model_name, "cpu" if device == "auto" else device) == CLASSIC
    except Exception:  # noqa: BLE001 - a broken registry entry must not break the class list
        return False


class ClassHost(Protocol):
    """What ``ClassControls`` uses of the dock."""

    classes: Any  # the ClassTable (a new one when a closed panel's is adopted)
    supports: list
    model_picker: Any
    status: Any  # the status line (a QLabel)

    def guard(self, action: Callable[[], Any], what: str) -> Any: ...

    def refresh_support_list(self, event=None) -> None: ...

    def output_layer(self) -> Any: ...


class ClassControls:
    """The dock's class box: the list (row k = label k), add, rename, recolour, remove, undo."""

    def __init__(self, host: ClassHost, parent=None) -> None:
        self.host = host
        self.parent = parent  # the dialogs' parent widget

    def build(self) -> QGroupBox:
        class_box = QGroupBox(f"Classes ({KEY_NEXT_CLASS} / {KEY_PREVIOUS_CLASS} to switch)")
        class_layout = QVBoxLayout(class_box)
        self.class_list = QListWidget()
        self.class_list.currentRowChanged.connect(lambda row: self.host.classes.set_active(row) if row >= 0 else None)
        self.class_list.itemDoubleClicked.connect(lambda item: self._rename_class(self.class_list.row(item)))
        buttons, self.class_buttons = QHBoxLayout(), {}
        self._removed_class = None  # what "undo" puts back: (k, name, colour, prompt snapshots)
        for text, slot in (("add", self._add_class), ("rename", self._rename_active), ("colour", self._recolor_active),
                           ("remove", self._remove_active), ("undo", self.undo_remove_class)):  # fmt: skip
            button = self.class_buttons[text] = QPushButton(text)
            button.clicked.connect(lambda *_, slot=slot, text=text: self.host.guard(slot, f"cannot {text} class"))
            buttons.addWidget(button)
        self.class_buttons["undo"].setEnabled(False)
        class_layout.addWidget(self.class_list)
        class_layout.addLayout(buttons)
        return class_box

    def update_background_row(self) -> None:
        """Row 0 is paintable only for a model that takes background prompts."""
        picker = self.host.model_picker
        self.host.classes.background_paintable = takes_background_prompts(picker.model_name, picker.device)

    def on_classes_changed(self) -> None:
        self.class_list.blockSignals(True)
        self.class_list.clear()
        classes = self.host.classes
        rows = [(BACKGROUND, classes.color_of(0)), *zip(classes.names, classes.colors, strict=True)]
        for k, (name, color) in enumerate(rows):
            pixmap = QPixmap(14, 14)
            pixmap.fill(QColor(color))
            item = QListWidgetItem(QIcon(pixmap), f"{k}  {name}")
            if k == 0:
                paintable = self.host.classes.background_paintable
                item.setToolTip(BACKGROUND_PAINTABLE if paintable else BACKGROUND_NOT_PAINTABLE)
                if not paintable:
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsSelectable & ~Qt.ItemFlag.ItemIsEnabled)
            self.class_list.addItem(item)
        self.class_list.setCurrentRow(self.host.classes.active)
        self.class_list.blockSignals(False)
        for support in self.host.supports:
            support.recolor(self.host.classes)
        output = self.host.output_layer()
        if output is not None:
            from .layer_conversion import label_colormap

            output.colormap = label_colormap(self.host.classes)
        self.host.refresh_support_list()

    def on_active_class(self, k: int) -> None:
        self.class_list.blockSignals(True)
        self.class_list.setCurrentRow(k)
        self.class_list.blockSignals(False)
        for support in self.host.supports:
            support.set_active_class(self.host.classes)

    def on_class_removed(self, k: int) -> None:
        for support in self.host.supports:
            support.remove_class(k)

    def _add_class(self) -> None:
        name, ok = QInputDialog.getText(self.parent, "New class", "class name:")
        if ok:
            self.host.classes.add(name or None)

    def _rename_class(self, k: int) -> None:
        if k == 0:
            self.host.guard(lambda: self.host.classes.rename(0, BACKGROUND), "cannot rename class")
            return
        name, ok = QInputDialog.getText(self.parent, "Rename class", "class name:", text=self.host.classes.names[k - 1])
        if ok:
            self.host.guard(lambda: self.host.classes.rename(k, name), "cannot rename class")

    def _rename_active(self) -> None:
        if len(self.host.classes):
            self._rename_class(self.host.classes.active)

    def _recolor_active(self) -> None:
        k = self.host.classes.active
        if k == 0:
            self.host.classes.recolor(0, self.host.classes.color_of(0))  # refused, with the reason
        elif k > 0:
            color = QColorDialog.getColor(QColor(self.host.classes.color_of(k)), self.parent, "Class colour")
            if color.isValid():
                self.host.classes.recolor(k, color.name())

    def _remove_active(self) -> None:
        if len(self.host.classes):
            self.remove_class(self.host.classes.active)

    def remove_class(self, k: int, ask: bool = True) -> bool:
        """Remove class ``k`` and its prompts, after asking (``reporting.confirm``) when ``ask``
        and it has prompts; "undo" puts both back. Returns whether the class was removed."""
        if k == 0:
            self.host.classes.remove(0)  # refused, with the reason
        name = self.host.classes.names[k - 1]
        counts = [s.prompt_counts(len(self.host.classes)) for s in self.host.supports]
        pixels, points, boxes = (sum(int(c[key][k]) for c in counts) for key in ("pixels", "points", "boxes"))
        question = (
            f"Remove class {name!r} and its prompts ({pixels} painted pixels, {points} points, {boxes} boxes)?\n"
            "The classes after it move up by one. 'undo' brings it back."
        )
        if ask and pixels + points + boxes and not reporting.confirm(self.parent, "Remove class", question):
            return False
        self._removed_class = (k, name, self.host.classes.color_of(k), [_snapshot(s) for s in self.host.supports])
        self.host.classes.remove(k)
        self.class_buttons["undo"].setEnabled(True)
        self.class_buttons["undo"].setToolTip(f"Bring back class {name!r} and its prompts as they were")
        self.host.status.setText(f"removed class {name!r}; 'undo' brings it back")
        return True

    def undo_remove_class(self) -> None:
        """Put back the last removed class and the prompt layers as they were at its removal."""
        if self._removed_class is None:
            raise ValueError("no removed class to bring back")
        k, name, color, snapshots = self._removed_class
        self.host.classes.insert(k, name, color)
        for support, saved in snapshots:
            if support in self.host.supports:
                _restore(support, saved)
                support.recolor(self.host.classes)
        self._removed_class = None
        self.class_buttons["undo"].setEnabled(False)
        self.host.refresh_support_list()
        self.host.status.setText(f"class {name!r} is back with its prompts")


def _snapshot(support) -> tuple:
    """Copies of a support's prompt layers, for ``_restore``."""
    return support, (
        np.array(support.labels.data, copy=True),
        np.array(support.points.data, copy=True),
        support.points.features.copy(),
        [np.array(v, copy=True) for v in support.shapes.data],
        support.shapes.features.copy(),
    )


def _restore(support, saved: tuple) -> None:
    labels, points, point_features, boxes, box_features = saved
    support.labels.data = labels
    support.points.data = points
    support.points.features = point_features
    if len(support.shapes.data):
        support.shapes.selected_data = set(range(len(support.shapes.data)))
        support.shapes.remove_selected()
    if boxes:
        support.shapes.add_rectangles(boxes)
    support.shapes.features = box_features
