"""The torch twins of preprocessing (used on GPUs) agree with the PIL path the CPU uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import blob_image
from napari_label_anything.inference.label_anything.transforms import (
    image_to_model_input_torch,
    to_device,
    to_uint8_rgb_torch,
)
from napari_label_anything.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    image_to_model_input,
    intensity_range,
    to_uint8_rgb,
)


def images():
    rng = np.random.default_rng(0)
    rgb = blob_image((150, 230), seed=2)[0]
    return {
        "uint8 rgb": rgb,
        "uint8 grey": rgb[..., 1],
        "uint16": (rng.gamma(2.0, 600, (170, 120))).astype(np.uint16),
        "float": rng.normal(0, 1, (64, 300)).astype(np.float32),
        "bool": rng.random((90, 90)) > 0.5,
        "rgba": np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
    }


@pytest.mark.parametrize("name", list(images()))
def test_intensity_rule_twin_is_exact(name):
    image = images()[name]
    value_range = None if image.dtype in (np.uint8, np.bool_) else intensity_range(image)
    expected = to_uint8_rgb(image, value_range).astype(np.float32)
    twin = to_uint8_rgb_torch(to_device(image, torch.device("cpu")), value_range).numpy()
    np.testing.assert_array_equal(twin, expected)


@pytest.mark.parametrize("name", list(images()))
@pytest.mark.parametrize(("side", "custom"), [(1024, True), (480, False), (96, True), (64, False)])
def test_resize_twin_is_within_one_level_of_pil(name, side, custom):
    image = images()[name]
    rgb = to_uint8_rgb(image)
    expected = image_to_model_input(rgb, side, custom)
    twin = image_to_model_input_torch(torch.from_numpy(rgb.astype(np.float32)), side, custom).numpy()
    levels = np.abs(twin - expected) * IMAGENET_STD[:, None, None] * 255  # in 8-bit steps
    assert levels.max() <= 1 + 1e-3
    # PIL rounds its fixed-point filter differently: up to ~16 % of pixels land one level apart.
    assert levels.mean() < 0.25


def test_constant_images_become_the_normalised_black():
    twin = to_uint8_rgb_torch(torch.ones(5, 6, dtype=torch.float32), (1.0, 1.0))
    assert twin.shape == (5, 6, 3) and twin.max() == 0
    black = image_to_model_input_torch(twin, 32, True)
    np.testing.assert_allclose(black[:, 0, 0].numpy(), -IMAGENET_MEAN / IMAGENET_STD, rtol=1e-6)


@pytest.mark.parametrize("name", ["sam_like", "mae_like"])
def test_the_segmenters_device_input_matches_its_cpu_input(reference, name):
    """What a CUDA run feeds the encoder, computed here on the CPU, against the PIL path."""
    from napari_label_anything.hub.model_files import load_model
    from napari_label_anything.inference import LabelAnythingSegmenter

    segmenter = LabelAnythingSegmenter(load_model(reference / name), device="cpu")
    for image in images().values():
        device_input = segmenter._model_input_on_device(image, None).numpy()
        levels = np.abs(device_input - segmenter._model_input(image, None)) * IMAGENET_STD[:, None, None] * 255
        assert levels.max() <= 1 + 1e-3
