"""Image features kept on disk as zarr, so a stack is encoded once across runs and processes.

Each entry is one zarr array ``<folder>/<key>.zarr`` holding the neck output of one image. Its
attributes hold the full **signature** it was computed from and a checksum of its values:

- the raw image (a digest of its bytes, shape and dtype: no preprocessing is needed to look up),
- the intensity range used to bring it to 8 bits,
- the model's weights digest,
- the preprocessing (image size, resize mode and the version of this package's rules).

An entry is used only when its stored signature equals the one asked for and its values match
the checksum; anything else (a stale, tampered or half-written entry) counts as a miss and is
recomputed and replaced. Entries are written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# Bump when image preprocessing changes in a way that changes features: old entries then miss.
PREPROCESSING_RULES = 1


def image_digest(image: np.ndarray) -> str:
    """Digest of a raw image's values, shape and dtype (BLAKE2b, 128 bits)."""
    array = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.shape}{array.dtype.str}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


class BatchDigests:
    """Digests of the images of the batch at hand, remembered by object identity.

    A batch of planes is looked up once to encode its misses together, then plane by plane as
    each is predicted; without this every plane would be hashed twice (milliseconds at 1024 px).
    Arrays are held while remembered, so their ids cannot be reused by other objects. A
    ``batch`` block remembers its images until it ends (blocks may nest, overlap or end in any
    order: each image is held while any block holding it is open); ``remember`` keeps one set
    until the next call. An array changed in place while remembered keeps its first digest, so
    callers remember only arrays they do not change meanwhile.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, tuple[np.ndarray, str, int]] = {}  # id -> (array, digest, open blocks)
        self._remembered: dict[int, tuple[np.ndarray, str]] = {}

    def remember(self, images) -> None:
        """Hash ``images``, replacing the set kept by the previous call."""
        self._remembered = {id(image): (image, image_digest(image)) for image in images}

    @contextmanager
    def batch(self, images):
        """Remember ``images`` for the ``with`` block; yields their digests."""
        digests = [self.digest(image) for image in images]
        with self._lock:
            for image, digest in zip(images, digests, strict=True):
                held = self._held.get(id(image))
                self._held[id(image)] = (image, digest, held[2] + 1 if held else 1)
        try:
            yield digests
        finally:
            with self._lock:
                for image in images:
                    array, digest, count = self._held[id(image)]
                    if count > 1:
                        self._held[id(image)] = (array, digest, count - 1)
                    else:
                        del self._held[id(image)]

    def digest(self, image: np.ndarray) -> str:
        """``image_digest(image)``, from memory when it is one of the remembered arrays."""
        for known in (self._held.get(id(image)), self._remembered.get(id(image))):
            if known is not None and known[0] is image:
                return known[1]
        return image_digest(image)


def weights_digest(model) -> str:
    """Digest of a torch model's state dict (names, shapes, dtypes and values)."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        values = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(values.shape)}{values.dtype}".encode())
        digest.update(values.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _checksum(values: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=16).hexdigest()


class EmbeddingStore:
    """A folder of zarr feature arrays keyed by signature (see the module docstring).

    >>> store = EmbeddingStore("embeddings/")                        # doctest: +SKIP
    >>> store.get(signature) is None                                  # doctest: +SKIP
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot use {self.folder} as an embedding store: {err.strerror or err}") from None
        self.hits = self.misses = self.rejected = 0

    @staticmethod
    def signature(
        image_key: str, value_range: tuple[float, float] | None, model_digest: str, preprocessing: dict[str, Any]
    ) -> dict[str, Any]:
        """Everything an entry's values depend on, as a JSON-able dict."""
        return {
            "image": image_key,
            "value_range": None if value_range is None else [float(v) for v in value_range],
            "model": model_digest,
            "preprocessing": {**preprocessing, "rules": PREPROCESSING_RULES},
        }

    def _path(self, signature: dict[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:40]
        return self.folder / f"{key}.zarr"

    def get(self, signature: dict[str, Any]) -> np.ndarray | None:
        """The stored features for ``signature``, or None (missing, stale or damaged entries miss)."""
        import zarr

        path = self._path(signature)
        if not path.exists():
            self.misses += 1
            return None
        try:
            array = zarr.open_array(str(path), mode="r")
            attributes = dict(array.attrs)
            values = np.asarray(array[...])
            valid = attributes.get("signature") == signature and attributes.get("checksum") == _checksum(values)
        except Exception:  # noqa: BLE001 - any unreadable entry is a miss, recomputed and replaced
            valid = False
        if not valid:
            self.rejected += 1
            self.misses += 1
            return None
        self.hits += 1
        return values

    def put(self, signature: dict[str, Any], values: np.ndarray) -> Path:
        """Store ``values`` (any float array) under ``signature``, replacing any old entry."""
        import zarr

        path = self._path(signature)
        values = np.ascontiguousarray(values)
        temporary = Path(tempfile.mkdtemp(dir=self.folder, prefix=".writing-"))
        try:
            array = zarr.open_array(str(temporary / "entry.zarr"), mode="w", shape=values.shape, dtype=values.dtype)
            array[...] = values
            array.attrs.update({"signature": signature, "checksum": _checksum(values)})
            shutil.rmtree(path, ignore_errors=True)
            os.replace(temporary / "entry.zarr", path)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.zarr"))
