"""TrainConfig: files in, validated options out; every option documented; clear errors."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest

from napari_label_anything.training.config import MODEL_PRESETS, TrainConfig, options_table

DATA = [{"kind": "synthetic", "n_samples": 20, "classes": [1, 2, 3]}]


def test_round_trip_through_yaml_and_json(tmp_path):
    import yaml

    config = TrainConfig.from_dict(
        {"model_config": {"preset": "tiny", "spatial_convs": None}, "data": DATA, "steps": 7, "lr": 1e-3}
    )
    assert TrainConfig.from_dict(config.to_dict()) == config
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config.to_dict()))
    (tmp_path / "run.json").write_text(json.dumps(config.to_dict()))
    assert TrainConfig.from_file(tmp_path / "run.yaml") == config
    assert TrainConfig.from_file(tmp_path / "run.json") == config
    assert config.replace(steps=9).steps == 9
    assert config.model_arguments()["encoder"] == "test_tiny_sam_vit"
    assert config.model_arguments()["spatial_convs"] is None  # overrides win over the preset


def test_yaml_file_as_a_user_writes_it(tmp_path):
    path = tmp_path / "train.yml"
    path.write_text(
        "model: my-model\n"
        "data:\n  - {kind: folder, path: data/train}\n"
        "validation:\n  - {kind: episodes, paths: [a.episode]}\n"
        "epochs: 2\nfreeze_encoder: false\nprecision: bf16\n"
    )
    config = TrainConfig.from_file(path)
    assert config.model == "my-model" and config.freeze_encoder is False and config.epochs == 2
    assert config.total_steps(n_samples=100) == 40  # 2 passes x 100 samples / mean batch 5
    assert config.log_path() == config.log_path().parent / "log.csv"


def test_unknown_keys_are_named_with_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown training option\(s\): learning_rate.*allowed: model, model_config"):
        TrainConfig.from_dict({"model_config": "tiny", "data": DATA, "learning_rate": 0.1})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"model_config": "tiny", "data": DATA, "stepz": 3}))
    with pytest.raises(ValueError, match="stepz"):
        TrainConfig.from_file(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": -1}, "lr must be a positive"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"schedule": "linear"}, "schedule must be one of cosine, constant"),
        ({"precision": "fp16"}, "precision must be one of auto, bf16, fp32"),
        ({"configurations": [[2, 1]]}, r"\[batch size, N ways, M examples\]"),
        ({"prompt_types": ["scribble"]}, "prompt_types"),
        ({"data": [{"kind": "imagenet"}]}, "kind must be one of synthetic, folder, episodes, coco"),
        ({"data": [{"kind": "synthetic", "classes": []}]}, "'classes' must be a non-empty list"),
        ({"data": []}, "data is empty"),
        ({"model": "x"}, "either model"),
        ({"model_config": None}, "no model"),
        ({"model_config": "huge"}, "unknown model preset 'huge'; presets: tiny, mae-480, sam-1024"),
        ({"freeze_encoder": "yes"}, "freeze_encoder must be true or false"),
        ({"grad_clip": 0}, "grad_clip must be a positive number or null"),
        ({"val_ways": 0}, "val_ways must be an integer >= 1"),
    ],
)
def test_bad_values_are_refused_with_the_option_named(change, message):
    values = {"model_config": "tiny", "data": DATA, **change}
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        TrainConfig.from_file(tmp_path / "missing.yaml")
    (tmp_path / "run.toml").write_text("")
    with pytest.raises(ValueError, match=r"\.yaml, \.yml or \.json"):
        TrainConfig.from_file(tmp_path / "run.toml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="mapping of training options"):
        TrainConfig.from_file(tmp_path / "list.json")
    (tmp_path / "broken.yaml").write_text("data: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        TrainConfig.from_file(tmp_path / "broken.yaml")
    with pytest.raises(TypeError):
        TrainConfig.from_dict([("steps", 3)])


def test_every_option_is_documented_in_the_docstring_table():
    table = options_table()
    for f in dataclasses.fields(TrainConfig):
        assert len(f.metadata["doc"]) > 20, f.name
        assert f"| `{f.name}` |" in table
        assert f"`{f.name}`" in TrainConfig.__doc__
    # Pipes inside a cell would break the Markdown table.
    assert all(line.count("|") == 4 for line in table.splitlines())


def test_presets_build_valid_model_configs():
    from napari_label_anything.model.config import LabelAnythingConfig

    for name in MODEL_PRESETS:
        config = TrainConfig.from_dict({"model_config": name, "data": DATA})
        LabelAnythingConfig.from_dict(config.model_arguments())


def test_warmup_default_and_epochs():
    config = TrainConfig.from_dict({"model_config": "tiny", "data": DATA, "steps": 300})
    assert config.warmup(300) == 30 and config.warmup(50_000) == 1000
    assert config.replace(warmup_steps=5).warmup(300) == 5
    assert config.replace(epochs=1.0, configurations=[[4, 1, 1]]).total_steps(n_samples=10) == 3


def test_a_frozen_random_full_size_encoder_is_warned_about():
    config = TrainConfig.from_dict({"model_config": "mae-480", "data": [{"kind": "synthetic", "n_samples": 4}]})
    with pytest.warns(UserWarning, match="meaningless features"):
        config.validate()
    tiny = TrainConfig.from_dict({"model_config": "tiny", "data": [{"kind": "synthetic", "n_samples": 4}]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny.validate()
