"""Objects and their measurements: class labels -> one label per object -> a table and a CSV.

A class label image (0 background, k = class k, as every segmenter gives it) says what each
pixel is, not which object it belongs to. ``split_objects`` numbers the objects: the connected
components of each class, and, with ``watershed`` on, touching objects of one class split
apart along the valleys of their distance transform (a marker per local maximum, at least
``min_distance`` pixels apart). ``measure_objects`` turns the objects into a table, one row per
object (``skimage.measure.regionprops_table``), and ``write_measurements`` writes it as CSV.
2D images and 3D stacks alike; all geometry is scikit-image's and SciPy's.
``write_objects_outputs`` is what ``predict --objects`` writes beside each output.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io.label_files import atomic_write, image_base_name

DEFAULT_MIN_DISTANCE = 5  # pixels between two objects' centres for the watershed to keep both
DEFAULT_PROMINENCE = 2.0  # pixels a centre must stand above the neck to its neighbour (ragged edges)
OBJECTS_SUFFIX = "_objects.tif"
MEASUREMENTS_SUFFIX = "_objects.csv"
OBJECTS_DTYPE = np.uint32


def _axes(ndim: int) -> tuple[str, ...]:
    return ("z", "y", "x")[3 - ndim :]


def _check_labels(labels: Any, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"{what} must be a 2D image (Y, X) or a 3D stack (Z, Y, X), got shape {labels.shape}")
    if labels.dtype == np.bool_:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what} must hold integer labels, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{what} must hold labels >= 0, got {labels.min()}")
    return labels


def split_objects(
    labels: Any,
    watershed: bool = True,
    min_distance: int = DEFAULT_MIN_DISTANCE,
    min_size: int = 0,
    spacing: Sequence[float] | None = None,
    prominence: float = DEFAULT_PROMINENCE,
) -> np.ndarray:
    """One label per object: each class of ``labels`` split into its objects.

    Args:
        labels: (Y, X) or (Z, Y, X) class labels, any integer dtype (or bool): 0 background,
            k class k.
        watershed: split touching objects of one class (a watershed of the distance transform
            from its local maxima); False: connected components only.
        min_distance: the least distance in pixels between the centres of two touching objects
            that the watershed keeps apart; larger values split less.
        prominence: how much further from the edge (pixels of the distance transform) a centre
            must lie than the narrowest point between it and a neighbour for the two to be split
            (the bumps of a ragged outline are not objects); larger values split less.
        min_size: objects of fewer pixels (voxels) are dropped (0: none).
        spacing: the pixel size along each axis (e.g. (z step, y, x) of an anisotropic stack),
            so that the distance transform measures true distances; default 1 on every axis.

    Returns:
        uint32 instance labels of ``labels``' shape: 0 background, objects 1..n numbered class
        by class (class 1's objects first).
    """
    from skimage.segmentation import relabel_sequential

    labels = _check_labels(labels, "labels")
    if int(min_distance) < 1:
        raise ValueError(f"min_distance must be at least 1 pixel, got {min_distance}")
    if prominence < 0:
        raise ValueError(f"prominence must be 0 or more pixels, got {prominence}")
    if spacing is not None and len(spacing) != labels.ndim:
        raise ValueError(f"spacing needs one value per axis of the {labels.ndim}D labels, got {tuple(spacing)}")
    instances = np.zeros(labels.shape, dtype=OBJECTS_DTYPE)
    count = 0
    for k in np.unique(labels):
        if k == 0:
            continue
        mask = labels == k
        parts = _split_class(mask, watershed, int(min_distance), spacing, float(prominence))
        inside = parts > 0
        instances[inside] = parts[inside] + count
        count += int(parts.max())
    if min_size > 0 and count:
        sizes = np.bincount(instances.ravel(), minlength=count + 1)
        small = np.flatnonzero(sizes < min_size)
        instances[np.isin(instances, small[small > 0])] = 0
    return relabel_sequential(instances)[0].astype(OBJECTS_DTYPE, copy=False)


def _split_class(mask: np.ndarray, watershed: bool, min_distance: int, spacing, prominence: float) -> np.ndarray:
    """Labels 1..m of the objects of one class's ``mask`` (full connectivity)."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.measure import label
    from skimage.morphology import h_maxima
    from skimage.segmentation import relabel_sequential
    from skimage.segmentation import watershed as flood

    components = label(mask, connectivity=mask.ndim)
    if not watershed or components.max() == 0:
        return components
    distance = ndimage.distance_transform_edt(mask, sampling=spacing)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    seeds = np.zeros(mask.shape, dtype=bool)
    seeds[tuple(peaks.T)] = True
    if prominence > 0:
        seeds &= h_maxima(distance, prominence).astype(bool)
    markers = label(seeds, connectivity=mask.ndim)  # a plateau's peaks are one marker
    split = flood(-distance, markers, mask=mask)
    unseeded = mask & (split == 0)  # a component too thin to hold a peak keeps its own label
    if unseeded.any():
        split[unseeded] = components[unseeded] + split.max()
    return relabel_sequential(split)[0]


def measure_objects(
    instances: Any,
    classes_labels: Any,
    intensity: Any = None,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
) -> dict[str, np.ndarray]:
    """One row per object of ``instances``: its class, size, mean intensity, centroid and box.

    Args:
        instances: (Y, X) or (Z, Y, X) object labels (``split_objects``), 0 background.
        classes_labels: the class labels of the same shape; every object must lie in one class.
        intensity: optional image of the same shape, or with a trailing channel axis
            (Y, X, C) / (Z, Y, X, C), for the mean intensity of each object.
        class_names: the names of classes 1..N (an ``Episode``'s classes), or {k: name};
            classes without a name are named by their number.

    Returns:
        Columns (name -> 1D array, one entry per object, by label): ``label``; ``class_id``;
        ``class``; ``area`` (pixels, 2D) or ``volume`` (voxels, 3D); ``mean_intensity`` (or
        ``mean_intensity_<c>`` per channel) when ``intensity`` is given; ``centroid_<axis>``
        (pixels); ``bbox_min_<axis>`` and ``bbox_max_<axis>`` (the box's first pixel and one past
        its last), axes z, y, x. ``pandas.DataFrame(table)`` makes a data frame of it.

    Raises:
        ValueError: for shapes that differ, or an object spanning two classes.
    """
    from scipy import ndimage
    from skimage.measure import regionprops_table

    instances = _check_labels(instances, "instances")
    classes_labels = _check_labels(classes_labels, "classes_labels")
    if classes_labels.shape != instances.shape:
        raise ValueError(f"classes_labels has shape {classes_labels.shape}; the instances have {instances.shape}")
    properties = ["label", "area", "centroid", "bbox"]
    if intensity is not None:
        intensity = np.asarray(intensity)
        if intensity.shape[: instances.ndim] != instances.shape or intensity.ndim > instances.ndim + 1:
            raise ValueError(
                f"intensity has shape {intensity.shape}; the instances need {instances.shape} (plus channels)"
            )
        properties.append("intensity_mean")
    raw = regionprops_table(instances, intensity_image=intensity, properties=properties)
    ids = raw["label"].astype(np.int64)
    lowest = np.asarray(ndimage.minimum(classes_labels, instances, ids), dtype=np.int64).reshape(-1)
    highest = np.asarray(ndimage.maximum(classes_labels, instances, ids), dtype=np.int64).reshape(-1)
    if np.any(lowest != highest):
        bad = int(ids[np.flatnonzero(lowest != highest)[0]])
        raise ValueError(f"object {bad} spans more than one class: split the class labels with split_objects")
    names = _names(class_names)
    axes = _axes(instances.ndim)
    table: dict[str, np.ndarray] = {
        "label": ids,
        "class_id": lowest,
        "class": np.array([names.get(int(k), str(int(k))) for k in lowest], dtype=object),
        "area" if instances.ndim == 2 else "volume": raw["area"].astype(np.int64),
    }
    if intensity is not None:
        means = sorted(key for key in raw if key.startswith("intensity_mean"))
        for key in means:
            channel = key.partition("-")[2]
            table[f"mean_intensity_{channel}" if channel else "mean_intensity"] = raw[key].astype(np.float64)
    for i, axis in enumerate(axes):
        table[f"centroid_{axis}"] = raw[f"centroid-{i}"].astype(np.float64)
    for i, axis in enumerate(axes):
        table[f"bbox_min_{axis}"] = raw[f"bbox-{i}"].astype(np.int64)
    for i, axis in enumerate(axes):
        table[f"bbox_max_{axis}"] = raw[f"bbox-{i + len(axes)}"].astype(np.int64)
    return table


def _names(class_names: Sequence[str] | Mapping[int, str] | None) -> dict[int, str]:
    if class_names is None:
        return {}
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items()}
    return {k: str(name) for k, name in enumerate(class_names, start=1)}


