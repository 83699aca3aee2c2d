"""Image features kept on disk as zarr, so a stack is encoded once across runs and processes.

Each entry is one zarr array ``<folder>/<key>.zarr`` holding the neck output of one image,
uncompressed in one chunk. Its attributes hold the full **signature** it was computed from and
an HMAC-SHA256 of the signature and the values:

- the raw image (a digest of its bytes, shape and dtype: no preprocessing is needed to look up),
- the intensity range used to bring it to 8 bits,
- the model's weights digest,
- the preprocessing (image size, resize mode and the version of this package's rules),
- the shape and dtype the values must have.

The folder's contents are untrusted (it may be shared, copied or written by someone else). The
HMAC key is a per-user secret that does not live in the folder (``store_key``: a file in the
user's config folder, made on first use). An entry is used only when its metadata declares the
shape and dtype the signature implies (checked before any value is read; an uncompressed
single chunk of exactly that size, so reading it is bounded), its stored signature equals the
one asked for and its HMAC verifies. Anything else (a stale, forged, tampered or half-written
entry) is a miss, logged as a warning, recomputed and replaced. Entries are written to a
temporary folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# Bump when image preprocessing changes in a way that changes features: old entries then miss.
PREPROCESSING_RULES = 1
KEY_NAME = "embeddings.key"  # in registry.config_dir(): the secret entries are authenticated with
METADATA_BYTES = 1 << 20  # an entry's zarr.json may not be larger (it is read whole)

log = logging.getLogger(__name__)


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


def key_path() -> Path:
    """Where this user's embedding-store key lives (``registry.config_dir()`` / ``KEY_NAME``)."""
    from ..hub.registry import config_dir

    return config_dir() / KEY_NAME


