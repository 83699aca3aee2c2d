"""Choosing the torch device: ``auto`` = CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def available_devices() -> list[str]:
    """Devices usable on this machine, best first (always ends with ``cpu``)."""
    import torch

    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve_device(device: str | None = "auto"):
    """Turn ``auto``/``cuda``/``cuda:1``/``mps``/``cpu`` (or a ``torch.device``) into a ``torch.device``.

    Raises:
        ValueError: an unknown name, or a device this machine does not have.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if kind not in available_devices():
        raise ValueError(f"device {device!r} is not available here; available: {', '.join(available_devices())}")
    return torch.device(name)
