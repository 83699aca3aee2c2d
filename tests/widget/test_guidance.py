"""Errors once, whole and early; guidance in place (issue 9, items 7 and 8).

Real napari viewer under Xvfb. The network is never touched: the hub probe and the downloader
are replaced in every test that could reach them.
"""

from __future__ import annotations

import re
import time

import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QLineEdit,
    QListWidget,
)

from napari_label_anything.widget import preflight
from napari_label_anything.widget.guidance import FIRST_RUN_HINT

pytestmark = pytest.mark.napari

REPO = "someone/tiny_model"


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty hub cache; any download or probe attempt is recorded, never made."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = {"download": [], "probe": 0}

    def no_download(*args, **kwargs):
        calls["download"].append(args)
        raise AssertionError("a download started")

    def unreachable(*args, **kwargs):
        calls["probe"] += 1
        return False

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    monkeypatch.setattr(preflight, "hub_reachable", unreachable)
    return calls


@pytest.fixture
def ready(ready, no_network):
    """conftest's prompted widget, with the network replaced."""
    return ready


def notes_since(before: int) -> list:
    return list(notification_manager.records[before:])


def one_error(before: int):
    notes = notes_since(before)
    assert len(notes) == 1, [str(n.message) for n in notes]
    assert notes[0].severity == NotificationSeverity.ERROR
    return notes[0]


def run_to_end(qtbot, widget) -> None:
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.runs.busy, timeout=60_000)


# -- 7. errors once, whole and early -------------------------------------------------------


def test_offline_hub_model_is_refused_before_any_download(qtbot, ready, no_network, monkeypatch):
    from huggingface_hub import constants

    viewer, widget = ready
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    widget.set_model(REPO, "cpu")
    before = len(notification_manager.records)
    assert widget.run() is None  # refused before a worker starts
    note = one_error(before)
    message = str(note.message)
    assert message.startswith("cannot run: ") and "HF_HUB_OFFLINE" in message and "\n" not in message
    assert constants.HF_HUB_CACHE in message and "refs/main" in message  # where and how, by hand
    assert no_network == {"download": [], "probe": 0}  # offline is known without any network
    assert not widget.runs.busy and widget.run_button.isEnabled()
    assert not any("download" in line for line in widget.status_history)
    # the status line is short; its tooltip and the notification's "Copy details" keep it whole
    assert len(widget.status.text()) <= 400 and "refs/main" in widget.status.toolTip()
    assert "\n" in widget.status.toolTip()
    (label, copy), *_ = note.actions
    assert label == "Copy details"
    copy(None)
    assert "refs/main" in QApplication.clipboard().text() and "\n" in QApplication.clipboard().text()


def test_unreachable_hub_is_refused_at_once(qtbot, ready, no_network):
    viewer, widget = ready
    widget.set_model(REPO, "cpu")
    before = len(notification_manager.records)
    start = time.perf_counter()
    assert widget.run() is None
    assert time.perf_counter() - start < 5
    message = str(one_error(before).message)
    assert message.startswith("cannot run: ") and "cannot be reached" in message
    assert "huggingface.co" in message and "snapshots" in message
    assert no_network["probe"] == 1 and no_network["download"] == []
    assert "query labels" not in viewer.layers and widget.run_button.isEnabled()
    widget.set_model("classic", "cpu")
    run_to_end(qtbot, widget)  # the widget stays usable
    assert widget.status.text().startswith("done")


def test_reachable_hub_downloads_with_progress(qtbot, ready, no_network, reference, monkeypatch):
    from conftest import fake_hub_download

    viewer, widget = ready
    calls = []
    monkeypatch.setattr(preflight, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hub_download(reference / "sam_like", calls))
    widget.set_model(REPO, "cpu")
    run_to_end(qtbot, widget)
    assert [c[1] for c in calls] == ["config.json", "model.safetensors"]
    assert any(line.startswith(f"downloading {REPO} into") for line in widget.status_history)
    assert widget.status.text().startswith("done") and "query labels" in viewer.layers


def test_hub_probe_is_bounded_in_time_and_never_raises(monkeypatch):
    import socket

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(3))  # a silent network
    start = time.perf_counter()
    assert preflight.hub_reachable(timeout=0.2) is False
    assert time.perf_counter() - start < 1.0

    def refused(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refused)
    assert preflight.hub_reachable(timeout=0.2) is False

    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    seen = []
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: seen.append(address) or Connection())
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.example.org")
    assert preflight.hub_reachable(timeout=0.2) is True and seen == [("hub.example.org", 443)]