def write_measurements(table: Mapping[str, Sequence], path: str | os.PathLike) -> Path:
    """Write a table (``measure_objects``) as CSV, a header row then one row per object, atomically.

    Floats keep their full precision; the file is replaced at once when complete.
    """
    path = Path(path)
    columns = list(table)
    lengths = {len(table[c]) for c in columns}
    if len(lengths) > 1:
        raise ValueError(f"the table's columns differ in length: { {c: len(table[c]) for c in columns} }")
    rows = zip(*(np.asarray(table[c]).tolist() for c in columns), strict=True) if columns else iter(())
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as partial, open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def write_objects(path: str | os.PathLike, instances: np.ndarray, extra: dict[str, Any] | None = None) -> Path:
    """Write instance labels as a TIFF (uint32, zlib), atomically; ``extra`` goes to its JSON metadata."""
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"objects": True, **(extra or {})}
    with atomic_write(path) as partial:
        tifffile.imwrite(
            partial, np.asarray(instances, dtype=OBJECTS_DTYPE), photometric="minisblack",
            metadata={"napari_label_anything": json.dumps(metadata)}, compression="zlib",
        )  # fmt: skip
    return path


def objects_paths(labels_path: str | os.PathLike) -> tuple[Path, Path]:
    """The objects TIFF and CSV beside a labels output: ``x_labels.tif`` (or ``x_labels.ome.zarr``)
    -> ``x_objects.tif``, ``x_objects.csv``."""
    labels_path = Path(labels_path)
    base = image_base_name(labels_path)
    base = base[: -len("_labels")] if base.endswith("_labels") and len(base) > len("_labels") else base
    return labels_path.parent / f"{base}{OBJECTS_SUFFIX}", labels_path.parent / f"{base}{MEASUREMENTS_SUFFIX}"


def write_objects_outputs(
    labels_path: str | os.PathLike,
    labels: Any,
    intensity: Any = None,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Split ``labels`` into objects (default settings), measure them, and write both beside
    ``labels_path`` (``objects_paths``); returns the TIFF and CSV paths. The two files are
    computed first and written after, each atomically."""
    labels = np.asarray(labels)
    instances = split_objects(labels)
    table = measure_objects(instances, labels, None if intensity is None else np.asarray(intensity), class_names)
    tif, table_path = objects_paths(labels_path)
    write_objects(tif, instances, {"labels": str(labels_path), **(metadata or {})})
    write_measurements(table, table_path)
    return tif, table_path
