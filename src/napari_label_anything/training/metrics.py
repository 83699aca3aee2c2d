"""Segmentation metrics from one dataset-level confusion matrix (NumPy only).

Evaluation accumulates a single confusion matrix over every episode of a run and derives all
numbers from it at the end; episodes are never scored and averaged one by one, which would give
small episodes the weight of large ones (this is also how the official validation aggregates,
tests/data/reference/README.md §8).

Defaults are the correct definitions:

- ``mean_iou``: mean IoU over the *foreground* classes whose union (ground truth or prediction)
  is non-empty during the run;
- ``fb_iou``: the mean of the foreground IoU and the background IoU, foreground meaning "any
  class" (``pred > 0`` against ``gt > 0``); undefined (NaN) where the ground truth has no
  background.

The official Label Anything numbers use other definitions (README §7.13); they are offered under
their own names so they are never confused with the defaults: ``strict_miou`` (its "mIoU"),
``bmiou`` (its "BmIoU") and ``official_fbiou`` (its "FBIoU", the foreground IoU alone).
Likewise ``remap_to_global`` turns an episode's local labels into global ids correctly, while
``official_remap`` reproduces the official sequential in-place remap and its collisions (§7.12).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORE_INDEX = -100


def _check_count(n_classes: object) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2 (background + at least one class), got {n_classes!r}")
    return int(n_classes)


def _integer_array(values: object, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must be an integer label array, got dtype {array.dtype}")
    return array


class ConfusionMatrix:
    """A confusion matrix over ``n_classes`` ids (0 = background), accumulated over many label maps.

    ``matrix[g, p]`` (int64, shape (n_classes, n_classes)) counts pixels with ground truth ``g``
    and prediction ``p``: rows are the ground truth, as in torchmetrics. The metric methods are the
    module's functions applied to ``matrix``.
    """

    def __init__(self, n_classes: int) -> None:
        self.n_classes = _check_count(n_classes)
        self.matrix = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, ignore_index: int = IGNORE_INDEX) -> None:
        """Add one or many label maps.

        Args:
            pred: integer array of any shape, ids 0..n_classes-1 wherever ``gt`` is not ignored.
            gt: integer array of the same shape, ids 0..n_classes-1 or ``ignore_index``; pixels with
                ``gt == ignore_index`` are left out whatever their prediction.
        """
        pred = _integer_array(pred, "pred")
        gt = _integer_array(gt, "gt")
        if pred.shape != gt.shape:
            raise ValueError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")
        kept = gt != ignore_index
        pred, gt = pred[kept].astype(np.int64), gt[kept].astype(np.int64)
        for name, values in (("gt", gt), ("pred", pred)):
            if values.size and (values.min() < 0 or values.max() >= self.n_classes):
                raise ValueError(
                    f"{name} holds ids {values.min()}..{values.max()}; allowed are 0..{self.n_classes - 1}"
                    + (f" (and {ignore_index} in gt, ignored)" if name == "gt" else " where gt is not ignored")
                )
        counts = np.bincount(gt * self.n_classes + pred, minlength=self.n_classes**2)
        self.matrix += counts.reshape(self.n_classes, self.n_classes)

    def add(self, other: ConfusionMatrix | np.ndarray) -> None:
        """Add another matrix of the same size (e.g. gathered from other processes)."""
        counts = other.matrix if isinstance(other, ConfusionMatrix) else _integer_array(other, "other")
        if counts.shape != self.matrix.shape:
            raise ValueError(f"cannot add a {counts.shape} matrix to a {self.matrix.shape} one")
        self.matrix += counts.astype(np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def iou_per_class(self) -> np.ndarray:
        return iou_per_class(self.matrix)

    def mean_iou(self) -> float:
        return mean_iou(self.matrix)

    def fb_iou(self) -> float:
        return fb_iou(self.matrix)

    def strict_miou(self) -> float:
        return strict_miou(self.matrix)

    def bmiou(self) -> float:
        return bmiou(self.matrix)

    def official_fbiou(self) -> float:
        return official_fbiou(self.matrix)

    def __repr__(self) -> str:
        return f"ConfusionMatrix(n_classes={self.n_classes}, pixels={int(self.matrix.sum())})"


def _matrix(confusion: ConfusionMatrix | np.ndarray) -> np.ndarray:
    matrix = confusion.matrix if isinstance(confusion, ConfusionMatrix) else _integer_array(confusion, "confusion")
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise ValueError(f"a confusion matrix must be square (n, n) with n >= 2, got shape {matrix.shape}")
    return matrix


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator > 0 else float("nan")


def iou_per_class(confusion: ConfusionMatrix | np.ndarray) -> np.ndarray:
    """(n,) float64 IoU per class id, ``tp / (tp + fp + fn)``; NaN where the union is empty
    (the class was neither in the ground truth nor predicted)."""
    matrix = _matrix(confusion).astype(np.float64)
    hits = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, hits / np.where(union > 0, union, 1.0), np.nan)


def mean_iou(confusion: ConfusionMatrix | np.ndarray) -> float:
    """Mean IoU over the foreground classes (ids >= 1) whose union is non-empty; NaN if none is.

    Classes that never occur in the ground truth and are never predicted have no IoU and are left
    out (scoring them 0 or 1 would bias the mean); a class that is only predicted has IoU 0 and
    counts. Unlike the official "mIoU" (``strict_miou``) this equals the plain mean foreground IoU
    whatever subset of classes a run happens to visit.
    """
    foreground = iou_per_class(confusion)[1:]
    present = foreground[~np.isnan(foreground)]
    return float(present.mean()) if present.size else float("nan")


def _binary_counts(matrix: np.ndarray) -> tuple[float, float, float, float]:
    """(both foreground, both background, predicted fg on bg, predicted bg on fg) pixel counts."""
    matrix = matrix.astype(np.float64)
    return matrix[1:, 1:].sum(), matrix[0, 0], matrix[0, 1:].sum(), matrix[1:, 0].sum()


def foreground_iou(confusion: ConfusionMatrix | np.ndarray) -> float:
    """Binary IoU of "any class" (``pred > 0`` against ``gt > 0``); a wrong class still counts as
    foreground. NaN if neither prediction nor ground truth has foreground."""
    fg_fg, _, fg_on_bg, bg_on_fg = _binary_counts(_matrix(confusion))
    return _ratio(fg_fg, fg_fg + fg_on_bg + bg_on_fg)


def background_iou(confusion: ConfusionMatrix | np.ndarray) -> float:
    """Binary IoU of the background (``pred == 0`` against ``gt == 0``); NaN if there is none."""
    _, bg_bg, fg_on_bg, bg_on_fg = _binary_counts(_matrix(confusion))
    return _ratio(bg_bg, bg_bg + fg_on_bg + bg_on_fg)


def fb_iou(confusion: ConfusionMatrix | np.ndarray) -> float:
    """FB-IoU: the mean of ``foreground_iou`` and ``background_iou`` (the usual definition of the
    few-shot literature). NaN where the ground truth holds no background: telling foreground
    from background is then not measured (an N-way run whose queries are all classes would
    score 1.0 for predicting no background). Without ground-truth foreground the background
    IoU alone; NaN if neither is defined."""
    matrix = _matrix(confusion)
    if not matrix[0].any():
        return float("nan")
    values = [value for value in (foreground_iou(matrix), background_iou(matrix)) if not np.isnan(value)]
    return float(np.mean(values)) if values else float("nan")


def bmiou(confusion: ConfusionMatrix | np.ndarray) -> float:
    """Official "BmIoU": the macro mean IoU *including the background*, over the classes with a
    non-empty union (torchmetrics' macro average with absent classes dropped); NaN if none."""
    values = iou_per_class(confusion)
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


def strict_miou(confusion: ConfusionMatrix | np.ndarray) -> float:
    """Official "mIoU" (``StrictMeanIoU``): ``(bmiou * K - IoU_background) / (K - 1)``, K = n classes.

    It equals the mean foreground IoU only when every class has a non-empty union during the run;
    otherwise it is biased (the macro mean runs over the present classes but is rescaled by K).
    A background with an empty union contributes 0.
    """
    matrix = _matrix(confusion)
    n_classes = matrix.shape[0]
    background = iou_per_class(matrix)[0]
    macro = bmiou(matrix)
    if np.isnan(macro):
        return float("nan")
    return float((macro * n_classes - (0.0 if np.isnan(background) else background)) / (n_classes - 1))


def official_fbiou(confusion: ConfusionMatrix | np.ndarray) -> float:
    """Official "FBIoU": ``BinaryJaccardIndex`` on ``pred > 0`` against ``gt > 0``, i.e. the
    foreground IoU alone (``foreground_iou``), not the mean of foreground and background."""
    return foreground_iou(confusion)


def _check_class_ids(class_ids: Sequence[int]) -> list[int]:
    ids = list(class_ids)
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"class_ids must be global ids >= 1 (0 is the background), got {class_ids!r}")
    return [int(value) for value in ids]


