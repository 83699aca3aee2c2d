"""Datasets that feed training and evaluation episodes (see ``base.SegmentationDataset``)."""

from .base import Instance, Sample, SegmentationDataset, build_index, instances_from_labels

__all__ = ["Instance", "Sample", "SegmentationDataset", "build_index", "instances_from_labels"]
