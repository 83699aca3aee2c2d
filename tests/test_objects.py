"""Objects and measurements (objects.py): class labels split into objects, measured, written as CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

import napari_label_anything as nla
from napari_label_anything import objects


def discs(shape, centres, radius) -> np.ndarray:
    """A boolean image (2D or 3D) of balls of ``radius`` at ``centres``."""
    grid = np.indices(shape)
    inside = np.zeros(shape, dtype=bool)
    for centre in centres:
        inside |= sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) < radius**2
    return inside


def test_touching_discs_split_into_two_with_the_watershed_and_stay_one_without():
    labels = discs((100, 140), [(50, 45), (50, 80)], 20).astype(np.uint8)  # centres 35 apart: they overlap
    assert objects.split_objects(labels, watershed=False).max() == 1
    split = objects.split_objects(labels, watershed=True)
    assert split.dtype == np.uint32 and split.shape == labels.shape
    assert split.max() == 2
    assert np.array_equal(split > 0, labels > 0)  # every pixel of the class belongs to an object
    assert split[50, 30] != split[50, 95]  # the two discs' far sides in different objects
    assert abs(int((split == 1).sum()) - int((split == 2).sum())) < 0.05 * labels.sum()  # cut at the neck
    # a min_distance beyond the centres' distance keeps them as one
    assert objects.split_objects(labels, min_distance=40).max() == 1


def test_classes_are_split_apart_and_numbered_class_by_class():
    labels = np.zeros((60, 80), np.uint8)
    labels[discs(labels.shape, [(20, 60)], 8)] = 1
    labels[discs(labels.shape, [(40, 20)], 8)] = 2
    labels[discs(labels.shape, [(40, 29)], 8)] = 1  # a class-1 disc touching the class-2 one
    split = objects.split_objects(labels, watershed=False)
    assert split.max() == 3
    assert set(np.unique(split[labels == 1])) == {1, 2} and set(np.unique(split[labels == 2])) == {3}
    # min_size drops small objects and renumbers the rest
    labels[0:2, 0:2] = 2
    assert objects.split_objects(labels, watershed=False).max() == 4
    assert objects.split_objects(labels, watershed=False, min_size=10).max() == 3


def test_a_ragged_outline_is_not_split_into_many_objects():
    from scipy import ndimage

    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[:100, :140]
    wobble = ndimage.gaussian_filter(rng.normal(0, 1, yy.shape), 2)
    ellipse = (((yy - 50) / 30) ** 2 + ((xx - 70) / 60) ** 2 < 1 + 0.1 * wobble / wobble.std()).astype(np.uint8)
    assert ndimage.label(ellipse)[1] == 1
    assert objects.split_objects(ellipse).max() == 1
    assert objects.split_objects(ellipse, prominence=0).max() > 1  # every bump of the outline a centre


def test_3d_balls_split_in_3d():
    volume = discs((30, 60, 80), [(15, 30, 25), (15, 30, 45)], 12).astype(np.uint16)
    assert objects.split_objects(volume, watershed=False).max() == 1
    split = objects.split_objects(volume)
    assert split.max() == 2 and split.shape == volume.shape
    # a z step three times the pixel size: the same balls squashed in z are still two
    squashed = discs((30, 60, 80), [(15, 30, 25), (15, 30, 45)], 12)[::3].astype(np.uint8)
    assert objects.split_objects(squashed, spacing=(3, 1, 1)).max() == 2
    with pytest.raises(ValueError, match="one value per axis"):
        objects.split_objects(squashed, spacing=(3, 1))
    with pytest.raises(ValueError, match="2D image"):
        objects.split_objects(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        objects.split_objects(np.zeros((8, 8), np.float32))


def test_the_table_holds_the_right_columns_and_values_on_a_known_image():
    classes = np.zeros((10, 12), np.uint8)
    classes[1:4, 2:6] = 1  # a 3 x 4 rectangle of class 1
    classes[6:9, 8:10] = 2  # a 3 x 2 rectangle of class 2
    instances = objects.split_objects(classes, watershed=False)
    intensity = np.arange(120, dtype=np.float32).reshape(10, 12)
    table = objects.measure_objects(instances, classes, intensity, class_names=["cell", "spot"])
    assert list(table) == [
        "label", "class_id", "class", "area", "mean_intensity", "centroid_y", "centroid_x",
        "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x",
    ]  # fmt: skip
    assert table["label"].tolist() == [1, 2]
    assert table["class_id"].tolist() == [1, 2]
    assert table["class"].tolist() == ["cell", "spot"]
    assert table["area"].tolist() == [12, 6]
    assert table["mean_intensity"].tolist() == pytest.approx([intensity[1:4, 2:6].mean(), intensity[6:9, 8:10].mean()])
    assert table["centroid_y"].tolist() == pytest.approx([2.0, 7.0])
    assert table["centroid_x"].tolist() == pytest.approx([3.5, 8.5])
    assert [table[f"bbox_{e}_{a}"].tolist() for e in ("min", "max") for a in "yx"] == [[1, 6], [2, 8], [4, 9], [6, 10]]
    # colour: one mean per channel; 3D: volume and z columns; no intensity: no intensity column
    rgb = np.stack([intensity, 2 * intensity, np.zeros_like(intensity)], axis=-1)
    colour = objects.measure_objects(instances, classes, rgb)
    assert colour["mean_intensity_1"].tolist() == pytest.approx(2 * table["mean_intensity"])
    assert colour["class"].tolist() == ["1", "2"]  # no names given: numbers
    stack = np.stack([classes, classes])
    volume = objects.measure_objects(objects.split_objects(stack, watershed=False), stack, class_names={2: "spot"})
    assert volume["volume"].tolist() == [24, 12] and volume["centroid_z"].tolist() == pytest.approx([0.5, 0.5])
    assert volume["class"].tolist() == ["1", "spot"] and "mean_intensity" not in volume
    assert volume["bbox_max_z"].tolist() == [2, 2]


def test_objects_spanning_two_classes_and_mismatched_shapes_are_refused():
    classes = np.zeros((10, 12), np.uint8)
    classes[1:4, 2:6] = 1
    classes[1:4, 6:8] = 2
    with pytest.raises(ValueError, match="spans more than one class"):
        objects.measure_objects((classes > 0).astype(np.uint8), classes)
    with pytest.raises(ValueError, match="shape"):
        objects.measure_objects(classes, classes[:5])
    with pytest.raises(ValueError, match="intensity has shape"):
        objects.measure_objects(classes, classes, np.zeros((10, 11)))


def test_an_empty_image_gives_an_empty_table_with_its_columns(tmp_path):
    empty = np.zeros((16, 16), np.uint8)
    table = objects.measure_objects(objects.split_objects(empty), empty)
    assert "area" in table and "centroid_x" in table and all(len(v) == 0 for v in table.values())
    path = objects.write_measurements(table, tmp_path / "empty.csv")
    assert path.read_text().splitlines() == [",".join(table)]


def test_measurements_are_written_as_csv_atomically(tmp_path, monkeypatch):
    classes = np.zeros((10, 12), np.uint8)
    classes[1:4, 2:6] = 1
    classes[6:9, 8:10] = 2
    table = objects.measure_objects(objects.split_objects(classes), classes, classes * 1.5, ["cell", "spot"])
    path = objects.write_measurements(table, tmp_path / "sub" / "cells.csv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class"] for row in rows] == ["cell", "spot"]
    assert [float(row["mean_intensity"]) for row in rows] == [1.5, 3.0]
    assert [int(row["area"]) for row in rows] == [12, 6]
    assert float(rows[0]["centroid_x"]) == 3.5
    # a failure while writing leaves the previous file as it was, and no partial file
    before = path.read_text()

    def broken_writerows(self, rows):
        raise OSError("disk full")

    monkeypatch.setattr(objects.csv, "writer", lambda handle: type("W", (), {
        "writerow": lambda self, row: handle.write("half"), "writerows": broken_writerows})())  # fmt: skip
    with pytest.raises(OSError, match="disk full"):
        objects.write_measurements(table, path)
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == ["cells.csv"]


def test_objects_outputs_beside_a_labels_output(tmp_path):
    labels = discs((100, 140), [(50, 45), (50, 80)], 20).astype(np.uint8)
    assert objects.objects_paths(tmp_path / "a.b_labels.tif") == (tmp_path / "a.b_objects.tif",
                                                                 tmp_path / "a.b_objects.csv")  # fmt: skip
    assert objects.objects_paths(tmp_path / "x_labels.ome.zarr")[1] == tmp_path / "x_objects.csv"
    tif, table = objects.write_objects_outputs(tmp_path / "q_labels.tif", labels, labels * 7, ["disc"], {"query": "q"})
    instances = tifffile.imread(tif)
    assert instances.dtype == np.uint32 and instances.max() == 2
    with tifffile.TiffFile(tif) as handle:
        metadata = json.loads(handle.shaped_metadata[0]["napari_label_anything"])
    assert metadata["query"] == "q" and metadata["labels"].endswith("q_labels.tif")
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class"] for row in rows] == ["disc", "disc"] and {row["mean_intensity"] for row in rows} == {"7.0"}


def test_the_public_api_names_them_lazily():
    assert nla.split_objects is objects.split_objects
    assert nla.measure_objects is objects.measure_objects
    assert nla.write_measurements is objects.write_measurements
