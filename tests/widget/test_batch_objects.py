"""The dock's Batch and Objects panels (real napari viewer, Xvfb): a folder segmented as
``predict`` does it, stopped without half-written outputs; the result split into objects, a
table in its own dock, saved as CSV."""

from __future__ import annotations

import csv
import threading
import time

import numpy as np
import pytest
import tifffile
from PIL import Image
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog

from conftest import blob_image, wait_for
from napari_label_anything import objects
from napari_label_anything.batch import jobs as batch_module
from napari_label_anything.io.label_files import read_image, read_label_classes
from napari_label_anything.widget.messages import RunOutcome

pytestmark = pytest.mark.napari


@pytest.fixture
def folder(tmp_path):
    """Three small colour images: two TIFFs and a PNG."""
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", blob_image((48, 56), seed=1)[0])
    tifffile.imwrite(folder / "b.tif", blob_image((48, 56), seed=2)[0])
    Image.fromarray(blob_image((40, 48), seed=3)[0]).save(folder / "c.png")
    return folder


@pytest.fixture
def painted(ready):
    """conftest's widget with both discs of the support painted whole (a result with both classes)."""
    viewer, widget = ready
    widget.supports[0].labels.data = blob_image()[1]
    return viewer, widget


def click(qtbot, button) -> None:
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_the_batch_panel_writes_a_folder_as_predict_does(qtbot, ready, folder, tmp_path):
    viewer, widget = ready
    out = tmp_path / "out"
    widget.sections["batch"].set_expanded(True)
    assert widget.scroll_area.isAncestorOf(widget.batch_button)  # in the scroll area, Run / Cancel stay below
    assert not widget.scroll_area.isAncestorOf(widget.run_button)
    widget.batch_input.value = str(folder)
    widget.batch_output.value = str(out)
    widget.batch_objects.value = True
    click(qtbot, widget.batch_button)
    worker = widget.batch.worker
    assert worker is not None and widget.last_error is None
    assert not widget.batch_button.isEnabled() and widget.batch_stop_button.isEnabled()
    wait_for(qtbot, worker)
    assert widget.batch_outcome is RunOutcome.DONE and len(widget.batch_results) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{name}_{kind}" for name in "abc" for kind in ("labels.tif", "objects.tif", "objects.csv")
    )
    segmenter = widget.model_picker.get_segmenter()
    episode = widget.run_episode()
    for name, source in (("a", "a.tif"), ("c", "c.png")):
        expected = segmenter.predict_stack(episode, read_image(folder / source))
        np.testing.assert_array_equal(tifffile.imread(out / f"{name}_labels.tif"), expected)
    assert read_label_classes(out / "a_labels.tif")[1] == "red"
    assert widget.batch_progress.value() == widget.batch_progress.maximum() > 0
    assert widget.batch_status.text().startswith("3 file(s) in")
    assert widget.batch_button.isEnabled() and not widget.batch_stop_button.isEnabled()
    # the outputs exist now: the button refuses (one error, nothing started), the console API raises
    click(qtbot, widget.batch_button)
    assert "output(s) exist" in str(widget.last_error) and not widget.batching
    with pytest.raises(ValueError, match="tick 'overwrite'"):
        widget.run_batch(folder, out)
    wait_for(qtbot, widget.run_batch(folder, out, format="ome-zarr"))  # another format: other names
    assert widget.batch_outcome is RunOutcome.DONE and (out / "b_labels.ome.zarr").is_dir()


def test_a_stopped_batch_keeps_finished_files_and_writes_no_half_output(qtbot, ready, folder, tmp_path, monkeypatch):
    viewer, widget = ready
    original = batch_module.run_job
    second = threading.Event()

    def run_job(segmenter, episode, job, progress=None, cancel=None):
        if not job.source.endswith("a.tif"):  # the second file waits in its job until Stop arrives
            second.set()
            deadline = time.monotonic() + 60
            while not cancel() and time.monotonic() < deadline:
                time.sleep(0.01)
        return original(segmenter, episode, job, progress=progress, cancel=cancel)

    monkeypatch.setattr(batch_module, "run_job", run_job)
    out = tmp_path / "out"
    worker = widget.run_batch(folder, out, format="ome-zarr")
    qtbot.waitUntil(second.is_set, timeout=60_000)
    assert widget.batching and not widget.run()  # one user of the model at a time
    click(qtbot, widget.batch_stop_button)
    wait_for(qtbot, worker)
    assert widget.batch_outcome is RunOutcome.CANCELLED
    assert [r.source.endswith("a.tif") for r in widget.batch_results] == [True]
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.ome.zarr"]  # no b output, no .part folder
    assert "stopped after 1 file(s)" in widget.batch_status.text()
    assert widget.batch_button.isEnabled() and not widget.batching


def test_objects_split_the_result_into_a_layer_and_a_table_saved_as_csv(qtbot, painted, tmp_path, monkeypatch):
    viewer, widget = painted
    widget.sections["objects"].set_expanded(True)
    click(qtbot, widget.objects_button)  # before any run: one error, no layer
    assert "run 'query' first" in str(widget.last_error) and "query objects" not in viewer.layers
    assert not widget.objects_save_button.isEnabled()
    wait_for(qtbot, widget.run(viewer.layers["query"]))
    widget.last_error = None
    click(qtbot, widget.objects_button)
    assert widget.last_error is None
    labels = viewer.layers["query labels"].data
    layer = viewer.layers["query objects"]
    expected = objects.split_objects(labels, min_distance=widget.min_distance_spin.value())
    np.testing.assert_array_equal(layer.data, expected)
    names = [lay.name for lay in viewer.layers]
    assert names.index("query objects") == names.index("query") + 1  # above its query, below the prompts
    table = widget.objects_table
    n = int(expected.max())
    assert n >= 2 and table.grid.rowCount() == n
    headers = [table.grid.horizontalHeaderItem(c).text() for c in range(table.grid.columnCount())]
    assert headers[:4] == ["label", "class_id", "class", "area"] and "mean_intensity_0" in headers
    assert {table.grid.item(r, 2).text() for r in range(n)} == {"red", "green"}
    assert table.parent() is not None and widget.objects_save_button.isEnabled()  # docked in napari
    # Save CSV, from the console and from the table's button (the file dialog answered)
    rows = list(csv.DictReader(open(widget.save_objects_csv(tmp_path / "objects.csv"), newline="")))
    assert [int(r["label"]) for r in rows] == list(range(1, n + 1))
    assert sum(int(r["area"]) for r in rows) == int((labels > 0).sum())
    chosen = tmp_path / "chosen.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(chosen), "CSV (*.csv)"))
    click(qtbot, table.save_button)
    assert chosen.read_text() == (tmp_path / "objects.csv").read_text()
    # splitting again, watershed off: the same layer and dock, updated
    widget.watershed_check.setChecked(False)
    click(qtbot, widget.objects_button)
    assert [lay.name for lay in viewer.layers].count("query objects") == 1 and widget.objects_table is table
    np.testing.assert_array_equal(viewer.layers["query objects"].data, objects.split_objects(labels, watershed=False))
    assert table.grid.rowCount() == int(viewer.layers["query objects"].data.max())
