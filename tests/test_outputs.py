"""Outputs other tools read (no napari): ImageJ label TIFFs with class names, class probability
maps (TIFF and OME-Zarr) from ``predict --probabilities``, the summary counting every class,
FB-IoU only where the data has background, and img/ + mask/ folders as training data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
import zarr

import napari_label_anything as nla
from conftest import blob_image, predict_classic
from napari_label_anything import probabilities
from napari_label_anything.cli import main
from napari_label_anything.io.label_files import read_label_classes, read_label_metadata, write_labels
from napari_label_anything.training import metrics
from napari_label_anything.training.datasets import FolderDataset

pytestmark = pytest.mark.usefixtures("offline_settings")  # conftest: no user config, no network


# -- label TIFFs Fiji reads -------------------------------------------------------------------


def test_label_tiffs_are_imagej_files_with_class_names_and_a_lut(tmp_path):
    labels = blob_image()[1]
    path = write_labels(tmp_path / "l.tif", np.stack([labels, labels]), ["red", "green"], {"model": "m"},
                        colors=["#ff0000", None])  # fmt: skip
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYX"
        ij = tif.imagej_metadata
        lut = np.asarray(ij["LUTs"]).reshape(3, 256)
    assert ij["Properties"] == {"label_0": "background", "label_1": "red", "label_2": "green"}
    assert "1 = red" in ij["Info"] and "2 = green" in ij["Info"]
    assert lut[:, 0].tolist() == [0, 0, 0] and lut[:, 1].tolist() == [255, 0, 0]
    assert lut[:, 2].tolist() == [0x56, 0xB4, 0xE9]  # no colour given: the widget's default for class 2
    np.testing.assert_array_equal(tifffile.imread(path)[1], labels)
    assert read_label_classes(path) == {0: "background", 1: "red", 2: "green"}
    assert read_label_metadata(path)["model"] == "m"


def test_labels_imagej_cannot_hold_stay_plain_tiffs_and_old_files_still_read(tmp_path):
    wide = np.arange(2 * 70_000, dtype=np.int64).reshape(2, 70_000) % 70_000  # above uint16
    path = write_labels(tmp_path / "wide.tif", wide, ["a"])
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_imagej
    assert read_label_classes(path) == {0: "background", 1: "a"}
    np.testing.assert_array_equal(tifffile.imread(path), wide)
    small = write_labels(tmp_path / "int32.tif", blob_image()[1].astype(np.int32), ["red", "green"])
    assert tifffile.imread(small).dtype == np.uint8 and tifffile.TiffFile(small).is_imagej
    # a label TIFF written before ImageJ metadata (plain TIFF, JSON description) keeps its names
    old = tmp_path / "old.tif"
    tifffile.imwrite(old, blob_image()[1], metadata={"napari_label_anything": json.dumps({"classes": {"1": "x"}})})
    assert read_label_classes(old) == {1: "x"}


# -- class probabilities ------------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path, episode):
    episode.save(tmp_path / "run.episode")
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "one.tif", blob_image(seed=3)[0])
    tifffile.imwrite(folder / "stack.tif", np.stack([blob_image(seed=s)[0] for s in (4, 5, 6)]))
    return tmp_path / "run.episode", folder


def test_predict_writes_float32_probability_tiffs_plane_by_plane(tmp_path, inputs, episode, capsys):
    episode_file, folder = inputs
    assert predict_classic(folder, "--episode", episode_file, "--out", tmp_path / "out", "--probabilities") == 0
    assert "class probabilities (float32)" in capsys.readouterr().out
    one, stack = (tmp_path / "out" / f"{name}_probabilities.tif" for name in ("one", "stack"))
    with tifffile.TiffFile(stack) as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZCYX"
        assert tif.imagej_metadata["Labels"] == ["background", "red", "green"] * 3
        maps = tif.asarray()
    assert maps.shape == (3, 3, 96, 128) and maps.dtype == np.float32
    np.testing.assert_allclose(maps.sum(axis=1), 1.0, atol=1e-5)
    assert read_label_metadata(stack)["channels"] == {"0": "background", "1": "red", "2": "green"}
    # the same prediction as the model's own probabilities, and as the labels written beside them
    query = blob_image(seed=3)[0]
    expected = nla.load_segmenter("classic").predict_proba(episode, query)
    single = tifffile.imread(one)
    assert single.shape == (3, 96, 128)
    np.testing.assert_allclose(single, expected, atol=1e-6)
    labels = tifffile.imread(tmp_path / "out" / "one_labels.tif")
    assert np.mean(single.argmax(axis=0) == labels) > 0.99


def test_predict_writes_uint8_probabilities_as_ome_zarr(tmp_path, inputs, capsys):
    episode_file, folder = inputs
    args = [folder / "stack.tif", "--episode", episode_file, "--out", tmp_path / "out", "--format", "ome-zarr"]
    assert predict_classic(*args, "--probabilities", "uint8") == 0
    group = zarr.open_group(str(tmp_path / "out" / "stack_probabilities.ome.zarr"), mode="r")
    maps = group["0"][...]
    assert maps.shape == (3, 3, 96, 128) and maps.dtype == np.uint8  # (c, z, y, x)
    sums = maps.astype(np.int64).sum(axis=0)
    assert sums.min() >= 253 and sums.max() <= 257  # 255 give or take each channel's rounding
    attrs = dict(group.attrs)
    assert [a["name"] for a in attrs["multiscales"][0]["axes"]] == ["c", "z", "y", "x"]
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["background", "red", "green"]
    assert attrs["napari_label_anything"]["probabilities"] == "uint8"
    labels = zarr.open_array(str(tmp_path / "out" / "stack_labels.ome.zarr" / "0"), mode="r")[...]
    assert np.mean(maps.argmax(axis=0) == labels) > 0.99
    shutil.rmtree(tmp_path / "out" / "stack_labels.ome.zarr")
    assert predict_classic(*args, "--probabilities", "uint8") == 2  # an existing output is kept unless --overwrite
    assert "stack_probabilities.ome.zarr; pass --overwrite" in capsys.readouterr().err
    assert predict_classic(*args, "--probabilities", "--overwrite") == 0
    assert zarr.open_array(str(tmp_path / "out" / "stack_probabilities.ome.zarr" / "0"), mode="r").dtype == np.float32


def test_a_background_class_is_the_background_channel_and_counted_as_background(tmp_path, capsys):
    image, labels = blob_image()
    complete = np.where(labels == 0, 3, labels)  # background scribbled everywhere, as the widget saves it
    episode = nla.Episode(["red", "green", "background"])
    episode.add_support(image, labels=complete)
    episode.save(tmp_path / "bg.episode")
    tifffile.imwrite(tmp_path / "q.tif", blob_image(seed=3)[0])
    out = tmp_path / "out"
    assert (
        predict_classic(tmp_path / "q.tif", "--episode", tmp_path / "bg.episode", "--out", out, "--probabilities") == 0
    )
    printed = capsys.readouterr().out
    counts = eval(printed[printed.index("{") : printed.index("}") + 1])  # noqa: S307 - the printed dict
    written = tifffile.imread(out / "q_labels.tif")
    assert set(counts) == {"background", "red", "green"}
    assert sum(counts.values()) == written.size
    assert counts["background"] == int(np.count_nonzero((written == 0) | (written == 3))) > 0
    maps = tifffile.imread(out / "q_probabilities.tif")
    assert maps.shape == (3, 96, 128)  # the "background" class is channel 0, not a fourth channel
    np.testing.assert_allclose(maps.sum(axis=0), 1.0, atol=1e-5)


def test_merge_background_and_conversions():
    proba = np.array([[0.1, 0.2], [0.3, 0.3], [0.6, 0.5]], dtype=np.float32)[:, :, None]  # (3, 2, 1)
    merged = probabilities.merge_background(proba.copy(), ["cell", "background"])
    assert merged.shape == (2, 2, 1)
    np.testing.assert_allclose(merged[0, :, 0], [0.7, 0.7])
    assert probabilities.channel_names(["cell", "Background"]) == ["background", "cell"]
    assert probabilities.convert(proba, "uint8")[:, 1, 0].tolist() == [51, 76, 128]  # round(255 p), to even
    with pytest.raises(ValueError, match="float32 or uint8"):
        probabilities.convert(proba, "float64")
    assert probabilities.output_shape((4, 5), 3, (8, 9), zarr=True) == (4, 3, 5, 8, 9)  # t, c, z, y, x
    assert probabilities.output_shape((4, 5), 3, (8, 9), zarr=False) == (4, 5, 3, 8, 9)  # ImageJ T, Z, C, Y, X


def test_probabilities_refuse_a_cluster_run(tmp_path, inputs, capsys):
    episode_file, folder = inputs
    assert (
        predict_classic(folder, "--episode", episode_file, "--workers", "2", "--probabilities", "--out", tmp_path / "o")
        == 2
    )
    assert "--probabilities runs in one process" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -- evaluation: FB-IoU only where there is background --------------------------------------------


def halves(seed: int, shape=(64, 80)) -> tuple[np.ndarray, np.ndarray]:
    """An image whose every pixel is class 1 or 2 (no background), split at a random column."""
    rng = np.random.default_rng(seed)
    labels = np.ones(shape, dtype=np.uint8)
    labels[:, int(rng.integers(20, 60)) :] = 2
    image = np.where(labels[..., None] == 1, (200, 40, 40), (40, 40, 200)).astype(np.uint8)
    return np.clip(image + rng.integers(0, 30, size=image.shape), 0, 255).astype(np.uint8), labels


def test_fb_iou_is_not_reported_for_data_without_background(tmp_path, capsys):
    matrix = np.array([[0, 0, 0], [0, 10, 2], [0, 3, 9]])
    assert np.isnan(metrics.fb_iou(matrix))  # every prediction foreground: it would be 1.0
    with_background = matrix.copy()
    with_background[0, 0] = 5
    assert metrics.fb_iou(with_background) == pytest.approx(1.0)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        image, labels = halves(i)
        tifffile.imwrite(data / f"s{i}.tif", image)
        write_labels(data / f"s{i}_labels.tif", labels, ["red", "blue"])
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--data", str(data), "--ways", "2", "--episodes", "2", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    line = next(line for line in table.splitlines() if line.startswith("FB-IoU"))
    assert line.split()[-1] == "n/a", table
    scores = json.loads(out.read_text())
    assert scores["fb_iou"] is None and scores["runs"][0]["fb_iou"] is None
    assert scores["miou"] is not None


# -- training data: img/ + mask/ ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "masks", "mask_name"),
    [("img", "mask", "{}.png"), ("images", "masks", "{}_mask.png"), ("Image", "Labels", "{}.tif"),
     ("image", "label", "{}_label.png")],
)  # fmt: skip
def test_folder_dataset_pairs_image_and_mask_subfolders(tmp_path, images, masks, mask_name):
    from PIL import Image

    (tmp_path / images).mkdir()
    (tmp_path / masks).mkdir()
    for i, name in enumerate(("a", "b", "c")):
        image, labels = blob_image(seed=i)
        Image.fromarray(image).save(tmp_path / images / f"{name}.png")
        mask_path = tmp_path / masks / mask_name.format(name)
        if mask_path.suffix == ".tif":
            tifffile.imwrite(mask_path, labels)
        else:
            Image.fromarray(labels).save(mask_path)
    data = FolderDataset(tmp_path)
    assert len(data) == 3 and sorted(data.classes) == [1, 2]
    sample = data[1]
    np.testing.assert_array_equal(sample.labels, blob_image(seed=1)[1])
    assert sample.image.shape == (96, 128, 3)
    (tmp_path / masks / mask_name.format("a")).unlink()
    with pytest.raises(ValueError, match="images without labels: a.png"):
        FolderDataset(tmp_path)
