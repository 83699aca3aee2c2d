"""Torch twins of ``preprocessing``: raw planes become model input on the GPU.

On a GPU the encoder is fast enough that PIL resizing on the CPU becomes the bottleneck, so
CUDA runs go through these twins: the raw plane is copied once (from pinned memory, without
blocking), then the intensity rule, the resize (bilinear with antialiasing, which follows PIL's
filter) and the ImageNet normalisation run on the device. The CPU path keeps PIL, whose output
the parity tests pin down; the twins agree with it to one 8-bit level (tested).
"""

from __future__ import annotations

import numpy as np

from ...preprocessing import IMAGENET_MEAN, IMAGENET_STD, model_frame_shape


def to_device(array: np.ndarray, device):
    """A NumPy array as a tensor on ``device``; for CUDA through pinned memory, non-blocking."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if getattr(device, "type", str(device)) == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def to_uint8_rgb_torch(image, value_range: tuple[float, float] | None):
    """(H, W[, 3|4]) tensor of any real dtype -> (H, W, 3) float tensor of 0..255 integers.

    The rule of ``preprocessing.to_uint8_rgb``: uint8 (without ``value_range``) is kept; other
    images map ``value_range`` (the caller computes it on the CPU, e.g. ``intensity_range``)
    linearly to 0..255, rounded and clipped; booleans map to 0/255; alpha is dropped.
    """
    import torch

    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.dtype == torch.bool:
        out = image.to(torch.float32) * 255.0
    elif image.dtype == torch.uint8 and value_range is None:
        out = image.to(torch.float32)
    else:
        low, high = value_range if value_range is not None else (0.0, 0.0)
        if not high > low:
            out = torch.zeros(image.shape, dtype=torch.float32, device=image.device)
        else:
            scaled = (image.to(torch.float64) - low) * (1.0 / (high - low))
            out = torch.round(scaled.clamp(0.0, 1.0).to(torch.float32) * 255.0)
    if out.ndim == 2:
        out = out[..., None].expand(*out.shape, 3)
    return out


def image_to_model_input_torch(rgb, side: int, custom: bool):
    """(H, W, 3) 0..255 tensor -> (3, S, S) float32, as ``preprocessing.image_to_model_input``."""
    import torch
    from torch.nn import functional as F

    h, w = rgb.shape[:2]
    new_h, new_w = model_frame_shape(h, w, side, custom)
    planar = rgb.permute(2, 0, 1)[None].to(torch.float32)
    resized = F.interpolate(planar, (new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    resized = resized.round().clamp(0, 255)[0] / 255.0  # PIL hands back uint8
    mean = torch.as_tensor(IMAGENET_MEAN, device=rgb.device)[:, None, None]
    std = torch.as_tensor(IMAGENET_STD, device=rgb.device)[:, None, None]
    out = torch.zeros((3, side, side), dtype=torch.float32, device=rgb.device)
    out[:, :new_h, :new_w] = (resized - mean) / std
    return out
