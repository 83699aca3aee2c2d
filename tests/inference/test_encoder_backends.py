"""Encoder backends: ONNX Runtime gives PyTorch's numbers; the export is cached by weights digest;
the opt-in int8 export stays close to them."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from conftest import blob_image
from napari_label_anything.hub.model_files import load_model
from napari_label_anything.inference import LabelAnythingSegmenter, load_segmenter
from napari_label_anything.inference.encoder_backends import ENCODER_BACKENDS, make_encoder, onnx_cache_dir


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.mark.parametrize("name", ["sam_like", "mae_like"])
def test_onnx_gives_the_torch_numbers(reference, episode, name):
    model = load_model(reference / name)
    eager = LabelAnythingSegmenter(model, device="cpu", encoder="torch")
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
    choices = "choose one of auto, torch, onnx, onnx-int8"
    with pytest.raises(ValueError, match=f"unknown encoder backend 'tensorrt'; {choices}"):
        make_encoder("tensorrt", model)
    for backend in ("onnx", "onnx-int8"):
        with pytest.raises(ValueError, match="run on the CPU only; on cuda choose the torch encoder"):
            make_encoder(backend, model, "digest", device_type="cuda")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    for backend in ("onnx", "onnx-int8"):
        with pytest.raises(ValueError, match=r"napari-label-anything\[onnx\]"):
            make_encoder(backend, model, "digest")


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
    eager = load_segmenter(str(reference / "sam_like"), device="cpu", tiling="tile", encoder="torch")
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


# -- onnx-int8: the float export quantised (int8 MatMul weights, activations per call) ---------

# Measured on these fixtures (random tiny weights): logits differ by <= 0.007 (sam_like; 3e-4
# mae_like) on a logit spread of ~0.04, features by ~0.5 % (relative L2); labels agree on
# >= 99.5 %. The bounds leave room for other CPUs' int8 kernels.
INT8_LOGIT_ATOL = 0.02
INT8_FEATURE_RTOL = 0.02
INT8_LABEL_AGREEMENT = 0.99


@pytest.mark.parametrize("name", ["sam_like", "mae_like"])
def test_int8_stays_close_to_float32(reference, episode, name):
    model = load_model(reference / name)
    eager = LabelAnythingSegmenter(model, device="cpu", encoder="torch")
    int8 = LabelAnythingSegmenter(model, device="cpu", encoder="onnx-int8")
    assert (int8.encoder.name, int8.encoder.precision) == ("onnx-int8", "int8")
    query = blob_image((80, 100), seed=4)[0]
    expected, features = eager.features(query), int8.features(query)
    assert 0 < (features - expected).norm() <= INT8_FEATURE_RTOL * expected.norm()  # quantised, not a copy
    torch.testing.assert_close(int8.logits(episode, query), eager.logits(episode, query), rtol=0, atol=INT8_LOGIT_ATOL)
    agreement = (int8.predict(episode, query) == eager.predict(episode, query)).mean()
    assert agreement >= INT8_LABEL_AGREEMENT


def test_int8_export_is_cached_beside_the_float_one(reference, cache_dir):
    model = load_model(reference / "mae_like")
    float_onnx = LabelAnythingSegmenter(model, device="cpu", encoder="onnx")
    first = LabelAnythingSegmenter(model, device="cpu", encoder="onnx-int8")
    # The float export is reused, quantised once into its own file (named by settings + quantiser).
    assert not first.encoder.exported_now and first.encoder.quantized_now
    assert first.encoder.float_path == float_onnx.encoder.path and first.encoder.path.parent == cache_dir
    assert first.encoder.path != float_onnx.encoder.path and ".int8-" in first.encoder.path.name
    stamp = first.encoder.path.stat().st_mtime_ns
    again = load_segmenter(str(reference / "mae_like"), device="cpu", encoder="onnx-int8")
    assert not (again.encoder.exported_now or again.encoder.quantized_now)
    assert again.encoder.path == first.encoder.path and again.encoder.path.stat().st_mtime_ns == stamp
    assert again.model.image_encoder is None and again.weights_digest == first.weights_digest
    image = blob_image()[0]
    torch.testing.assert_close(again.features(image), first.features(image))


def test_int8_on_a_fresh_cache_exports_then_quantises(reference, cache_dir):
    segmenter = load_segmenter(str(reference / "mae_like"), device="cpu", encoder="onnx-int8")
    assert segmenter.encoder.exported_now and segmenter.encoder.quantized_now
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(
        [segmenter.encoder.float_path.name, segmenter.encoder.path.name]
    )  # no partial files left behind


def test_two_quantisations_at_once_share_nothing_but_the_result(reference, cache_dir, caplog):
    import logging
    import threading

    from napari_label_anything.inference.encoder_backends import quantize_encoder, quantized_name_suffix

    float_path = LabelAnythingSegmenter(load_model(reference / "mae_like"), device="cpu", encoder="onnx").encoder.path
    target = float_path.with_suffix(quantized_name_suffix())
    handlers = list(logging.getLogger().handlers)
    errors = []

    def quantise():
        try:
            quantize_encoder(float_path, target)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    with caplog.at_level(logging.WARNING):
        threads = [threading.Thread(target=quantise) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == [] and sorted(p.name for p in cache_dir.iterdir()) == sorted([float_path.name, target.name])
    assert logging.getLogger().handlers == handlers and "pre-processing" not in caplog.text


def test_int8_features_are_stored_apart_from_float32_ones(reference, tmp_path):
    store = tmp_path / "features"
    image = blob_image(seed=2)[0]
    int8 = load_segmenter(str(reference / "mae_like"), device="cpu", encoder="onnx-int8", embeddings=store)
    int8.features(image)
    eager = load_segmenter(str(reference / "mae_like"), device="cpu", embeddings=store, encoder="torch")
    eager.features(image)
    assert eager.stats["store_hits"] == 0  # approximate features never stand in for float32 ones
    onnx = load_segmenter(str(reference / "mae_like"), device="cpu", encoder="onnx", embeddings=store)
    onnx.features(image)
    assert onnx.stats["store_hits"] == 1  # float ONNX shares PyTorch's entries


def test_every_backend_is_accepted_by_name(reference):
    assert ENCODER_BACKENDS == ("torch", "onnx", "onnx-int8")
    for backend in ENCODER_BACKENDS:
        segmenter = load_segmenter(str(reference / "mae_like"), device="cpu", encoder=backend)
        assert segmenter.encoder.name == backend and backend in repr(segmenter)


def test_predict_cli_and_cluster_workers_offer_every_backend(reference, episode, tmp_path, capsys, monkeypatch):
    import tifffile

    from napari_label_anything.batch import cluster
    from napari_label_anything.cli import main
    from napari_label_anything.io.label_files import read_image, read_label_metadata

    stack = np.stack([blob_image(seed=s)[0] for s in (1, 2)])
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    episode.save(tmp_path / "run.episode")
    model = str(reference / "mae_like")
    args = ["predict", "--model", model, "--episode", str(tmp_path / "run.episode"), str(tmp_path / "stack.tif")]
    assert main([*args, "--out", str(tmp_path / "out"), "--device", "cpu", "--encoder", "onnx-int8", "--quiet"]) == 0
    expected = load_segmenter(model, device="cpu", encoder="onnx-int8").predict_stack(episode, stack)
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "stack_labels.tif"), expected)
    assert "backend=onnx-int8" in capsys.readouterr().out
    # the output says it is approximate
    assert read_label_metadata(tmp_path / "out" / "stack_labels.tif")["encoder"] == "onnx-int8"
    with pytest.raises(SystemExit):
        main([*args, "--encoder", "int4"])
    err = capsys.readouterr().err.replace("'", "")  # Python 3.12+ quotes the choices
    assert "invalid choice: int4 (choose from auto, torch, onnx, onnx-int8)" in err
    monkeypatch.setattr(cluster, "_SEGMENTERS", {})  # this process is no worker: leave its state as it was
    monkeypatch.setattr(cluster, "_STATS", {"loads": {}, "tasks": 0})
    spec = cluster.ModelSpec(model, "cpu", None, "onnx-int8")
    assert cluster.worker_segmenter(spec).encoder.name == "onnx-int8"
    assert cluster.worker_stats()["loads"][(model, "cpu", None, "onnx-int8")] == 1
