"""Images with integer label images on disk, as users have them and as the plugin exports them.

Accepted layouts (images: anything ``io.label_files.read_image`` reads; labels: integer images):

* a folder with an image subfolder (``images/``, ``image/``, ``imgs/`` or ``img/``) and a label
  subfolder (``labels/``, ``label/``, ``masks/`` or ``mask/``; any letter case), files paired by
  base name (``images/a.png`` with ``labels/a.tif``, ``labels/a_labels.tif`` or ``mask/a_mask.png``);
* one folder holding ``x.tif`` beside ``x_labels.tif``: the plugin's export naming
  (``<name>_labels.tif`` from the widget, the demo and ``predict``);
* an image folder plus a separate labels folder (``labels=`` argument), e.g. the output folder
  of ``napari-label-anything predict`` after corrections;
* a single image file with its labels file (``labels=``, or ``<base>_labels.tif`` beside it).

A pair is one sample when the labels are (Y, X), or a stack whose labelled planes are samples
when the labels are (Z, Y, X) and the image (Z, Y, X[, 3]). Planes without any labelled pixel
are left out (they carry no annotation to learn from).

Class names come from ``classes``, else from the class names the plugin writes into its label
TIFFs (``io.label_files.write_labels``), else "class k". With names from the files, classes are matched
by name across files, so two exports whose class lists differ still agree on what each id means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...io.label_files import IMAGE_SUFFIXES, TIFF_SUFFIXES, image_base_name, read_image, read_label_classes
from .base import Sample, build_index, classes_present, instances_from_labels

LABELS_SUFFIX = "_labels"
IMAGE_FOLDERS = ("images", "image", "imgs", "img")  # subfolder pairs, in this order of preference
LABEL_FOLDERS = ("labels", "label", "masks", "mask")
LABEL_FILE_SUFFIXES = (LABELS_SUFFIX, "_label", "_masks", "_mask")  # what a label file's name may add in them
IGNORED_SUFFIXES = ("_overlay", "_support")  # pictures the demo writes beside its labels
MAX_NAMED = 8  # how many offending files an error message lists


class FolderDataset:
    """Densely labelled images from disk (see the module docstring for the layouts).

    Args:
        path: a folder (layouts above) or one image file.
        labels: optional labels folder (for an image folder) or labels file (for an image file).
        classes: class names: a list (ids 1, 2, ...) or {id: name}; every label value in the
            files must be one of these ids. None: names from the label TIFFs' metadata.
        min_area: connected objects with fewer pixels are not instances (small-annotation
            filter); their pixels stay in the labels.
        augment: whether training should augment the samples (``augment.augment``).

    Samples: image (Y, X) or (Y, X, 3) in the file's dtype (alpha dropped), labels (Y, X) int64
    global ids, instances = connected objects per class (8-connectivity) of at least ``min_area``.

    Raises:
        ValueError: an empty folder, files without a partner (named), an image whose shape does
            not match its labels, labels that are not non-negative integers, unknown class ids.
    """

    def __init__(self, path, labels=None, classes=None, min_area: int = 0, augment: bool = True):
        if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 0:
            raise ValueError(f"FolderDataset min_area={min_area!r}: must be an integer >= 0")
        self.path = Path(path)
        self.min_area = int(min_area)
        self.augment = bool(augment)
        pairs = _find_pairs(self.path, None if labels is None else Path(labels))
        given = _given_classes(classes)

        names: dict[int, str] = dict(given) if given is not None else {}
        ids_by_name = {name: k for k, name in names.items()}
        self._files: list[tuple[Path, np.ndarray]] = []  # (image path, labels with global ids)
        self._planes: list[tuple[int, int | None]] = []  # (file number, plane or None for 2D)
        present: list[set[int]] = []
        for image_path, labels_path in pairs:
            label_image = _read_labels(labels_path)
            _check_shapes(image_path, _image_shape(image_path), labels_path, label_image.shape)
            if given is not None:
                unknown = sorted(set(np.unique(label_image).tolist()) - set(given) - {0})
                if unknown:
                    raise ValueError(
                        f"{labels_path} holds label values {unknown[:MAX_NAMED]} that are not among the given "
                        f"classes {sorted(given)}"
                    )
            else:
                label_image = _to_global_ids(label_image, _file_class_names(labels_path), names, ids_by_name)
            label_image = label_image.astype(np.min_scalar_type(max(int(label_image.max()), 1)), copy=False)
            number = len(self._files)
            self._files.append((image_path, label_image))
            planes = [None] if label_image.ndim == 2 else range(label_image.shape[0])
            for plane in planes:
                plane_labels = label_image if plane is None else label_image[plane]
                if not plane_labels.any():
                    continue
                self._planes.append((number, plane))
                present.append(classes_present(plane_labels, self.min_area))
        if not self._planes:
            raise ValueError(f"{self.path}: no labelled pixels in any of the {len(pairs)} label image(s)")
        if given is None:
            used = set().union(*present) if present else set()
            names = {k: name for k, name in names.items() if k in used}
        self.classes: dict[int, str] = dict(sorted(names.items()))
        self.index = build_index(present)
        self._cached: tuple[Path, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._planes)

    def __repr__(self) -> str:
        return f"FolderDataset({str(self.path)!r}: {len(self)} samples, {len(self.classes)} classes)"

    def _image(self, path: Path) -> np.ndarray:
        # Consecutive planes of one stack are read together; keep only the last file.
        if self._cached is None or self._cached[0] != path:
            self._cached = (path, read_image(path))
        return self._cached[1]

    def __getitem__(self, i: int) -> Sample:
        """Sample ``i``: image (Y, X[, 3]) in the file's dtype, labels (Y, X) int64, instances."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"FolderDataset index {i!r}: must be an integer")
        if not -len(self) <= i < len(self):
            raise IndexError(f"FolderDataset index {i} out of range for {len(self)} samples")
        number, plane = self._planes[int(i)]
        image_path, label_image = self._files[number]
        image = self._image(image_path)
        if plane is not None:
            image = image[plane]
        if image.ndim == 3 and image.shape[-1] == 4:
            image = image[..., :3]
        labels = (label_image if plane is None else label_image[plane]).astype(np.int64)
        name = image_path.name if plane is None else f"{image_path.name} plane {plane}"
        return Sample(
            image=np.asarray(image), labels=labels, instances=instances_from_labels(labels, self.min_area), name=name
        )


