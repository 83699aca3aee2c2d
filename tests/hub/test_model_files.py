"""Checkpoint folders, the Hugging Face hub cache, offline behaviour and untrusted files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError

import napari_label_anything as nla
from conftest import fake_hub_download
from napari_label_anything.hub import model_files as ckpt
from napari_label_anything.model.config import LabelAnythingConfig

REPO_ID = "pasqualedem/label_anything_sam_1024_coco"


def place_in_hub_cache(cache: Path, repo_id: str, source: Path, revision: str = "0123abcd") -> Path:
    """Lay out ``source``'s files as huggingface_hub caches a snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name in (ckpt.CONFIG_NAME, ckpt.WEIGHTS_NAME):
        shutil.copy(source / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_cached_hub_checkpoint_loads_offline(hub_cache, reference):
    place_in_hub_cache(hub_cache, REPO_ID, reference / "sam_like")
    seg = nla.load_segmenter(REPO_ID, device="cpu")
    assert seg.config.encoder == "test_tiny_sam_vit"
    assert ckpt.cached_checkpoint(REPO_ID) is not None


def test_offline_without_cache_says_where_and_how(hub_cache):
    with pytest.raises(nla.CheckpointNotAvailableError) as err:
        nla.load_segmenter(REPO_ID, device="cpu")
    message = str(err.value)
    assert str(hub_cache) in message
    assert "config.json" in message and "model.safetensors" in message
    assert f"https://huggingface.co/{REPO_ID}" in message
    assert "models--pasqualedem--label_anything_sam_1024_coco" in message


def test_download_goes_through_hub_and_cache(hub_cache, reference, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls, reports = [], []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hub_download(reference / "mae_like", calls))
    folder = ckpt.resolve_checkpoint("someone/some_model")
    assert [c[1] for c in calls] == ["config.json", "model.safetensors"]
    assert all(c[0] == "someone/some_model" and c[2] == hub_cache for c in calls)
    assert (folder / "model.safetensors").is_file()
    # A second call is served from the cache without downloading.
    assert ckpt.resolve_checkpoint("someone/some_model") == folder and len(calls) == 2
    ckpt.download_checkpoint("someone/other", on_progress=lambda *a: reports.append(a))
    assert reports[-1][0] == "model.safetensors" and reports[-1][1] > 0 and reports[-1][2] > 0


def test_download_failure_explains_manual_install(hub_cache, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def no_network(*args, **kwargs):
        raise LocalEntryNotFoundError("connection refused")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_network)
    with pytest.raises(nla.CheckpointNotAvailableError, match="download config.json and model.safetensors"):
        ckpt.resolve_checkpoint("someone/unreachable")


@pytest.mark.slow
def test_hf_home_and_offline_env_are_honoured(tmp_path, reference):
    """A fresh interpreter with HF_HOME/HF_HUB_OFFLINE set finds the cached checkpoint there."""
    place_in_hub_cache(tmp_path / "hf" / "hub", REPO_ID, reference / "sam_like")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    code = f"import napari_label_anything as nla; print(nla.load_segmenter({REPO_ID!r}, device='cpu').config.encoder)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "test_tiny_sam_vit"


def test_folder_missing_a_file(tmp_path, reference):
    shutil.copy(reference / "sam_like" / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        nla.load_segmenter(str(tmp_path), device="cpu")


def test_not_a_folder_nor_repo_id(tmp_path):
    with pytest.raises(nla.CheckpointNotAvailableError, match="neither a checkpoint folder"):
        nla.load_segmenter(str(tmp_path / "nothing" / "here" / "x"), device="cpu")


def test_mismatched_shapes_are_listed(tmp_path, reference):
    from safetensors.torch import load_file, save_file

    tensors = load_file(reference / "sam_like" / "model.safetensors")
    tensors["model.neck.0.weight"] = torch.zeros(7, 16, 1, 1)
    del tensors["model.mask_decoder.class_mlp.layers.0.bias"]
    tensors["model.extra.weight"] = torch.zeros(1)
    save_file(tensors, tmp_path / "model.safetensors")
    shutil.copy(reference / "sam_like" / "config.json", tmp_path / "config.json")
    with pytest.raises(ValueError) as err:
        nla.load_segmenter(str(tmp_path), device="cpu")
    message = str(err.value)
    assert "model.neck.0.weight: checkpoint (7, 16, 1, 1) vs model (32, 16, 1, 1)" in message
    assert "missing keys (1): model.mask_decoder.class_mlp.layers.0.bias" in message
    assert "model.extra.weight" in message


def test_corrupt_safetensors(tmp_path, reference):
    shutil.copy(reference / "sam_like" / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        nla.load_segmenter(str(tmp_path), device="cpu")


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"encoder": "vit_b", "bogus": 1}, "unknown arguments: bogus"),
        ({"encoder": "no_such_encoder"}, "unknown image encoder"),
        ({"encoder": "vit_b", "few_type": "Affinity"}, "not implemented"),
    ],
)
def test_bad_config(tmp_path, reference, config, match):
    shutil.copy(reference / "sam_like" / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        nla.load_segmenter(str(tmp_path), device="cpu")


def test_config_defaults_are_applied(reference):
    config = LabelAnythingConfig.from_json(reference / "mae_like" / "config.json")
    assert config.use_vit and config.class_encoder is None and config.classification_layer_downsample_rate == 8
    assert LabelAnythingConfig.from_dict(config.to_dict()) == config


def test_save_model_round_trip(tmp_path, reference):
    model = ckpt.load_model(reference / "attn_variants")
    ckpt.save_model(model, tmp_path)
    again = ckpt.load_model(tmp_path)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


def test_sam_checkpoint_initialises_encoder(tmp_path, reference):
    model = ckpt.load_model(reference / "sam_like")
    weights = {f"image_encoder.{k}": v.clone() for k, v in model.image_encoder.state_dict().items()}
    weights["prompt_encoder.unrelated"] = torch.zeros(1)
    torch.save(weights, tmp_path / "sam.pth")
    fresh = nla.load_segmenter(str(reference / "sam_like"), device="cpu", encoder="torch").model  # keeps its encoder
    with torch.no_grad():
        for p in fresh.image_encoder.parameters():
            p.zero_()
    ckpt.load_sam_image_encoder(fresh, tmp_path / "sam.pth")
    assert torch.equal(fresh.image_encoder.pos_embed, model.image_encoder.pos_embed)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_sam_checkpoint_refuses_pickled_code(tmp_path, reference, capsys):
    torch.save({"image_encoder.x": _Payload()}, tmp_path / "evil.pth")
    model = ckpt.load_model(reference / "sam_like")
    with pytest.raises(ValueError, match="not a plain-tensor SAM checkpoint"):
        ckpt.load_sam_image_encoder(model, tmp_path / "evil.pth")
    assert "must never run" not in capsys.readouterr().out
