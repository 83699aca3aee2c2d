"""The disk embedding store: hit, miss, invalidation by every part of the signature, tampering, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
import zarr

import napari_label_anything as nla
from conftest import blob_image
from napari_label_anything.cli import main
from napari_label_anything.hub.model_files import load_model
from napari_label_anything.inference import LabelAnythingSegmenter
from napari_label_anything.inference import embedding_store as store_module
from napari_label_anything.inference.embedding_store import EmbeddingStore


@pytest.fixture(scope="module")
def model(reference):
    return load_model(reference / "mae_like")


def segmenter_with(model, folder) -> LabelAnythingSegmenter:
    """A fresh segmenter (empty memory cache) on ``folder``: what a new process would have."""
    return LabelAnythingSegmenter(model, device="cpu", store=folder)


def test_round_trip_and_hit_across_segmenters(model, tmp_path):
    image = blob_image()[0]
    first = segmenter_with(model, tmp_path)
    computed = first.features(image)
    assert first.stats["encoded_images"] == 1 and len(first.store) == 1
    second = segmenter_with(model, tmp_path)
    stored = second.features(image)
    assert second.stats == {**second.stats, "encoded_images": 0, "store_hits": 1}
    torch.testing.assert_close(stored, computed, rtol=0, atol=0)
    second.features(image)  # now from memory
    assert second.stats["feature_cache_hits"] == 1 and second.store.hits == 1


def test_predictions_equal_with_and_without_the_store(model, tmp_path, episode):
    query = blob_image((80, 100), seed=4)[0]
    plain = LabelAnythingSegmenter(model, device="cpu").predict(episode, query)
    segmenter_with(model, tmp_path).predict(episode, query)
    reloaded = segmenter_with(model, tmp_path)
    np.testing.assert_array_equal(reloaded.predict(episode, query), plain)
    assert reloaded.stats["encoded_images"] == 0 and reloaded.stats["store_hits"] == 2


@pytest.mark.parametrize("change", ["image", "value_range", "model", "preprocessing"])
def test_every_part_of_the_signature_invalidates(model, tmp_path, monkeypatch, change):
    image = blob_image()[0][..., 0].astype(np.uint16) * 100
    segmenter_with(model, tmp_path).features(image, (0, 25000))
    other_model = model
    if change == "image":
        image = image.copy()
        image[0, 0] += 1
    if change == "model":
        other_model = _perturbed(model)
    if change == "preprocessing":
        monkeypatch.setattr(store_module, "PREPROCESSING_RULES", store_module.PREPROCESSING_RULES + 1)
    value_range = (0, 20000) if change == "value_range" else (0, 25000)
    again = segmenter_with(other_model, tmp_path)
    again.features(image, value_range)
    assert again.stats["encoded_images"] == 1 and again.stats["store_hits"] == 0
    assert len(again.store) == 2  # the old entry is kept for its own signature


def _perturbed(model):
    import copy

    clone = copy.deepcopy(model)
    with torch.no_grad():
        next(clone.parameters()).add_(1e-3)
    return clone


def test_a_tampered_entry_is_ignored_and_replaced(model, tmp_path):
    image = blob_image()[0]
    computed = segmenter_with(model, tmp_path).features(image)
    (entry,) = tmp_path.glob("*.zarr")
    array = zarr.open_array(str(entry), mode="r+")
    array[0, 0, 0, 0] = array[0, 0, 0, 0] + 1.0  # values no longer match the checksum
    again = segmenter_with(model, tmp_path)
    torch.testing.assert_close(again.features(image), computed, rtol=0, atol=0)
    assert again.store.rejected == 1 and again.stats["encoded_images"] == 1
    assert segmenter_with(model, tmp_path).features(image) is not None  # replaced entry is valid again

    signature = dict(array.attrs)["signature"]
    array = zarr.open_array(str(entry), mode="r+")
    array.attrs["signature"] = {**signature, "model": "someone else's"}
    third = segmenter_with(model, tmp_path)
    third.features(image)
    assert third.store.rejected == 1 and third.stats["encoded_images"] == 1


def test_a_damaged_entry_is_a_miss(model, tmp_path):
    image = blob_image()[0]
    segmenter_with(model, tmp_path).features(image)
    (entry,) = tmp_path.glob("*.zarr")
    for path in entry.rglob("*"):
        if path.is_file() and "json" not in path.name:
            path.write_bytes(b"garbage")
    again = segmenter_with(model, tmp_path)
    again.features(image)
    assert again.stats["encoded_images"] == 1


def test_an_unusable_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot use .* as an embedding store"):
        EmbeddingStore(tmp_path / "file" / "store")


def test_cli_embed_then_predict_encodes_nothing_again(reference, tmp_path, capsys, episode, monkeypatch):
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "exports"))  # the int8 run's ONNX files
    stack = np.stack([blob_image(seed=s)[0][..., 1].astype(np.uint16) * 50 for s in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    episode.save(tmp_path / "run.episode")
    model = str(reference / "mae_like")
    cache = str(tmp_path / "cache")
    assert main(["embed", "--model", model, "--cache", cache, str(tmp_path / "stack.tif"), "--quiet"]) == 0
    assert "3 plane(s), 3 encoded, 0 already stored" in capsys.readouterr().out
    assert main(["embed", "--model", model, "--cache", cache, str(tmp_path / "stack.tif"), "--quiet"]) == 0
    assert "3 plane(s), 0 encoded, 3 already stored" in capsys.readouterr().out
    args = ["predict", "--model", model, "--episode", str(tmp_path / "run.episode"), str(tmp_path / "stack.tif")]
    assert main([*args, "--cache", cache, "--out", str(tmp_path / "with"), "--quiet"]) == 0
    assert main([*args, "--out", str(tmp_path / "without"), "--quiet"]) == 0
    with_cache = tifffile.imread(tmp_path / "with" / "stack_labels.tif")
    np.testing.assert_array_equal(with_cache, tifffile.imread(tmp_path / "without" / "stack_labels.tif"))
    assert len(list((tmp_path / "cache").glob("*.zarr"))) == 4  # three planes and the episode's support
    # int8 features are kept apart: embedded with the same --encoder, they serve its predictions
    int8 = ["--encoder", "onnx-int8", "--device", "cpu"]
    assert main(["embed", "--model", model, "--cache", cache, str(tmp_path / "stack.tif"), "--quiet", *int8]) == 0
    assert "3 plane(s), 3 encoded, 0 already stored" in capsys.readouterr().out
    assert main([*args, "--cache", cache, "--out", str(tmp_path / "int8"), "--quiet", *int8]) == 0
    assert len(list((tmp_path / "cache").glob("*.zarr"))) == 8  # and the support, on its first use


def test_cli_embed_refuses_the_embedded_default(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", blob_image()[0])
    assert main(["embed", "--model", "classic", "--cache", str(tmp_path / "c"), str(tmp_path / "a.tif")]) == 2
    assert "no image features to precompute" in capsys.readouterr().err
    assert isinstance(nla.load_segmenter("classic", embeddings=tmp_path / "c"), nla.Segmenter)
