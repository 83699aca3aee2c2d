"""Metrics against the official miniature validation run (reference README §7.12-13, §8).

The fixture holds 5 batches of 2 episodes (fold 0 of COCO-20i, 21 compact ids). Each episode's
class list is in manifest.json -> loss_metrics.metrics.episodes[e].classes[b]: the query's classes
then each support's; local class k is the k-th of their sorted union, and its global (compact) id
is its position in fold_val_category_ids plus 1.

Note on the fixture: ``metric.ep*.local_preds`` already hold the predictions under the direct
(collision-free) map, i.e. compact ids; only ``local_gt`` is in local ids. The tests recover the
local predictions by inverting that map (asserting it is exact) before remapping them.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_label_anything.training.metrics import (
    ConfusionMatrix,
    background_iou,
    bmiou,
    fb_iou,
    foreground_iou,
    iou_per_class,
    mean_iou,
    official_fbiou,
    official_remap,
    remap_to_global,
    strict_miou,
)

OFFICIAL = {"mIoU": 0.5634521, "BmIoU": 0.5757453, "FBIoU": 0.6271712}
DIRECT = {"mIoU": 0.5446318, "BmIoU": 0.5578212}
TOLERANCE = {"rel": 1e-6, "abs": 1e-7}


@pytest.fixture(scope="module")
def run(reference, manifest):
    """[(local preds, local gt, class ids, official global preds, official global gt)] per episode."""
    facts = manifest["loss_metrics"]["metrics"]
    compact = {category: i + 1 for i, category in enumerate(facts["fold_val_category_ids"])}
    episodes = []
    with np.load(reference / "loss_metrics" / "loss_metrics.npz") as data:
        confmat = data["metric.confmat_official"]
        for e, batch in enumerate(facts["episodes"]):
            arrays = {
                key: data[f"metric.ep{e}.{key}"] for key in ("local_preds", "local_gt", "global_preds", "global_gt")
            }
            for b, image_classes in enumerate(batch["classes"]):
                class_ids = [compact[c] for c in sorted({c for classes in image_classes for c in classes})]
                assert len(class_ids) == batch["local_num_classes"][b]
                episodes.append(
                    (
                        invert_direct_map(arrays["local_preds"][b], class_ids),
                        arrays["local_gt"][b],
                        class_ids,
                        arrays["global_preds"][b],
                        arrays["global_gt"][b],
                    )
                )
    return episodes, confmat, facts


def invert_direct_map(compact_preds, class_ids):
    allowed = {0, *class_ids}
    assert set(np.unique(compact_preds).tolist()) <= allowed
    local = np.zeros_like(compact_preds)
    for k, class_id in enumerate(class_ids, start=1):
        local[compact_preds == class_id] = k
    assert (remap_to_global(local, class_ids) == compact_preds).all()
    return local


def accumulate(episodes, remap):
    confusion = ConfusionMatrix(21)
    for local_preds, local_gt, class_ids, _, _ in episodes:
        confusion.update(remap(local_preds, class_ids), remap(local_gt, class_ids))
    return confusion


def test_official_remap_reproduces_the_official_global_maps(run):
    episodes, _, facts = run
    collided = []
    for local_preds, local_gt, class_ids, global_preds, global_gt in episodes:
        np.testing.assert_array_equal(official_remap(local_preds, class_ids), global_preds)
        np.testing.assert_array_equal(official_remap(local_gt, class_ids), global_gt)
        collided.append(not np.array_equal(remap_to_global(local_gt, class_ids), global_gt))
    # The README names episodes 2 and 4 as the ones the sequential remap corrupts.
    expected = [batch["chained_remap_changed_something"] for batch in facts["episodes"]]
    assert [any(collided[2 * e : 2 * e + 2]) for e in range(5)] == expected == [False, False, True, False, True]


def test_accumulated_matrix_equals_the_official_one(run):
    episodes, confmat, _ = run
    confusion = accumulate(episodes, official_remap)
    np.testing.assert_array_equal(confusion.matrix, confmat)
    assert confusion.matrix.dtype == np.int64


def test_official_values(run):
    episodes, confmat, facts = run
    confusion = accumulate(episodes, official_remap)
    assert strict_miou(confusion) == pytest.approx(OFFICIAL["mIoU"], **TOLERANCE)
    assert bmiou(confusion) == pytest.approx(OFFICIAL["BmIoU"], **TOLERANCE)
    assert official_fbiou(confusion) == pytest.approx(OFFICIAL["FBIoU"], **TOLERANCE)
    assert confusion.strict_miou() == strict_miou(confmat)
    per_class = iou_per_class(confmat)
    for class_id, value in facts["per_class_iou_official_confmat"].items():
        assert per_class[int(class_id)] == pytest.approx(value, rel=1e-6)
    absent = [i for i in range(21) if str(i) not in facts["per_class_iou_official_confmat"]]
    assert np.isnan(per_class[absent]).all()
    # The correct default on the same (official) matrix: the mean over the foreground classes seen.
    assert mean_iou(confmat) == pytest.approx(facts["mean_fg_iou_over_present_classes"], rel=1e-6)


def test_collision_free_remap_values(run):
    episodes, _, facts = run
    confusion = accumulate(episodes, remap_to_global)
    assert strict_miou(confusion) == pytest.approx(DIRECT["mIoU"], **TOLERANCE)
    assert bmiou(confusion) == pytest.approx(DIRECT["BmIoU"], **TOLERANCE)
    assert official_fbiou(confusion) == pytest.approx(facts["values_with_direct_remap"]["FBIoU"], **TOLERANCE)


def test_fb_iou_is_the_mean_of_foreground_and_background(run):
    episodes, confmat, _ = run
    preds = np.concatenate([remap_to_global(p, ids) for p, _, ids, _, _ in episodes])
    gts = np.concatenate([remap_to_global(g, ids) for _, g, ids, _, _ in episodes])
    kept = gts != -100
    fg = np.logical_and(preds > 0, gts > 0)[kept].sum() / np.logical_or(preds > 0, gts > 0)[kept].sum()
    bg = np.logical_and(preds == 0, gts == 0)[kept].sum() / np.logical_or(preds == 0, gts == 0)[kept].sum()
    confusion = accumulate(episodes, remap_to_global)
    assert foreground_iou(confusion) == pytest.approx(fg, rel=1e-12)
    assert background_iou(confusion) == pytest.approx(bg, rel=1e-12)
    assert fb_iou(confusion) == pytest.approx((fg + bg) / 2, rel=1e-12)
    assert fb_iou(confmat) == pytest.approx((OFFICIAL["FBIoU"] + iou_per_class(confmat)[0]) / 2, rel=1e-6)


def test_dataset_level_accumulation_is_not_an_episode_average():
    confusion = ConfusionMatrix(2)
    big_gt = np.ones((10, 10), dtype=np.int64)
    confusion.update(big_gt, big_gt)  # 100 correct pixels
    confusion.update(np.array([0]), np.array([1]))  # one missed pixel in a tiny episode
    assert confusion.iou_per_class()[1] == pytest.approx(100 / 101)
    assert confusion.mean_iou() == pytest.approx(100 / 101)


def test_mean_iou_uses_foreground_classes_with_a_union():
    matrix = np.zeros((5, 5), dtype=np.int64)
    matrix[0, 0] = 50
    matrix[1, 1] = 10  # class 1: IoU 1
    matrix[2, 3] = 10  # class 2 missed, class 3 only predicted: both IoU 0
    # class 4 never seen nor predicted: left out
    assert mean_iou(matrix) == pytest.approx(1 / 3)
    assert bmiou(matrix) == pytest.approx(2 / 4)
    assert strict_miou(matrix) == pytest.approx((2 / 4 * 5 - 1) / 4)
    assert np.isnan(iou_per_class(matrix)[4])


def test_edge_cases_give_nan_not_errors():
    empty = ConfusionMatrix(3)
    assert np.isnan(empty.mean_iou()) and np.isnan(empty.fb_iou()) and np.isnan(empty.strict_miou())
    only_background = ConfusionMatrix(3)
    only_background.update(np.zeros((4, 4), dtype=np.int64), np.zeros((4, 4), dtype=np.int64))
    assert np.isnan(only_background.mean_iou())
    assert only_background.fb_iou() == 1.0, "an undefined foreground IoU leaves the background IoU alone"


def test_ignored_pixels_are_left_out_whatever_their_prediction():
    confusion = ConfusionMatrix(3)
    gt = np.array([[0, 1, -100, -100]])
    pred = np.array([[0, 1, 2, -100]])
    confusion.update(pred, gt)
    assert confusion.matrix.sum() == 2 and confusion.mean_iou() == 1.0


def test_add_and_reset():
    first, second = ConfusionMatrix(3), ConfusionMatrix(3)
    first.update(np.array([1, 2]), np.array([1, 1]))
    second.add(first)
    second.add(first.matrix)
    np.testing.assert_array_equal(second.matrix, 2 * first.matrix)
    second.reset()
    assert second.matrix.sum() == 0


def test_remaps():
    local = np.array([[0, 1, 2, -100]])
    np.testing.assert_array_equal(remap_to_global(local, [2, 3]), [[0, 2, 3, -100]])
    np.testing.assert_array_equal(official_remap(local, [2, 3]), [[0, 3, 3, -100]])
    np.testing.assert_array_equal(official_remap(local, [3, 2]), [[0, 3, 2, -100]])
    assert remap_to_global(local.astype(np.uint8) % 3, (7, 9)).dtype == np.int64


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: ConfusionMatrix(1), ValueError, "n_classes"),
        (lambda: ConfusionMatrix(3).update(np.zeros(3, dtype=int), np.zeros(4, dtype=int)), ValueError, "shape"),
        (lambda: ConfusionMatrix(3).update(np.zeros(3), np.zeros(3, dtype=int)), TypeError, "pred"),
        (lambda: ConfusionMatrix(3).update(np.array([3]), np.array([0])), ValueError, "pred holds ids 3"),
        (lambda: ConfusionMatrix(3).update(np.array([0]), np.array([-1])), ValueError, "gt holds ids -1"),
        (lambda: ConfusionMatrix(3).add(np.zeros((2, 2), dtype=int)), ValueError, "cannot add"),
        (lambda: mean_iou(np.zeros((2, 3), dtype=int)), ValueError, "square"),
        (lambda: remap_to_global(np.array([3]), [4, 5]), ValueError, "2 classes"),
        (lambda: remap_to_global(np.array([1]), [0]), ValueError, "class_ids"),
        (lambda: official_remap(np.array([1.0]), [1]), TypeError, "local"),
    ],
)
def test_bad_inputs_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call()
