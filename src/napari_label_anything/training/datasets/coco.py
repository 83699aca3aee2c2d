"""COCO-format instance annotations (through ``pycocotools``), with the COCO-20i folds.

COCO-20i (the paper's benchmark) splits the 80 categories, taken in annotation-file order, into
4 folds: category index i belongs to fold ``i % 4``. A fold's 20 classes are its validation
classes; training uses the other 60. The published protocol trains on ``instances_train2014``
and validates on ``instances_val2014``: pass each file with the ``split`` it serves.

Annotations smaller than ``min_area`` (default 2 * 32 * 32 px, the official
``remove_small_annotations``) and crowd annotations are dropped entirely: they are neither
instances nor label pixels. Annotations of classes outside the split are not painted either, so
those objects are background, as in the official training.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .base import Instance, Sample, build_index

OFFICIAL_MIN_AREA = 2 * 32 * 32
SPLITS = ("train", "val")


class CocoDataset:
    """A COCO annotation file and its image folder as a segmentation dataset.

    Args:
        annotations: path to a COCO instances JSON file (or the already parsed dict).
        images: folder holding the images named by the file's ``file_name`` entries.
        fold: None for all categories, else the COCO-20i fold 0..folds-1.
        split: with a fold, "train" keeps the categories outside the fold, "val" the fold's own.
        min_area: annotations with a smaller ``area`` are dropped (0 keeps all).
        folds: number of folds (4 for COCO-20i).

    Global class ids are the COCO category ids, names from the file, in file order. Only images
    with at least one kept annotation are samples, in the file's image order. Nothing but the
    annotations is read at construction.

    Samples: image (Y, X, 3) or (Y, X) uint8 as stored, labels (Y, X) int64 category ids where
    later annotations overwrite earlier ones on overlap (file order), instances = one per kept
    annotation with its full (Y, X) bool mask, also where a later annotation covers it.
    """

    augment = False

    def __init__(
        self,
        annotations,
        images,
        fold: int | None = None,
        split: str = "train",
        min_area: float = OFFICIAL_MIN_AREA,
        folds: int = 4,
    ):
        if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
            raise ValueError(f"CocoDataset folds={folds!r}: must be an integer >= 2")
        if fold is not None and (
            isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < folds
        ):
            raise ValueError(f"CocoDataset fold={fold!r}: must be None or an integer 0..{folds - 1}")
        if split not in SPLITS:
            raise ValueError(f"CocoDataset split={split!r}: must be one of {SPLITS}")
        if (
            isinstance(min_area, bool)
            or not isinstance(min_area, (int, float, np.integer, np.floating))
            or min_area < 0
        ):
            raise ValueError(f"CocoDataset min_area={min_area!r}: must be a number >= 0")
        self.images = Path(images)
        if not self.images.is_dir():
            raise ValueError(f"CocoDataset images folder {self.images} does not exist")
        self.fold, self.split, self.min_area, self.folds = fold, split, float(min_area), int(folds)
        self.coco = _load_coco(annotations)
        self.source = annotations if isinstance(annotations, (str, os.PathLike)) else "<dict>"

        categories = self.coco.dataset.get("categories") or []
        if not categories:
            raise ValueError(f"{self.source}: no categories in the annotation file")
        self.all_classes = {int(c["id"]): str(c["name"]) for c in categories}
        chosen = [
            k for i, k in enumerate(self.all_classes) if fold is None or ((i % self.folds == fold) == (split == "val"))
        ]
        self.classes: dict[int, str] = {k: self.all_classes[k] for k in chosen}

        kept: dict[int, list[dict]] = {}
        for ann in self.coco.dataset.get("annotations", []):
            if ann.get("iscrowd", 0) or int(ann["category_id"]) not in self.classes:
                continue
            if self.min_area > 0 and self._area(ann) < self.min_area:
                continue
            kept.setdefault(int(ann["image_id"]), []).append(ann)
        self.image_ids = [int(img["id"]) for img in self.coco.dataset.get("images", []) if int(img["id"]) in kept]
        if not self.image_ids:
            raise ValueError(
                f"{self.source}: no image has a non-crowd annotation of at least {self.min_area:g} px "
                f"in the {len(self.classes)} selected classes (fold={fold}, split={split!r})"
            )
        self._annotations = kept
        self.index = build_index([{int(a["category_id"]) for a in kept[i]} for i in self.image_ids])

    def _area(self, ann: dict) -> float:
        if "area" in ann:
            return float(ann["area"])
        from pycocotools import mask as mask_utils

        return float(mask_utils.area(self.coco.annToRLE(ann)))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        return (
            f"CocoDataset({self.source!s}: {len(self)} images, {len(self.classes)} classes, "
            f"fold={self.fold}, split={self.split!r})"
        )

    def __getitem__(self, i: int) -> Sample:
        """Sample ``i``: the image as stored (uint8, (Y, X, 3) or (Y, X)), labels (Y, X) int64
        category ids, one instance per kept annotation."""
        from ...io.label_files import read_image

        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"CocoDataset index {i!r}: must be an integer")
        if not -len(self) <= i < len(self):
            raise IndexError(f"CocoDataset index {i} out of range for {len(self)} images")
        image_id = self.image_ids[int(i)]
        record = self.coco.imgs[image_id]
        path = self.images / record["file_name"]
        if not path.exists():  # 2014 names (COCO_val2014_0000...) next to 2017 files (0000...)
            path = self.images / record["file_name"].rsplit("_", 1)[-1]
        image = read_image(path)
        if image.ndim == 3 and image.shape[-1] == 4:
            image = image[..., :3]
        expected = (int(record["height"]), int(record["width"]))
        if image.shape[:2] != expected:
            raise ValueError(f"{path} is {image.shape[:2]} but the annotation file says {expected} (height, width)")
        labels = np.zeros(expected, dtype=np.int64)
        instances = []
        for ann in self._annotations[image_id]:
            with warnings.catch_warnings():
                # pycocotools' decoder trips NumPy 2's __array__(copy=) deprecation; harmless
                warnings.simplefilter("ignore", DeprecationWarning)
                mask = self.coco.annToMask(ann).astype(bool)
            labels[mask] = int(ann["category_id"])
            instances.append(Instance(int(ann["category_id"]), mask))
        return Sample(image=image, labels=labels, instances=instances, name=f"{record['file_name']} (id {image_id})")


def _load_coco(annotations):
    """A pycocotools COCO object from a path or a dict, without its console chatter."""
    from pycocotools.coco import COCO

    if isinstance(annotations, (str, os.PathLike)):
        path = Path(annotations)
        if not path.is_file():
            raise ValueError(f"CocoDataset annotations file {path} does not exist")
        try:
            dataset = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a COCO annotation file (not JSON: {err})") from None
    elif isinstance(annotations, dict):
        dataset = annotations
    else:
        raise TypeError(f"CocoDataset annotations must be a path or a dict, got {type(annotations).__name__}")
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise ValueError(f"{annotations!s:.200}: not a COCO annotation file (no 'images' list)")
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
