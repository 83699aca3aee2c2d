"""Frozen-encoder feature cache for training, and fixed augmented views that keep it valid.

With the image encoder frozen (the official recipe), an image's encoder output never changes
during a run, so it is computed once under ``no_grad`` and reused by every episode that shows
the image, as support or as query. Only the neck, prompt encoder and decoder are trained, on
top of these features: on a CPU this turns a step from "run the ViT on 1 + M images per
episode" into "look up 1 + M tensors".

Keys come from the **raw** image (a digest of its values, shape and dtype), not from the
preprocessed tensor, so a lookup costs a hash and nothing else. Features live in a bounded LRU
in memory (``inference.cache.LRUCache``) and optionally on disk (``inference.embedding_store``:
zarr entries whose signature holds the image digest, the encoder's weights digest, the image
size and resize mode, and the stage "image_encoder", so they never mix with the inference
store's neck outputs even in a shared folder).

**Augmentation with a cache.** Random augmentation makes every training image new, which would
turn every lookup into a miss. ``FixedViews`` therefore gives each sample a fixed number of
views (view 0 is the sample itself, views 1..V-1 are ``augment.augment`` with an rng seeded by
(seed, sample index, view)), and each time a sample is read one of its views is drawn. A
view's pixels are the same on every draw, so its features are computed once and then cached
like any image. The model still sees V variants of every sample, which is what augmentation
buys for the trainable decoder (the frozen encoder learns nothing from it anyway); with the
encoder trained (``freeze_encoder: false``) there is no cache and views are fresh every step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..inference.cache import LRUCache, tiered_lookup
from ..inference.embedding_store import BatchDigests, EmbeddingStore, image_digest, weights_digest
from .collate import model_input

FEATURE_STAGE = "image_encoder"  # what the disk entries hold: encoder output, before the trainable neck


class EncoderFeatureCache:
    """Encoder outputs of raw images for a frozen image encoder, computed once per image.

    Calling the cache with a raw image returns its (D_img, h, w) float32 features on
    ``device``: the ``features`` callable that ``collate`` takes. ``warm`` encodes every miss
    of a batch of images in one encoder pass (the trainer calls it before ``collate``).

    Args:
        model: a ``LabelAnything`` with an image encoder; only ``model.image_encoder`` runs.
        device: where features are returned (the model's device).
        size: images kept in memory (least recently used go first).
        folder: optional folder for a disk store shared across runs (zarr, see module docstring).
        autocast_dtype: ``torch.bfloat16`` to run the encoder under autocast (CUDA), else None.
        batch_size: images per encoder pass in ``warm``.
    """

    def __init__(
        self,
        model,
        device: Any = "cpu",
        size: int = 2048,
        folder: str | os.PathLike | None = None,
        autocast_dtype: Any = None,
        batch_size: int = 8,
    ) -> None:
        import torch

        if model.image_encoder is None:
            raise ValueError("this model has no image encoder (use_vit=False): nothing to cache")
        self.model = model
        self.device = torch.device(device)
        self.memory = LRUCache(size)
        self.store = EmbeddingStore(folder) if folder is not None else None
        self.autocast_dtype = autocast_dtype
        self.batch_size = max(1, int(batch_size))
        self._encoder_digest: str | None = None
        # ``collate`` asks for the very arrays of the last ``warm`` call: hash them once per step.
        self._digests = BatchDigests()
        self.stats = {"encoded": 0, "memory_hits": 0, "disk_hits": 0}

    @property
    def encoder_digest(self) -> str:
        """Digest of the image encoder's weights (computed once: they are frozen)."""
        if self._encoder_digest is None:
            self._encoder_digest = weights_digest(self.model.image_encoder)
        return self._encoder_digest

    def _signature(self, key: str) -> dict:
        c = self.model.config
        settings = {
            "image_size": c.image_size,
            "custom_preprocess": c.custom_preprocess,
            "stage": FEATURE_STAGE,
            "autocast": str(self.autocast_dtype),
        }
        values = ((c.image_embed_dim, c.embedding_grid, c.embedding_grid), np.float32)  # the encoder's output
        return EmbeddingStore.signature(key, None, self.encoder_digest, settings, values)

    def __call__(self, image: np.ndarray):
        """(D_img, h, w) float32 features of one raw image, on ``device``."""
        return self.lookup([image])[0]

    def warm(self, images: Sequence[np.ndarray]) -> None:
        """Make sure every image's features are cached (misses encoded together)."""
        self._digests.remember(images)
        self.lookup(images)

    def lookup(self, images: Sequence[np.ndarray]) -> list:
        """Features of several raw images, each (D_img, h, w) float32 on ``device``."""
        import torch

        keys = [self._digests.digest(np.asarray(image)) for image in images]
        first = dict(zip(keys, images, strict=True))

        def encode(missing: list) -> list:
            out = []
            for start in range(0, len(missing), self.batch_size):
                out += self._encode([first[k] for k in missing[start : start + self.batch_size]])
            return out

        values = tiered_lookup(
            keys,
            self.memory,
            self.store,
            self._signature,
            encode,
            load=torch.from_numpy,
            save=lambda value: value.numpy(),
            stats=self.stats,
            names=("memory_hits", "disk_hits", "encoded"),
        )
        return [value.to(self.device, non_blocking=True) for value in values]

    def _encode(self, images: Sequence[np.ndarray]) -> list:
        """Run the frozen encoder on raw images; returns CPU float32 (D_img, h, w) tensors."""
        import torch

        c = self.model.config
        pixels = torch.from_numpy(np.stack([model_input(im, c.image_size, c.custom_preprocess) for im in images]))
        encoder = self.model.image_encoder
        was_training = encoder.training
        encoder.eval()
        try:
            with (
                torch.no_grad(),
                torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None),
            ):
                out = self.model.encode_images(pixels.to(self.device))
        finally:
            encoder.train(was_training)
        return list(out.float().cpu())


