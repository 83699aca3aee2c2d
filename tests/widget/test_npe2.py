"""napari's own doors, in a real viewer (Xvfb): File > Open of an .episode (into the open widget,
or as layers while it is closed), File > Save of a Labels layer as a label TIFF with class names,
and the dock's probability export."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

import napari_label_anything as nla
from conftest import blob_image, wait_for
from napari_label_anything.io.label_files import read_label_classes, read_label_metadata

pytestmark = pytest.mark.napari

PLUGIN = "napari-label-anything"


@pytest.fixture
def episode_file(tmp_path):
    """Classes red, green and background scribbles; one painted support, one with points and a box."""
    image, labels = blob_image()
    painted = labels.copy()
    painted[:6, :] = 3  # a background stroke along the top
    episode = nla.Episode(["red", "green", "background"], colors={"red": "#ff0000"})
    episode.add_support(image, labels=painted)
    episode.add_support(blob_image(seed=2)[0], points=[(33, 38, 1), (58, 90, 2)], boxes=[(50, 80, 70, 100, 2)],
                        name="dots")  # fmt: skip
    path = tmp_path / "run.episode"
    episode.save(path)
    return path, painted


def test_an_episode_opens_as_layers_while_the_widget_is_closed(make_napari_viewer, episode_file):
    path, painted = episode_file
    viewer = make_napari_viewer()
    added = viewer.open(path, plugin=PLUGIN)
    assert [layer.name for layer in added] == [
        "support 1", "support 1 prompts", "dots", "dots prompts", "dots point prompts", "dots box prompts",
    ]  # fmt: skip
    prompts = viewer.layers["support 1 prompts"]
    np.testing.assert_array_equal(prompts.data, np.where(painted == 3, 255, painted))  # background: row 0's 255
    assert prompts.metadata["label_anything_classes"] == ["background", "red", "green"]
    np.testing.assert_allclose(prompts.colormap.map(np.array([1]))[0], [1, 0, 0, 1])  # the episode's colour
    points = viewer.layers["dots point prompts"]
    np.testing.assert_allclose(points.data, [[33, 38], [58, 90]])
    assert points.features["class"].tolist() == [1, 2]
    boxes = viewer.layers["dots box prompts"]
    assert len(boxes.data) == 1 and boxes.features["class"].tolist() == [2]
    np.testing.assert_allclose(boxes.data[0].min(axis=0), [50, 80])
    # the widget opened afterwards takes the painted prompts as its support
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Label Anything")
    assert widget.classes.names == ["red", "green"]
    assert [support.name for support in widget.supports] == ["support 1"]


def test_an_episode_opened_in_napari_restores_into_the_open_widget(make_napari_viewer, episode_file):
    path, painted = episode_file
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Label Anything")
    assert viewer.open(path, plugin=PLUGIN) == []  # the widget made the layers
    assert widget.classes.names == ["red", "green"] and widget.classes.colors[0] == "#ff0000"
    assert [support.name for support in widget.supports] == ["support 1", "dots"]
    assert "support 1 prompts" not in viewer.layers  # the widget's own prompt layers instead
    np.testing.assert_array_equal(widget.supports[0].labels.data, np.where(painted == 3, 255, painted))
    assert widget.supports[1].points.features["class"].tolist() == [1, 2]
    assert widget.status.text().startswith("loaded episode run.episode")
    assert widget.episode.n_classes == 3  # red, green and the background scribbles


def test_saving_a_labels_layer_writes_a_label_tiff_with_class_names(ready, tmp_path):
    from napari_label_anything.widget.output_layers import write_output

    viewer, widget = ready
    labels = blob_image((48, 56), seed=4)[1]
    widget.classes.recolor(1, "#123456")
    layer = write_output(viewer, viewer.layers["query"], {(): labels}, widget.classes)  # what a run writes
    viewer.layers.selection = {layer}
    path = tmp_path / "saved.tif"
    assert viewer.layers.save(str(path), selected=True, plugin=PLUGIN) == [str(path)]
    assert read_label_classes(path) == {0: "background", 1: "red", 2: "green"}
    assert read_label_metadata(path)["layer"] == layer.name
    np.testing.assert_array_equal(tifffile.imread(path), labels)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["Properties"]["label_2"] == "green"
        lut = np.asarray(tif.imagej_metadata["LUTs"]).reshape(3, 256)
    assert lut[:, 1].tolist() == [0x12, 0x34, 0x56]  # the class's colour in napari is its colour in Fiji
    # names kept as features (index, class) also count
    names = {"index": [0, 1, 2], "class": ["background", "a", "b"]}
    other = viewer.add_labels(labels.astype(np.int32), name="mine", features=names)
    viewer.layers.selection = {other}
    assert viewer.layers.save(str(tmp_path / "mine.tif"), selected=True, plugin=PLUGIN)
    assert read_label_classes(tmp_path / "mine.tif") == {0: "background", 1: "a", 2: "b"}
    assert tifffile.imread(tmp_path / "mine.tif").dtype == np.uint8


def test_the_widget_exports_the_query_probabilities(ready, qtbot, tmp_path):
    viewer, widget = ready
    worker = widget.export_probabilities(tmp_path / "p.tif")
    assert widget.runs.busy and not widget.run_button.isEnabled()  # counts as a run: one at a time
    wait_for(qtbot, worker)
    maps = tifffile.imread(tmp_path / "p.tif")
    assert maps.shape == (3, 48, 56) and maps.dtype == np.float32
    np.testing.assert_allclose(maps.sum(axis=0), 1.0, atol=1e-5)
    assert read_label_metadata(tmp_path / "p.tif")["channels"] == {"0": "background", "1": "red", "2": "green"}
    expected = widget.model_picker.get_segmenter().predict_proba(widget.episode, viewer.layers["query"].data)
    np.testing.assert_allclose(maps, expected, atol=1e-6)  # the current episode's probabilities
    assert "exported the class probabilities of 'query'" in widget.status.text() and widget.run_button.isEnabled()
    wait_for(qtbot, widget.export_probabilities(tmp_path / "p.ome.zarr", dtype="uint8"))
    stored = zarr.open_array(str(tmp_path / "p.ome.zarr" / "0"), mode="r")
    assert stored.shape == (3, 48, 56) and stored.dtype == np.uint8
    with pytest.raises(ValueError, match="written as .tif"):
        widget.export_probabilities(tmp_path / "p.png")
