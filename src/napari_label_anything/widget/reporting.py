"""How the dock widget reports: one napari notification per event, the whole message kept.

A message is shown in two places. The napari notification carries the whole text on one line
(napari's toast expands to show all of it and its text can be selected); when the original text
had several lines (e.g. how to install a checkpoint by hand) or is long, the notification gets a
"Copy details" button that copies it as written. The status line shows a short version; its
tooltip holds the whole text and its text can be selected and copied.
"""

from __future__ import annotations

STATUS_LIMIT = 400  # characters on the status line (word-wrapped); the tooltip keeps the rest


def flat(text: str) -> str:
    """``text`` on one line (whitespace collapsed), never truncated."""
    return " ".join(str(text).split())


def short(text: str, limit: int = STATUS_LIMIT) -> str:
    text = flat(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def copy_to_clipboard(text: str) -> None:
    from qtpy.QtWidgets import QApplication

    clipboard = QApplication.clipboard()
    if clipboard is not None:
        clipboard.setText(text)


def notify(kind: str, message: str, details: str | None = None) -> None:
    """One napari notification (``kind``: "error", "warning" or "info") with the whole message.

    ``details``: the full text as written (several lines allowed); when it says more than the
    one-line message, a "Copy details" button copies it.
    """
    from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

    text = flat(message)
    full = details if details is not None else message
    actions = ()
    if "\n" in str(full).strip() or len(text) > STATUS_LIMIT or flat(full) != text:
        actions = (("Copy details", lambda *_: copy_to_clipboard(str(full))),)
    severity = {"error": NotificationSeverity.ERROR, "warning": NotificationSeverity.WARNING,
                "info": NotificationSeverity.INFO}[kind]  # fmt: skip
    notification_manager.dispatch(Notification(text, severity=severity, actions=actions))


def set_status(label, text: str, details: str | None = None) -> None:
    """Show ``text`` short on the status ``label``; its tooltip keeps the whole text."""
    label.setText(short(text))
    label.setToolTip(str(details if details is not None else text))


def make_status_label(text: str = "ready"):
    """The status line: word-wrapped, selectable with the mouse and keyboard (to copy it)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QLabel

    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                  | Qt.TextInteractionFlag.TextSelectableByKeyboard)  # fmt: skip
    label.setToolTip("What the plugin is doing, or the last result or error. Select the text to copy it;\n"
                     "hover to see a long message whole.")  # fmt: skip
    return label


def confirm(parent, title: str, question: str) -> bool:
    """Ask a yes/no question (default: no). Module-level so that tests and scripts can answer it."""
    from qtpy.QtWidgets import QMessageBox

    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, title, question, buttons, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def one_line(error: BaseException | str, limit: int | None = 300) -> str:
    """A one-line message for an exception (its type name when it has no text), at most
    ``limit`` characters (None: whole)."""
    if isinstance(error, BaseException):
        text = str(error).strip()
        if isinstance(error, KeyError) and error.args:
            text = f"missing {error.args[0]!r}"
        text = text or type(error).__name__
    else:
        text = str(error)
    return flat(text) if limit is None else short(text, limit)
