"""The class list of the dock widget: add, rename, recolour, remove, and the active class.

``ClassControls`` is mixed into ``LabelAnythingWidget``; the classes themselves live in a
``ClassTable`` (``classes.py``), and the prompt layers follow its edits.
"""

from __future__ import annotations

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

KEY_NEXT_CLASS, KEY_PREVIOUS_CLASS = "Alt-N", "Alt-P"


class ClassControls:
    """The dock widget's class box (mixed into ``LabelAnythingWidget``)."""

    def _build_class_box(self) -> QGroupBox:
        class_box = QGroupBox(f"Classes ({KEY_NEXT_CLASS} / {KEY_PREVIOUS_CLASS} to switch)")
        class_layout = QVBoxLayout(class_box)
        self.class_list = QListWidget()
        self.class_list.currentRowChanged.connect(lambda row: self.classes.set_active(row + 1) if row >= 0 else None)
        self.class_list.itemDoubleClicked.connect(lambda item: self._rename_class(self.class_list.row(item) + 1))
        buttons, self.class_buttons = QHBoxLayout(), {}
        for text, slot in (("add", self._add_class), ("rename", self._rename_active), ("colour", self._recolor_active),
                           ("remove", self._remove_active)):  # fmt: skip
            button = self.class_buttons[text] = QPushButton(text)
            button.clicked.connect(lambda *_, slot=slot, text=text: self._guard(slot, f"cannot {text} class"))
            buttons.addWidget(button)
        class_layout.addWidget(self.class_list)
        class_layout.addLayout(buttons)
        return class_box

    def _on_classes_changed(self) -> None:
        self.class_list.blockSignals(True)
        self.class_list.clear()
        for name, color in zip(self.classes.names, self.classes.colors, strict=True):
            pixmap = QPixmap(14, 14)
            pixmap.fill(QColor(color))
            self.class_list.addItem(QListWidgetItem(QIcon(pixmap), name))
        self.class_list.setCurrentRow(self.classes.active - 1)
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
        self.class_list.setCurrentRow(k - 1)
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
        name, ok = QInputDialog.getText(self, "Rename class", "class name:", text=self.classes.names[k - 1])
        if ok:
            self._guard(lambda: self.classes.rename(k, name), "cannot rename class")

    def _rename_active(self) -> None:
        if self.classes.active:
            self._rename_class(self.classes.active)

    def _recolor_active(self) -> None:
        k = self.classes.active
        if k:
            color = QColorDialog.getColor(QColor(self.classes.color_of(k)), self, "Class colour")
            if color.isValid():
                self.classes.recolor(k, color.name())

    def _remove_active(self) -> None:
        if self.classes.active:
            self.classes.remove(self.classes.active)