def remap_to_global(local: np.ndarray, class_ids: Sequence[int], ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Map an episode's local labels to global ids in one lookup (collision-free).

    Args:
        local: integer array of any shape: 0 = background, k = the episode's k-th class
            (1..N), ``ignore_index`` = ignored.
        class_ids: the global id of local class 1..N (length N, each >= 1).

    Returns:
        int64 array of the same shape: 0 stays 0, k becomes ``class_ids[k - 1]``, ignored pixels
        keep ``ignore_index``.
    """
    ids = _check_class_ids(class_ids)
    local = _integer_array(local, "local")
    kept = local != ignore_index
    values = local[kept]
    if values.size and (values.min() < 0 or values.max() > len(ids)):
        raise ValueError(
            f"local labels hold ids {values.min()}..{values.max()}; an episode of {len(ids)} classes allows "
            f"0..{len(ids)} and {ignore_index} (ignored)"
        )
    lookup = np.asarray([0, *ids], dtype=np.int64)
    out = np.full(local.shape, ignore_index, dtype=np.int64)
    out[kept] = lookup[values]
    return out


def official_remap(local: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """The official ``to_global_multiclass`` remap, collisions included (README §7.12).

    Replaces local id 1 by ``class_ids[0]``, *then* local id 2 by ``class_ids[1]``, and so on, each
    step on the result of the previous one. When an earlier global id equals a later local id
    (e.g. 2-way with ``class_ids == (2, 3)``), the earlier class's pixels are remapped again and
    merge into the later class. Values outside 1..N pass through unchanged. Use only to reproduce
    official numbers; ``remap_to_global`` is the correct mapping.

    Returns:
        int64 array of ``local``'s shape.
    """
    ids = _check_class_ids(class_ids)
    out = _integer_array(local, "local").astype(np.int64, copy=True)
    for local_id, global_id in enumerate(ids, start=1):
        out[out == local_id] = global_id
    return out
