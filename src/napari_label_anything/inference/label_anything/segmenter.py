"""``LabelAnythingSegmenter``: the Label Anything network behind the ``Segmenter`` interface.

What is expensive is cached: image features per distinct raw image and value range (in memory,
and on disk with an ``EmbeddingStore``), class prototypes per episode content and class rows.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...episode import Episode, check_image
from ...labels import labels_dtype
from ...preprocessing import (
    PER_PLANE,
    check_value_range,
    image_to_model_input,
    intensity_range,
    stack_value_range,
    to_uint8_rgb,
)
from ...stacks import as_stack, stack_layout
from ..base import PredictionCancelled, Segmenter, current_steps, is_cancelled
from ..cache import LRUCache, tiered_lookup
from ..embedding_store import BatchDigests, EmbeddingStore, weights_digest
from ..encoder_backends import make_encoder, resolve_encoder
from ..tiling import MODES as TILING_MODES
from ..tiling import Stitcher, TilingChoice, choose_tiling, plan_tiles
from .transforms import image_to_model_input_torch, to_device, to_uint8_rgb_torch

PRECISIONS = ("float32", "bfloat16", "float16")


class LabelAnythingSegmenter(Segmenter):
    """Runs a ``LabelAnything`` model; caches image features and class prototypes.

    Changing prompts re-runs only the (cheap) prompt encoder; every distinct image is encoded
    once while it stays in the cache (``cache_size`` images).

    ``encoder``: ``auto`` (default; ``encoder_backends.resolve_encoder``: ONNX Runtime on a CPU in
    float32 when installed, else PyTorch), ``torch``, ``onnx`` or ``onnx-int8``;
    ``encoder_backend`` says which one runs, ``encoder_note`` why ``auto`` runs PyTorch on a CPU.
    ``on_status``: called with one-line messages about a one-off ONNX export.
    """

    def __init__(
        self,
        model,
        device: Any = "auto",
        name: str = "label-anything",
        cache_size: int = 32,
        store: EmbeddingStore | str | os.PathLike | None = None,
        encoder: str = "auto",
        batch_size: int | None = None,
        precision: str = "float32",
        tiling: str = "auto",
        release_torch_encoder: bool = False,
        on_status: Callable[[str], Any] | None = None,
    ) -> None:
        from ...hub.device import resolve_device

        self.device_obj = resolve_device(device)
        self.device = str(self.device_obj)
        self.model = model.to(self.device_obj).eval()
        self.name = name
        self.cache_size = cache_size
        self._features = LRUCache(cache_size)  # (raw-image digest, value range) -> neck output
        self._digests = BatchDigests()
        self._prototypes = LRUCache(4)  # (episode signature, class rows) -> ClassEmbeddings
        self.store = EmbeddingStore(store) if store is not None and not isinstance(store, EmbeddingStore) else store
        self._weights_digest: str | None = None
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        backend = resolve_encoder(encoder, self.device_obj.type, precision)
        if precision != "float32" and backend != "torch":
            raise ValueError(f"precision {precision!r} needs encoder='torch' (the ONNX encoder runs float32)")
        self.precision = precision
        if tiling not in TILING_MODES:
            raise ValueError(f"tiling must be one of {', '.join(TILING_MODES)}, got {tiling!r}")
        self.tiling = tiling
        default_batch = 4 if self.device_obj.type == "cuda" else 1
        self.batch_size = int(batch_size or default_batch)
        if not 1 <= self.batch_size <= cache_size:
            raise ValueError(f"batch_size must lie in 1..cache_size ({cache_size}), got {batch_size}")
        if release_torch_encoder and backend != "torch":
            _ = self.weights_digest  # the store keys on the full model's digest: take it first
        # Last: a one-off ONNX export may take a while, and every setting above is checked by then.
        self.encoder = make_encoder(
            encoder, self.model, lambda: self.weights_digest, self.device_obj.type, release_torch_encoder,
            precision=precision, on_status=on_status,
        )  # fmt: skip
        self.stats = {"encoded_images": 0, "feature_cache_hits": 0, "store_hits": 0, "prompt_encodings": 0}

    @property
    def config(self):
        return self.model.config

    @property
    def encoder_backend(self) -> str:
        """The image encoder that runs: ``torch``, ``onnx`` or ``onnx-int8`` (for ``auto``, what it
        resolved to, after any fallback)."""
        return getattr(self.encoder, "name", "torch")

    @property
    def encoder_note(self) -> str | None:
        """None, or one line saying why ``encoder='auto'`` runs PyTorch on a CPU."""
        return getattr(self.encoder, "note", None)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"LabelAnythingSegmenter({self.name!r}, encoder={c.encoder}, "
            f"image_size={c.image_size}, device={self.device}, backend={self.encoder_backend})"
        )

    def clear_cache(self) -> None:
        self._features.clear()
        self._prototypes.clear()

    def cached(self) -> dict[str, int]:
        """How many entries each in-memory cache holds: image features and class prototypes."""
        return {"features": len(self._features), "prototypes": len(self._prototypes)}

    # -- cached steps --------------------------------------------------------------------

    def _model_input_on_device(self, image: np.ndarray, value_range: tuple[float, float] | None):
        """``_model_input`` computed on the model's device from the raw plane (torch twins)."""
        if value_range == PER_PLANE or (value_range is None and image.dtype not in (np.uint8, np.bool_)):
            value_range = intensity_range(image)  # a subsampled percentile: cheap on the CPU
        raw = to_device(image, self.device_obj)
        rgb = to_uint8_rgb_torch(raw, value_range)
        return image_to_model_input_torch(rgb, self.config.image_size, self.config.custom_preprocess)

    def _model_input(self, image: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
        rgb = to_uint8_rgb(image, value_range)
        return image_to_model_input(rgb, self.config.image_size, self.config.custom_preprocess)

    @property
    def weights_digest(self) -> str:
        """Digest of the model's weights (computed once): part of every disk-store signature."""
        if self._weights_digest is None:
            self._weights_digest = weights_digest(self.model)
        return self._weights_digest

    def _autocast(self):
        """Mixed precision for the network's forward passes (a no-op in float32)."""
        import torch

        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.precision)
        return torch.autocast(self.device_obj.type, dtype=dtype, enabled=dtype is not None)

    def features(self, image: np.ndarray, value_range: tuple[float, float] | None = None):
        """Neck output of one image, (1, D, h, w) float32 on the model device.

        Looked up by the raw image and its value range, first in memory, then in the disk
        store (when one is attached); computed and stored on a miss.
        """
        return self.encode_batch([image], value_range)[0]

    def encode_batch(self, images: Sequence[np.ndarray], value_range: tuple[float, float] | None = None) -> list:
        """Neck outputs of several images, each (1, D, h, w), encoding every miss in one batch.

        Args:
            images: 2D images (any dtype, grey or colour), each looked up like ``features``.
            value_range: one intensity range for all of them (e.g. a stack's), or None.
        """
        import torch

        images = [check_image(image, "image") for image in images]
        value_range = None if value_range is None else check_value_range(value_range)
        keys = [(self._digests.digest(image), value_range) for image in images]
        first = dict(zip(keys, images, strict=True))

        def encode(missing: list) -> list:
            if self.device_obj.type == "cuda":  # preprocessing on the device (inference/label_anything/transforms.py)
                batch = torch.stack([self._model_input_on_device(first[key], value_range) for key in missing])
            else:
                batch = torch.from_numpy(np.stack([self._model_input(first[key], value_range) for key in missing]))
            with self._autocast():
                encoded = self.encoder(batch.to(self.device_obj))
            return [encoded[i : i + 1] for i in range(len(missing))]

        return tiered_lookup(
            keys,
            self._features,
            self.store,
            self._store_signature,
            encode,
            load=lambda stored: torch.from_numpy(stored).to(self.device_obj),
            save=lambda value: value.float().cpu().numpy(),
            stats=self.stats,
            names=("feature_cache_hits", "store_hits", "encoded_images"),
        )

    def _store_signature(self, key: tuple) -> dict:
        c = self.config
        # An int8 encoder's approximate features get their own entries (float ONNX shares torch's).
        precision = getattr(self.encoder, "precision", self.precision)
        settings = {"image_size": c.image_size, "custom_preprocess": c.custom_preprocess, "precision": precision}
        values = ((1, c.embed_dim, c.embedding_grid, c.embedding_grid), np.float32)  # the neck's output
        return self.store.signature(key[0], key[1], self.weights_digest, settings, values)

    def _predict_planes(self, episode, stack, layout, indices, cancel, predict_plane, options):
        """Planes in batches of ``batch_size``: the query encoder runs once per batch.

        Each plane is hashed once, when its batch is read: a plane changed in place while its
        batch is being predicted keeps the features of that first look.
        """
        from concurrent.futures import ThreadPoolExecutor

        self.class_embeddings(episode, options.get("class_rows"))  # supports first, once
        chunks = [indices[start : start + self.batch_size] for start in range(0, len(indices), self.batch_size)]

        def read(chunk):
            return [layout.take(stack, index) for index in chunk]

        # The next batch is read (a lazy stack: from disk) while this one is computed.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nla-prefetch") as reader:
            upcoming = reader.submit(read, chunks[0]) if chunks else None
            for i, chunk in enumerate(chunks):
                planes = upcoming.result()
                upcoming = reader.submit(read, chunks[i + 1]) if i + 1 < len(chunks) else None
                if is_cancelled(cancel):
                    raise PredictionCancelled("prediction cancelled")
                # A plane to be tiled is encoded tile by tile (``logits``), never whole.
                whole = [p for p in planes if not self.tiling_for(episode, p.shape[:2]).tiled]
                with self._digests.batch(whole):  # each plane hashed once, not per lookup
                    self.encode_batch(whole, options.get("value_range"))
                    for index, plane in zip(chunk, planes, strict=True):
                        if is_cancelled(cancel):
                            raise PredictionCancelled("prediction cancelled")
                        yield index, predict_plane(plane)

    def embed_stack(
        self,
        stack: Any,
        axis: int | tuple[int, ...] = 0,
        rgb: bool | None = None,
        progress: Callable[[int, int], Any] | None = None,
    ) -> int:
        """Compute (and store, with a disk store attached) the features of every plane of ``stack``.

        Planes get the intensity range ``predict_stack`` would give them, so a later prediction
        of the same stack finds every plane. Returns the number of planes.
        """
        stack = as_stack(stack)
        layout = stack_layout(stack.shape, axis, rgb)
        value_range = stack_value_range(stack)
        indices = layout.plane_indices()
        for done, index in enumerate(indices, start=1):
            self.features(layout.take(stack, index), value_range)
            if progress is not None:
                progress(done, len(indices))
        return len(indices)

    def _class_rows(self, episode: Episode, class_rows: Sequence[int] | None):
        import torch

        bank = self.config.class_bank_size
        if class_rows is None:
            return None
        rows = [int(r) for r in class_rows]
        if bank is None:
            warnings.warn("this model has no class-token pool; class_rows is ignored", stacklevel=3)
            return None
        if len(rows) != episode.n_classes + 1:
            raise ValueError(
                f"class_rows needs {episode.n_classes + 1} entries "
                f"(background + {episode.n_classes} classes), got {len(rows)}"
            )
        if any(not 0 <= r < bank for r in rows):
            raise ValueError(f"class_rows must lie in 0..{bank - 1}, got {rows}")
        return torch.tensor(rows, dtype=torch.long, device=self.device_obj)

    def class_embeddings(self, episode: Episode, class_rows: Sequence[int] | None = None):
        """Class prototypes of an episode (``ClassEmbeddings``), cached per episode content."""
        import torch

        from .model_inputs import build_prompt_arrays, to_prompt_tensors

        episode.validate()
        bank = self.config.class_bank_size
        if bank is not None and episode.n_classes + 1 > bank:
            raise ValueError(
                f"this model's class-token pool has {bank} rows (one is the background), so an episode "
                f"can have at most {bank - 1} classes; this one has {episode.n_classes}"
            )
        rows = self._class_rows(episode, class_rows)
        key = (episode.signature(), None if rows is None else tuple(rows.tolist()))
        cached = self._prototypes.get(key)
        if cached is not None:
            return cached
        support_features = torch.cat([self.features(s.image) for s in episode.supports])[None]
        arrays = build_prompt_arrays(episode, self.config.image_size, self.config.custom_preprocess)
        with torch.inference_mode(), self._autocast():
            result = self.model.encode_prompts(support_features, to_prompt_tensors(arrays, self.device_obj), rows)
        self.stats["prompt_encodings"] += 1
        self._prototypes.put(key, result)
        return result

    # -- prediction ----------------------------------------------------------------------

    def logits(
        self,
        episode: Episode,
        query: Any,
        class_rows: Sequence[int] | None = None,
        value_range: tuple[float, float] | None = None,
    ):
        """Logits of a 2D query at its own size: (N+1, Y, X) float32 torch tensor.

        A plane much larger than the supports is tiled (``tiling``, see ``tiling_for``): tiles
        of the supports' scale, overlapping, their logits blended, each batch of tiles a step
        of the plane (``PlaneSteps``: reported, and cancellable between batches); else the whole
        plane goes through the model's own resize, as the official code does.
        """
        import torch

        query = check_image(query, "query image")
        choice = self.tiling_for(episode, query.shape[:2])
        if not choice.tiled:
            return self._plane_logits(episode, query, class_rows, value_range)
        if value_range == PER_PLANE:  # the plane's own range, the same for each of its tiles
            low, high = intensity_range(query)
            value_range = (low, high) if high > low else None
        elif value_range is None:
            value_range = stack_value_range(query)  # one range for the plane: tiles keep its contrast
        self.class_embeddings(episode, class_rows)
        stitcher = Stitcher(query.shape[:2], episode.n_classes + 1)
        tiles = plan_tiles(query.shape[:2], choice.tile, choice.overlap)
        steps = current_steps()  # each batch of tiles is a step (``PlaneSteps``)
        for start in range(0, len(tiles), self.batch_size):
            steps.check()
            chunk = tiles[start : start + self.batch_size]
            views = [query[t.slices] for t in chunk]
            with self._digests.batch(views):  # each tile hashed once
                self.encode_batch(views, value_range)
                for t, view in zip(chunk, views, strict=True):
                    stitcher.add(t, self._plane_logits(episode, view, class_rows, value_range).cpu().numpy())
            steps.step(start + len(chunk), len(tiles))
        return torch.from_numpy(stitcher.result()).to(self.device_obj)

    def tiling_for(self, episode: Episode, shape_yx: tuple[int, int]) -> TilingChoice:
        """Whether (and how) a query plane of ``shape_yx`` is tiled for this episode.

        ``"resize"``: never. ``"tile"``: always. ``"auto"`` (default): when the plane's long side
        is more than ``AUTO_TILE_FACTOR`` (2) times the tile side. The tile side is the supports'
        long side, kept within [image_size / 2, 2 * image_size]: the model sees query tiles at
        the scale it sees the supports (supports are always resized whole), so objects keep
        their apparent size; the bounds keep the number of tiles (their cost) reasonable.
        """
        side = self.config.image_size
        support_side = max(max(s.shape) for s in episode.supports) if episode.supports else side
        tile = int(min(max(support_side, side // 2), 2 * side))
        return choose_tiling(shape_yx, tile, self.tiling)

    def _plane_logits(self, episode, query, class_rows, value_range):
        """The official path for one plane: features -> decode -> upscale to the plane's size."""
        import torch

        classes = self.class_embeddings(episode, class_rows)
        features = self.features(query, value_range)
        with torch.inference_mode(), self._autocast():
            lowres = self.model.decode(features, classes)
        with torch.inference_mode():
            return self.model.upscale_logits(lowres.float(), query.shape[:2])[0]

    def predict_proba(
        self,
        episode: Episode,
        query: Any,
        class_rows: Sequence[int] | None = None,
        value_range: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Softmax of the logits, (N+1, Y, X) float32; ``class_rows`` picks class-token rows."""
        import torch

        logits = self.logits(episode, query, class_rows, value_range)
        return torch.softmax(logits, dim=0).float().cpu().numpy()

    def predict(
        self,
        episode: Episode,
        query: Any,
        class_rows: Sequence[int] | None = None,
        value_range: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Label image (Y, X): the argmax of the logits (uint8; uint16 above 255 classes)."""
        logits = self.logits(episode, query, class_rows, value_range)
        return logits.argmax(dim=0).cpu().numpy().astype(labels_dtype(episode.n_classes))
