"""The channels the model sees, in a real napari viewer (Xvfb): the combo, the one-channel
warning, and a blue-only RGB query that only its blue channel segments."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from conftest import blob_image, wait_for
from test_channels import dapi_rgb

pytestmark = pytest.mark.napari


def warnings_since(before: int) -> list[str]:
    return [str(n.message) for n in notification_manager.records[before:] if n.severity == NotificationSeverity.WARNING]


@pytest.fixture
def dapi(make_napari_viewer):
    """A grey DAPI support painted completely (nucleus / background), the classic model, and the
    widget open before the blue-only RGB query is added."""
    viewer = make_napari_viewer()
    support, support_mask = dapi_rgb(seed=1)
    viewer.add_image(support[..., 2], name="support")
    viewer.add_labels(np.where(support_mask, 1, 255).astype(np.uint8), name="support truth")
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model("classic", "cpu")
    widget.classes.add("nucleus")
    widget.add_support(viewer.layers["support"], labels_layer=viewer.layers["support truth"])
    return viewer, widget


def choices(widget) -> list[str]:
    return [widget.channel_combo.itemText(i) for i in range(widget.channel_combo.count())]


def test_the_combo_offers_the_query_channels_and_is_off_for_grey(qtbot, dapi):
    viewer, widget = dapi
    widget.query_combo.setCurrentText("support")
    assert choices(widget) == ["all"] and not widget.channel_combo.isEnabled() and widget.channels is None
    viewer.add_image(blob_image()[0], name="colour", rgb=True)
    widget.query_combo.setCurrentText("colour")
    assert choices(widget) == ["all", "0 (red)", "1 (green)", "2 (blue)"] and widget.channel_combo.isEnabled()
    assert widget.channel_combo.toolTip()
    widget.set_channels(1)
    assert widget.channels == (1,) and widget.channel_combo.currentText() == "1 (green)"
    widget.set_channels("all")
    assert widget.channels is None
    with pytest.raises(ValueError, match="channel 3 does not exist"):
        widget.set_channels(3)


def test_a_blue_only_query_warns_once_and_its_blue_channel_finds_the_nuclei(qtbot, dapi):
    viewer, widget = dapi
    query, truth = dapi_rgb(seed=2)
    before = len(notification_manager.records)
    viewer.add_image(query, name="dapi export", rgb=True)
    widget.query_combo.setCurrentText("dapi export")
    warned = warnings_since(before)
    assert len(warned) == 1, warned
    assert "'dapi export'" in warned[0] and "2 (blue)" in warned[0] and "Query > channels" in warned[0]

    wait_for(qtbot, widget.run(scope="current plane"))
    assert len(warnings_since(before)) == 1  # once per layer, not at every run
    mixed = np.asarray(viewer.layers["dapi export labels"].data) == 1

    widget.set_channels(2)
    assert widget.episode.supports[0].image.ndim == 2  # the grey support is used as it is
    wait_for(qtbot, widget.run(scope="current plane"))
    assert widget.status.text().startswith("done")
    blue = np.asarray(viewer.layers["dapi export labels"].data) == 1

    def iou(found):
        return (found & truth).sum() / max(1, (found | truth).sum())

    assert iou(mixed) < 0.2 and iou(blue) > 0.85
    assert viewer.layers["dapi export"].data.shape == query.shape  # the layer itself is untouched


@pytest.fixture
def blue_colour_pair(make_napari_viewer):
    """A blue-only RGB support painted completely and an RGB query, channel 2 (blue) chosen."""
    viewer = make_napari_viewer()
    support, support_mask = dapi_rgb(seed=1)
    query, truth = dapi_rgb(seed=2)
    viewer.add_image(support, name="support", rgb=True)
    viewer.add_labels(np.where(support_mask, 1, 255).astype(np.uint8), name="support truth")
    viewer.add_image(query, name="query", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model("classic", "cpu")
    widget.classes.add("nucleus")
    widget.add_support(viewer.layers["support"], labels_layer=viewer.layers["support truth"])
    widget.query_combo.setCurrentText("query")
    widget.set_channels(2)
    return viewer, widget, support, query, truth


def test_the_channel_applies_to_colour_supports_too_and_no_warning_when_chosen(qtbot, blue_colour_pair):
    viewer, widget, support, _, truth = blue_colour_pair
    np.testing.assert_array_equal(widget.episode.supports[0].image, support[..., 2])
    before = len(notification_manager.records)
    wait_for(qtbot, widget.run(scope="current plane"))
    assert warnings_since(before) == []
    found = np.asarray(viewer.layers["query labels"].data) == 1
    assert (found & truth).sum() / (found | truth).sum() > 0.85


def test_a_saved_episode_keeps_the_channel_for_the_command_line_and_the_widget(
    qtbot, blue_colour_pair, tmp_path, monkeypatch
):
    import tifffile

    from napari_label_anything.cli import main
    from napari_label_anything.episode import Episode

    viewer, widget, _, query, _ = blue_colour_pair
    wait_for(qtbot, widget.run(scope="current plane"))
    in_napari = np.asarray(viewer.layers["query labels"].data)
    widget.save_episode(tmp_path / "blue.episode")
    assert Episode.load(tmp_path / "blue.episode").channels == (2,)

    # The command line sees the colour query through the same channel, so it finds the same labels.
    tifffile.imwrite(tmp_path / "query.tif", query)
    args = ["predict", "--model", "classic", "--episode", str(tmp_path / "blue.episode"), str(tmp_path / "query.tif")]
    assert main([*args, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "query_labels.tif"), in_napari)

    from napari_label_anything.widget import reporting

    widget.set_channels(None)
    assert widget.has_unsaved_changes()  # the choice is part of what a save writes
    asked = []
    monkeypatch.setattr(reporting, "confirm", lambda parent, title, question: asked.append(question) or True)
    widget.load_episode(tmp_path / "blue.episode")  # the choice comes back with the episode
    assert len(asked) == 1 and widget.channels == (2,) and not widget.has_unsaved_changes()
