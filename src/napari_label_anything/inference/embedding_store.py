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
    The arrays are held while remembered, so their ids cannot be reused by other objects;
    ``forget`` (or the end of a ``batch`` block) drops them, so an array changed in place later
    is hashed afresh.
    """

    def __init__(self) -> None:
        self._recent: dict[int, tuple[np.ndarray, str]] = {}

    def remember(self, images) -> list[str]:
        """Hash ``images`` (replacing what was remembered) and return their digests."""
        digests = [image_digest(image) for image in images]
        self._recent = {id(image): (image, d) for image, d in zip(images, digests, strict=True)}
        return digests

    def forget(self) -> None:
        self._recent = {}

    @contextmanager
    def batch(self, images):
        """Remember ``images`` too for the ``with`` block (blocks nest); yields their digests."""
        previous = self._recent
        digests = [self.digest(image) for image in images]
        self._recent = {**previous, **{id(im): (im, d) for im, d in zip(images, digests, strict=True)}}
        try:
            yield digests
        finally:
            self._recent = previous

    def digest(self, image: np.ndarray) -> str:
        """``image_digest(image)``, from memory when it is one of the remembered arrays."""
        recent = self._recent.get(id(image))
        if recent is not None and recent[0] is image:
            return recent[1]
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