def _given_classes(classes) -> dict[int, str] | None:
    if classes is None:
        return None
    if isinstance(classes, dict):
        bad = [k for k in classes if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
        if bad:
            raise ValueError(f"FolderDataset classes: ids {bad} are not integers >= 1 (0 is the background)")
        return {int(k): str(v) for k, v in classes.items()}
    if isinstance(classes, str) or not hasattr(classes, "__iter__"):
        raise TypeError(f"FolderDataset classes must be a list of names or a {{id: name}} dict, got {classes!r}")
    return {k: str(name) for k, name in enumerate(classes, start=1)}


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image(p))


def _by_base_name(files: list[Path], strip: tuple[str, ...], role: str, keep=frozenset()) -> dict[str, Path]:
    """{base name: file}; a base ending in one of ``strip`` loses it, unless the whole base is in ``keep``."""
    found: dict[str, Path] = {}
    for path in files:
        base = image_base_name(path)
        suffix = next((s for s in strip if base.endswith(s) and len(base) > len(s)), None)
        if suffix and base not in keep:
            base = base[: -len(suffix)]
        if base in found:
            raise ValueError(f"two {role} files share the base name {base!r}: {found[base].name} and {path.name}")
        found[base] = path
    return found


def _pair(
    images: list[Path], labels: list[Path], where: Path, strip: tuple[str, ...] = (LABELS_SUFFIX,)
) -> list[tuple[Path, Path]]:
    image_by_base = _by_base_name(images, (), "image")
    labels_by_base = _by_base_name(labels, strip, "label", keep=set(image_by_base))
    lonely_images = sorted(p.name for b, p in image_by_base.items() if b not in labels_by_base)
    lonely_labels = sorted(p.name for b, p in labels_by_base.items() if b not in image_by_base)
    if lonely_images or lonely_labels:
        parts = []
        if lonely_images:
            parts.append(f"images without labels: {_listing(lonely_images)}")
        if lonely_labels:
            parts.append(f"labels without an image: {_listing(lonely_labels)}")
        raise ValueError(f"{where}: unpaired files ({'; '.join(parts)}); pair them by base name (x.tif + x_labels.tif)")
    return [(image_by_base[b], labels_by_base[b]) for b in sorted(image_by_base)]


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return ", ".join(names[:MAX_NAMED]) + more


