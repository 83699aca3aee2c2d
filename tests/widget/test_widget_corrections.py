"""Corrections that stick, in a real napari viewer (Xvfb): a corrected plane fed back is a
complete annotation (its background a background prompt), and every later preview, run,
cancel and save/load shows it exactly as the user left it."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REFERENCE, blob_image, classic_dock, dimmed_stack, mean_iou, wait_for
from napari_label_anything.widget.messages import PlaneResult

pytestmark = pytest.mark.napari

BACKGROUND_PROMPT = 255


@pytest.fixture
def corrected(make_napari_viewer, qtbot):
    """A stack run once with the classic model, plane 6 corrected by hand (a few wrong pixels
    fixed, a few right ones deliberately changed) and fed back."""
    viewer = make_napari_viewer()
    stack, truth = dimmed_stack(seed=1)
    viewer.add_image(stack[0], name="support")
    viewer.add_labels(truth[0], name="support truth")
    viewer.add_image(stack, name="stack")
    widget = classic_dock(viewer, "disc", "square")
    widget.add_support(viewer.layers["support"], labels_layer=viewer.layers["support truth"])
    widget.query_combo.setCurrentText("stack")
    wait_for(qtbot, widget.run(scope="all planes"))
    out = viewer.layers["stack labels"]
    z = 6
    mine = truth[z].copy()
    mine[:5, :5] = 2  # the user's own call, which the model will not agree with
    out.data[z] = mine
    out.refresh()
    viewer.dims.set_point(0, z)
    widget.add_prediction_as_support()
    return viewer, widget, stack, z, mine


def test_a_fed_back_plane_is_a_complete_annotation_with_background_prompts(corrected):
    viewer, widget, stack, z, mine = corrected
    support = widget.supports[-1]
    prompts = np.asarray(support.labels.data)[z]
    assert (prompts != 0).all()  # every pixel prompted
    np.testing.assert_array_equal(prompts, np.where(mine == 0, BACKGROUND_PROMPT, mine))
    episode = widget.episode
    assert episode.classes == ["disc", "square", "background"]
    fed = next(s for s in episode.supports if s.name == f"stack [{z}]")
    np.testing.assert_array_equal(fed.labels, np.where(mine == 0, 3, mine))
    assert "kept as it is" in widget.status.text()


def test_a_corrected_plane_survives_runs_previews_cancels_and_reloads(qtbot, corrected, tmp_path, monkeypatch):
    from napari_label_anything.widget import reporting

    monkeypatch.setattr(reporting, "confirm", lambda *args: True)  # "replace the episode?" yes
    viewer, widget, stack, z, mine = corrected
    out = viewer.layers["stack labels"]

    # A run over every plane: plane z stays exactly as corrected; the disagreement is reported.
    wait_for(qtbot, widget.run(scope="all planes"))
    np.testing.assert_array_equal(out.data[z], mine)
    assert "1 corrected plane(s) kept as you painted them (the model differs on" in widget.status.text()
    assert np.asarray(out.data)[np.arange(len(stack)) != z].any()  # the other planes were predicted

    # A run of the current plane only (plane z).
    wait_for(qtbot, widget.run(scope="current plane"))
    np.testing.assert_array_equal(viewer.layers["stack labels"].data[z], mine)

    # A live preview of plane z, started by a prompt edit elsewhere.
    widget.set_live_preview(True)
    widget.supports[0].labels.paint((40, 60), 1)
    qtbot.waitUntil(lambda: widget.preview_stats["written"] >= 1, timeout=60_000)
    qtbot.wait(50)
    np.testing.assert_array_equal(viewer.layers["stack labels"].data[z], mine)
    assert "kept as you painted them" in widget.status.text()
    widget.set_live_preview(False)
    widget.supports[0].labels.paint((40, 60), 0)

    # A cancelled run leaves it as it was.
    worker = widget.run(scope="all planes")
    worker.yielded.connect(lambda message: widget.cancel() if isinstance(message, PlaneResult) else None)
    wait_for(qtbot, worker)
    assert "cancelled" in widget.status.text()
    np.testing.assert_array_equal(viewer.layers["stack labels"].data[z], mine)

    # Save, forget everything, load again, run: byte for byte the same plane.
    path = widget.save_episode(tmp_path / "loop.episode")
    widget.clear_episode()
    viewer.layers.remove("stack labels")
    widget.load_episode(path)
    widget.query_combo.setCurrentText("stack")
    wait_for(qtbot, widget.run(scope="all planes"))
    reloaded = np.asarray(viewer.layers["stack labels"].data[z])
    assert reloaded.tobytes() == mine.astype(reloaded.dtype).tobytes()


def test_auto_never_picks_a_fine_tuned_model(qtbot, make_napari_viewer, tmp_path, monkeypatch):
    from napari_label_anything.hub.registry import register_local_model

    monkeypatch.setenv("NAPARI_LABEL_ANYTHING_HOME", str(tmp_path))
    register_local_model("tuned", REFERENCE / "mae_like")  # what Fine-tune does with its result
    viewer = make_napari_viewer()
    image, labels = blob_image((48, 56))
    viewer.add_image(image, name="image", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    assert widget.model_picker.model_name == "auto"
    assert widget.model_picker.model_combo.findData("tuned") >= 0  # offered by its name
    widget.classes.add("red")
    widget.classes.add("green")
    support = widget.add_support(viewer.layers["image"])
    support.labels.data = labels.astype(support.labels.data.dtype)
    wait_for(qtbot, widget.run(viewer.layers["image"]))
    assert widget.status.text().startswith("done") and "classic on cpu" in widget.status.text()


def test_a_darker_plane_is_normalised_on_its_own_and_the_switch_turns_it_off(qtbot, make_napari_viewer):
    from test_corrections import drifting_stack

    viewer = make_napari_viewer()
    stack, truth = drifting_stack(dark=(4,))
    viewer.add_image(stack, name="stack")
    widget = classic_dock(viewer, "disc", "square")
    support = widget.add_support(viewer.layers["stack"])
    data = np.asarray(support.labels.data)
    data[0] = truth[0]
    support.labels.data = data
    widget.query_combo.setCurrentText("stack")
    assert widget.normalise == "auto"
    wait_for(qtbot, widget.run(scope="all planes"))
    assert "each plane normalised on its own" in widget.status.text()
    dark_auto = mean_iou(np.asarray(viewer.layers["stack labels"].data[4]), truth[4])
    widget.normalise_combo.setCurrentIndex(widget.normalise_combo.findData("stack"))
    wait_for(qtbot, widget.run(scope="all planes"))
    assert widget.status.text().startswith("done") and "normalised on its own" not in widget.status.text()
    dark_shared = mean_iou(np.asarray(viewer.layers["stack labels"].data[4]), truth[4])
    assert dark_auto > dark_shared + 0.2, (dark_auto, dark_shared)
