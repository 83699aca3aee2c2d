"""Choosing the torch device: ``auto`` = CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def import_torch():
    """Import torch so that a later torchvision import is safe in a process that draws with OpenGL.

    torchvision imports torch._dynamo, which imports triton if installed. Triton bundles its own
    LLVM; in a process with a Mesa software-OpenGL context (napari on VMs, remote desktops,
    Xvfb) loading it next to Mesa's LLVM segfaults. Triton only serves GPU kernels, so without
    CUDA it is hidden from the import system. Every device choice goes through here.
    """
    import sys

    import torch

    if not torch.cuda.is_available() and "triton" not in sys.modules:
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
    return torch


def available_devices() -> list[str]:
    """Devices usable on this machine, best first (always ends with ``cpu``)."""
    torch = import_torch()

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
    torch = import_torch()

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
