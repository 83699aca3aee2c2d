"""An episode that belongs to its stack, in a real napari viewer (Xvfb): the plane range, one
support row per prompted plane, class removal that asks and can be undone, loading that
replaces, and stack supports that come back onto their plane."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import blob_image, wait_for

pytestmark = pytest.mark.napari


@pytest.fixture
def stacked(make_napari_viewer):
    """A 5-plane stack as support and query, two classes, the classic model."""
    viewer = make_napari_viewer()
    stack = np.stack([blob_image((64, 72), seed=s)[0][..., 0] for s in range(5)])
    viewer.add_image(stack, name="stack")
    viewer.add_image(blob_image((64, 72), seed=9)[0][..., 0], name="flat")
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model("classic", "cpu")
    widget.classes.add("a")
    widget.classes.add("b")
    support = widget.add_support(viewer.layers["stack"])
    return viewer, widget, support


def paint(support, plane, yx, k):
    from qtpy.QtWidgets import QApplication

    support.labels.paint((plane, *yx), k)  # what a brush stroke on that plane does
    QApplication.processEvents()  # the support list updates once the stroke is written


def rows(widget) -> list[str]:
    return [widget.support_list.item(i).text().split("\n")[0] for i in range(widget.support_list.count())]


def test_plane_range_is_bounded_by_the_query_stack(stacked):
    viewer, widget, _ = stacked
    widget.query_combo.setCurrentText("stack")
    widget.range_stop.setValue(99)
    assert widget.range_stop.value() == 4 and widget.range_start.maximum() == 4 and widget.range_stop.isEnabled()
    widget.query_combo.setCurrentText("flat")
    assert not widget.range_start.isEnabled() and widget.range_stop.maximum() == 0
    with pytest.raises(ValueError, match="past the last plane"):  # a script cannot ask past the end either
        for spin in (widget.range_start, widget.range_stop):
            spin.setMaximum(99)
            spin.setValue(7)
        widget.plane_indices(viewer.layers["stack"], "plane range")


def test_one_row_per_prompted_plane_go_to_plane_and_erase_a_stray_plane(stacked):
    viewer, widget, support = stacked
    assert rows(widget) == ["stack: no prompts yet"]
    paint(support, 1, (20, 20), 1)
    assert rows(widget) == ["stack [plane 1]"]
    assert widget.status.text() == "plane 1 of 'stack' is a new support (see the list)"
    paint(support, 3, (40, 50), 2)  # a stroke on another plane is a new, visible row
    support.points.add([[3, 10, 10]])
    assert rows(widget) == ["stack [plane 1]", "stack [plane 3]"]
    assert widget.support_list.currentRow() == 1 and "plane 3" in widget.status.text()
    assert "b: " in widget.support_list.item(1).text() and "1 pt" in widget.support_list.item(1).text()
    episode = widget.episode
    assert [s.name for s in episode.supports] == ["stack [1]", "stack [3]"]
    # each plane support keeps its neighbouring planes (the whole 5-plane stack here) as context
    assert [(s.context.shape, s.context_index) for s in episode.supports] == [((5, 64, 72), 1), ((5, 64, 72), 3)]
    np.testing.assert_array_equal(episode.supports[1].context, np.asarray(viewer.layers["stack"].data))

    viewer.dims.set_point(0, 0)
    widget.support_list.setCurrentRow(1)
    widget.go_to_plane_button.click()
    assert viewer.dims.current_step[0] == 3
    widget.remove_support_button.click()  # on a plane row: erases that plane's prompts only
    assert rows(widget) == ["stack [plane 1]"] and len(support.points.data) == 0
    assert np.asarray(support.labels.data)[1].any() and support in widget.supports


def test_removing_a_class_asks_first_and_can_be_undone(stacked, monkeypatch):
    from napari_label_anything.widget import reporting

    viewer, widget, support = stacked
    paint(support, 1, (20, 20), 1)
    paint(support, 2, (30, 30), 2)
    support.points.add([[2, 5, 5]])  # class 2, the active one
    before = np.array(support.labels.data, copy=True)
    questions = []
    monkeypatch.setattr(reporting, "confirm", lambda parent, title, q: questions.append(q) or False)
    widget.classes.set_active(1)
    widget.class_buttons["remove"].click()
    assert (
        widget.classes.names == ["a", "b"] and "Remove class 'a'" in questions[0] and "painted pixels" in questions[0]
    )
    np.testing.assert_array_equal(support.labels.data, before)

    monkeypatch.setattr(reporting, "confirm", lambda *a: True)
    widget.class_buttons["remove"].click()
    assert widget.classes.names == ["b"] and set(np.unique(support.labels.data)) == {0, 1}
    assert widget.class_buttons["undo"].isEnabled()
    widget.class_buttons["undo"].click()
    assert widget.classes.names == ["a", "b"] and widget.classes.colors[0] == "#e69f00"
    np.testing.assert_array_equal(support.labels.data, before)
    assert support.points.features["class"].tolist() == [2]
    assert not widget.class_buttons["undo"].isEnabled() and "back" in widget.status.text()


def test_loading_replaces_and_asks_about_unsaved_changes(stacked, tmp_path, monkeypatch):
    from napari_label_anything.widget import reporting

    viewer, widget, support = stacked
    paint(support, 1, (20, 20), 1)
    paint(support, 3, (40, 50), 2)
    path = widget.save_episode(tmp_path / "run.episode")
    assert not widget.has_unsaved_changes()
    names = [layer.name for layer in viewer.layers]
    signature = widget.episode.signature()
    for _ in range(2):  # loading twice gives the same episode, not twice as many supports
        widget.load_episode(path)
        assert [layer.name for layer in viewer.layers] == names
        assert widget.episode.signature() == signature and len(widget.supports) == 1

    asked = []
    monkeypatch.setattr(reporting, "confirm", lambda parent, title, q: asked.append(q) or False)
    widget.supports[0].labels.paint((4, 10, 10), 1)  # an unsaved change
    changed = widget.episode.signature()
    widget.load_episode(path)
    assert asked and "unsaved changes" in asked[0]
    assert widget.episode.signature() == changed and "nothing changed" in widget.status.text()
    monkeypatch.setattr(reporting, "confirm", lambda *a: True)
    widget.load_episode(path)
    assert widget.episode.signature() == signature


def test_a_stack_support_comes_back_onto_its_plane(stacked, tmp_path, make_napari_viewer):
    viewer, widget, support = stacked
    paint(support, 2, (20, 20), 1)
    paint(support, 2, (40, 50), 2)
    support.shapes.add_rectangles(np.array([[2, 5.0, 5.0], [2, 5.0, 25.0], [2, 15.0, 25.0], [2, 15.0, 5.0]]))
    path = widget.save_episode(tmp_path / "stack.episode")
    episode = widget.episode

    other = make_napari_viewer()
    other.add_image(np.asarray(viewer.layers["stack"].data), name="stack")  # the stack opened again
    _, widget2 = other.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget2.load_episode(path)
    loaded = widget2.supports[0]
    from napari_label_anything.widget.layer_conversion import same_layer

    assert same_layer(loaded.image, other.layers["stack"])  # no 2D layer over the stack
    assert [layer.name for layer in other.layers if layer.__class__.__name__ == "Image"] == ["stack"]
    labels = np.asarray(loaded.labels.data)
    assert labels.shape == (5, 64, 72) and labels[2].any() and not labels[np.arange(5) != 2].any()
    assert np.asarray(loaded.shapes.data[0])[:, 0].tolist() == [2] * 4  # the box is on plane 2 only
    assert widget2.episode.signature() == episode.signature()
    assert [widget2.support_list.item(i).text().split("\n")[0] for i in range(widget2.support_list.count())] == [
        "stack [plane 2]"
    ]


def test_a_stack_support_whose_stack_is_not_open_comes_back_with_its_neighbours(stacked, tmp_path, make_napari_viewer):
    viewer, widget, support = stacked
    paint(support, 3, (20, 20), 1)
    paint(support, 3, (40, 50), 2)
    path = widget.save_episode(tmp_path / "stack.episode")
    saved = widget.episode

    other = make_napari_viewer()  # the stack is not open here
    _, widget2 = other.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget2.load_episode(path)
    layer = other.layers["stack [3] with neighbours"]
    np.testing.assert_array_equal(layer.data, np.asarray(viewer.layers["stack"].data))  # planes 0..4 of 5
    assert rows(widget2) == ["stack [3] with neighbours [plane 3]"]
    loaded = widget2.episode.supports[0]
    assert loaded.context_index == 3 and np.array_equal(loaded.context, saved.supports[0].context)
    assert widget2.episode.signature() == saved.signature()  # saving again keeps the context


def test_comparing_planes_with_their_neighbours_can_be_turned_off(qtbot, stacked):
    """The classic model looks across planes by default; unchecked (a time series whose objects
    move), each plane is predicted from its own pixels, as ClassicSegmenter(depth_sigmas=()) does."""
    from napari_label_anything.inference.classic import ClassicSegmenter

    viewer, widget, support = stacked
    paint(support, 2, (20, 20), 1)
    paint(support, 2, (40, 50), 2)
    picker = widget.model_picker
    assert picker.compare_neighbours and picker.get_segmenter().uses_depth(widget.episode)
    picker.neighbours_check.setChecked(False)
    assert not picker.get_segmenter().uses_depth(widget.episode)
    widget.query_combo.setCurrentText("stack")
    wait_for(qtbot, widget.run(viewer.layers["stack"], scope="all planes"))
    assert widget.last_error is None, widget.last_error
    stack = np.asarray(viewer.layers["stack"].data)
    expected = ClassicSegmenter(depth_sigmas=()).predict_stack(widget.episode, stack)
    np.testing.assert_array_equal(np.asarray(viewer.layers["stack labels"].data), expected)
    assert not np.array_equal(ClassicSegmenter().predict_stack(widget.episode, stack), expected)  # it matters
