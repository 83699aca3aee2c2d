"""Datasets that feed training and evaluation episodes (see ``base.SegmentationDataset``)."""

from .base import ClassSubset, Instance, Sample, SegmentationDataset, build_index, instances_from_labels
from .episodes import EpisodeFilesDataset
from .folder import FolderDataset
from .synthetic import SyntheticDataset

__all__ = [
    "ClassSubset",
    "EpisodeFilesDataset",
    "FolderDataset",
    "Instance",
    "Sample",
    "SegmentationDataset",
    "SyntheticDataset",
    "build_index",
    "instances_from_labels",
]
