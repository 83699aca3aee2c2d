"""The widget reuses stored image features (the embeddings folder) and can run the ONNX encoders."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from conftest import blob_image
from napari_label_anything.cli import main

pytestmark = pytest.mark.napari


def open_widget(make_napari_viewer, reference, stack, folder):
    viewer = make_napari_viewer()
    support, labels = blob_image()
    viewer.add_image(support, name="support", rgb=True)
    viewer.add_image(stack, name="stack")
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model(str(reference / "mae_like"), "cpu")
    widget.model_picker.set_embeddings_folder(folder)
    widget.classes.add("red")
    widget.classes.add("green")
    layers = widget.add_support(viewer.layers["support"])
    layers.labels.data = labels
    widget.query_combo.setCurrentText("stack")
    widget.scope_combo.setCurrentText("all planes")
    return viewer, widget


def run_and_wait(qtbot, widget):
    worker = widget.run()
    assert worker is not None, widget.last_error
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert widget.last_error is None


def test_features_embedded_by_the_cli_are_reused(qtbot, make_napari_viewer, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "nla-cache"))
    stack = np.stack([blob_image(seed=s)[0][..., 0].astype(np.uint16) * 20 for s in (1, 2, 3)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    folder = tmp_path / "features"
    assert main(["embed", "--model", str(reference / "mae_like"), "--cache", str(folder), str(tmp_path / "stack.tif"),
                 "--quiet"]) == 0  # fmt: skip
    viewer, widget = open_widget(make_napari_viewer, reference, stack, folder)
    widget.model_picker.set_encoder("torch")
    run_and_wait(qtbot, widget)
    stats = widget.model_picker.get_segmenter().stats
    assert stats["store_hits"] == 3 and stats["encoded_images"] == 1  # only the support was new
    first = viewer.layers["stack labels"].data.copy()

    # Same again with the ONNX encoder: a new segmenter, the same stored features and labels.
    widget.model_picker.set_encoder("onnx")
    run_and_wait(qtbot, widget)
    segmenter = widget.model_picker.get_segmenter()
    assert segmenter.encoder.name == "onnx" and segmenter.stats["store_hits"] == 4
    np.testing.assert_array_equal(viewer.layers["stack labels"].data, first)

    # The int8 encoder: approximate features, stored apart from the float ones; nearly the same labels.
    widget.model_picker.set_encoder("onnx-int8")
    run_and_wait(qtbot, widget)
    segmenter = widget.model_picker.get_segmenter()
    assert segmenter.encoder.name == "onnx-int8" and segmenter.stats["store_hits"] == 0
    assert (viewer.layers["stack labels"].data == first).mean() >= 0.99


def test_the_encoder_choice_offers_every_backend(qtbot):
    from napari_label_anything.inference.encoder_backends import ENCODER_OPTIONS
    from napari_label_anything.widget.model_picker import ModelPicker

    picker = ModelPicker()
    qtbot.addWidget(picker)
    combo = picker.encoder_combo
    assert tuple(combo.itemData(i) for i in range(combo.count())) == ENCODER_OPTIONS
    assert picker.encoder == "auto" and combo.itemText(0).startswith("auto (ONNX Runtime on a CPU")
    assert "int8" in combo.itemText(3) and "approximate" in combo.itemText(3) and "int8" in combo.toolTip()
    picker.set_encoder("onnx-int8")
    assert picker.encoder == "onnx-int8"  # never int8 unless chosen: the default is auto
    with pytest.raises(ValueError, match="unknown encoder backend 'int4'"):
        picker.set_encoder("int4")
    assert picker.encoder == "onnx-int8"
