"""``predict`` over folders, multi-page TIFFs and zarr arrays; OME-Zarr labels output; clean errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import tifffile
import zarr

import napari_label_anything as nla
from conftest import blob_image, predict_classic
from napari_label_anything.batch import jobs as batch
from napari_label_anything.io import ome_zarr
from napari_label_anything.io.label_files import read_label_classes

pytestmark = pytest.mark.usefixtures("offline_settings")  # conftest: no user config, no network


def stack(n: int, seed: int = 0) -> np.ndarray:
    return np.stack([blob_image(seed=seed + s)[0] for s in range(n)])


def ome_zarr_image(path, data: np.ndarray) -> None:
    """An NGFF 0.4 image group (two levels) as other tools write it."""
    group = zarr.open_group(str(path), mode="w", **ome_zarr._zarr_format_2())
    group.attrs["multiscales"] = [
        {"version": "0.4", "axes": [{"name": n} for n in "zyxc"], "datasets": [{"path": "s0"}, {"path": "s1"}]}
    ]
    zarr.open_array(str(path / "s0"), mode="w", shape=data.shape, dtype=data.dtype, **ome_zarr._zarr_format_2())[
        ...
    ] = data
    zarr.open_array(str(path / "s1"), mode="w", shape=(1, 8, 8, 3), dtype=data.dtype, **ome_zarr._zarr_format_2())


def test_folders_expand_sorted_with_unique_names(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "other").mkdir()
    for name in ("b.tif", "a.tif", "a.png", "sub/a.tif", "other/x.jpg", "notes.txt", ".hidden.tif"):
        (folder / name).write_bytes(b"")
    zarr.open_array(str(folder / "c.ome.zarr"), mode="w", shape=(8, 8), dtype="u1")
    found = batch.expand_inputs([folder])
    assert [p.name for p in found] == ["a.png", "a.tif", "b.tif", "c.ome.zarr"]
    found = batch.expand_inputs([folder], recursive=True)
    assert [p.relative_to(folder).as_posix() for p in found] == [
        "a.png", "a.tif", "b.tif", "c.ome.zarr", "other/x.jpg", "sub/a.tif",
    ]  # fmt: skip
    names = [p.name for p in batch.output_paths(found, tmp_path / "out", "_labels.tif")]
    assert names == [
        "a_png_labels.tif", "a_tif_labels.tif", "b_labels.tif", "c_labels.tif", "x_labels.tif",
        "a_labels.tif",
    ]  # fmt: skip
    assert len(set(names)) == len(names)
    with pytest.raises(ValueError, match="given twice"):
        batch.output_paths([folder / "b.tif", folder / "sub" / ".." / "b.tif"], tmp_path, "_labels.tif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        batch.expand_inputs([folder / "other", tmp_path / "empty"])


def test_tiff_stacks_zarr_arrays_and_ome_zarr_images_match_in_memory_prediction(tmp_path, episode_file, episode):
    three, four = stack(3), stack(4, seed=10)
    tifffile.imwrite(tmp_path / "multi.tif", three)  # one multi-page TIFF
    array = zarr.open_array(str(tmp_path / "arr.zarr"), mode="w", shape=four.shape, chunks=(1, 96, 128, 3), dtype="u1")
    array[...] = four
    ome_zarr_image(tmp_path / "img.ome.zarr", four[:2])
    inputs = [tmp_path / "multi.tif", tmp_path / "arr.zarr", tmp_path / "img.ome.zarr"]
    assert predict_classic("--episode", episode_file, *inputs, "--out", tmp_path / "out") == 0
    segmenter = nla.load_segmenter("classic")
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "out" / "multi_labels.tif"), segmenter.predict_stack(episode, three)
    )
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "out" / "arr_labels.tif"), segmenter.predict_stack(episode, four)
    )
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "out" / "img_labels.tif"), segmenter.predict_stack(episode, four[:2])
    )
    assert read_label_classes(tmp_path / "out" / "arr_labels.tif")[1] == "red"


def test_ome_zarr_output_holds_ngff_metadata_and_the_same_labels(tmp_path, episode_file):
    tifffile.imwrite(tmp_path / "multi.tif", stack(3))
    tifffile.imwrite(tmp_path / "single.tif", blob_image(seed=4)[0])
    inputs = [tmp_path / "multi.tif", tmp_path / "single.tif"]
    assert predict_classic("--episode", episode_file, *inputs, "--out", tmp_path / "tif") == 0
    assert predict_classic("--episode", episode_file, *inputs, "--out", tmp_path / "zarr", "--format", "ome-zarr") == 0
    assert sorted(p.name for p in (tmp_path / "zarr").iterdir()) == ["multi_labels.ome.zarr", "single_labels.ome.zarr"]
    out = tmp_path / "zarr" / "multi_labels.ome.zarr"
    attrs = json.loads((out / ".zattrs").read_text())
    (multiscale,) = attrs["multiscales"]
    assert multiscale["version"] == "0.4"
    assert [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    assert multiscale["datasets"][0]["path"] == "0"
    assert attrs["napari_label_anything"]["model"] == "classic"
    assert {p["label-value"]: p["class"] for p in attrs["image-label"]["properties"]} == {
        0: "background", 1: "red", 2: "green",
    }  # fmt: skip
    assert ome_zarr.read_label_classes(out) == {0: "background", 1: "red", 2: "green"}
    labels = zarr.open_array(str(out / "0"), mode="r")
    assert labels.chunks == (1, 96, 128) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[...], tifffile.imread(tmp_path / "tif" / "multi_labels.tif"))
    single = json.loads((tmp_path / "zarr" / "single_labels.ome.zarr" / ".zattrs").read_text())
    assert [a["name"] for a in single["multiscales"][0]["axes"]] == ["y", "x"]
    # Outputs exist now: refused without --overwrite, replaced with it, never a leftover temporary.
    assert predict_classic("--episode", episode_file, *inputs, "--out", tmp_path / "zarr", "--format", "ome-zarr") == 2
    assert (
        predict_classic(
            "--episode", episode_file, *inputs, "--out", tmp_path / "zarr", "--format", "ome-zarr", "--overwrite"
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "zarr").iterdir()) == ["multi_labels.ome.zarr", "single_labels.ome.zarr"]
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"), mode="r")[...], labels[...])


def test_an_encoder_choice_is_not_claimed_by_a_model_without_one(tmp_path, episode_file, capsys):
    tifffile.imwrite(tmp_path / "one.tif", blob_image(seed=4)[0])
    out = tmp_path / "zarr"
    assert predict_classic("--episode", episode_file, tmp_path / "one.tif", "--out", out, "--format", "ome-zarr",
                   "--encoder", "onnx-int8") == 0  # fmt: skip
    assert "the classic model has no image encoder; --encoder onnx-int8 is not used" in capsys.readouterr().out
    attrs = json.loads((out / "one_labels.ome.zarr" / ".zattrs").read_text())["napari_label_anything"]
    assert attrs["model"] == "classic" and "encoder" not in attrs


def test_napari_opens_the_ome_zarr_output_as_labels(tmp_path, episode_file, make_napari_viewer):
    tifffile.imwrite(tmp_path / "multi.tif", stack(2))
    assert (
        predict_classic("--episode", episode_file, tmp_path / "multi.tif", "--out", tmp_path, "--format", "ome-zarr")
        == 0
    )
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "multi_labels.ome.zarr"), plugin="napari", layer_type="labels")
    assert type(layer).__name__ == "Labels"
    data = layer.data[0] if layer.multiscale else layer.data
    np.testing.assert_array_equal(np.asarray(data), zarr.open_array(str(tmp_path / "multi_labels.ome.zarr" / "0"))[...])


def test_a_failed_run_leaves_no_half_written_ome_zarr(tmp_path, episode_file, monkeypatch):
    from napari_label_anything.inference.classic import ClassicSegmenter

    tifffile.imwrite(tmp_path / "multi.tif", stack(3))
    original = ClassicSegmenter.predict
    calls = []

    def fail_on_second_plane(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("out of memory (simulated)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ClassicSegmenter, "predict", fail_on_second_plane)
    out = tmp_path / "out"
    assert predict_classic("--episode", episode_file, tmp_path / "multi.tif", "--out", out, "--format", "ome-zarr") == 2
    assert list(out.iterdir()) == []


def test_bad_inputs_are_clean_errors_before_the_model_loads(tmp_path, episode_file, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load for a bad input")

    monkeypatch.setattr("napari_label_anything.inference.load_segmenter", no_model)
    tifffile.imwrite(tmp_path / "good.tif", blob_image()[0])
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "junk").write_text("not zarr")
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.attrs["note"] = "no multiscales"
    zarr.open_array(str(tmp_path / "flat.zarr"), mode="w", shape=(10,), dtype="u1")
    zarr.open_array(str(tmp_path / "six.zarr"), mode="w", shape=(2, 2, 2, 2, 16, 16), dtype="u1")
    cases = {
        "broken.tif": "is not a readable image",
        "bad.zarr": "bad.zarr",
        "group.zarr": "not an OME-Zarr image",
        "flat.zarr": "not an image or a stack",
        "missing.tif": "no such query file",
        "notes.txt": "is not an image",
    }
    (tmp_path / "notes.txt").write_text("x")
    for name, message in cases.items():
        assert (
            predict_classic("--episode", episode_file, tmp_path / "good.tif", tmp_path / name, "--out", tmp_path / "o")
            == 2
        )
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (name, err)
    code = predict_classic(
        "--episode", episode_file, tmp_path / "six.zarr", "--out", tmp_path / "o", "--format", "ome-zarr"
    )
    assert code == 2 and "2 to 5 axes" in capsys.readouterr().err
    code = predict_classic("--episode", episode_file, tmp_path / "good.tif", "--axis", "5", "--out", tmp_path / "o")
    assert code == 2 and "out of range" in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("*labels*"))


def test_workers_without_distributed_name_the_extra(tmp_path, episode_file, monkeypatch, capsys):
    tifffile.imwrite(tmp_path / "good.tif", blob_image()[0])
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert predict_classic("--episode", episode_file, tmp_path / "good.tif", "--out", tmp_path, "--workers", "2") == 2
    err = capsys.readouterr().err
    assert "napari-label-anything[cluster]" in err and err.count("\n") == 1
