"""The fast encoder is prepared in the background when a model is chosen (real napari viewer, Xvfb):
status line, a run started meanwhile waits for it, a failed export falls back to PyTorch."""

from __future__ import annotations

import threading

import pytest

from conftest import blob_image
from napari_label_anything.inference import encoder_backends
from napari_label_anything.inference.encoder_backends import PREPARING_TEXT
from napari_label_anything.widget.fast_encoder import WAITING_TEXT

pytestmark = pytest.mark.napari


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tmp_path, monkeypatch):
    """A viewer with a prompted support and a 2D query; the widget on the classic model (nothing
    to prepare) and an empty ONNX cache."""
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    image, truth = blob_image()
    viewer.add_image(image, name="support", rgb=True)
    viewer.add_labels(truth, name="support truth")
    viewer.add_image(blob_image((64, 72), seed=4)[0], name="query", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model("classic", "cpu")
    widget.set_live_preview(False)
    widget.classes.add("red")
    widget.classes.add("green")
    widget.add_support(viewer.layers["support"], labels_layer=viewer.layers["support truth"])
    widget.query_combo.setCurrentText("query")
    return viewer, widget


def counted_export(monkeypatch, gate: threading.Event | None = None, error: Exception | None = None):
    """Replace the export: count calls, optionally wait for ``gate`` first or raise ``error``."""
    calls = {"n": 0, "entered": threading.Event()}
    real = encoder_backends.export_encoder

    def export(model, path):
        calls["n"] += 1
        calls["entered"].set()
        if gate is not None:
            assert gate.wait(60), "the test never opened the gate"
        if error is not None:
            raise error
        return real(model, path)

    monkeypatch.setattr(encoder_backends, "export_encoder", export)
    return calls


def run_and_wait(qtbot, widget):
    worker = widget.run(scope="current plane")
    assert worker is not None, widget.last_error
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert widget.last_error is None and widget.status.text().startswith("done"), widget.status.text()


def test_choosing_a_model_prepares_its_fast_encoder_in_the_background(qtbot, viewer_and_widget, reference, monkeypatch):
    viewer, widget = viewer_and_widget
    calls = counted_export(monkeypatch)
    assert widget.preparation_stats["started"] == 0  # classic: nothing to prepare
    widget.set_model(str(reference / "mae_like"), "cpu")  # the encoder choice is auto
    assert widget.model_picker.encoder == "auto" and widget.model_picker.needs_fast_encoder()
    qtbot.waitUntil(lambda: widget.preparation_stats["started"] == 1, timeout=10_000)
    qtbot.waitUntil(lambda: not widget.preparing, timeout=120_000)
    assert PREPARING_TEXT in widget.preparation_messages and calls["n"] == 1
    assert widget.status.text() == "fast encoder ready (ONNX Runtime)"
    assert widget.model_picker.is_loaded() and not widget.model_picker.needs_fast_encoder()
    segmenter = widget.model_picker.get_segmenter()
    assert segmenter.encoder_backend == "onnx" and segmenter.stats["encoded_images"] == 0
    run_and_wait(qtbot, widget)  # after it: the prepared segmenter, no second export
    assert "ONNX Runtime encoder" in widget.status.text() and calls["n"] == 1
    assert widget.model_picker.get_segmenter() is segmenter and segmenter.stats["encoded_images"] >= 2
    widget.model_picker.set_encoder("torch")  # PyTorch needs no preparation
    qtbot.wait(600)
    assert widget.preparation_stats["started"] == 1
    run_and_wait(qtbot, widget)
    assert "PyTorch encoder" in widget.status.text()


def test_a_run_started_during_the_export_waits_for_it(qtbot, viewer_and_widget, reference, monkeypatch):
    viewer, widget = viewer_and_widget
    gate = threading.Event()
    calls = counted_export(monkeypatch, gate=gate)
    widget.set_model(str(reference / "sam_like"), "cpu")
    qtbot.waitUntil(lambda: calls["entered"].is_set(), timeout=30_000)
    qtbot.waitUntil(lambda: widget.status.text() == PREPARING_TEXT, timeout=10_000)
    worker = widget.run(scope="current plane")
    assert worker is not None, widget.last_error
    qtbot.waitUntil(lambda: widget.status.text() == WAITING_TEXT, timeout=10_000)
    qtbot.wait(300)
    assert widget.runs.busy and widget.preparing and "query labels" not in viewer.layers
    gate.set()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert widget.last_error is None and widget.status.text().startswith("done")
    assert "ONNX Runtime encoder" in widget.status.text() and calls["n"] == 1  # one export, shared
    assert "query labels" in viewer.layers
    qtbot.waitUntil(lambda: not widget.preparing, timeout=10_000)
    assert widget.status.text().startswith("done")  # the preparation never writes over a run's line
    assert widget.preparation_stats == {"started": 1, "ready": 1, "fallback": 0, "failed": 0}


def test_a_failed_export_falls_back_to_pytorch_with_one_note(qtbot, viewer_and_widget, reference, monkeypatch):
    viewer, widget = viewer_and_widget
    calls = counted_export(monkeypatch, error=RuntimeError("the exporter broke"))
    widget.set_model(str(reference / "mae_like"), "cpu")
    qtbot.waitUntil(lambda: widget.preparation_stats["started"] == 1, timeout=10_000)
    qtbot.waitUntil(lambda: not widget.preparing, timeout=120_000)
    status = widget.status.text()
    assert "could not be prepared" in status and "the exporter broke" in status and "PyTorch" in status
    assert widget.preparation_stats["fallback"] == 1 and calls["n"] == 1
    assert sum("could not be prepared" in line for line in widget.preparation_messages) == 1
    run_and_wait(qtbot, widget)  # the run works, in PyTorch, without another try
    assert "PyTorch encoder" in widget.status.text() and calls["n"] == 1
    assert widget.model_picker.get_segmenter().encoder_backend == "torch"
