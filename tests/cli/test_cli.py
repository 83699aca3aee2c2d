"""The command line end to end, including the README's first command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_label_anything as nla
from conftest import blob_image
from napari_label_anything.cli import main
from napari_label_anything.io.label_files import read_label_classes

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("offline_settings")  # conftest: no user config, no network


def test_readme_starts_with_the_two_commands():
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    assert lines[1] == "```bash"
    assert lines[2].endswith("# run the main job") and "napari-label-anything demo" in lines[2]
    assert lines[3].endswith("# run the tests") and "pytest" in lines[3]


@pytest.mark.slow
def test_readme_main_command_runs_offline(tmp_path):
    """The console script of the README's first command, in a fresh process, offline."""
    script = Path(sys.executable).parent / "napari-label-anything"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty_hf")}
    result = subprocess.run(
        [str(script), "demo", "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "IoU per class against the known answer" in result.stdout
    assert "loaded model 'classic'" in result.stdout
    labels = tifffile.imread(tmp_path / "out" / "textures_labels.tif")
    assert labels.shape == (256, 256) and labels.dtype == np.uint8
    assert (tmp_path / "out" / "textures_overlay.png").stat().st_size > 1000
    mean_iou = float(result.stdout.split("mean (classes)")[1].split()[0])
    assert mean_iou > 0.6


def test_demo_on_a_label_anything_checkpoint_and_a_stack(reference, tmp_path, capsys):
    assert main(["demo", "--model", str(reference / "sam_like"), "--planes", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "predicted a stack of 2 planes" in out and "brick" in out
    labels = tifffile.imread(tmp_path / "textures_labels.tif")
    assert labels.shape == (2, 256, 256)
    assert read_label_classes(tmp_path / "textures_labels.tif") == {
        0: "background",
        1: "brick",
        2: "grass",
        3: "gravel",
    }


def test_predict_with_an_episode_file(reference, tmp_path, capsys):
    image, labels = blob_image()
    episode = nla.Episode(["red", "green"])
    episode.add_support(image, labels=labels)
    episode.save(tmp_path / "run.episode")
    stack = np.stack([blob_image(seed=s)[0] for s in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    code = main(
        [
            "predict",
            "--model",
            str(reference / "sam_like"),
            "--episode",
            str(tmp_path / "run.episode"),
            str(tmp_path / "stack.tif"),
            "--out",
            str(tmp_path / "pred"),
            "--quiet",
        ]
    )
    assert code == 0
    written = tifffile.imread(tmp_path / "pred" / "stack_labels.tif")
    assert written.shape == (3, 96, 128) and written.dtype == np.uint8
    assert read_label_classes(tmp_path / "pred" / "stack_labels.tif")[2] == "green"


def test_predict_with_support_files(reference, tmp_path):
    image, labels = blob_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "prompts.tif", labels)
    code = main(
        [
            "predict",
            "--model",
            str(reference / "mae_like"),
            "--classes",
            "red,green",
            "--support",
            f"{tmp_path / 'img.tif'}:{tmp_path / 'prompts.tif'}",
            str(tmp_path / "img.tif"),
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert code == 0 and (tmp_path / "img_labels.tif").is_file()


def test_bad_input_is_a_clean_error(tmp_path, capsys):
    image, _ = blob_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "prompts.tif", np.full(image.shape[:2], 5, np.uint8))
    code = main(
        [
            "predict",
            "--model",
            "classic",
            "--classes",
            "a,b",
            "--support",
            f"{tmp_path / 'img.tif'}:{tmp_path / 'prompts.tif'}",
            str(tmp_path / "img.tif"),
        ]
    )
    assert code == 2
    assert "only 0..2 exist" in capsys.readouterr().err


def test_models_listing_and_local_registration(reference, tmp_path, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "pasqualedem/label_anything_sam_1024_coco" in out and "mae-480-coco-fold3" in out and "classic" in out
    assert "hub cache:" in out
    assert main(["models", "--add", "tiny", str(reference / "mae_like")]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "tiny" in capsys.readouterr().out
    seg = nla.load_segmenter("tiny", device="cpu")
    assert seg.config.encoder == "test_tiny_vit_mae"
    # "auto" never picks a registered model (a fine-tuned one, say): it is chosen by name.
    assert nla.load_segmenter("auto", device="cpu").name == "classic"
    assert main(["models", "--remove", "tiny"]) == 0
    assert nla.load_segmenter("auto", device="cpu").name == "classic"


def test_download_offline_explains(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code = main(["download", "mae-480-coco", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "pasqualedem/label_anything_mae_480_coco" in err and str(tmp_path / "hub") in err


def test_npe2_manifest_validates():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "npe2"), "validate", "napari-label-anything"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_stack_support_gives_one_support_per_painted_plane_with_its_neighbours(tmp_path, capsys):
    from napari_label_anything.cli.predict import add_supports
    from napari_label_anything.episode import Episode

    stack = np.stack([blob_image((40, 48), seed=s)[0][..., 0] for s in range(6)])
    truth = np.stack([blob_image((40, 48), seed=s)[1] for s in range(6)])
    painted = np.zeros_like(truth)
    painted[[1, 4]] = truth[[1, 4]]
    episode = Episode(["red", "green"])
    add_supports(episode, stack, painted, "stack.tif")
    assert [s.name for s in episode.supports] == ["stack.tif [1]", "stack.tif [4]"]
    assert [(s.context.shape, s.context_index) for s in episode.supports] == [((6, 40, 48), 1), ((6, 40, 48), 4)]
    with pytest.raises(ValueError, match="label stack of shape"):
        add_supports(Episode(["red", "green"]), stack, painted[1], "stack.tif")
    with pytest.raises(ValueError, match="no prompt on any plane"):
        add_supports(Episode(["red", "green"]), stack, np.zeros_like(truth), "stack.tif")

    tifffile.imwrite(tmp_path / "stack.tif", stack)
    tifffile.imwrite(tmp_path / "painted.tif", painted)
    support = f"{tmp_path / 'stack.tif'}:{tmp_path / 'painted.tif'}"
    query = str(tmp_path / "stack.tif")
    base = ["predict", "--model", "classic", "--classes", "red,green", "--quiet", "--out", str(tmp_path / "out")]
    assert main([*base, "--support", support, query]) == 0
    labels = tifffile.imread(tmp_path / "out" / "stack_labels.tif")
    assert labels.shape == (6, 40, 48) and np.mean(labels[[0, 2, 3, 5]] == truth[[0, 2, 3, 5]]) > 0.8
    assert main([*base, "--overwrite", "--support", f"{tmp_path / 'stack.tif'}:{tmp_path / 'missing.tif'}", query]) == 2
    assert "missing.tif" in capsys.readouterr().err
