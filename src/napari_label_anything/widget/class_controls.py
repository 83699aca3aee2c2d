"""The class list of the dock widget: add, rename, recolour, remove, and the active class.

``ClassControls`` is mixed into ``LabelAnythingWidget``; the classes themselves live in a
``ClassTable`` (``classes.py``), and the prompt layers follow its edits. List row k is label
value k of the output: row 0 is the built-in background, paintable when the model takes
background prompts ('classic' does: its explicit background class; the Label Anything models
learned the background without prompts, so their row 0 is shown but cannot be selected).
"""

from __future__ import annotations

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
    from ..registry import CLASSIC, resolve_model_name

    try:
        return resolve_model_name(model_name, "cpu" if device == "auto" else device) == CLASSIC
    except Exception:  # noqa: BLE001 - a broken registry entry must not break the class list
        return False


class ClassControls:
    """The dock widget's class box (mixed into ``LabelAnythingWidget``)."""

    def _build_class_box(self) -> QGroupBox:
        class_box = QGroupBox(f"Classes ({KEY_NEXT_CLASS} / {KEY_PREVIOUS_CLASS} to switch)")
        class_layout = QVBoxLayout(class_box)
        self.class_list = QListWidget()
        self.class_list.currentRowChanged.connect(lambda row: self.classes.set_active(row) if row >= 0 else None)
        self.class_list.itemDoubleClicked.connect(lambda item: self._rename_class(self.class_list.row(item)))
        buttons, self.class_buttons = QHBoxLayout(), {}
        for text, slot in (("add", self._add_class), ("rename", self._rename_active), ("colour", self._recolor_active),
                           ("remove", self._remove_active)):  # fmt: skip
            button = self.class_buttons[text] = QPushButton(text)
            button.clicked.connect(lambda *_, slot=slot, text=text: self._guard(slot, f"cannot {text} class"))
            buttons.addWidget(button)
        class_layout.addWidget(self.class_list)
        class_layout.addLayout(buttons)
        return class_box

    def _update_background_row(self) -> None:
        """Row 0 is paintable only for a model that takes background prompts."""
        picker = self.model_picker
        self.classes.background_paintable = takes_background_prompts(picker.model_name, picker.device)

    def _on_classes_changed(self) -> None:
        self.class_list.blockSignals(True)
        self.class_list.clear()
        rows = [(BACKGROUND, self.classes.color_of(0)), *zip(self.classes.names, self.classes.colors, strict=True)]
        for k, (name, color) in enumerate(rows):
            pixmap = QPixmap(14, 14)
            pixmap.fill(QColor(color))
            item = QListWidgetItem(QIcon(pixmap), f"{k}  {name}")
            if k == 0:
                paintable = self.classes.background_paintable
                item.setToolTip(BACKGROUND_PAINTABLE if paintable else BACKGROUND_NOT_PAINTABLE)
                if not paintable:
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsSelectable & ~Qt.ItemFlag.ItemIsEnabled)
            self.class_list.addItem(item)
        self.class_list.setCurrentRow(self.classes.active)
        self.class_list.blockSignals(False)
        for support in self.supports:
            support.recolor(self.classes)
        output = self._output_layer()
        if output is not None:
            from .layers import label_colormap

            output.colormap = label_colormap(self.classes)
        self._refresh_support_list()

    def _on_active_class(self, k: int) -> None:
        self.class_list.blockSignals(True)
        self.class_list.setCurrentRow(k)
        self.class_list.blockSignals(False)
        for support in self.supports:
            support.set_active_class(self.classes)

    def _on_class_removed(self, k: int) -> None:
        for support in self.supports:
            support.remove_class(k)

    def _add_class(self) -> None:
        name, ok = QInputDialog.getText(self, "New class", "class name:")
        if ok:
            self.classes.add(name or None)

    def _rename_class(self, k: int) -> None:
        if k == 0:
            self._guard(lambda: self.classes.rename(0, BACKGROUND), "cannot rename class")
            return
        name, ok = QInputDialog.getText(self, "Rename class", "class name:", text=self.classes.names[k - 1])
        if ok:
            self._guard(lambda: self.classes.rename(k, name), "cannot rename class")

    def _rename_active(self) -> None:
        if len(self.classes):
            self._rename_class(self.classes.active)

    def _recolor_active(self) -> None:
        k = self.classes.active
        if k == 0:
            self.classes.recolor(0, self.classes.color_of(0))  # refused, with the reason
        elif k > 0:
            color = QColorDialog.getColor(QColor(self.classes.color_of(k)), self, "Class colour")
            if color.isValid():
                self.classes.recolor(k, color.name())

    def _remove_active(self) -> None:
        if len(self.classes):
            self.classes.remove(self.classes.active)
