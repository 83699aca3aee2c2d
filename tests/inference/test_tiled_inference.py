"""Large query planes are tiled at the supports' scale; the tiled path is wired exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import blob_image
from napari_label_anything.hub.model_files import load_model
from napari_label_anything.inference import LabelAnythingSegmenter
from napari_label_anything.inference.tiling import plan_tiles


@pytest.fixture(scope="module")
def model(reference):
    return load_model(reference / "sam_like")


def big_plane(shape, seed=0) -> np.ndarray:
    """A 16-bit plane of repeated blob images, so tiles see objects like the support's."""
    tile = blob_image(seed=seed)[0][..., 0].astype(np.uint16) * 40
    reps = (-(-shape[0] // tile.shape[0]), -(-shape[1] // tile.shape[1]))
    noise = np.random.default_rng(seed).integers(0, 200, shape, dtype=np.uint16)  # no two tiles alike
    return np.tile(tile, reps)[: shape[0], : shape[1]] + noise


def test_a_single_tile_is_the_resize_path_exactly(model, episode):
    # Supports are 96 x 128, so tiles are 512 px (half the SAM input, the lower bound).
    query = big_plane((512, 512))
    tiled = LabelAnythingSegmenter(model, device="cpu", tiling="tile")
    plain = LabelAnythingSegmenter(model, device="cpu", tiling="resize")
    assert tiled.tiling_for(episode, query.shape).tile == 512
    torch.testing.assert_close(tiled.logits(episode, query), plain.logits(episode, query), rtol=0, atol=0)


def test_auto_tiles_planes_much_larger_than_the_supports(model, episode):
    query = big_plane((1100, 900))
    auto = LabelAnythingSegmenter(model, device="cpu", batch_size=4)
    choice = auto.tiling_for(episode, query.shape)
    assert choice.tiled and (choice.tile, choice.overlap) == (512, 128)
    labels = auto.predict(episode, query)
    assert labels.shape == (1100, 900) and labels.dtype == np.uint8
    n_tiles = len(plan_tiles((1100, 900), 512, 128))
    assert auto.stats["encoded_images"] == 1 + n_tiles
    resized = LabelAnythingSegmenter(model, device="cpu", tiling="resize")
    assert not resized.tiling_for(episode, query.shape).tiled
    resized.predict(episode, query)
    assert resized.stats["encoded_images"] == 2
    small = blob_image((300, 400), seed=3)[0]
    assert not auto.tiling_for(episode, small.shape[:2]).tiled  # up to 2 x the tile: the official resize


@pytest.mark.slow
def test_tiled_probabilities_are_a_distribution_and_stacks_work(model, episode):
    segmenter = LabelAnythingSegmenter(model, device="cpu", tiling="tile")
    query = big_plane((700, 600))
    proba = segmenter.predict_proba(episode, query)
    assert proba.shape == (3, 700, 600)
    np.testing.assert_allclose(proba.sum(0), 1, atol=1e-5)
    stack = np.stack([big_plane((700, 600), seed=s) for s in (1, 2)])
    assert segmenter.predict_stack(episode, stack).shape == (2, 700, 600)


def test_a_stack_of_tiled_planes_encodes_tiles_only_and_hashes_each_once(model, episode, monkeypatch):
    from napari_label_anything.inference import embedding_store

    hashed = []
    digest = embedding_store.image_digest
    monkeypatch.setattr(embedding_store, "image_digest", lambda image: hashed.append(image.shape) or digest(image))
    segmenter = LabelAnythingSegmenter(model, device="cpu", tiling="tile", batch_size=2)
    stack = np.stack([big_plane((600, 520), seed=s) for s in (1, 2)])
    segmenter.predict_stack(episode, stack)
    n_tiles = len(plan_tiles((600, 520), 512, 128))
    # the support, then every tile: never a whole plane through the model's resize
    assert segmenter.stats["encoded_images"] == 1 + 2 * n_tiles
    assert sorted(hashed) == sorted([episode.supports[0].image.shape] + [(512, 512)] * (2 * n_tiles))


def test_a_bad_tiling_mode_is_refused(model):
    with pytest.raises(ValueError, match="tiling must be one of auto, resize, tile"):
        LabelAnythingSegmenter(model, device="cpu", tiling="sometimes")
