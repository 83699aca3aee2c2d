"""The standard annotation task, driven through the dock widget as a user would, counting the
user's actions: two classes, a 30-plane stack, scribbles on one plane, then Run -> Suggest next
plane -> fix the largest wrong regions of that plane -> Use this plane as support, until the
stack's mean IoU reaches the target.

Actions counted: one per scribble stroke, per press of Run, Suggest and Use-this-plane, and per
brush drag of a correction (one drag fixes one connected wrong region of the output)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from conftest import classic_dock, dimmed_stack, mean_iou, wait_for

pytestmark = pytest.mark.napari

TARGET = 0.977  # mean IoU over classes, averaged over the 30 planes
MAX_ROUNDS = 6
MAX_ACTIONS = 75  # measured: 71 (scribbles 6, then two rounds of Run, Suggest, drags, Use)
DROP = 0.01  # the most one round may lower the stack's mean IoU
BACKGROUND_PROMPT = 255


def scribbles(truth: np.ndarray) -> tuple[np.ndarray, int]:
    """Strokes a person paints on one plane: a short line through the middle of two objects of
    each class and two lines through the background. Returns (prompts, number of strokes)."""
    prompts = np.zeros(truth.shape, np.uint8)
    strokes = 0
    for k in (1, 2):
        objects, n = ndi.label(truth == k)
        for i in range(1, min(n, 2) + 1):
            ys, xs = np.nonzero(ndi.binary_erosion(objects == i, iterations=2))
            y = int(np.median(ys))
            row = xs[ys == y]
            prompts[y, row.min() : row.max() + 1] = k
            strokes += 1
    far = ndi.distance_transform_edt(truth == 0) > 4
    for y in (truth.shape[0] // 4, 3 * truth.shape[0] // 4):
        prompts[y][far[y]] = BACKGROUND_PROMPT
        strokes += 1
    return prompts, strokes


def fix_largest_regions(output: np.ndarray, truth: np.ndarray, share: float = 0.9) -> int:
    """Fix the largest connected wrong regions of ``output`` (in place) until ``share`` of the
    wrong pixels are fixed; returns the brush drags used (one per region)."""
    wrong = output != truth
    regions, n = ndi.label(wrong)
    if not n:
        return 0
    sizes = np.bincount(regions.ravel())[1:]
    goal, fixed, drags = share * wrong.sum(), 0, 0
    for i in np.argsort(sizes)[::-1]:
        if fixed >= goal:
            break
        region = regions == i + 1
        output[region] = truth[region]
        fixed += sizes[i]
        drags += 1
    return drags


def stack_iou(out: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([mean_iou(out[z], truth[z]) for z in range(len(truth))]))


@pytest.mark.slow
def test_the_standard_task_reaches_the_target_in_few_actions(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    stack, truth = dimmed_stack(n=30, dip=15, width=3.0, seed=2)
    viewer.add_image(stack, name="stack")
    widget = classic_dock(viewer, "disc", "square")
    support = widget.add_support(viewer.layers["stack"])
    prompts, actions = scribbles(truth[0])
    data = np.asarray(support.labels.data)
    data[0] = prompts
    support.labels.data = data
    widget.query_combo.setCurrentText("stack")
    history = []
    for round_ in range(MAX_ROUNDS):
        wait_for(qtbot, widget.run(scope="all planes"))
        actions += 1
        assert widget.status.text().startswith("done"), widget.status.text()
        out = viewer.layers["stack labels"]
        score = stack_iou(np.asarray(out.data), truth)
        history.append((round_, actions, round(score, 4)))
        if score >= TARGET:
            break
        (z,) = widget.suggest_planes()[0]
        actions += 1
        plane = np.array(out.data[z])
        actions += fix_largest_regions(plane, truth[z])
        out.data[z] = plane
        out.refresh()
        widget.add_prediction_as_support(z)
        actions += 1
        np.testing.assert_array_equal(viewer.layers["stack labels"].data[z], plane)
    print(f"\n(round, cumulative actions, stack mean IoU): {history}")
    assert history[-1][2] >= TARGET and history[-1][1] <= MAX_ACTIONS, history
    # no round undoes the work: each ends within DROP of the one before (before corrections were
    # kept and fed back whole, every round lowered the mean: 0.971 -> 0.775 after 7 rounds)
    assert all(b[2] >= a[2] - DROP for a, b in zip(history, history[1:], strict=False)), history
