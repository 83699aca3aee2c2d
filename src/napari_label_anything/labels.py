"""Label images: the one place that decides their dtype and the value -> class-name map.

Label value 0 is the background (or "unprompted" in a prompt image); value k (1..N) is class k,
the k-th name of an episode's classes. NumPy only, so every part of the package can use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BACKGROUND = "background"


def labels_dtype(n_classes: int) -> np.dtype:
    """Smallest unsigned dtype that holds label values 0..n_classes (uint8, uint16 or uint32)."""
    if n_classes < 0:
        raise ValueError(f"n_classes must be >= 0, got {n_classes}")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_classes <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"{n_classes} classes do not fit a label image (at most {np.iinfo(np.uint32).max})")


def as_labels(values: np.ndarray, n_classes: int) -> np.ndarray:
    """``values`` (integers 0..n_classes, any shape) cast to the label dtype of ``n_classes``."""
    return np.asarray(values).astype(labels_dtype(n_classes), copy=False)


def class_names(classes: Sequence[str]) -> dict[int, str]:
    """{0: "background", 1: classes[0], 2: classes[1], ...}: what each label value means."""
    return {0: BACKGROUND, **{k: str(name) for k, name in enumerate(classes, start=1)}}
