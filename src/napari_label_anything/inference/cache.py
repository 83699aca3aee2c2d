"""The package's caches: one bounded LRU, and the memory-then-disk lookup built on it.

``LRUCache`` is the only bounded cache (least-recently-used eviction, thread-safe).
``tiered_lookup`` is the one rule for image features kept in memory and, optionally, in an
``EmbeddingStore`` on disk: inference (neck outputs) and frozen-encoder training (encoder
outputs) both go through it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any


class LRUCache:
    """At most ``maxsize`` entries; reading an entry makes it the most recent; the oldest goes first.

    Thread-safe, because the napari widget predicts in a worker thread while the GUI thread may
    clear caches. ``hits``/``misses`` count lookups.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = int(maxsize)
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value stored under ``key`` (now the most recent), or ``default``."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
            return default

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` as the most recent entry, evicting the least recent beyond ``maxsize``."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def tiered_lookup(
    keys: Sequence[Hashable],
    memory: LRUCache,
    store: Any,
    signature: Callable[[Hashable], dict],
    compute: Callable[[list], Sequence[Any]],
    *,
    load: Callable[[Any], Any],
    save: Callable[[Any], Any],
    stats: dict[str, int],
    names: tuple[str, str, str],
) -> list:
    """Values for ``keys``, in order; a key that repeats is looked up once.

    Each distinct key is taken from ``memory``, else from ``store`` (an ``EmbeddingStore``, or
    None) under ``signature(key)``, converted by ``load(array)`` and kept in memory. The keys
    left are computed together, ``compute(missing_keys)`` giving their values in order, and
    each is kept in memory and in the store as ``save(value)`` (a NumPy array).

    ``stats[names[0]]``, ``stats[names[1]]`` and ``stats[names[2]]`` count memory hits, store
    hits and computed values.
    """
    memory_hits, store_hits, computed = names
    found: dict[Hashable, Any] = {}
    signatures: dict[Hashable, dict] = {}
    for key in dict.fromkeys(keys):
        value = memory.get(key)
        if value is not None:
            stats[memory_hits] += 1
            found[key] = value
        elif store is not None:
            signatures[key] = signature(key)
            stored = store.get(signatures[key])
            if stored is not None:
                stats[store_hits] += 1
                found[key] = load(stored)
                memory.put(key, found[key])
    missing = [key for key in dict.fromkeys(keys) if key not in found]
    if missing:
        for key, value in zip(missing, compute(missing), strict=True):
            found[key] = value
            memory.put(key, value)
            if store is not None:
                _store(store, signatures[key], save(value))
        stats[computed] += len(missing)
    return [found[key] for key in keys]


def _store(store: Any, signature: dict, array: Any) -> None:
    """``store.put``; a write that fails (a full cache disk) is one OSError naming the cache folder."""
    try:
        store.put(signature, array)
    except OSError as err:
        from ..io.label_files import write_error

        raise write_error(f"image features into the cache folder {getattr(store, 'folder', store)}", err) from None
