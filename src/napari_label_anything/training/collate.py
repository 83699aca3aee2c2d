"""Training episodes -> the official batch dictionary and the matching target.

Images go through the package's one preprocessing (``preprocessing.to_uint8_rgb`` then
``image_to_model_input``, as ``LabelAnythingSegmenter`` feeds its model), prompts through
``model_inputs.build_prompt_arrays`` (the only place where (row, col) becomes (x, y)).

``dims`` holds each image's size *inside the model frame* (the long-side resize with
``custom_preprocess``, S x S otherwise), not its original size: ``LabelAnything.forward`` then
returns logits at that resolution, and the target is resized (nearest) to the same size, so
training never upsamples logits to arbitrary original sizes. Logits are padded by ``forward`` to
the largest of all ``dims`` (queries and supports); the target is padded to the same size
with -100 (ignored by the loss).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..inference.label_anything.model_inputs import build_prompt_arrays
from ..preprocessing import image_to_model_input, model_frame_shape, to_uint8_rgb
from .sampler import TrainingEpisode

IGNORE_INDEX = -100
PROMPT_KEYS = ("prompt_masks", "flag_masks", "prompt_points", "flag_points", "prompt_bboxes", "flag_bboxes")


def model_input(image: np.ndarray, image_size: int, custom_preprocess: bool) -> np.ndarray:
    """(Y, X[, 3|4]) image of any real dtype -> (3, S, S) float32, normalised as at inference."""
    return image_to_model_input(to_uint8_rgb(image), image_size, custom_preprocess)


def resize_target(target: np.ndarray, shape: tuple[int, int]):
    """(Y, X) int labels -> (h, w) int64 torch tensor, torch's legacy nearest (as the official masks)."""
    import torch
    from torch.nn import functional as F

    labels = torch.from_numpy(np.ascontiguousarray(target, dtype=np.int64))
    if tuple(labels.shape) == tuple(shape):
        return labels.clone()
    # float64 represents every label id exactly; nearest only copies values.
    resized = F.interpolate(labels[None, None].double(), size=tuple(shape), mode="nearest")
    return resized[0, 0].round().long()


def _check(episodes: Sequence[TrainingEpisode], image_size: int) -> None:
    if isinstance(episodes, TrainingEpisode) or not isinstance(episodes, Sequence) or not episodes:
        raise ValueError(f"collate needs a non-empty list of TrainingEpisode, got {episodes!r}")
    for i, item in enumerate(episodes):
        if not isinstance(item, TrainingEpisode):
            raise TypeError(f"episodes[{i}] must be a TrainingEpisode, got {type(item).__name__}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
    counts = {len(item.episode.supports) for item in episodes}
    if len(counts) > 1:
        raise ValueError(f"every episode of a batch needs the same number of supports, got {sorted(counts)}")
    if 0 in counts:
        raise ValueError("an episode of the batch has no support")


def _embedding(features: Callable, image: np.ndarray):
    import torch

    value = torch.as_tensor(features(image))
    if value.ndim != 3:
        raise ValueError(f"features(image) must return a (D_img, h, w) tensor, got shape {tuple(value.shape)}")
    return value


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-pad the trailing end of every axis of ``array`` to ``shape``."""
    return np.pad(array, [(0, want - have) for have, want in zip(array.shape, shape, strict=True)])


def collate(
    episodes: Sequence[TrainingEpisode],
    image_size: int,
    custom_preprocess: bool,
    features: Callable | None = None,
):
    """Stack episodes into the batch ``LabelAnything.forward`` takes, plus the target.

    All episodes need the same number of supports M; they may differ in N (the batch then has
    C = max N + 1 classes, and the missing ones are flagged off in ``flag_gts``, padded in the
    prompt arrays with flag 0).

    Args:
        episodes: B training episodes.
        image_size: the model's input side S (``model.config.image_size``).
        custom_preprocess: the model's resize mode (long side + padding, or squash).
        features: optional ``features(image) -> tensor (D_img, h, w)`` (e.g. a frozen-encoder
            cache); given, the batch holds ``embeddings`` instead of ``images``. It receives the
            raw query/support images (Y, X[, 3]).

    Returns:
        ``(batch, target)``. ``batch``: ``images`` (B, 1+M, 3, S, S) float32 or ``embeddings``
        (B, 1+M, D_img, h, w) (index 0 = the query); ``prompt_masks`` (B, M, C, 256, 256)
        float32, ``flag_masks`` (B, M, C) uint8; ``prompt_points`` (B, M, C, Np, 2) float32
        (x, y), ``flag_points`` (B, M, C, Np) uint8; ``prompt_bboxes`` (B, M, C, Nb, 4)
        float32, ``flag_bboxes`` (B, M, C, Nb) uint8; ``flag_examples`` (B, M, C) bool;
        ``dims`` (B, 1+M, 2) int64 model-frame (h, w); ``flag_gts`` (B, C) bool.
        ``target``: (B, H, W) int64, local ids 0..N_b, -100 outside each query's dims, where
        (H, W) is the maximum over all ``dims`` (the size of ``forward``'s logits).
    """
    import torch

    _check(episodes, image_size)
    side, custom = int(image_size), bool(custom_preprocess)
    n_classes = max(item.episode.n_classes for item in episodes) + 1
    arrays = [build_prompt_arrays(item.episode, side, custom) for item in episodes]
    n_points = max(a["prompt_points"].shape[3] for a in arrays)
    n_boxes = max(a["prompt_bboxes"].shape[3] for a in arrays)
    batch: dict[str, torch.Tensor] = {}
    for key in PROMPT_KEYS + ("flag_examples",):
        stacked = []
        for a in arrays:
            value = a[key][0]
            shape = (value.shape[0], n_classes) + value.shape[2:]
            if key in ("prompt_points", "flag_points"):
                shape = shape[:2] + (n_points,) + shape[3:]
            elif key in ("prompt_bboxes", "flag_bboxes"):
                shape = shape[:2] + (n_boxes,) + shape[3:]
            stacked.append(_pad_to(value, shape))
        batch[key] = torch.from_numpy(np.stack(stacked))
    flag_gts = np.zeros((len(episodes), n_classes), dtype=bool)
    for b, item in enumerate(episodes):
        flag_gts[b, : item.episode.n_classes + 1] = True
    batch["flag_gts"] = torch.from_numpy(flag_gts)

    images_per_episode = [[item.query, *(s.image for s in item.episode.supports)] for item in episodes]
    dims = np.array(
        [[model_frame_shape(*image.shape[:2], side, custom) for image in images] for images in images_per_episode],
        dtype=np.int64,
    )
    batch["dims"] = torch.from_numpy(dims)
    if features is None:
        batch["images"] = torch.from_numpy(
            np.stack(
                [np.stack([model_input(image, side, custom) for image in images]) for images in images_per_episode]
            )
        )
    else:
        batch["embeddings"] = torch.stack(
            [torch.stack([_embedding(features, image) for image in images]) for images in images_per_episode]
        )

    height, width = (int(v) for v in dims.reshape(-1, 2).max(axis=0))
    target = torch.full((len(episodes), height, width), IGNORE_INDEX, dtype=torch.int64)
    for b, item in enumerate(episodes):
        h, w = (int(v) for v in dims[b, 0])
        target[b, :h, :w] = resize_target(item.target, (h, w))
    return batch, target
