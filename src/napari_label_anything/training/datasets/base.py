"""What every training/evaluation dataset gives: samples (image, semantic labels, instances).

A dataset is anything with ``classes`` (global class id -> name, ids from 1), ``__len__``,
``__getitem__(i) -> Sample`` and ``index`` (class id -> the sample indices holding at least one
instance of that class that survived the dataset's small-annotation filter). The episodic
sampler (``training/sampler.py``) only uses this protocol, so COCO, folders of label images,
``.episode`` files and the synthetic generator all feed the same episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Instance:
    """One annotated object: its global class id and its (Y, X) bool mask."""

    class_id: int
    mask: np.ndarray

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class Sample:
    """One annotated image.

    Attributes:
        image: (Y, X) or (Y, X, 3) array of any numeric dtype (normalised later by the one
            intensity rule, ``preprocessing.normalise_image``).
        labels: (Y, X) int64 semantic labels: 0 = background/unlabelled, k = global class id k.
        instances: the objects, at most one entry per connected object; masks are (Y, X) bool.
        name: where it came from (file and plane, COCO image id, ...), for messages.
    """

    image: np.ndarray
    labels: np.ndarray
    instances: list[Instance] = field(default_factory=list)
    name: str = ""


@runtime_checkable
class SegmentationDataset(Protocol):
    classes: dict[int, str]
    index: dict[int, list[int]]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Sample: ...


def instances_from_labels(labels: np.ndarray, min_area: int = 0) -> list[Instance]:
    """Split a (Y, X) semantic label image into connected objects (8-connectivity) per class.

    Objects smaller than ``min_area`` pixels are dropped (the small-annotation filter).
    """
    from skimage.measure import label as connected

    found: list[Instance] = []
    for class_id in np.unique(labels):
        if class_id == 0:
            continue
        components = connected(labels == class_id, connectivity=2)
        for k in range(1, int(components.max()) + 1):
            mask = components == k
            if mask.sum() >= max(min_area, 1):
                found.append(Instance(int(class_id), mask))
    return found


def classes_present(labels: np.ndarray, min_area: int = 0) -> set[int]:
    """Class ids with at least one object of ``min_area`` pixels or more in a (Y, X) label image."""
    if min_area <= 1:  # every labelled pixel belongs to an object of at least one pixel
        return {int(k) for k in np.unique(labels) if k}
    return {inst.class_id for inst in instances_from_labels(labels, min_area)}


def build_index(instance_classes: list[set[int]]) -> dict[int, list[int]]:
    """class id -> sorted sample indices, from the set of (filtered) instance classes per sample."""
    index: dict[int, list[int]] = {}
    for i, classes in enumerate(instance_classes):
        for class_id in classes:
            index.setdefault(int(class_id), []).append(i)
    return index


class ClassSubset:
    """A view of a dataset restricted to some of its classes (train on some, evaluate on others).

    Only the samples holding at least one indexed instance of a kept class remain (``index``
    refers to positions in this view); in them, pixels of every other class become 0 and those
    classes' instances are dropped. ``classes`` keeps only the given ids; ``augment`` follows the
    wrapped dataset.
    """

    def __init__(self, dataset: SegmentationDataset, class_ids):
        ids = [int(k) for k in class_ids]
        if not ids:
            raise ValueError("ClassSubset class_ids is empty: give at least one class id")
        unknown = sorted(set(ids) - set(dataset.classes))
        if unknown:
            raise ValueError(
                f"ClassSubset class ids {unknown} are not classes of the dataset (it has {sorted(dataset.classes)})"
            )
        self.dataset = dataset
        self.classes = {k: dataset.classes[k] for k in sorted(set(ids))}
        self.augment = bool(getattr(dataset, "augment", False))
        source_index = dataset.index
        #: positions in the wrapped dataset, in order
        self.sample_indices = sorted({i for k in self.classes for i in source_index.get(k, [])})
        position = {i: p for p, i in enumerate(self.sample_indices)}
        self.index = {k: [position[i] for i in source_index[k]] for k in self.classes if source_index.get(k)}
        self._kept = np.array(sorted(self.classes), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.sample_indices)

    def __getitem__(self, i: int) -> Sample:
        sample = self.dataset[self.sample_indices[i]]
        labels = np.where(np.isin(sample.labels, self._kept), sample.labels, 0).astype(np.int64)
        instances = [inst for inst in sample.instances if inst.class_id in self.classes]
        return Sample(image=sample.image, labels=labels, instances=instances, name=sample.name)

    def __repr__(self) -> str:
        return f"ClassSubset({self.dataset!r}, class_ids={sorted(self.classes)})"
