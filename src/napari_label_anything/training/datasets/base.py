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


def build_index(instance_classes: list[set[int]]) -> dict[int, list[int]]:
    """class id -> sorted sample indices, from the set of (filtered) instance classes per sample."""
    index: dict[int, list[int]] = {}
    for i, classes in enumerate(instance_classes):
        for class_id in classes:
            index.setdefault(int(class_id), []).append(i)
    return index
