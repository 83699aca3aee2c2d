"""Collating training episodes into the official batch dict: shapes, padding, flags, forward."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from napari_label_anything.episode import Episode
from napari_label_anything.hub.model_files import load_model
from napari_label_anything.preprocessing import image_to_model_input, to_uint8_rgb
from napari_label_anything.training.collate import IGNORE_INDEX, collate, resize_target
from napari_label_anything.training.sampler import EpisodeSampler, TrainingEpisode


def blob_episode(shape, n_classes=2, supports=1, points=(), boxes=(), seed=0) -> TrainingEpisode:
    """A query and ``supports`` support images of ``shape`` with squares for classes 1..n."""
    rng = np.random.default_rng(seed)
    height, width = shape
    labels = np.zeros(shape, dtype=np.int64)
    for k in range(1, n_classes + 1):
        y, x = (k * height) // (n_classes + 2), (k * width) // (n_classes + 2)
        labels[y : y + height // 6 + 1, x : x + width // 6 + 1] = k
    image = (rng.random(shape) * 50 + labels * 60).astype(np.uint16)
    episode = Episode([f"class {k}" for k in range(1, n_classes + 1)])
    for i in range(supports):
        episode.add_support(
            image,
            labels=labels if i == 0 or not (points or boxes) else None,
            points=points or None,
            boxes=boxes or None,
        )
    return TrainingEpisode(episode, image, labels.copy(), tuple(range(10, 10 + n_classes)))


def focal_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    return ((1 - torch.exp(-ce)) ** 2 * ce).mean()


@pytest.fixture(scope="module")
def mae_like(reference):
    return load_model(reference / "mae_like")


@pytest.fixture(scope="module")
def sam_like(reference):
    """The sam_like configuration without its image encoder (tests feed embeddings; building the
    1024-px encoder alone takes seconds)."""
    from napari_label_anything.model.config import LabelAnythingConfig
    from napari_label_anything.model.label_anything import LabelAnything

    config = LabelAnythingConfig.from_json(reference / "sam_like" / "config.json")
    torch.manual_seed(0)
    return LabelAnything(dataclasses.replace(config, use_vit=False))


def test_forward_on_collated_images_matches_the_target(mae_like):
    side = mae_like.config.image_size
    episodes = [
        blob_episode((40, 60), points=[(5, 7, 1)], seed=1),
        blob_episode((50, 30), boxes=[(1, 2, 20, 25, 2)], seed=2),
    ]
    batch, target = collate(episodes, side, mae_like.config.custom_preprocess)
    assert batch["images"].shape == (2, 2, 3, side, side) and batch["images"].dtype == torch.float32
    assert (batch["dims"] == side).all()  # squash: every image fills the S x S frame
    expected = image_to_model_input(to_uint8_rgb(episodes[1].query), side, False)
    assert np.array_equal(batch["images"][1, 0].numpy(), expected)
    assert target.shape == (2, side, side) and target.dtype == torch.int64
    assert (target != IGNORE_INDEX).all()
    with torch.no_grad():
        logits = mae_like(batch)["logits"]
    assert logits.shape == (2, 3, side, side)
    loss = focal_cross_entropy(logits, target)
    assert torch.isfinite(loss) and loss > 0


def test_different_sizes_pad_the_target_like_the_logits(sam_like):
    side, dim = sam_like.config.image_size, sam_like.config.image_embed_dim
    grid = side // 16
    episodes = [blob_episode((40, 64), n_classes=1, seed=3), blob_episode((64, 48), n_classes=2, seed=4)]
    seen = []

    def features(image):
        seen.append(image.shape)
        return torch.randn(dim, grid, grid, generator=torch.Generator().manual_seed(len(seen)))

    batch, target = collate(episodes, side, True, features=features)
    assert "images" not in batch and batch["embeddings"].shape == (2, 2, dim, grid, grid)
    assert seen == [(40, 64), (40, 64), (64, 48), (64, 48)]  # query first, then the supports
    assert batch["dims"].tolist() == [[[640, 1024], [640, 1024]], [[1024, 768], [1024, 768]]]
    assert target.shape == (2, 1024, 1024)
    assert (target[0, 640:] == IGNORE_INDEX).all() and (target[0, :640] != IGNORE_INDEX).all()
    assert (target[1, :, 768:] == IGNORE_INDEX).all() and (target[1, :, :768] != IGNORE_INDEX).all()
    assert set(target[0].unique().tolist()) == {IGNORE_INDEX, 0, 1}
    assert set(target[1].unique().tolist()) == {IGNORE_INDEX, 0, 1, 2}
    # class 2 exists only in the second episode: padded in the first
    assert batch["flag_gts"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["flag_examples"][0, :, 2].sum() == 0 and batch["flag_masks"][0, :, 2].sum() == 0
    with torch.no_grad():
        logits = sam_like(batch)["logits"]
    assert logits.shape[0] == 2 and logits.shape[2:] == target.shape[1:]
    assert torch.isinf(logits[0, 2]).all()
    padded = target == IGNORE_INDEX
    assert torch.isinf(logits[:, 1][padded]).all()  # forward pads exactly where the target ignores
    assert not torch.isinf(logits[:, 1][~padded]).any()
    assert torch.isfinite(focal_cross_entropy(logits, target))


def test_points_and_boxes_pad_to_the_batch_maximum_with_zero_flags():
    shape = (40, 80)
    episodes = [
        blob_episode(shape, supports=2, points=[(10, 30, 1), (11, 31, 1), (12, 32, 1)], seed=5),
        blob_episode(shape, supports=2, points=[(10, 30, 2)], boxes=[(4, 8, 20, 40, 1)], seed=6),
    ]
    batch, target = collate(episodes, 480, False)
    assert batch["prompt_points"].shape == (2, 2, 3, 3, 2) and batch["flag_points"].shape == (2, 2, 3, 3)
    assert batch["prompt_bboxes"].shape == (2, 2, 3, 1, 4) and batch["flag_bboxes"].shape == (2, 2, 3, 1)
    assert batch["flag_points"][0, :, 1].tolist() == [[1, 1, 1], [1, 1, 1]]
    assert batch["flag_points"][1, :, 2].tolist() == [[1, 0, 0], [1, 0, 0]]
    assert batch["flag_points"][1, :, 1].sum() == 0 and batch["flag_bboxes"][0].sum() == 0
    assert batch["flag_bboxes"][1, :, 1, 0].tolist() == [1, 1]
    assert (batch["prompt_points"][batch["flag_points"] == 0] == 0).all()
    # (row, col) -> (x, y) in the 480 x 480 squash frame: x * 480/80, y * 480/40
    assert batch["prompt_points"][1, 0, 2, 0].tolist() == [180.0, 120.0]
    assert batch["prompt_bboxes"][1, 0, 1, 0].tolist() == [48.0, 48.0, 240.0, 240.0]
    assert batch["flag_examples"][:, :, 0].all()
    assert batch["flag_masks"][:, 0, 1:].all() and not batch["flag_masks"][:, 1].any()  # labels on support 0
    assert batch["prompt_masks"].shape == (2, 2, 3, 256, 256)
    assert batch["dims"].dtype == torch.int64 and batch["flag_gts"].all()


def test_sampled_batches_collate(mae_like):
    from napari_label_anything.training.datasets.synthetic import SyntheticDataset

    sampler = EpisodeSampler(SyntheticDataset(10, n_classes=5, size=48), configurations=[(2, 2, 2)], seed=0)
    batch, target = collate(sampler.sample_batch(), 480, False, features=lambda image: torch.zeros(24, 30, 30))
    assert batch["embeddings"].shape == (2, 3, 24, 30, 30)
    assert batch["flag_examples"].shape == (2, 2, 3) and target.shape == (2, 480, 480)
    assert set(target.unique().tolist()) <= {0, 1, 2} and (target == 1).any()
    with torch.no_grad():
        assert mae_like(batch)["logits"].shape == (2, 3, 480, 480)


def test_nearest_resize_keeps_label_values():
    labels = np.zeros((30, 50), dtype=np.int64)
    labels[3:9, 10:40] = 7
    labels[20:, :5] = 123456789
    small = resize_target(labels, (12, 20))
    assert small.dtype == torch.int64 and set(small.unique().tolist()) == {0, 7, 123456789}
    assert torch.equal(resize_target(labels, (30, 50)), torch.from_numpy(labels))


def test_bad_batches_are_refused():
    one = blob_episode((20, 20), supports=1)
    two = blob_episode((20, 20), supports=2)
    with pytest.raises(ValueError, match="same number of supports"):
        collate([one, two], 480, False)
    with pytest.raises(ValueError, match="non-empty"):
        collate([], 480, False)
    with pytest.raises(TypeError, match="TrainingEpisode"):
        collate([one, "episode"], 480, False)
    with pytest.raises(ValueError, match="image_size"):
        collate([one], 0, False)
    with pytest.raises(ValueError, match="D_img, h, w"):
        collate([one], 480, False, features=lambda image: torch.zeros(1, 24, 30, 30))
