"""``predict --objects``: an objects TIFF and a measurements CSV beside each output."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
import zarr

from conftest import blob_image, predict_classic

pytestmark = pytest.mark.usefixtures("offline_settings")  # conftest: no user config, no network


def two_red_discs(seed: int = 7) -> np.ndarray:
    """The episode's colours: two red discs apart and one green disc on a dark noisy ground."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :128]
    image = rng.integers(0, 40, size=(96, 128, 3)).astype(np.uint8)
    for cy, cx, colour in ((30, 25, (220, 30, 30)), (30, 95, (220, 30, 30)), (70, 60, (30, 200, 40))):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 14**2] = colour
    return image


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_objects_are_written_beside_each_output_and_measured(tmp_path, episode_file):
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "discs.tif", two_red_discs())
    tifffile.imwrite(tmp_path / "in" / "stack.tif", np.stack([two_red_discs(1), two_red_discs(2)]))
    out = tmp_path / "out"
    assert predict_classic("--episode", episode_file, tmp_path / "in", "--out", out, "--objects") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "discs_labels.tif", "discs_objects.csv", "discs_objects.tif",
        "stack_labels.tif", "stack_objects.csv", "stack_objects.tif",
    ]  # fmt: skip
    labels = tifffile.imread(out / "discs_labels.tif")
    objects = tifffile.imread(out / "discs_objects.tif")
    assert objects.dtype == np.uint32 and objects.shape == labels.shape
    assert np.array_equal(objects > 0, labels > 0)
    rows = read_rows(out / "discs_objects.csv")
    big = [row for row in rows if int(row["area"]) > 200]  # the discs, not stray pixels the model may label
    assert sorted(row["class"] for row in big) == ["green", "red", "red"]
    assert sum(int(row["area"]) for row in rows) == int((labels > 0).sum())
    assert {int(row["label"]) for row in rows} == set(np.unique(objects)) - {0}
    reds = sorted((row for row in big if row["class"] == "red"), key=lambda row: float(row["centroid_x"]))
    assert [float(row["centroid_x"]) for row in reds] == pytest.approx([25, 95], abs=2)
    assert float(reds[0]["mean_intensity_0"]) > 150 > float(reds[0]["mean_intensity_1"])  # the red channel
    stack_rows = read_rows(out / "stack_objects.csv")
    assert "volume" in stack_rows[0] and "centroid_z" in stack_rows[0]  # a stack: objects in 3D
    assert tifffile.imread(out / "stack_objects.tif").shape == (2, 96, 128)
    # the objects files count as outputs: refused without --overwrite, even with the labels gone
    (out / "discs_labels.tif").unlink()
    assert predict_classic("--episode", episode_file, tmp_path / "in", "--out", out, "--objects") == 2
    assert predict_classic("--episode", episode_file, tmp_path / "in", "--out", out, "--objects", "--overwrite") == 0


def test_objects_of_an_ome_zarr_output(tmp_path, episode_file):
    tifffile.imwrite(tmp_path / "discs.tif", two_red_discs())
    out = tmp_path / "out"
    assert predict_classic("--episode", episode_file, tmp_path / "discs.tif", "--out", out, "--format", "ome-zarr",
                   "--objects") == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["discs_labels.ome.zarr", "discs_objects.csv", "discs_objects.tif"]
    labels = zarr.open_array(str(out / "discs_labels.ome.zarr" / "0"), mode="r")[...]
    assert np.array_equal(tifffile.imread(out / "discs_objects.tif") > 0, labels > 0)


def test_objects_refused_where_they_cannot_be_made_before_the_model_loads(tmp_path, episode_file, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr("napari_label_anything.inference.load_segmenter", no_model)
    zarr.open_array(str(tmp_path / "four.zarr"), mode="w", shape=(2, 2, 16, 16), dtype="u1")
    assert predict_classic("--episode", episode_file, tmp_path / "four.zarr", "--out", tmp_path / "o", "--objects") == 2
    assert "2D images and 3D stacks" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "one.tif", blob_image()[0])
    assert predict_classic("--episode", episode_file, tmp_path / "one.tif", "--out", tmp_path / "o", "--objects",
                   "--workers", "2") == 2  # fmt: skip
    assert "--objects runs in one process" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
