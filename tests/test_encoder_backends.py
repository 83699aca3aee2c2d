"""Encoder backends: ONNX Runtime gives PyTorch's numbers; the export is cached by weights digest."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from conftest import blob_image
from napari_label_anything.checkpoint import load_model
from napari_label_anything.inference import LabelAnythingSegmenter, load_segmenter
from napari_label_anything.inference.encoder_backends import make_encoder, onnx_cache_dir


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.mark.parametrize("name", ["sam_like", "mae_like"])
def test_onnx_gives_the_torch_numbers(reference, episode, name):
    model = load_model(reference / name)
    eager = LabelAnythingSegmenter(model, device="cpu")
    onnx = LabelAnythingSegmenter(model, device="cpu", encoder="onnx")
    query = blob_image((80, 100), seed=4)[0]
    torch.testing.assert_close(onnx.features(query), eager.features(query), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(onnx.logits(episode, query), eager.logits(episode, query), rtol=1e-4, atol=1e-5)
    # Random tiny weights give near-tied logits; a published model's margins are far larger.
    agreement = (onnx.predict(episode, query) == eager.predict(episode, query)).mean()
    assert agreement >= 0.999


def test_export_is_cached_by_weights_digest(reference, cache_dir):
    model = load_model(reference / "mae_like")
    first = LabelAnythingSegmenter(model, device="cpu", encoder="onnx")
    assert first.encoder.exported_now and first.encoder.path.parent == cache_dir
    again = load_segmenter(str(reference / "mae_like"), device="cpu", encoder="onnx")
    assert not again.encoder.exported_now and again.encoder.path == first.encoder.path
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)
    other = LabelAnythingSegmenter(changed, device="cpu", encoder="onnx")
    assert other.encoder.exported_now and other.encoder.path != first.encoder.path
    image = blob_image()[0]
    assert not torch.allclose(other.features(image), first.features(image))


def test_bad_backend_choices(reference, monkeypatch):
    model = load_model(reference / "mae_like")
    with pytest.raises(ValueError, match="unknown encoder backend 'tensorrt'"):
        make_encoder("tensorrt", model)
    with pytest.raises(ValueError, match="runs on the CPU"):
        make_encoder("onnx", model, "digest", device_type="cuda")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ValueError, match=r"napari-label-anything\[onnx\]"):
        make_encoder("onnx", model, "digest")


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "mine"))
    assert onnx_cache_dir() == tmp_path / "mine" / "onnx"
    monkeypatch.delenv("NLA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_cache_dir() == tmp_path / "xdg" / "napari-label-anything" / "onnx"


def test_stack_prediction_through_onnx(reference, episode):
    segmenter = load_segmenter(str(reference / "sam_like"), device="cpu", encoder="onnx")
    stack = np.stack([blob_image(seed=s)[0] for s in (1, 2)])
    labels = segmenter.predict_stack(episode, stack)
    assert labels.shape == (2, 96, 128) and segmenter.stats["encoded_images"] == 3


def test_load_segmenter_passes_every_option_and_drops_the_torch_encoder_with_onnx(reference, episode):
    segmenter = load_segmenter(
        str(reference / "sam_like"), device="cpu", encoder="onnx", batch_size=2, tiling="resize", precision="float32"
    )
    assert (segmenter.batch_size, segmenter.tiling, segmenter.encoder.name) == (2, "resize", "onnx")
    assert segmenter.model.image_encoder is None  # the exported encoder serves every image
    assert segmenter.predict(episode, blob_image(seed=3)[0]).shape == (96, 128)
    eager = load_segmenter(str(reference / "sam_like"), device="cpu", tiling="tile")
    assert eager.tiling == "tile" and eager.model.image_encoder is not None
    assert eager.weights_digest == segmenter.weights_digest  # store entries are shared


@pytest.mark.parametrize("rel_pos", [True, False])
def test_chunked_global_attention_is_the_same_arithmetic(rel_pos):
    """The export's row-chunked attention (less memory) equals segment_anything's, uneven chunks too."""
    import types

    from segment_anything.modeling.image_encoder import Attention

    from napari_label_anything.inference.encoder_backends import _chunked_global_attention

    torch.manual_seed(0)
    attention = Attention(dim=32, num_heads=4, use_rel_pos=rel_pos, input_size=(20, 20)).eval()
    if rel_pos:
        with torch.no_grad():
            attention.rel_pos_h.normal_()
            attention.rel_pos_w.normal_()
    x = torch.randn(2, 20, 20, 32)  # 20 rows: chunks of 16 and 4
    expected = attention(x)
    chunked = types.MethodType(_chunked_global_attention, attention)(x)
    torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-6)