def test_device_picker_offers_only_this_machines_devices(qtbot, ready):
    from napari_label_anything.hub.device import available_devices

    viewer, widget = ready
    combo = widget.model_picker.device_combo
    assert [combo.itemText(i) for i in range(combo.count())] == ["auto", *available_devices()]
    missing = next(d for d in ("cuda", "mps") if d not in available_devices())
    before = len(notification_manager.records)
    widget.set_model("classic", missing)  # never raises
    message = str(one_error(before).message)
    assert message.startswith("cannot choose device: ") and f"'{missing}' is not available" in message
    assert widget.status.text() == message
    assert widget.model_picker.device == "cpu" and widget.model_picker.model_name == "classic"
    run_to_end(qtbot, widget)
    assert widget.status.text().startswith("done") and "classic on cpu" in widget.status.text()


def test_status_names_the_model_that_ran_its_device_planes_and_time(qtbot, ready):
    viewer, widget = ready
    widget.set_model("auto", "cpu")  # an empty hub cache: auto resolves to the classic model
    run_to_end(qtbot, widget)
    status = widget.status.text()
    assert re.fullmatch(r"done: 1 plane\(s\) -> 'query labels'.* \(classic on cpu, \d+\.\d s\)", status), status


def test_a_long_error_is_one_notification_with_the_whole_message(qtbot, ready, monkeypatch):
    viewer, widget = ready
    tail = "the last words of a long message"
    text = "the checkpoint is damaged:\n" + "\n".join(f"  line {i}: details" for i in range(60)) + "\n" + tail

    def broken_segmenter():
        raise OSError(text)

    monkeypatch.setattr(widget.model_picker, "get_segmenter", broken_segmenter)
    before = len(notification_manager.records)
    run_to_end(qtbot, widget)
    qtbot.wait(50)
    note = one_error(before)
    message = str(note.message)
    assert message.startswith("Label Anything failed: ") and message.endswith(tail) and "\n" not in message
    assert len(widget.status.text()) <= 400 and widget.status.text().endswith("…")
    assert tail in widget.status.toolTip() and "line 59: details" in widget.status.toolTip()
    flags = widget.status.textInteractionFlags()
    assert flags & Qt.TextInteractionFlag.TextSelectableByMouse
    assert [label for label, _ in note.actions] == ["Copy details"]
    assert "query labels" not in viewer.layers and widget.run_button.isEnabled()


# -- 8. guidance in place ------------------------------------------------------------------


def test_every_control_has_a_tooltip(ready):
    viewer, widget = ready
    kinds = (QAbstractButton, QComboBox, QAbstractSpinBox, QListWidget, QLineEdit)
    controls = [child for kind in kinds for child in widget.findChildren(kind)]
    assert len(controls) >= 25
    missing = []
    for control in controls:
        if isinstance(control, QLineEdit) and isinstance(control.parent(), (QAbstractSpinBox, QComboBox)):
            control = control.parent()  # the editor inside a spin box: its box's tooltip shows
        if not control.toolTip().strip():
            missing.append(f"{type(control).__name__} {getattr(control, 'text', lambda: '')()!r}")
    assert not missing, missing


def test_first_run_hint_says_how_to_scribble_and_goes_after_the_first_run(qtbot, ready):
    viewer, widget = ready
    hint = widget.hint
    assert hint.isVisibleTo(widget) and hint.label.text() == FIRST_RUN_HINT
    text = re.sub("<[^>]+>", "", FIRST_RUN_HINT)
    for words in ("inside", "along their borders", "background", "close to the objects", "not only far away",
                  "One or two supports", "Suggest next plane"):  # fmt: skip
        assert words in text, words
    run_to_end(qtbot, widget)
    assert widget.status.text().startswith("done") and not hint.isVisibleTo(widget)


def test_first_run_hint_can_be_dismissed(qtbot, ready):
    viewer, widget = ready
    assert widget.hint.isVisibleTo(widget)
    qtbot.mouseClick(widget.hint.dismiss_button, Qt.MouseButton.LeftButton)
    assert not widget.hint.isVisibleTo(widget) and widget.hint.dismissed
