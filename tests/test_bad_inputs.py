"""Every kind of bad input the reliability review found gets a clean, named error and changes nothing.

Each test is one row of the table in docs/robustness.md; the row ids (B1, B2, ...) are in the
test names so the table and the tests can be matched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from safetensors.torch import load_file, save_file

import napari_label_anything as nla
from conftest import blob_image
from napari_label_anything.cli import main
from napari_label_anything.stacks import stack_layout


def unchanged(episode: nla.Episode, signature: str) -> bool:
    return episode.signature() == signature and all(s.image.flags.owndata for s in episode.supports)


# -- silent wrong results ----------------------------------------------------------------------


@pytest.mark.parametrize("channels", [2, 5])
def test_b1_two_or_five_channel_image_is_not_taken_for_a_stack(sam_like_segmenter, episode, channels):
    image = np.zeros((40, 50, channels), np.uint16)
    with pytest.raises(ValueError, match=rf"last axis \(size {channels}\) looks like a channel axis"):
        sam_like_segmenter.predict_stack(episode, image)
    with pytest.raises(ValueError, match=r"colour \(Y, X, 3\|4\)"):
        sam_like_segmenter.predict(episode, image)
    # Said explicitly, narrow planes are the user's call.
    assert stack_layout((40, 50, channels), rgb=False).spatial_shape == (50, channels)


def test_b1_cli_refuses_a_channel_image(tmp_path, capsys):
    image, labels = blob_image()
    tifffile.imwrite(tmp_path / "s.tif", image)
    tifffile.imwrite(tmp_path / "p.tif", labels)
    tifffile.imwrite(tmp_path / "q.tif", np.zeros((40, 50, 2), np.uint16))
    support = f"{tmp_path / 's.tif'}:{tmp_path / 'p.tif'}"
    args = ["predict", "--model", "classic", "--classes", "a,b", "--support", support, str(tmp_path / "q.tif")]
    assert main([*args, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "looks like a channel axis" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.tif"))


def test_b2_a_string_is_not_a_list_of_classes():
    with pytest.raises(TypeError, match=r"for one class write \['nuclei'\]"):
        nla.Episode("nuclei")
    with pytest.raises(TypeError, match="class names must be strings"):
        nla.Episode([None])
    assert nla.Episode([1, 2]).classes == ["1", "2"]  # numbered classes from a spreadsheet


@pytest.mark.parametrize("dtype", ["timedelta64[s]", "datetime64[D]", "complex64", "U3", "O"])
def test_b3_non_intensity_dtypes_are_refused(episode, dtype):
    before = episode.signature()
    image = np.zeros((20, 20), dtype=dtype)
    with pytest.raises(TypeError, match="real-valued numeric array"):
        episode.add_support(image, points=[(1, 1, 1)])
    with pytest.raises(TypeError, match="labels must hold integers"):
        episode.add_support(np.zeros((20, 20)), labels=np.zeros((20, 20), dtype=dtype))
    assert unchanged(episode, before) and len(episode.supports) == 1


def test_b4_values_near_the_float_limit_are_handled(sam_like_segmenter, episode):
    query = np.zeros((40, 50))
    query[:20] = -1.7e308
    query[20:, :25] = 1.7e308
    with np.errstate(all="raise"):  # no overflow anywhere
        labels = sam_like_segmenter.predict(episode, query)
        stack = sam_like_segmenter.predict_stack(episode, np.stack([query, query]))
    assert labels.shape == (40, 50) and (stack[0] == labels).all()


def test_b5_nan_weights_are_refused(tmp_path, reference):
    shutil.copy(reference / "mae_like" / "config.json", tmp_path / "config.json")
    tensors = load_file(reference / "mae_like" / "model.safetensors")
    key = sorted(k for k, v in tensors.items() if v.is_floating_point())[3]
    tensors[key][...] = float("nan")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=f"NaN or infinite weights in 1 tensor.*{key}"):
        nla.load_segmenter(str(tmp_path), device="cpu")


# -- lost data ------------------------------------------------------------------------------------


def classic_predict_args(tmp_path, queries):
    image, labels = blob_image()
    tifffile.imwrite(tmp_path / "s.tif", image)
    tifffile.imwrite(tmp_path / "p.tif", labels)
    support = f"{tmp_path / 's.tif'}:{tmp_path / 'p.tif'}"
    return ["predict", "--model", "classic", "--classes", "a,b", "--support", support, *map(str, queries), "--quiet"]


def test_b6_output_names_are_unique_per_input(tmp_path):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    queries = [tmp_path / "a.b.tif", tmp_path / "a.c.tif", tmp_path / "d1" / "x.tif", tmp_path / "d2" / "x.tif"]
    for i, path in enumerate(queries):
        tifffile.imwrite(path, blob_image(seed=i)[0])
    assert main([*classic_predict_args(tmp_path, queries), "--out", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["a.b_labels.tif", "a.c_labels.tif", "d1_x_labels.tif", "d2_x_labels.tif"]


def test_b6_existing_outputs_are_kept_unless_overwrite(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "q.tif", blob_image(seed=1)[0])
    out = tmp_path / "out"
    out.mkdir()
    (out / "q_labels.tif").write_bytes(b"precious")
    assert main([*classic_predict_args(tmp_path, [tmp_path / "q.tif"]), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "q_labels.tif").read_bytes() == b"precious"
    assert main([*classic_predict_args(tmp_path, [tmp_path / "q.tif"]), "--out", str(out), "--overwrite"]) == 0
    assert tifffile.imread(out / "q_labels.tif").shape == (96, 128)


def test_b7_unwritable_output_is_caught_before_any_work(tmp_path, capsys, monkeypatch):
    tifffile.imwrite(tmp_path / "q.tif", blob_image(seed=1)[0])
    (tmp_path / "a_file").write_text("in the way")

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr("napari_label_anything.inference.load_segmenter", must_not_load)
    out = tmp_path / "a_file" / "out"
    assert main([*classic_predict_args(tmp_path, [tmp_path / "q.tif"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write to the output folder") and err.count("\n") == 1


# -- errors from deep inside ------------------------------------------------------------------


def test_b8_more_classes_than_the_class_token_pool(sam_like_segmenter):
    names = [f"c{k}" for k in range(1, 101)]
    episode = nla.Episode(names)
    episode.add_support(np.zeros((120, 120), np.uint8), points=[(k, k, k) for k in range(1, 101)])
    with pytest.raises(ValueError, match="class-token pool has 100 rows.*at most 99 classes; this one has 100"):
        sam_like_segmenter.predict(episode, np.zeros((30, 30), np.uint8))


@pytest.mark.parametrize(
    ("plane", "error", "match"),
    [(5, ValueError, "out of range"), (-6, ValueError, "out of range"), ((1, 2), ValueError, "fewer plane axes"),
     (1.5, TypeError, "integer"), ("1", TypeError, "integer")],
)  # fmt: skip
def test_b9_support_plane_out_of_range(episode, plane, error, match):
    before = episode.signature()
    stack = np.zeros((5, 30, 30), np.uint16)
    with pytest.raises(error, match=match):
        episode.add_support(stack, labels=np.ones((5, 30, 30), np.uint8), plane=plane)
    assert unchanged(episode, before)


@pytest.mark.parametrize(
    ("planes", "error", "match"),
    [([7], ValueError, "out of range"), ([(0, 1)], ValueError, "1 plane axis"), ([], ValueError, "empty"),
     (["a"], TypeError, "integer"), (3, TypeError, "list of plane indices")],
)  # fmt: skip
def test_b9_planes_out_of_range(sam_like_segmenter, episode, planes, error, match):
    with pytest.raises(error, match=match):
        sam_like_segmenter.predict_stack(episode, np.zeros((3, 30, 30), np.uint8), planes=planes)


@pytest.mark.parametrize("shape", [(0, 30, 30), (3, 0, 30), (0, 0)])
def test_b9_empty_stack(sam_like_segmenter, episode, shape):
    with pytest.raises(ValueError, match="empty"):
        sam_like_segmenter.predict_stack(episode, np.zeros(shape, np.uint8))


def saved_episode(tmp_path, episode):
    return episode.save(tmp_path / "run.episode")


def test_b10_truncated_episode_file(tmp_path, episode):
    data = saved_episode(tmp_path, episode).read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        (tmp_path / "cut.episode").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cut.episode is not a readable episode file"):
            nla.Episode.load(tmp_path / "cut.episode")


@pytest.mark.parametrize(
    ("meta", "match"),
    [({"format": "napari-label-anything.episode", "version": 1}, "not a list of support records"),
     ({"format": "napari-label-anything.episode", "version": 1, "classes": "ab", "supports": []}, "bad classes"),
     ({"format": "napari-label-anything.episode", "version": 1, "classes": ["a"], "supports": [{}]}, "missing"),
     ({"format": "napari-label-anything.episode", "version": "x", "classes": ["a"], "supports": []}, "newer version"),
     ([1, 2], "format 'list'"), ({"format": "other"}, "format 'other'")],
)  # fmt: skip
def test_b10_tampered_episode_header(tmp_path, meta, match):
    header = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "bad.npz", meta=header)
    with pytest.raises(ValueError, match=match):
        nla.Episode.load(tmp_path / "bad.npz")


def test_b10_tampered_support_arrays(tmp_path, episode):
    with np.load(saved_episode(tmp_path, episode)) as archive:
        arrays = dict(archive)
    arrays["support0.points"] = np.array([[1e9, 2.0, 1.0]])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="damaged: support 1: points\\[0\\].*outside"):
        nla.Episode.load(tmp_path / "bad.npz")


def test_b10_cli_reports_a_damaged_episode_in_one_line(tmp_path, episode, capsys):
    path = saved_episode(tmp_path, episode)
    path.write_bytes(path.read_bytes()[:100])
    tifffile.imwrite(tmp_path / "q.tif", blob_image()[0])
    code = main(["predict", "--model", "classic", "--episode", str(path), str(tmp_path / "q.tif")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("change", "match"),
    [({"image_size": 0}, "image_size must be a positive integer"),
     ({"image_size": 1000}, "multiple of vit_patch_size"),
     ({"embed_dim": "32"}, "embed_dim must be a positive integer"),
     ({"use_vit": "yes"}, "use_vit must be true or false"),
     ({"spatial_convs": -1}, "spatial_convs must be null"),
     ({"class_encoder": {"name": "RandomMatrixEncoder", "embed_dim": 32}}, "class_encoder.bank_size"),
     ({"class_encoder": {"name": "RandomMatrixEncoder", "bank_size": 100}}, "class_encoder.embed_dim"),
     ({"class_encoder": "RandomMatrixEncoder"}, "unsupported class_encoder")],
)  # fmt: skip
def test_b11_bad_config_values_fail_at_load(tmp_path, reference, change, match):
    config = json.loads((reference / "sam_like" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    shutil.copy(reference / "sam_like" / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=match):
        nla.load_segmenter(str(tmp_path), device="cpu")


# -- more of the same families ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [({"points": 5}, TypeError, "list of \\(y, x, k\\) rows"),
     ({"points": [5]}, TypeError, "must be a row"),
     ({"points": [(1, 1, object())]}, ValueError, "class must be an integer"),
     ({"boxes": "abc"}, TypeError, "list of \\(y0, x0, y1, x1, k\\) rows"),
     ({"labels": np.full((96, 128), np.nan)}, ValueError, "NaN"),
     ({"labels": np.full((96, 128), 2**40, np.int64)}, ValueError, "only 0..2 exist"),
     ({"labels": np.full((96, 128), 1.5)}, TypeError, "non-integer")],
)  # fmt: skip
def test_b12_malformed_prompts(episode, kwargs, error, match):
    before = episode.signature()
    with pytest.raises(error, match=match):
        episode.add_support(blob_image()[0], **kwargs)
    assert unchanged(episode, before)


@pytest.mark.parametrize("value_range", [(5, 5), (10, 0), (0, np.inf), ("a", 1), (1,)])
def test_b12_bad_value_range(sam_like_segmenter, episode, value_range):
    with pytest.raises(ValueError, match="value_range"):
        sam_like_segmenter.predict(episode, np.zeros((30, 30), np.uint16), value_range=value_range)


def test_b12_unreadable_image_file_is_a_value_error(tmp_path):
    from napari_label_anything.io.label_files import read_image

    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    for name in ("broken.tif", "broken.png"):
        with pytest.raises(ValueError, match=f"{name} is not a readable image"):
            read_image(tmp_path / name)


def test_b12_cli_errors_are_one_line_without_traceback(tmp_path):
    """Through a real process: exit status 2, one line on stderr, no Python traceback."""
    command = [sys.executable, "-m", "napari_label_anything.cli", "predict", "--model", "classic",
               "--classes", "a", "--support", f"{tmp_path}/none.tif:{tmp_path}/none.tif", "q.tif"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
