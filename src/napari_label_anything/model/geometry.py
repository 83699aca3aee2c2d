"""Frame geometry of the official post-processing (NumPy only, so preprocessing can share it)."""

from __future__ import annotations

import numpy as np


def get_preprocess_shape_f32(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Same as ``get_preprocess_shape`` in float32, as the official post-processing computes it.

    The official post-processing receives the sizes as int64 tensors, so its arithmetic runs
    in float32; the two versions differ only when a size lands within float32 rounding of .5.
    """
    scale = np.float32(long_side) / np.float32(max(height, width))
    return int(np.float32(height) * scale + np.float32(0.5)), int(np.float32(width) * scale + np.float32(0.5))
