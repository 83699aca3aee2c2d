"""The README's train / finetune / evaluate commands, end to end on small data (exit codes, files, messages)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_label_anything.cli import main
from napari_label_anything.io.label_files import write_labels

TINY = """model_config: {preset: tiny, image_size: 64}
data: [{kind: synthetic, n_samples: 30, size: 64}]
configurations: [[2, 1, 1]]
steps: 3
lr: 0.001
warmup_steps: 1
checkpoint_every: 1
device: cpu
out: OUT
"""


def test_evaluate_prints_a_table_and_writes_json(tmp_path, capsys):
    target = tmp_path / "scores.json"
    code = main(["evaluate", "--synthetic", "30", "--ways", "2", "--shots", "1", "--episodes", "3",
                 "--official", "--json", str(target), "--device", "cpu"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "FB-IoU" in out and "official" in out
    scores = json.loads(target.read_text())
    assert scores["model"] == "classic" and scores["ways"] == 2 and 0 <= scores["miou"] <= 1
    assert set(scores["official"]) == {"strict_miou", "bmiou", "official_fbiou"}


def test_evaluate_without_data_is_one_line(capsys):
    assert main(["evaluate", "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: give the data as exactly one of") and err.count("\n") == 1


@pytest.mark.slow
def test_train_resume_then_finetune_and_evaluate_the_result(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NAPARI_LABEL_ANYTHING_HOME", str(tmp_path / "home"))
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("OUT", str(tmp_path / "run")))
    assert main(["train", "--config", str(config)]) == 0
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert main(["train", "--config", str(config), "--resume", "latest"]) == 0  # already at its last step

    data = tmp_path / "labelled"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        labels = np.zeros((64, 64), np.uint8)
        labels[8 + i : 30 + i, 10:40] = 1
        image = (rng.integers(0, 60, (64, 64)) + 150 * labels).astype(np.uint8)
        tifffile.imwrite(data / f"p{i}.tif", image)
        write_labels(data / f"p{i}_labels.tif", labels, ["cell"])
    code = main(["finetune", "--model", str(tmp_path / "run" / "final"), "--data", str(data), "--steps", "2",
                 "--out", str(tmp_path / "mine"), "--register", "mine", "--device", "cpu"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "registered as 'mine'" in out and "checkpoint:" in out
    assert main(["evaluate", "--model", "mine", "--data", str(data), "--episodes", "2", "--device", "cpu"]) == 0
    assert "Evaluation of" in capsys.readouterr().out
