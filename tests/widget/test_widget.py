"""The dock widget in a real napari viewer (under Xvfb via pytest-xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import blob_image, wait_for
from napari_label_anything.widget.messages import PlaneResult

pytestmark = pytest.mark.napari


@pytest.fixture
def viewer_and_widget(make_napari_viewer, reference):
    viewer = make_napari_viewer()
    support_image, _ = blob_image()
    query_image, _ = blob_image((80, 100), seed=4)
    viewer.add_image(support_image, name="support", rgb=True)
    viewer.add_image(query_image, name="query", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model(str(reference / "sam_like"), "cpu")
    return viewer, widget


def prompt_blobs(widget, viewer):
    _, truth = blob_image()
    widget.classes.add("red")
    widget.classes.add("green")
    support = widget.add_support(viewer.layers["support"])
    widget.classes.set_active(1)
    assert support.labels.selected_label == 1
    support.labels.brush_size = 8
    support.labels.paint((30, 35), support.labels.selected_label)  # what a brush stroke does
    widget.classes.set_active(2)
    support.points.add([[60, 90]])  # a click: the point gets the active class
    assert support.points.features["class"].tolist() == [2]
    return support, truth


def test_user_flow_on_a_2d_query(qtbot, viewer_and_widget):
    viewer, widget = viewer_and_widget
    support, _ = prompt_blobs(widget, viewer)
    counts = support.prompt_counts(2)
    assert counts["pixels"][1] > 0 and counts["points"][2] == 1
    assert "red: " in widget.support_list.item(0).text() and "green: 0 px, 1 pt" in widget.support_list.item(0).text()
    widget.query_combo.setCurrentText("query")
    worker = widget.run()
    assert worker is not None
    wait_for(qtbot, worker)
    out = viewer.layers["query labels"]
    assert out.data.shape == (80, 100) and out.data.dtype == np.uint8
    assert set(np.unique(out.data)) <= {0, 1, 2}
    assert list(out.features["class"]) == ["background", "red", "green"]
    assert widget.last_error is None and "done" in widget.status.text()
    # New prompts, same images: the second run encodes nothing and updates the same layer.
    stats = widget.model_picker.get_segmenter().stats
    encoded = stats["encoded_images"]
    support.points.add([[20, 100]])
    wait_for(qtbot, widget.run())
    assert stats["encoded_images"] == encoded and stats["prompt_encodings"] == 2
    assert [layer.name for layer in viewer.layers].count("query labels") == 1


def test_stack_query_and_rerun_updates_own_layer(qtbot, viewer_and_widget):
    viewer, widget = viewer_and_widget
    prompt_blobs(widget, viewer)
    stack = np.stack([blob_image((64, 72), seed=s)[0] for s in range(3)])
    viewer.add_image(stack, name="stack", rgb=True)
    wait_for(qtbot, widget.run(viewer.layers["stack"], scope="all planes"))
    out = viewer.layers["stack labels"]
    assert out.data.shape == (3, 64, 72)
    first = np.array(out.data)
    # A user layer with the output's name is never overwritten: a new name is used.
    viewer.layers["stack labels"].metadata.clear()
    wait_for(qtbot, widget.run(viewer.layers["stack"], scope="current plane"))
    assert "stack labels (2)" in viewer.layers
    np.testing.assert_array_equal(viewer.layers["stack labels"].data, first)
    # Running again updates the plugin's own layer in place (one plane predicted, others 0).
    wait_for(qtbot, widget.run(viewer.layers["stack"], scope="current plane"))
    assert [layer.name for layer in viewer.layers].count("stack labels (3)") == 0


def test_cancel_mid_stack_changes_nothing(qtbot, viewer_and_widget):
    viewer, widget = viewer_and_widget
    prompt_blobs(widget, viewer)
    stack = np.stack([blob_image((64, 72), seed=s)[0] for s in range(8)])
    viewer.add_image(stack, name="stack", rgb=True)
    before = [(layer.name, np.array(layer.data, copy=True) if hasattr(layer.data, "shape") else None)
              for layer in viewer.layers]  # fmt: skip
    worker = widget.run(viewer.layers["stack"], scope="all planes")
    planes = []

    def on_yield(message):
        if isinstance(message, PlaneResult):
            planes.append(message.index)
            widget.cancel()

    worker.yielded.connect(on_yield)
    wait_for(qtbot, worker)
    assert 1 <= len(planes) < 8
    after = [layer.name for layer in viewer.layers]
    assert after == [name for name, _ in before]
    for (_, data), layer in zip(before, viewer.layers, strict=True):
        if data is not None:
            np.testing.assert_array_equal(np.asarray(layer.data), data)
    assert "cancelled" in widget.status.text()
    assert widget.run_button.isEnabled()


def test_errors_are_notified_and_change_nothing(qtbot, viewer_and_widget):
    viewer, widget = viewer_and_widget
    widget.classes.add("red")
    widget.classes.add("green")
    support = widget.add_support(viewer.layers["support"])
    support.labels.paint((30, 35), 1)  # only "red" is prompted
    names = [layer.name for layer in viewer.layers]
    assert widget.run(viewer.layers["query"]) is None
    assert "green" in str(widget.last_error)
    assert [layer.name for layer in viewer.layers] == names


def test_episode_save_load_round_trip(qtbot, viewer_and_widget, tmp_path, make_napari_viewer, reference):
    viewer, widget = viewer_and_widget
    prompt_blobs(widget, viewer)
    widget.supports[0].shapes.add_rectangles(np.array([[5.0, 5.0], [20.0, 30.0]]))
    episode = widget.episode
    path = widget.save_episode(tmp_path / "run.episode")
    other = make_napari_viewer()
    _, widget2 = other.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget2.load_episode(path)
    assert widget2.classes.names == ["red", "green"]
    assert widget2.model_picker.model_name == str(reference / "sam_like")
    assert widget2.episode.signature() == episode.signature()


def test_class_editing_renumbers_prompts(viewer_and_widget):
    viewer, widget = viewer_and_widget
    support, _ = prompt_blobs(widget, viewer)
    widget.classes.add("blue")
    support.points.add([[10, 10]])  # class 3 (active)
    widget.classes.rename(1, "nucleus")
    widget.classes.recolor(2, "#123456")
    assert widget.class_list.item(0).text() == "0  background" and widget.class_list.item(1).text() == "1  nucleus"
    widget.classes.remove(1)
    assert widget.classes.names == ["green", "blue"]
    assert support.points.features["class"].tolist() == [1, 2]
    assert set(np.unique(support.labels.data)) == {0}


def test_key_bindings_survive_reopening(make_napari_viewer):
    from napari.utils.key_bindings import coerce_keybinding

    viewer = make_napari_viewer()
    for round_ in range(2):
        _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
        widget.set_model("classic", "cpu")  # takes background prompts: row 0 is in the cycle
        if round_ == 0:  # the reopened widget keeps the classes (persistence.py)
            widget.classes.add("a")
            widget.classes.add("b")
        assert widget.classes.names == ["a", "b"]
        widget.classes.set_active(2)
        viewer.keymap[coerce_keybinding("Alt-N")](viewer)
        assert widget.classes.active == 0  # wrapped around from 2 to the background row
        viewer.keymap[coerce_keybinding("Alt-N")](viewer)
        assert widget.classes.active == 1
        viewer.window.remove_dock_widget(widget)
        widget.close()


def test_sample_data_opens_ready_to_run(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-label-anything", "textures")
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    assert widget.classes.names == ["brick", "grass", "gravel"]
    assert len(widget.supports) == 1 and widget.query_combo.currentText() == "textures query"
    widget.episode.validate()


def test_a_query_at_another_exposure_is_normalised_on_its_own(qtbot, make_napari_viewer):
    """A lone query image whose highlights moved far from the supports' (another exposure) is
    stretched by its own percentiles on "auto", as ``ClassicSegmenter.predict`` does, and the
    done line says so; an image at the supports' exposure is not."""
    from conftest import classic_dock, exposed_discs
    from napari_label_anything.inference.classic import ClassicSegmenter

    bright, truth = exposed_discs(0, 1.0)
    dim, dim_truth = exposed_discs(1, 0.3)
    alike, _ = exposed_discs(2, 1.0)
    viewer = make_napari_viewer()
    viewer.add_image(bright, name="support")
    viewer.add_image(dim, name="dim")
    widget = classic_dock(viewer, "nucleus")
    support = widget.add_support(viewer.layers["support"])
    support.labels.data = np.where(truth == 1, 1, 255).astype(support.labels.data.dtype)
    wait_for(qtbot, widget.run(viewer.layers["dim"]))
    assert "normalised on its own" in widget.status.text()
    expected = ClassicSegmenter().predict(widget.episode, dim)
    np.testing.assert_array_equal(viewer.layers["dim labels"].data, expected)
    assert ((expected == 1) == (dim_truth == 1)).mean() > 0.95
    viewer.add_image(alike, name="alike")
    wait_for(qtbot, widget.run(viewer.layers["alike"]))
    assert widget.status.text().startswith("done") and "normalised on its own" not in widget.status.text()
