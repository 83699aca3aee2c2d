"""The widget reuses stored image features (the embeddings folder) and can run the ONNX encoder."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from conftest import blob_image
from napari_label_anything.cli import main

pytestmark = pytest.mark.napari


def open_widget(make_napari_viewer, reference, stack, folder, onnx=False):
    viewer = make_napari_viewer()
    support, labels = blob_image()
    viewer.add_image(support, name="support", rgb=True)
    viewer.add_image(stack, name="stack")
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model(str(reference / "mae_like"), "cpu")
    widget.model_picker.set_embeddings_folder(folder)
    widget.model_picker.onnx_check.setChecked(onnx)
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
    run_and_wait(qtbot, widget)
    stats = widget.model_picker.get_segmenter().stats
    assert stats["store_hits"] == 3 and stats["encoded_images"] == 1  # only the support was new
    first = viewer.layers["stack labels"].data.copy()

    # Same again with the ONNX encoder: a new segmenter, the same stored features and labels.
    widget.model_picker.onnx_check.setChecked(True)
    run_and_wait(qtbot, widget)
    segmenter = widget.model_picker.get_segmenter()
    assert segmenter.encoder.name == "onnx" and segmenter.stats["store_hits"] == 4
    np.testing.assert_array_equal(viewer.layers["stack labels"].data, first)
