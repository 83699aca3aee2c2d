"""Shared fixtures: the official reference data and small checkpoints built from it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "reference"
if "NLA_REFERENCE_DIR" in os.environ:
    REFERENCE = Path(os.environ["NLA_REFERENCE_DIR"])


def require_reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference fixtures not found at {REFERENCE} (set NLA_REFERENCE_DIR)")
    return REFERENCE


@pytest.fixture(scope="session")
def reference() -> Path:
    return require_reference()


@pytest.fixture(scope="session")
def manifest(reference) -> dict:
    return json.loads((reference / "manifest.json").read_text())


@pytest.fixture(scope="session")
def sam_like_segmenter(reference):
    import napari_label_anything as nla

    return nla.load_segmenter(str(reference / "sam_like"), device="cpu")


@pytest.fixture(scope="session")
def mae_like_segmenter(reference):
    import napari_label_anything as nla

    return nla.load_segmenter(str(reference / "mae_like"), device="cpu")


def blob_image(shape=(96, 128), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 RGB image with two coloured discs and their label image (1 = red, 2 = green)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype=np.uint8)
    labels[(yy - shape[0] * 0.35) ** 2 + (xx - shape[1] * 0.3) ** 2 < (min(shape) * 0.2) ** 2] = 1
    labels[(yy - shape[0] * 0.6) ** 2 + (xx - shape[1] * 0.7) ** 2 < (min(shape) * 0.18) ** 2] = 2
    image = rng.integers(0, 40, size=(*shape, 3)).astype(np.uint8)
    image[labels == 1] = (220, 30, 30)
    image[labels == 2] = (30, 200, 40)
    return image, labels
