"""Episodes saved from the plugin (``.episode`` files) as training data.

A support whose mask prompts (its painted ``labels``) are non-empty is treated as a densely
labelled sample: every painted pixel is an annotation and unpainted pixels count as background.
That is how the plugin's users paint corrected planes, so each such support can serve as the
query for the others. Supports prompted only with points or boxes say too little about the
pixels around them to be a target, so they are skipped (counted in ``skipped``); points and
boxes beside painted labels are ignored for the same reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...labels import BACKGROUND
from .base import Sample, build_index, classes_present, instances_from_labels


class EpisodeFilesDataset:
    """The painted supports of one or more ``.episode`` files, with classes merged by name.

    Args:
        paths: one path or an iterable of paths to files written by ``Episode.save``.
        min_area: connected objects with fewer pixels are not instances (their pixels stay in
            the labels).
        augment: whether training should augment the samples (``augment.augment``).

    Global class ids follow first appearance: files in the given order, and within a file the
    episode's class order, counting only classes painted in a usable support. Samples: image
    (Y, X) or (Y, X, 3) as stored (alpha dropped), labels (Y, X) int64 global ids, instances
    = connected objects per class. The supports are kept in memory (episode files are small
    by nature: a user's hand-made prompts).

    Attributes:
        skipped: how many supports were left out because they had no painted pixels.

    Raises:
        FileNotFoundError / ValueError: from ``Episode.load`` for a missing or damaged file.
        ValueError: no paths, or no support with painted labels in any file.
    """

    def __init__(self, paths, min_area: int = 0, augment: bool = True):
        from ...episode import Episode

        if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 0:
            raise ValueError(f"EpisodeFilesDataset min_area={min_area!r}: must be an integer >= 0")
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("EpisodeFilesDataset needs at least one .episode file")
        self.min_area = int(min_area)
        self.augment = bool(augment)
        self.skipped = 0
        ids_by_name: dict[str, int] = {}
        self._samples: list[tuple[np.ndarray, np.ndarray, str]] = []  # (image, global labels, name)
        for path in self.paths:
            episode = Episode.load(path)
            usable = []
            for number, support in enumerate(episode.supports, start=1):
                if support.labels is None or not np.any(support.labels):
                    self.skipped += 1
                    continue
                usable.append((number, support))
            painted = set().union(*({int(v) for v in np.unique(s.labels) if v} for _, s in usable)) if usable else set()
            lookup = np.zeros(episode.n_classes + 1, dtype=np.int64)
            for k, name in enumerate(episode.classes, start=1):
                # The widget saves background scribbles as a last class named "background": label 0.
                if k in painted and name.strip().lower() != BACKGROUND:
                    lookup[k] = ids_by_name.setdefault(name, len(ids_by_name) + 1)
            for number, support in usable:
                image = np.asarray(support.image)
                if image.ndim == 3 and image.shape[-1] == 4:
                    image = image[..., :3]
                name = f"{path.name} support {number}" + (f" ({support.name})" if support.name else "")
                self._samples.append((image, lookup[np.asarray(support.labels, dtype=np.int64)], name))
        if not self._samples:
            files = ", ".join(p.name for p in self.paths)
            raise ValueError(
                f"no usable support in {files}: all {self.skipped} support(s) have only points or boxes; "
                f"training needs supports with painted labels (mask prompts)"
            )
        self.classes: dict[int, str] = {k: name for name, k in ids_by_name.items()}
        self.index = build_index([classes_present(labels, self.min_area) for _, labels, _ in self._samples])

    def __len__(self) -> int:
        return len(self._samples)

    def __repr__(self) -> str:
        return f"EpisodeFilesDataset({len(self.paths)} file(s): {len(self)} samples, {len(self.classes)} classes)"

    def __getitem__(self, i: int) -> Sample:
        """Sample ``i``: image (Y, X[, 3]) as stored, labels (Y, X) int64 global ids, instances."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"EpisodeFilesDataset index {i!r}: must be an integer")
        if not -len(self) <= i < len(self):
            raise IndexError(f"EpisodeFilesDataset index {i} out of range for {len(self)} samples")
        image, labels, name = self._samples[int(i)]
        return Sample(
            image=image, labels=labels.copy(), instances=instances_from_labels(labels, self.min_area), name=name
        )
