"""Datasets that feed training and evaluation episodes (see ``base.SegmentationDataset``)."""

from .base import ClassSubset, Instance, Sample, SegmentationDataset, build_index, instances_from_labels
from .coco import CocoDataset
from .episodes import EpisodeFilesDataset
from .folder import FolderDataset
from .synthetic import SyntheticDataset

__all__ = [
    "ClassSubset",
    "CocoDataset",
    "EpisodeFilesDataset",
    "FolderDataset",
    "Instance",
    "Sample",
    "SegmentationDataset",
    "SyntheticDataset",
    "build_index",
    "instances_from_labels",
]
