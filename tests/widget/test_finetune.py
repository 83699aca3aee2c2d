"""The widget's Fine-tune box: a worker that learns from painted planes and offers the new model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REFERENCE, blob_image


def painted_widget(make_napari_viewer, planes: int):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model(str(REFERENCE / "mae_like"), "cpu")
    widget.classes.add("red")
    widget.classes.add("green")
    for seed in range(planes):
        image, labels = blob_image((64, 80), seed=seed)
        layer = viewer.add_image(image, name=f"plane {seed}", rgb=True)
        support = widget.add_support(layer)
        support.labels.data = labels.astype(support.labels.data.dtype)
    return viewer, widget


def layer_state(viewer):
    return {layer.name: np.array(layer.data, copy=True) for layer in viewer.layers}


@pytest.mark.slow
def test_finetune_offers_the_new_model_and_leaves_layers_alone(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_LABEL_ANYTHING_HOME", str(tmp_path))
    viewer, widget = painted_widget(make_napari_viewer, 3)
    before = layer_state(viewer)
    worker = widget.finetune(steps=2, name="tuned")
    assert not widget.finetune_button.isEnabled() and widget.finetune_cancel_button.isEnabled()
    with qtbot.waitSignal(worker.finished, timeout=180_000):
        pass
    qtbot.wait(20)
    outcome = widget.finetune_outcome
    assert outcome is not None and outcome.steps == 2 and outcome.registered_as == "tuned"
    assert widget.model_picker.model_name == "tuned"
    assert "held-out mIoU" in widget.finetune_status.text() and "→" in widget.finetune_status.text()
    assert widget.finetune_button.isEnabled() and not widget.finetune_cancel_button.isEnabled()
    after = layer_state(viewer)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    assert (tmp_path / "finetuned" / "tuned" / "final" / "model.safetensors").is_file()


def test_finetune_is_refused_clearly(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_LABEL_ANYTHING_HOME", str(tmp_path))
    viewer, widget = painted_widget(make_napari_viewer, 2)
    assert widget.guard(lambda: widget.finetune(steps=1), "cannot fine-tune") is None
    assert "at least 3 painted" in str(widget.last_error)
    viewer2, widget2 = painted_widget(make_napari_viewer, 3)
    widget2.set_model("classic", "cpu")
    widget2.guard(lambda: widget2.finetune(steps=1), "cannot fine-tune")
    assert "needs a Label Anything model" in str(widget2.last_error)
    assert not widget2.finetuning and widget2.finetune_button.isEnabled()
    widget2.set_model(str(REFERENCE / "mae_like"), "cpu")
    widget2.guard(lambda: widget2.finetune(steps=1, name="../outside"), "cannot fine-tune")
    assert "use letters, digits" in str(widget2.last_error) and not widget2.finetuning


@pytest.mark.slow
def test_stop_ends_finetuning_without_changing_the_model(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_LABEL_ANYTHING_HOME", str(tmp_path))
    viewer, widget = painted_widget(make_napari_viewer, 3)
    chosen = widget.model_picker.model_name
    worker = widget.finetune(steps=500, name="stopped")
    widget.cancel_finetune()
    with qtbot.waitSignal(worker.finished, timeout=180_000):
        pass
    qtbot.wait(20)
    assert widget.finetune_outcome.cancelled and widget.finetune_outcome.steps < 500
    assert widget.model_picker.model_name == chosen
    assert "stopped after" in widget.finetune_status.text()
    assert not (tmp_path / "finetuned" / "stopped").exists(), "a stopped fine-tuning keeps no half-made model"
