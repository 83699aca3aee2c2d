"""A stack run shows each plane as it finishes; cancel, a stop or an error takes them all back
(real napari viewer, Xvfb). A gated segmenter holds every plane until the test lets it go, so
"mid-run" is a fact and not a race."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import GatedSegmenter, blob_image
from napari_label_anything.widget.dock import PROGRESS_PER_PLANE

pytestmark = pytest.mark.napari

N_PLANES = 5


@pytest.fixture
def gated(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(blob_image()[0], name="support", rgb=True)
    stack = np.stack([blob_image((40, 48), seed=s)[0] for s in range(N_PLANES)])
    viewer.add_image(stack, name="stack", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model("classic", "cpu")
    widget.set_live_preview(False)
    widget.classes.add("red")
    widget.classes.add("green")
    support = widget.add_support(viewer.layers["support"])
    support.labels.paint((30, 35), 1)
    support.labels.paint((60, 90), 2)
    segmenter = GatedSegmenter(N_PLANES, fill=lambda i: i % 2 + 1)
    monkeypatch.setattr(widget.model_picker, "get_segmenter", lambda: segmenter)
    yield viewer, widget, segmenter
    segmenter.open_gate()


def snapshot(viewer) -> list:
    """Every layer's name, type, data, metadata and (for labels) features."""
    out = []
    for layer in viewer.layers:
        data = np.array(layer.data, copy=True) if hasattr(layer.data, "shape") else None
        features = layer.features.to_dict() if hasattr(layer, "features") else None
        out.append((layer.name, type(layer).__name__, data, dict(layer.metadata), features))
    return out


def assert_same(before, after) -> None:
    assert [s[:2] for s in after] == [s[:2] for s in before]
    for (name, _, data, metadata, features), (_, _, data2, metadata2, features2) in zip(before, after, strict=True):
        if data is not None:
            np.testing.assert_array_equal(data2, data, err_msg=name)
            assert data2.dtype == data.dtype, name
        assert metadata2 == metadata, name
        assert features2 == features, name


def written_planes(viewer) -> list[int]:
    data = np.asarray(viewer.layers["stack labels"].data)
    return [i for i in range(N_PLANES) if data[i].any()]


def start(qtbot, widget, viewer, segmenter, planes: int):
    """Start a run of the stack and let ``planes`` planes finish; returns the worker."""
    worker = widget.run(viewer.layers["stack"], scope="all planes")
    assert worker is not None
    segmenter.step(planes)
    qtbot.waitUntil(lambda: widget.progress.value() == planes * PROGRESS_PER_PLANE, timeout=30_000)
    return worker


def test_planes_appear_as_they_finish_and_the_end_writes_them_all(qtbot, gated):
    viewer, widget, segmenter = gated
    worker = start(qtbot, widget, viewer, segmenter, 1)
    assert written_planes(viewer) == [0]  # the first plane is visible while the run goes on
    assert viewer.layers["stack labels"].data[0].max() == 1
    segmenter.step()
    qtbot.waitUntil(lambda: widget.progress.value() == 2 * PROGRESS_PER_PLANE, timeout=30_000)
    assert written_planes(viewer) == [0, 1] and worker.is_running
    assert viewer.layers["stack labels"].data[1].max() == 2
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        segmenter.open_gate()
    assert written_planes(viewer) == list(range(N_PLANES))
    out = viewer.layers["stack labels"]
    assert list(out.features["class"]) == ["background", "red", "green"]
    assert widget.status.text().startswith("done")


def test_cancel_takes_back_the_planes_of_a_new_layer(qtbot, gated):
    viewer, widget, segmenter = gated
    before = snapshot(viewer)
    worker = start(qtbot, widget, viewer, segmenter, 2)
    assert written_planes(viewer) == [0, 1]
    widget.cancel()
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        segmenter.open_gate()
    qtbot.wait(50)
    assert "stack labels" not in viewer.layers  # the layer the run created is gone
    assert_same(before, snapshot(viewer))
    assert "cancelled" in widget.status.text() and widget.run_button.isEnabled()


def test_cancel_restores_an_existing_output_layer_exactly(qtbot, gated):
    viewer, widget, segmenter = gated
    worker = widget.run(viewer.layers["stack"], scope="all planes")
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        segmenter.open_gate()
    out = viewer.layers["stack labels"]
    out.data[3, :5, :5] = 7  # the user's own corrections on the previous result
    data_object = out.data
    segmenter.reset()
    widget.classes.add("blue")  # a third class: other colours, features and names
    widget.supports[0].labels.paint((10, 10), 3)
    before = snapshot(viewer)
    worker = start(qtbot, widget, viewer, segmenter, 2)
    assert list(out.features["class"])[-1] == "blue"  # the run is visible in the layer
    widget.cancel()
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        segmenter.open_gate()
    qtbot.wait(50)
    assert_same(before, snapshot(viewer))
    assert viewer.layers["stack labels"].data is data_object
    assert list(out.features["class"]) == ["background", "red", "green"]


def test_an_error_mid_run_takes_back_the_planes_written(qtbot, gated):
    viewer, widget, segmenter = gated
    segmenter.fail_at = 2
    before = snapshot(viewer)
    worker = start(qtbot, widget, viewer, segmenter, 2)
    assert written_planes(viewer) == [0, 1]
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        segmenter.open_gate()
    qtbot.wait(50)
    assert_same(before, snapshot(viewer))
    assert "broke on this plane" in widget.status.text()


def test_changing_the_classes_mid_run_stops_it_and_takes_the_planes_back(qtbot, gated):
    viewer, widget, segmenter = gated
    before = snapshot(viewer)
    worker = start(qtbot, widget, viewer, segmenter, 1)
    widget.classes.add("blue")
    segmenter.step()  # the next plane arrives after the change: the run stops there
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        segmenter.open_gate()
    qtbot.wait(50)
    after = snapshot(viewer)
    assert "stack labels" not in viewer.layers
    assert [s[0] for s in after] == [s[0] for s in before]
    assert "classes changed" in widget.status.text()
