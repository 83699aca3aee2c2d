"""Thread pools shared by the classic segmenter's features and trees.

Its work comes in many small pieces (a scale of a band, a group of trees), and on small planes
starting fresh threads for each cost a tenth of a prediction; the pools here are started once
per size and kept. Tasks never wait on the pool they run in, so sharing cannot deadlock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def _forget_pools() -> None:  # a forked child has none of the parent's threads (and a fresh lock)
    global _LOCK
    _POOLS.clear()
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def run_threaded(function: Callable[[Any], Any], items: Iterable[Any], n_jobs: int) -> list[Any]:
    """``[function(item) for item in items]``, on a shared pool of ``n_jobs`` threads (in this
    thread when ``n_jobs`` is 1); results keep the order of ``items``."""
    if n_jobs <= 1:
        return [function(item) for item in items]
    with _LOCK:
        pool = _POOLS.get(n_jobs)
        if pool is None:
            pool = _POOLS[n_jobs] = ThreadPoolExecutor(n_jobs, thread_name_prefix="nla-classic")
    return list(pool.map(function, items))