class CachedEncoderBackend:
    """An ``encoder_backends``-style callable for validation with a frozen encoder.

    ``LabelAnythingSegmenter`` calls its backend with preprocessed pixels (B, 3, S, S) and wants
    neck outputs. The encoder part is looked up by a digest of the pixels (the encoder is
    frozen, so validation images are encoded once per run); the neck, which is being trained,
    runs every time.
    """

    name = "torch-cached"

    def __init__(self, model, size: int = 512) -> None:
        self.model = model
        self.memory = LRUCache(size)

    def __call__(self, pixels):
        import torch

        encoded = []
        for one in pixels:
            key = image_digest(one.detach().float().cpu().numpy())
            value = self.memory.get(key)
            if value is None:
                with torch.inference_mode():
                    value = self.model.encode_images(one[None])[0]
                self.memory.put(key, value)
            encoded.append(value)
        with torch.inference_mode():
            return self.model.apply_neck(torch.stack(encoded))


class FixedViews:
    """A dataset whose samples are read as one of ``views`` fixed augmented versions.

    View 0 is the sample unchanged; view v >= 1 is ``augment(sample, default_rng([seed, i, v]))``,
    identical every time it is drawn (see the module docstring for why). Which view a read
    returns is drawn from ``self.rng``; the sampler reseeds it per episode (``reseed``) so runs
    are reproducible, resumable and identical on every distributed rank.

    The wrapper has ``augment = False``: the sampler must not augment again.
    """

    augment = False

    def __init__(self, dataset, views: int, seed: int = 0, augment_fn: Callable | None = None) -> None:
        if views < 1:
            raise ValueError(f"views must be at least 1, got {views}")
        if augment_fn is None:
            from .datasets.augment import augment as augment_fn
        self.dataset = dataset
        self.views = int(views)
        self.seed = int(seed)
        self.augment_fn = augment_fn
        self.rng = np.random.default_rng(seed)
        self.classes = dataset.classes
        self.index = dataset.index

    def reseed(self, *entropy: int) -> None:
        """Draw views from a fresh rng seeded by (seed, *entropy), e.g. drawn by an episode."""
        self.rng = np.random.default_rng([self.seed, *map(int, entropy)])

    def __len__(self) -> int:
        return len(self.dataset)

    def view(self, i: int, v: int):
        """Sample ``i`` in view ``v`` (0 = unchanged)."""
        sample = self.dataset[i]
        if v == 0:
            return sample
        return self.augment_fn(sample, np.random.default_rng([self.seed, int(i), int(v)]))

    def __getitem__(self, i: int):
        return self.view(i, int(self.rng.integers(self.views)))

    def __getattr__(self, name: str):
        # Everything else (names, class sizes, ...) comes from the wrapped dataset.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
