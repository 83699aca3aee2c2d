"""Runs that outlive their widget or their layers, and runs started twice (real napari, Xvfb).

A gated segmenter, injected through the model picker, holds every plane until the test lets it
go, so "mid-run" is a fact and not a race.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from conftest import GatedSegmenter, blob_image
from napari_label_anything.widget.dock import PROGRESS_PER_PLANE

pytestmark = pytest.mark.napari

N_PLANES = 6


@pytest.fixture
def gated(make_napari_viewer, monkeypatch):
    """A viewer with a prompted support, a stack query and a widget that runs GatedSegmenter."""
    viewer = make_napari_viewer()
    support_image, _ = blob_image()
    viewer.add_image(support_image, name="support", rgb=True)
    stack = np.stack([blob_image((40, 48), seed=s)[0] for s in range(N_PLANES)])
    viewer.add_image(stack, name="stack", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model("classic", "cpu")
    widget.classes.add("red")
    support = widget.add_support(viewer.layers["support"])
    support.labels.paint((30, 35), 1)
    segmenter = GatedSegmenter(N_PLANES)
    monkeypatch.setattr(widget.model_picker, "get_segmenter", lambda: segmenter)
    yield viewer, widget, segmenter
    segmenter.open_gate()  # never leave a worker waiting


def layer_names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


def start_and_enter(qtbot, widget, viewer, segmenter):
    worker = widget.run(viewer.layers["stack"], scope="all planes")
    assert worker is not None
    qtbot.waitUntil(segmenter.entered.is_set, timeout=30_000)
    segmenter.step()  # one plane done, the worker now waits inside the second
    qtbot.waitUntil(lambda: widget.progress.value() == PROGRESS_PER_PLANE, timeout=30_000)
    return worker


def finish(qtbot, worker, segmenter):
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        segmenter.open_gate()
    qtbot.wait(50)  # anything queued after `finished` runs now


def new_notifications(before: int) -> list:
    return notification_manager.records[before:]


def test_removing_the_dock_widget_mid_run_stops_it_and_writes_nothing(qtbot, gated):
    from napari.utils.key_bindings import coerce_keybinding

    viewer, widget, segmenter = gated
    names = layer_names(viewer)
    worker = start_and_enter(qtbot, widget, viewer, segmenter)
    viewer.window.remove_dock_widget(widget)
    assert widget.closed and worker.abort_requested
    assert coerce_keybinding("Alt-R") not in viewer.keymap
    aborted = []
    worker.aborted.connect(lambda: aborted.append(True))
    finish(qtbot, worker, segmenter)
    assert aborted and not worker.is_running
    assert layer_names(viewer) == names
    assert widget.run() is None  # a closed widget starts nothing


def test_dock_close_button_stops_the_run_hide_button_does_not(qtbot, gated):
    from qtpy.QtCore import Qt

    viewer, widget, segmenter = gated
    dock = widget.parent()
    names = layer_names(viewer)
    # "hide this panel": the widget lives on, the run goes on and writes its layer.
    worker = start_and_enter(qtbot, widget, viewer, segmenter)
    qtbot.mouseClick(dock.title.hide_button, Qt.MouseButton.LeftButton)
    assert not widget.closed
    finish(qtbot, worker, segmenter)
    assert "stack labels" in viewer.layers
    viewer.layers.remove("stack labels")
    # "close this panel" (×): napari takes the widget out of its dock; the run stops.
    segmenter.reset()
    worker = start_and_enter(qtbot, widget, viewer, segmenter)
    qtbot.mouseClick(dock.title.close_button, Qt.MouseButton.LeftButton)
    assert widget.closed and widget.parent() is None
    finish(qtbot, worker, segmenter)
    assert layer_names(viewer) == names


def test_closing_the_viewer_mid_run_writes_nothing(qtbot, gated):
    viewer, widget, segmenter = gated
    worker = start_and_enter(qtbot, widget, viewer, segmenter)
    viewer.close()  # clears the layers, then closes (and deletes) the window
    qtbot.waitUntil(lambda: widget.runs.closed, timeout=10_000)
    finish(qtbot, worker, segmenter)
    assert len(viewer.layers) == 0


def test_closing_the_main_window_mid_run_writes_nothing(qtbot, gated):
    viewer, widget, segmenter = gated
    names = layer_names(viewer)
    worker = start_and_enter(qtbot, widget, viewer, segmenter)
    viewer.window.close()  # like the window's own ×: the window goes (deleted), the layers stay
    qtbot.waitUntil(lambda: widget.runs.closed, timeout=10_000)  # the widget was deleted with it
    assert worker.abort_requested
    finish(qtbot, worker, segmenter)
    assert layer_names(viewer) == names


@pytest.mark.parametrize("victim", ["stack", "support", "support point prompts", "support mask prompts"])
def test_removing_a_layer_the_run_reads_stops_it_with_a_message(qtbot, gated, victim):
    viewer, widget, segmenter = gated
    before = len(notification_manager.records)
    worker = start_and_enter(qtbot, widget, viewer, segmenter)
    viewer.layers.remove(victim)
    names = layer_names(viewer)
    finish(qtbot, worker, segmenter)
    assert layer_names(viewer) == names and not any(n.endswith("labels") for n in names)
    status = widget.status.text()
    assert f"layer {victim!r} was removed during the run" in status and "nothing was written" in status
    notes = [str(n.message) for n in new_notifications(before)]
    assert len(notes) == 1 and repr(victim) in notes[0] and "\n" not in notes[0]
    assert widget.run_button.isEnabled() and not widget.runs.busy


def test_a_run_after_a_stopped_run_works(qtbot, gated):
    viewer, widget, segmenter = gated
    worker = start_and_enter(qtbot, widget, viewer, segmenter)
    viewer.layers.remove("support box prompts")
    finish(qtbot, worker, segmenter)
    assert "stopped" in widget.status.text()
    assert widget.run(viewer.layers["stack"]) is not None  # the gate is open: it ends at once
    qtbot.waitUntil(lambda: not widget.runs.busy, timeout=30_000)
    assert viewer.layers["stack labels"].data.shape == (N_PLANES, 40, 48)
    assert widget.status.text().startswith("done")


def test_two_quick_runs_never_run_at_once(qtbot, gated):
    viewer, widget, segmenter = gated
    before = len(notification_manager.records)
    first = widget.run(viewer.layers["stack"])
    second = widget.run(viewer.layers["stack"])
    assert first is not None and second is None
    notes = [str(n.message) for n in new_notifications(before)]
    assert len(notes) == 1 and "in progress: wait for it" in notes[0]
    assert widget.status.text() != "ready"
    finish(qtbot, first, segmenter)
    assert segmenter.calls == 1
    assert layer_names(viewer).count("stack labels") == 1


def test_pressing_run_twice_starts_one_run(qtbot, gated):
    from qtpy.QtCore import Qt

    viewer, widget, segmenter = gated
    widget.query_combo.setCurrentText("stack")
    workers = []
    original = widget.runs.start
    widget.runs.start = lambda *a, **k: workers.append(original(*a, **k)) or workers[-1]
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    assert len(workers) == 1
    # the button says why it does not react: a run is going
    assert not widget.run_button.isEnabled() and "running" in widget.run_button.text()
    finish(qtbot, workers[0], segmenter)
    assert widget.run_button.isEnabled() and widget.run_button.text().startswith("Run")
    assert segmenter.calls == 1 and "stack labels" in viewer.layers


def test_a_removed_widget_docked_again_works_again(qtbot, gated):
    from napari.utils.key_bindings import coerce_keybinding

    viewer, widget, segmenter = gated
    viewer.window.remove_dock_widget(widget)
    assert widget.closed and coerce_keybinding("Alt-R") not in viewer.keymap
    viewer.window.add_dock_widget(widget, name="Label Anything again")
    assert not widget.closed and coerce_keybinding("Alt-R") in viewer.keymap
    segmenter.open_gate()
    assert widget.run(viewer.layers["stack"]) is not None
    qtbot.waitUntil(lambda: not widget.runs.busy, timeout=30_000)
    assert "stack labels" in viewer.layers and widget.status.text().startswith("done")


def test_a_finished_callback_no_longer_counts_its_worker(qtbot):
    """The launcher forgets a worker before that worker's own ``finished`` callback runs. The
    other order lost an edit under load: the preview's callback ran and found nothing to redo,
    then the edit saw the worker still counted and waited for a callback already gone."""
    from napari_label_anything.widget.workers import WorkerLauncher

    launcher, seen = WorkerLauncher(), []

    def job():
        yield "plane"

    launcher.start(job, finished=lambda: seen.append(launcher.busy))
    assert launcher.busy
    qtbot.waitUntil(lambda: bool(seen), timeout=10_000)
    assert seen == [False] and not launcher.busy
