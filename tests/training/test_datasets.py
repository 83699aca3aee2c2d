"""Training datasets: synthetic generator, class subsets, augmentation, folders, episode files, COCO."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import check_sample
from napari_label_anything.training.datasets import ClassSubset, SegmentationDataset, SyntheticDataset
from napari_label_anything.training.datasets.synthetic import MAX_CLASSES, class_cues


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


# --- augmentation ----------------------------------------------------------------------------


def _undo_geometry(augmented: np.ndarray, original: np.ndarray) -> bool:
    """Whether ``augmented`` is ``original`` under one of the 8 flips/quarter turns."""
    for flipped in (original, original[:, ::-1]):
        for k in range(4):
            candidate = np.rot90(flipped, k, axes=(0, 1))
            if candidate.shape == augmented.shape and np.array_equal(candidate, augmented):
                return True
    return False


@pytest.mark.parametrize("shape", [(48, 48), (40, 64), (40, 64, 3)])
def test_augment_keeps_annotations_aligned(shape):
    from napari_label_anything.training.datasets import Instance, Sample, instances_from_labels
    from napari_label_anything.training.datasets.augment import augment

    rng = np.random.default_rng(0)
    labels = np.zeros(shape[:2], dtype=np.int64)
    labels[3:15, 5:30] = 1
    labels[20:36, 2:9] = 2
    labels[25:30, 40:46] = 1
    # the image encodes the labels, so alignment is checkable after intensity changes too
    image = (labels * 1000 + rng.integers(0, 50, shape[:2])).astype(np.uint16)
    if len(shape) == 3:
        image = np.repeat(image[..., None], 3, axis=-1)
    sample = Sample(image, labels, instances_from_labels(labels), name="toy")
    before = (image.copy(), labels.copy())
    seen_shapes = set()
    for seed in range(24):
        out = augment(sample, np.random.default_rng(seed))
        assert np.array_equal(sample.image, before[0]) and np.array_equal(sample.labels, before[1])
        assert out.image.dtype == np.uint8 and out.labels.dtype == np.int64
        assert out.image.shape[:2] == out.labels.shape and out.image.ndim == len(shape)
        seen_shapes.add(out.labels.shape)
        assert out.name == "toy"
        assert _undo_geometry(out.labels, labels)
        assert np.array_equal(np.bincount(out.labels.ravel()), np.bincount(labels.ravel()))
        assert [i.class_id for i in out.instances] == [i.class_id for i in sample.instances]
        for new, old in zip(out.instances, sample.instances, strict=True):
            assert isinstance(new, Instance) and new.mask.dtype == bool
            assert new.area == old.area
            assert np.all(out.labels[new.mask] == new.class_id)
            assert _undo_geometry(new.mask, old.mask)
        # brighter labels stay brighter where noise is small next to the class gaps
        gray = out.image if out.image.ndim == 2 else out.image[..., 0]
        means = [gray[out.labels == k].mean() for k in range(3)]
        assert means[0] < means[1] < means[2]
    if shape[0] != shape[1]:
        assert seen_shapes == {shape[:2], shape[1::-1][:2]}


def test_augment_deterministic_and_varied():
    from napari_label_anything.training.datasets.augment import augment

    sample = SyntheticDataset(1, size=64)[0]
    a = augment(sample, np.random.default_rng(7))
    b = augment(sample, np.random.default_rng(7))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    images = {augment(sample, np.random.default_rng(s)).image.tobytes() for s in range(8)}
    assert len(images) == 8
    # values stay sane: not blown out
    for s in range(20):
        out = augment(sample, np.random.default_rng(s)).image
        assert 20 < out.mean() < 235 and out.std() > 10


def test_augment_rejects_misaligned_sample():
    from napari_label_anything.training.datasets import Sample
    from napari_label_anything.training.datasets.augment import augment

    with pytest.raises(ValueError, match="shape"):
        augment(Sample(np.zeros((4, 5)), np.zeros((5, 4), dtype=np.int64)), np.random.default_rng(0))
