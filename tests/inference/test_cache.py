"""LRUCache, the memory-then-disk feature lookup and the per-batch image digests."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_label_anything.inference.cache import LRUCache, tiered_lookup
from napari_label_anything.inference.embedding_store import BatchDigests, EmbeddingStore, image_digest


def test_least_recently_used_goes_first():
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.get("b", "gone") == "gone"
    assert (cache.hits, cache.misses) == (3, 1) and len(cache) == 2


def test_put_refreshes_and_clear_empties():
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)
    cache.put("c", 3)
    assert cache.get("a") == 10 and "b" not in cache
    cache.clear()
    assert len(cache) == 0


def test_size_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        LRUCache(0)


def test_concurrent_use_stays_bounded():
    cache = LRUCache(8)

    def hammer(offset: int) -> None:
        for i in range(2000):
            cache.put((offset, i % 13), i)
            cache.get((offset, (i * 7) % 13))

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 8


def test_label_anything_caches_are_bounded(sam_like_segmenter, episode):
    import numpy as np

    segmenter = sam_like_segmenter
    segmenter.clear_cache()
    before = segmenter.stats["encoded_images"]
    query = np.zeros((40, 50), np.uint8)
    segmenter.predict(episode, query)
    segmenter.predict(episode, query)
    assert segmenter.stats["encoded_images"] - before == 2  # the support and the query, once each
    assert segmenter.cached() == {"features": 2, "prototypes": 1}


def _lookup(keys, memory, store, computed, stats):
    def compute(missing):
        computed.append(list(missing))
        return [np.full(3, len(k), np.float32) for k in missing]

    names = ("memory", "store", "computed")
    signature = lambda k: EmbeddingStore.signature(k, None, "w", {}, ((3,), np.float32))  # noqa: E731
    return tiered_lookup(keys, memory, store, signature, compute,
                         load=np.asarray, save=np.asarray, stats=stats, names=names)  # fmt: skip


def test_tiered_lookup_memory_then_store_then_compute(tmp_path):
    store = EmbeddingStore(tmp_path / "features")
    stats = {"memory": 0, "store": 0, "computed": 0}
    computed = []
    first = _lookup(["a", "bb", "a"], LRUCache(4), store, computed, stats)
    assert computed == [["a", "bb"]] and [v[0] for v in first] == [1, 2, 1]  # a repeat is computed once
    memory = LRUCache(4)
    again = _lookup(["bb", "a", "ccc"], memory, store, computed, stats)  # a fresh memory: the store answers
    assert computed[-1] == ["ccc"] and stats == {"memory": 0, "store": 2, "computed": 3}
    assert [v[0] for v in again] == [2, 1, 3] and "bb" in memory  # store hits are kept in memory
    _lookup(["a"], memory, None, computed, stats)
    assert stats["memory"] == 1 and computed[-1] == ["ccc"]


def test_batch_digests_hash_once_and_forget_changed_arrays(monkeypatch):
    from napari_label_anything.inference import embedding_store

    hashed = []
    monkeypatch.setattr(embedding_store, "image_digest", lambda image: hashed.append(1) or image_digest(image))
    digests = BatchDigests()
    plane, other = np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)
    with digests.batch([plane]) as (first,):
        with digests.batch([other]):  # blocks nest: the outer plane is still remembered
            assert digests.digest(plane) == first
        assert digests.digest(plane) == first and len(hashed) == 2
    plane[0, 0] = 9  # changed in place after the block: hashed afresh
    assert digests.digest(plane) == image_digest(plane) != first and len(hashed) == 3


def test_batch_digests_blocks_may_end_in_any_order():
    digests = BatchDigests()
    a, b = np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)
    outer, inner = digests.batch([a, b]), digests.batch([b])
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the first block ends first: b is still held by the second
    a[0, 0] = b[0, 0] = 7
    assert digests.digest(a) == image_digest(a) and digests.digest(b) != image_digest(b)
    inner.__exit__(None, None, None)
    assert digests.digest(b) == image_digest(b)
    with pytest.raises(RuntimeError), digests.batch([a]):  # an error inside a block still ends it
        raise RuntimeError
    a[0, 0] = 8
    assert digests.digest(a) == image_digest(a)