def store_key() -> bytes:
    """This user's secret for authenticating embedding-store entries, made on first use.

    A random 256-bit key written as hex to ``key_path()`` with permissions 0600, atomically (a
    private temporary file hard-linked into place, so processes starting at once agree on one
    key).

    Raises:
        ValueError: naming the file when it cannot be made or read, or is damaged.
    """
    path = key_path()
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _create_key(path)
        except OSError as err:
            raise ValueError(f"cannot create the embeddings key {path}: {err.strerror or err}") from None
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError as err:
        raise ValueError(f"cannot read the embeddings key {path}: {err.strerror or err}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError(f"the embeddings key {path} is damaged; delete it (stored embeddings are then recomputed)")
    return key


def _create_key(path: Path) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # fails when another process made it first: theirs is kept
        except FileExistsError:
            pass
        except OSError:  # no hard links here (some network or Windows file systems)
            if not path.exists():
                os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _values_spec(signature: dict[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    spec = signature["values"]
    return tuple(int(n) for n in spec["shape"]), np.dtype(spec["dtype"])


def _mac(key: bytes, signature: dict[str, Any], values: np.ndarray) -> str:
    """HMAC-SHA256 of the signature (shape and dtype included) then the values' bytes."""
    header = json.dumps(signature, sort_keys=True).encode()
    mac = hmac.new(key, len(header).to_bytes(8, "big") + header, hashlib.sha256)
    mac.update(memoryview(np.ascontiguousarray(values).reshape(-1).view(np.uint8)))
    return mac.hexdigest()


class EmbeddingStore:
    """A folder of zarr feature arrays keyed by signature (see the module docstring).

    ``key``: the HMAC key (default: ``store_key()``, this user's).

    >>> store = EmbeddingStore("embeddings/")                        # doctest: +SKIP
    >>> store.get(signature) is None                                  # doctest: +SKIP
    """

    def __init__(self, folder: str | os.PathLike, key: bytes | None = None) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot use {self.folder} as an embedding store: {err.strerror or err}") from None
        self._key = store_key() if key is None else bytes(key)
        self.hits = self.misses = self.rejected = 0

    @staticmethod
    def signature(
        image_key: str,
        value_range: tuple[float, float] | None,
        model_digest: str,
        preprocessing: dict[str, Any],
        values: tuple[tuple[int, ...], Any],
    ) -> dict[str, Any]:
        """Everything an entry's values depend on, as a JSON-able dict; ``values`` is the
        (shape, dtype) they have (an entry declaring anything else is refused unread)."""
        shape, dtype = values
        return {
            "image": image_key,
            "value_range": None if value_range is None else [float(v) for v in value_range],
            "model": model_digest,
            "preprocessing": {**preprocessing, "rules": PREPROCESSING_RULES},
            "values": {"shape": [int(n) for n in shape], "dtype": np.dtype(dtype).str},
        }

    def _path(self, signature: dict[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:40]
        return self.folder / f"{key}.zarr"

    def get(self, signature: dict[str, Any]) -> np.ndarray | None:
        """The stored features for ``signature``, or None (missing, stale, forged or damaged
        entries miss, with a warning for each entry refused)."""
        path = self._path(signature)
        if not path.exists():
            self.misses += 1
            return None
        try:
            values = self._read(path, signature)
        except Exception as err:  # noqa: BLE001 - any unusable entry is a miss, recomputed and replaced
            log.warning("embedding store: ignoring %s (%s); it is recomputed", path, err)
            self.rejected += 1
            self.misses += 1
            return None
        self.hits += 1
        return values

    def _read(self, path: Path, signature: dict[str, Any]) -> np.ndarray:
        """An entry's values once its metadata (read first, bounded) and its HMAC check out."""
        import zarr

        shape, dtype = _values_spec(signature)
        metadata = path / "zarr.json"
        if not metadata.is_file() or metadata.stat().st_size > METADATA_BYTES:
            raise ValueError("no zarr v3 metadata, or metadata too large")
        array = zarr.open_array(str(path), mode="r")  # reads zarr.json only
        declared = (tuple(array.shape), np.dtype(array.dtype), tuple(array.chunks))
        if declared != (shape, dtype, shape):
            raise ValueError(f"declares shape {declared[0]}, dtype {declared[1]}, chunks {declared[2]}; "
                             f"the signature implies {shape} {dtype} in one chunk")  # fmt: skip
        if array.shards is not None or [type(c).__name__ for c in array.metadata.codecs] != ["BytesCodec"]:
            raise ValueError("its values are not stored uncompressed")
        chunk = path / array.metadata.encode_chunk_key((0,) * len(shape))
        expected = int(np.prod(shape)) * dtype.itemsize
        if not chunk.is_file() or chunk.stat().st_size != expected:
            raise ValueError(f"its chunk is not the {expected} bytes its shape needs")
        attributes = dict(array.attrs)
        if attributes.get("signature") != signature:
            raise ValueError("its signature differs")
        values = np.asarray(array[...])
        if not hmac.compare_digest(str(attributes.get("hmac")), _mac(self._key, signature, values)):
            raise ValueError("its values or signature fail authentication")
        return values

    def put(self, signature: dict[str, Any], values: np.ndarray) -> Path:
        """Store ``values`` (of the signature's shape and dtype) under ``signature``, replacing
        any old entry."""
        import zarr

        shape, dtype = _values_spec(signature)
        values = np.ascontiguousarray(values)
        if (values.shape, values.dtype) != (shape, dtype):
            raise ValueError(f"values of shape {values.shape} {values.dtype}; the signature says {shape} {dtype}")
        path = self._path(signature)
        temporary = Path(tempfile.mkdtemp(dir=self.folder, prefix=".writing-"))
        try:
            attributes = {"signature": signature, "hmac": _mac(self._key, signature, values)}
            array = zarr.create_array(str(temporary / "entry.zarr"), shape=shape, dtype=dtype, chunks=shape,
                                      compressors=None, attributes=attributes)  # fmt: skip
            array[...] = values
            if path.is_symlink() or path.is_file():  # not an entry this store wrote
                path.unlink()
            shutil.rmtree(path, ignore_errors=True)
            os.replace(temporary / "entry.zarr", path)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.zarr"))
