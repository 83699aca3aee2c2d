"""Training datasets: synthetic generator, class subsets, augmentation, folders, episode files, COCO."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_label_anything.training.datasets import ClassSubset, SegmentationDataset, SyntheticDataset
from napari_label_anything.training.datasets.synthetic import MAX_CLASSES, class_cues


def check_sample(sample, classes):
    """Invariants every dataset's samples share."""
    assert sample.labels.dtype == np.int64
    assert sample.labels.shape == sample.image.shape[:2]
    assert set(np.unique(sample.labels)) - {0} <= set(classes)
    for inst in sample.instances:
        assert inst.mask.dtype == bool and inst.mask.shape == sample.labels.shape
        assert inst.area > 0
        assert np.all(sample.labels[inst.mask] == inst.class_id)


# --- synthetic -------------------------------------------------------------------------------


def test_synthetic_deterministic_and_consistent_with_index():
    data = SyntheticDataset(60, n_classes=12, size=96, seed=3)
    assert isinstance(data, SegmentationDataset)
    assert data.augment is False and len(data) == 60
    assert data.classes == {k: f"class {k}" for k in range(1, 13)}
    again = SyntheticDataset(60, n_classes=12, size=96, seed=3)
    for i in range(len(data)):
        sample = data[i]
        check_sample(sample, data.classes)
        assert sample.image.dtype == np.uint8 and sample.image.shape == (96, 96)
        present = {inst.class_id for inst in sample.instances}
        assert 1 <= len(present) <= 4
        assert set(np.unique(sample.labels)) - {0} == present
        assert {k for k, v in data.index.items() if i in v} == present
        # instances are disjoint and cover the labels exactly
        cover = np.zeros(sample.labels.shape, dtype=int)
        for inst in sample.instances:
            cover += inst.mask
        assert cover.max() <= 1 and np.array_equal(cover > 0, sample.labels > 0)
        counts = np.bincount([inst.class_id for inst in sample.instances])
        assert counts.max() <= 3
        if i < 5:
            other = again[i]
            assert np.array_equal(sample.image, other.image) and np.array_equal(sample.labels, other.labels)
    assert not np.array_equal(data[0].image, SyntheticDataset(1, seed=4)[0].image)
    assert data[-1].name == data[59].name
    with pytest.raises(IndexError):
        data[60]
    # every class appears somewhere in a modest dataset
    assert sorted(data.index) == list(range(1, 13))


def test_synthetic_classes_differ_in_every_cue_and_are_distinct():
    cues = [class_cues(k) for k in range(1, MAX_CLASSES + 1)]
    assert len(set(cues)) == MAX_CLASSES
    for k in range(1, MAX_CLASSES):
        a, b = class_cues(k), class_cues(k + 1)
        assert all(x != y for x, y in zip(a, b, strict=True))


def test_synthetic_class_appearance_is_consistent():
    """Mean intensity of a class's pixels is set by its level cue, across images."""
    data = SyntheticDataset(40, n_classes=6, size=64)
    means: dict[int, list[float]] = {}
    for i in range(len(data)):
        sample = data[i]
        for inst in sample.instances:
            if inst.area >= 30:
                means.setdefault(inst.class_id, []).append(float(sample.image[inst.mask].mean()) / 255)
    for class_id, values in means.items():
        assert abs(np.median(values) - class_cues(class_id)[2]) < 0.06, (class_id, values)


def test_synthetic_is_fast():
    data = SyntheticDataset(200, size=96)
    data[0]
    start = time.perf_counter()
    for i in range(200):
        data[i]
    per_sample = (time.perf_counter() - start) / 200
    assert per_sample < 0.005, f"{per_sample * 1e3:.2f} ms per 96x96 sample"


def test_synthetic_stack():
    data = SyntheticDataset(4, n_classes=8, size=64, depth=6, seed=1)
    image, labels = data.stack(2)
    assert image.shape == (6, 64, 64) and image.dtype == np.uint8
    assert labels.shape == (6, 64, 64) and labels.dtype == np.int64
    again_image, again_labels = data.stack(2)
    assert np.array_equal(image, again_image) and np.array_equal(labels, again_labels)
    # objects change slowly: neighbouring planes' label images mostly agree
    for z in range(5):
        agree = np.mean(labels[z] == labels[z + 1])
        assert agree > 0.85, (z, agree)
    assert labels.any()
    assert data.stack(2, depth=3)[0].shape == (3, 64, 64)
    assert data[2].image.ndim == 2
    with pytest.raises(ValueError, match="depth"):
        SyntheticDataset(4).stack(0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_samples": 0},
        {"n_samples": 2, "n_classes": 0},
        {"n_samples": 2, "n_classes": 61},
        {"n_samples": 2, "size": 8},
        {"n_samples": 2, "depth": 0},
    ],
)
def test_synthetic_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SyntheticDataset(**kwargs)


# --- class subsets ---------------------------------------------------------------------------


def test_class_subset_restricts_classes_labels_instances_and_index():
    data = SyntheticDataset(40, n_classes=8, size=64)
    subset = ClassSubset(data, [2, 5, 7])
    assert isinstance(subset, SegmentationDataset)
    assert subset.classes == {2: "class 2", 5: "class 5", 7: "class 7"}
    assert subset.augment is data.augment
    expected = sorted(set(data.index[2]) | set(data.index[5]) | set(data.index[7]))
    assert subset.sample_indices == expected and len(subset) == len(expected)
    for class_id, positions in subset.index.items():
        assert [subset.sample_indices[p] for p in positions] == data.index[class_id]
    for p in range(len(subset)):
        sample = subset[p]
        original = data[subset.sample_indices[p]]
        check_sample(sample, subset.classes)
        kept = np.isin(original.labels, [2, 5, 7])
        assert np.array_equal(sample.labels[kept], original.labels[kept])
        assert not sample.labels[~kept].any()
        assert [i.class_id for i in sample.instances] == [
            i.class_id for i in original.instances if i.class_id in (2, 5, 7)
        ]
        assert {k for k, v in subset.index.items() if p in v} == {i.class_id for i in sample.instances}
    with pytest.raises(ValueError, match=r"\[9\]"):
        ClassSubset(data, [1, 9])
    with pytest.raises(ValueError, match="empty"):
        ClassSubset(data, [])
