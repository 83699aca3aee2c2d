"""Datasets from config specs, folders or ``.episode`` paths, merged into one class space.

A spec is ``{"kind": "synthetic" | "folder" | "episodes" | "coco", ...}``: the other keys are
the dataset class's own arguments, except ``classes: [ids]``, which keeps only those classes
(``ClassSubset``). Several datasets are merged by class **name**: two folders that both label
"nucleus" train one class "nucleus", whatever id each gave it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import check_dataset_spec
from .datasets.base import Instance, Sample

_CLASSES_BY_KIND = {
    "synthetic": ("synthetic", "SyntheticDataset"),
    "folder": ("folder", "FolderDataset"),
    "episodes": ("episodes", "EpisodeFilesDataset"),
    "coco": ("coco", "CocoDataset"),
}


def dataset_from_spec(spec: dict[str, Any], option: str = "data"):
    """One dataset from a spec (see the module docstring).

    Raises:
        ValueError: an unknown kind, or arguments the dataset class refuses (named in the message).
    """
    import importlib

    check_dataset_spec(spec, option)
    arguments = {k: v for k, v in spec.items() if k not in ("kind", "classes")}
    module_name, class_name = _CLASSES_BY_KIND[spec["kind"]]
    module = importlib.import_module(f".datasets.{module_name}", __package__)
    dataset_class = getattr(module, class_name)
    try:
        dataset = dataset_class(**arguments)
    except TypeError as err:
        kind = spec["kind"]
        raise ValueError(f"{option}: {kind} dataset arguments {sorted(arguments)} were refused: {err}") from None
    if spec.get("classes") is not None:
        from .datasets.base import ClassSubset

        dataset = ClassSubset(dataset, spec["classes"])
    return dataset


def datasets_from_specs(specs: Sequence[dict[str, Any]], option: str = "data"):
    """The datasets of a list of specs as one dataset (merged when there are several), or None."""
    parts = [dataset_from_spec(spec, option) for spec in specs]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else MergedDataset(parts)


def as_dataset(data: Any):
    """``finetune``'s ``data``: a dataset, a folder, ``.episode`` file(s), or a list of these.

    Folders become ``FolderDataset(folder)``; ``.episode`` files are read together by one
    ``EpisodeFilesDataset``. Several items are merged by class name.
    """
    items = list(data) if isinstance(data, list | tuple) else [data]
    if not items:
        raise ValueError("data is empty: give a dataset, a folder of images and labels, or .episode files")
    parts, episode_files = [], []
    for item in items:
        if isinstance(item, str | os.PathLike):
            path = Path(item).expanduser()
            if path.suffix == ".episode":
                episode_files.append(str(path))
            elif path.is_dir():
                from .datasets.folder import FolderDataset

                parts.append(FolderDataset(path))
            else:
                raise ValueError(f"{path} is neither a folder nor a .episode file")
        elif hasattr(item, "classes") and hasattr(item, "index") and hasattr(item, "__getitem__"):
            parts.append(item)
        else:
            raise TypeError(
                f"data items must be datasets, folders or .episode paths, got {type(item).__name__}: {item!r}"
            )
    if episode_files:
        from .datasets.episodes import EpisodeFilesDataset

        parts.append(EpisodeFilesDataset(episode_files))
    return parts[0] if len(parts) == 1 else MergedDataset(parts)


class MergedDataset:
    """Several datasets read as one; classes with equal names share one new id (from 1).

    ``augment`` is each part's own: a sample is augmented when its part asks for it, which the
    sampler cannot see per sample, so the merged flag is True when any part's is.
    """

    def __init__(self, datasets: Sequence) -> None:
        if not datasets:
            raise ValueError("MergedDataset needs at least one dataset")
        self.parts = list(datasets)
        names: dict[str, int] = {}
        self._maps: list[np.ndarray] = []
        for part in self.parts:
            largest = max(part.classes, default=0)
            table = np.zeros(largest + 1, dtype=np.int64)
            for old, name in part.classes.items():
                table[old] = names.setdefault(str(name), len(names) + 1)
            self._maps.append(table)
        self.classes = {new: name for name, new in names.items()}
        self._starts = np.cumsum([0] + [len(part) for part in self.parts])
        self.index: dict[int, list[int]] = {}
        for p, part in enumerate(self.parts):
            for old, found in part.index.items():
                self.index.setdefault(int(self._maps[p][old]), []).extend(int(i + self._starts[p]) for i in found)
        self.index = {k: sorted(v) for k, v in sorted(self.index.items())}
        self.augment = any(bool(getattr(part, "augment", False)) for part in self.parts)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= int(i) < len(self):
            raise IndexError(f"sample {i} out of range 0..{len(self) - 1}")
        p = int(np.searchsorted(self._starts, int(i), side="right") - 1)
        sample = self.parts[p][int(i - self._starts[p])]
        table = self._maps[p]
        labels = np.where(sample.labels < len(table), table[np.clip(sample.labels, 0, len(table) - 1)], 0)
        instances = [Instance(int(table[inst.class_id]), inst.mask) for inst in sample.instances]
        return Sample(sample.image, labels.astype(np.int64), instances, sample.name)

    def __repr__(self) -> str:
        return f"MergedDataset({self.parts!r})"
