"""Every failing user action of the dock widget: one notification, an honest status line, and
the widget stays usable (the next run succeeds). Real napari viewer under Xvfb, classic model."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog

pytestmark = pytest.mark.napari


def press(qtbot, button) -> None:
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def choose_file(monkeypatch, path) -> None:
    """The file dialogs answer ``path`` (no dialog opens)."""
    for name in ("getOpenFileName", "getSaveFileName"):
        monkeypatch.setattr(QFileDialog, name, staticmethod(lambda *a, **k: (str(path), "")))


def assert_one_error(widget, before: int, prefix: str) -> str:
    notes = notification_manager.records[before:]
    assert len(notes) == 1, [str(n.message) for n in notes]
    message = str(notes[0].message)
    assert notes[0].severity == NotificationSeverity.ERROR
    assert message.startswith(prefix) and "\n" not in message and "Traceback" not in message
    assert widget.status.text() == message  # never "ready" or a stale line
    assert widget.last_error is not None
    return message


def assert_run_succeeds(qtbot, widget, viewer) -> None:
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.runs.busy, timeout=60_000)
    assert widget.status.text().startswith("done"), widget.status.text()
    assert viewer.layers["query labels"].data.shape == (48, 56)


def saved_episode(widget, tmp_path):
    path = widget.save_episode(tmp_path / "good.episode")
    assert widget.status.text().startswith("saved episode")
    return path


def rewrite_header(source, target, change) -> None:
    with np.load(source) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    change(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(target, "wb") as file:
        np.savez(file, **arrays)


def test_loading_a_truncated_episode(qtbot, ready, tmp_path, monkeypatch):
    viewer, widget = ready
    good = saved_episode(widget, tmp_path)
    data = good.read_bytes()
    bad = tmp_path / "truncated.episode"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(zipfile.BadZipFile):  # what a truncated archive is to numpy
        zipfile.ZipFile(bad)
    names, classes = [layer.name for layer in viewer.layers], widget.classes.names
    choose_file(monkeypatch, bad)
    before = len(notification_manager.records)
    press(qtbot, widget.load_button)
    message = assert_one_error(widget, before, "cannot load episode: ")
    assert "truncated.episode" in message
    assert [layer.name for layer in viewer.layers] == names and widget.classes.names == classes
    assert_run_succeeds(qtbot, widget, viewer)


@pytest.mark.parametrize("content", [b"", b"hello, not an episode\n", b"PK\x03\x04" + bytes(100)])
def test_loading_a_file_that_is_not_an_episode(qtbot, ready, tmp_path, monkeypatch, content):
    viewer, widget = ready
    bad = tmp_path / "notes.episode"
    bad.write_bytes(content)
    choose_file(monkeypatch, bad)
    before = len(notification_manager.records)
    press(qtbot, widget.load_button)
    assert_one_error(widget, before, "cannot load episode: ")
    assert_run_succeeds(qtbot, widget, viewer)


TAMPERS = {
    "supports not a list": lambda meta: meta.update(supports=5),
    "support record not a dict": lambda meta: meta.update(supports=["x"]),
    "no classes": lambda meta: meta.pop("classes"),
    "classes not a list": lambda meta: meta.update(classes=7),
    "support without arrays": lambda meta: meta["supports"].append({"name": "ghost", "has_labels": True}),
    "not our format": lambda meta: meta.update(format="something else"),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_loading_an_episode_with_a_tampered_header(qtbot, ready, tmp_path, monkeypatch, tamper):
    viewer, widget = ready
    bad = tmp_path / "tampered.episode"
    rewrite_header(saved_episode(widget, tmp_path), bad, TAMPERS[tamper])
    names, classes = [layer.name for layer in viewer.layers], widget.classes.names
    choose_file(monkeypatch, bad)
    before = len(notification_manager.records)
    press(qtbot, widget.load_button)
    assert_one_error(widget, before, "cannot load episode: ")
    assert [layer.name for layer in viewer.layers] == names and widget.classes.names == classes
    assert_run_succeeds(qtbot, widget, viewer)


@pytest.mark.parametrize("error", [KeyError("meta"), AttributeError("'str' object has no attribute 'get'"),
                                   zipfile.BadZipFile("File is not a zip file")])  # fmt: skip
def test_any_failure_of_episode_load_is_a_failure_to_load(qtbot, ready, tmp_path, monkeypatch, error):
    """Whatever the core raises for a damaged file, the widget reports it and goes on."""
    from napari_label_anything.episode import Episode

    viewer, widget = ready
    path = saved_episode(widget, tmp_path)

    def broken_load(path):
        raise error

    monkeypatch.setattr(Episode, "load", staticmethod(broken_load))
    with pytest.raises(ValueError, match="not a readable episode file"):
        widget.load_episode(path)  # the console API: one clear exception type
    choose_file(monkeypatch, path)
    before = len(notification_manager.records)
    press(qtbot, widget.load_button)
    message = assert_one_error(widget, before, "cannot load episode: ")
    assert type(error).__name__ in message
    assert_run_succeeds(qtbot, widget, viewer)


def test_saving_to_an_unwritable_path(qtbot, ready, tmp_path, monkeypatch):
    viewer, widget = ready
    (tmp_path / "a_file").write_text("I am a file, not a folder")
    (tmp_path / "a_folder.episode").mkdir()
    for target in (tmp_path / "a_file" / "run.episode", tmp_path / "a_folder.episode"):
        choose_file(monkeypatch, target)
        before = len(notification_manager.records)
        press(qtbot, widget.save_button)
        assert_one_error(widget, before, "cannot save episode: ")
    assert (tmp_path / "a_folder.episode").is_dir()
    assert_run_succeeds(qtbot, widget, viewer)


def test_saving_an_incomplete_episode(qtbot, ready, tmp_path, monkeypatch):
    viewer, widget = ready
    widget.classes.add("blue")  # no prompt for it
    choose_file(monkeypatch, tmp_path / "run.episode")
    before = len(notification_manager.records)
    press(qtbot, widget.save_button)
    assert "blue" in assert_one_error(widget, before, "cannot save episode: ")
    assert not (tmp_path / "run.episode").exists()


def test_exporting_before_any_run_and_to_an_unwritable_path(qtbot, ready, tmp_path, monkeypatch):
    viewer, widget = ready
    choose_file(monkeypatch, tmp_path / "labels.tif")
    before = len(notification_manager.records)
    press(qtbot, widget.export_button)
    assert "press Run first" in assert_one_error(widget, before, "cannot export labels: ")
    assert not (tmp_path / "labels.tif").exists()
    assert_run_succeeds(qtbot, widget, viewer)
    (tmp_path / "a_file").write_text("")
    choose_file(monkeypatch, tmp_path / "a_file" / "labels.tif")
    before = len(notification_manager.records)
    press(qtbot, widget.export_button)
    assert_one_error(widget, before, "cannot export labels: ")
    choose_file(monkeypatch, tmp_path / "labels.tif")
    press(qtbot, widget.export_button)
    assert (tmp_path / "labels.tif").is_file() and widget.status.text().startswith("exported")


def test_run_that_cannot_start(qtbot, ready):
    viewer, widget = ready
    widget.classes.add("blue")  # not prompted
    before = len(notification_manager.records)
    press(qtbot, widget.run_button)
    assert "blue" in assert_one_error(widget, before, "cannot run: ")
    assert widget.run_button.isEnabled() and not widget.runs.busy
    widget.classes.remove(3)
    assert_run_succeeds(qtbot, widget, viewer)


@pytest.mark.parametrize("error_type", [RuntimeError, ValueError, MemoryError])
def test_an_error_inside_the_worker(qtbot, ready, monkeypatch, error_type):
    """RuntimeError too: superqt would take it for a deleted worker and never finish the run."""
    viewer, widget = ready
    picker = widget.model_picker

    def broken_segmenter():
        raise error_type("the model file is damaged\nsecond line")

    monkeypatch.setattr(picker, "get_segmenter", broken_segmenter)
    before = len(notification_manager.records)
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.runs.busy, timeout=30_000)
    qtbot.wait(50)
    message = assert_one_error(widget, before, "Label Anything failed: ")
    assert "damaged second line" in message and "query labels" not in viewer.layers
    assert type(widget.last_error) is error_type
    assert widget.run_button.isEnabled()
    monkeypatch.undo()
    assert_run_succeeds(qtbot, widget, viewer)


def test_adding_a_support_twice(qtbot, ready):
    viewer, widget = ready
    widget.support_image_combo.setCurrentText("support")
    before = len(notification_manager.records)
    press(qtbot, widget.add_support_button)
    assert "already a support" in assert_one_error(widget, before, "cannot add support: ")
    assert_run_succeeds(qtbot, widget, viewer)
