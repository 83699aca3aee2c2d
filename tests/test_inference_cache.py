"""LRUCache: the one bounded cache behind feature and prototype caching."""

from __future__ import annotations

import threading

import pytest

from napari_label_anything.inference.cache import LRUCache


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
    assert len(segmenter._features) == 2 and len(segmenter._prototypes) == 1
