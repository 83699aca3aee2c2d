"""Label images: the one place that decides their dtype and the value -> class-name map.

Label value 0 is the background (or "unprompted" in a prompt image); value k (1..N) is class k,
the k-th name of an episode's classes. A background scribble in a prompt image is
``BACKGROUND_PROMPT`` (0 there means "not prompted"). Class k's default display colour is
``default_color(k)`` (the widget's classes, the label TIFFs' ImageJ LUT). NumPy only, so every
part of the package can use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BACKGROUND = "background"
BACKGROUND_PROMPT = 255  # a background scribble in a prompt layer (0 there is "not prompted")
BACKGROUND_COLOR = "#8c8c8c"  # how background scribbles are shown
CLASSES_KEY = "label_anything_classes"  # napari Labels layer metadata: the class names of its values

# Distinct, colour-blind-friendly colours (Okabe-Ito first); class k uses PALETTE[(k-1) % n].
PALETTE = (
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
    "#8dd3c7", "#fb8072", "#80b1d3", "#b3de69", "#fccde5", "#bebada", "#ffed6f",
)  # fmt: skip


def default_color(k: int) -> str:
    """The default colour of class k (k >= 1) as '#rrggbb'."""
    return PALETTE[(k - 1) % len(PALETTE)]


def is_background_name(name: str) -> bool:
    """Whether a class name means the background ("background", any case and spacing around)."""
    return str(name).strip().lower() == BACKGROUND


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