def _find_pairs(path: Path, labels: Path | None) -> list[tuple[Path, Path]]:
    if not path.exists():
        raise ValueError(f"FolderDataset path {path} does not exist")
    if labels is not None and not labels.exists():
        raise ValueError(f"FolderDataset labels {labels} does not exist")
    if path.is_file():
        if labels is None:
            base = image_base_name(path)
            beside = [path.with_name(f"{base}{LABELS_SUFFIX}{s}") for s in (".tif", ".tiff", ".png")]
            labels = next((p for p in beside if p.is_file()), None)
            if labels is None:
                raise ValueError(f"no labels for {path}: expected {beside[0].name} beside it, or pass labels=")
        elif not labels.is_file():
            raise ValueError(f"FolderDataset: image file {path} needs a labels file, got the folder {labels}")
        return [(path, labels)]
    strip: tuple[str, ...] = (LABELS_SUFFIX,)
    if labels is not None:
        if not labels.is_dir():
            raise ValueError(f"FolderDataset: image folder {path} needs a labels folder, got the file {labels}")
        images, label_files = _images_in(path), _images_in(labels)
    elif (folders := _subfolders(path)) is not None:
        images, label_files, strip = _images_in(folders[0]), _images_in(folders[1]), LABEL_FILE_SUFFIXES
    else:
        everything = [p for p in _images_in(path) if not image_base_name(p).endswith(IGNORED_SUFFIXES)]
        label_files = [p for p in everything if image_base_name(p).endswith(LABELS_SUFFIX)]
        images = [p for p in everything if p not in label_files]
    if not images and not label_files:
        raise ValueError(
            f"{path}: no image files found (looked for {', '.join(IMAGE_SUFFIXES)} as images/ + labels/ "
            "(or img/ + mask/ ...), or x.tif beside x_labels.tif)"
        )
    return _pair(images, label_files, path, strip)


def _subfolders(path: Path) -> tuple[Path, Path] | None:
    """The first image subfolder and label subfolder of ``path`` (``IMAGE_FOLDERS``,
    ``LABEL_FOLDERS``, any letter case), or None without both."""
    found = {p.name.lower(): p for p in sorted(path.iterdir()) if p.is_dir()}
    image = next((found[n] for n in IMAGE_FOLDERS if n in found), None)
    label = next((found[n] for n in LABEL_FOLDERS if n in found), None)
    return (image, label) if image is not None and label is not None else None


def _read_labels(path: Path) -> np.ndarray:
    """A label image as a non-negative integer array (integral floats and bools accepted)."""
    labels = read_image(path)
    if labels.dtype == np.bool_:
        return labels.astype(np.uint8)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError(
                f"{path}: labels must be integers (class ids), got non-integer values of dtype {labels.dtype}"
            )
        if labels.size and labels.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{path}: label values up to {labels.max()} do not fit int64")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "ui":
        raise ValueError(f"{path}: labels must be an integer image (class ids), got dtype {labels.dtype}")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise ValueError(f"{path}: labels must be >= 0 (0 = background), found {int(labels.min())}")
    return labels


def _image_shape(path: Path) -> tuple[int, ...]:
    """The array shape ``read_image`` would return, from the file header."""
    from ...io.image_reader import probe_image

    return probe_image(path, decode=False).shape


def _check_shapes(image_path: Path, image_shape: tuple, labels_path: Path, labels_shape: tuple) -> None:
    spatial = len(labels_shape)
    fits = (
        spatial in (2, 3)
        and image_shape[:spatial] == labels_shape
        and (len(image_shape) == spatial or (len(image_shape) == spatial + 1 and image_shape[-1] in (3, 4)))
    )
    if not fits:
        raise ValueError(
            f"shape mismatch: image {image_path.name} is {image_shape} but labels {labels_path.name} are "
            f"{labels_shape}; labels must be (Y, X) for a (Y, X[, 3]) image or (Z, Y, X) for a (Z, Y, X[, 3]) stack"
        )


def _file_class_names(path: Path) -> dict[int, str]:
    if not path.name.lower().endswith(TIFF_SUFFIXES):
        return {}
    try:
        stored = read_label_classes(path)
    except (ValueError, KeyError, TypeError):  # foreign metadata under our key: treat as unnamed
        return {}
    return {k: name for k, name in stored.items() if k != 0}


def _to_global_ids(labels: np.ndarray, file_names: dict[int, str], names: dict[int, str], ids_by_name: dict[str, int]):
    """Map a file's label values to dataset-wide ids by class name, registering new names.

    Names are registered in the file's listed order (so ids listed as 1..n stay 1..n when every
    file agrees); values the file does not name are called "class k".
    """
    values = [int(v) for v in np.unique(labels) if v]
    for value in [*sorted(file_names), *values]:
        name = file_names.get(value, f"class {value}")
        if name not in ids_by_name:
            new_id = value if value not in names else max(names) + 1
            names[new_id] = name
            ids_by_name[name] = new_id
    lookup = {v: ids_by_name[file_names.get(v, f"class {v}")] for v in values}
    if all(k == v for k, v in lookup.items()):
        return labels
    unique, inverse = np.unique(labels, return_inverse=True)
    mapped = np.array([lookup.get(int(v), 0) for v in unique], dtype=np.int64)
    return mapped[inverse].reshape(labels.shape)
