"""Two layout pieces of the dock: a collapsible section and a scroll area that only scrolls down.

``CollapsibleSection`` shows a header button with an arrow; clicking it shows or hides its body
(a group box loses its own title, which the header now shows). ``VerticalScrollArea`` holds the
long middle of the dock: it is as wide as its contents need, scrolls only vertically and asks
for little height, so the dock fits small screens.
"""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QFrame, QGroupBox, QScrollArea, QSizePolicy, QToolButton, QVBoxLayout, QWidget

SCROLL_MIN_HEIGHT = 120  # the least height the scroll area asks for: a few rows stay readable


class CollapsibleSection(QWidget):
    """A header button that shows or hides ``body``; ``toggled(expanded)`` follows it."""

    toggled = Signal(bool)

    def __init__(self, title: str, body: QWidget, expanded: bool = True, tooltip: str = "") -> None:
        super().__init__()
        self.title = title
        self.body = body
        if isinstance(body, QGroupBox):
            body.setTitle("")  # the header carries the title
        self.header = QToolButton()
        self.header.setCheckable(True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setAutoRaise(True)
        self.header.setToolTip(tooltip or f"Show or hide the {title} section")
        self.header.toggled.connect(self._show_body)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.header, alignment=Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(body)
        self._summary = ""
        self.header.setChecked(expanded)
        self._show_body(expanded)

    @property
    def expanded(self) -> bool:
        return self.header.isChecked()

    def set_expanded(self, expanded: bool) -> None:
        self.header.setChecked(bool(expanded))

    def set_summary(self, summary: str) -> None:
        """A short note after the title (e.g. the model chosen), seen while the body is hidden."""
        self._summary = summary
        self._update_header()

    def _show_body(self, expanded: bool) -> None:
        self.body.setVisible(expanded)
        self._update_header()
        self.toggled.emit(expanded)

    def _update_header(self) -> None:
        expanded = self.header.isChecked()
        self.header.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.header.setText(f"{self.title}: {self._summary}" if self._summary else self.title)


class VerticalScrollArea(QScrollArea):
    """A frameless scroll area for a column of controls: as wide as they need, only vertical scrolling."""

    def __init__(self, contents: QWidget) -> None:
        super().__init__()
        self.setWidget(contents)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

    def minimumSizeHint(self):  # noqa: N802 - Qt API
        hint = super().minimumSizeHint()
        contents = self.widget()
        width = contents.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
        hint.setWidth(max(hint.width(), width + 2 * self.frameWidth()))
        hint.setHeight(SCROLL_MIN_HEIGHT)
        return hint

    def sizeHint(self):  # noqa: N802 - Qt API
        hint = super().sizeHint()
        hint.setWidth(max(hint.width(), self.minimumSizeHint().width()))
        return hint
