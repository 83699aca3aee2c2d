"""Official image transforms, prompt-mask resizing and coordinate transforms (preprocessing/)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_label_anything import preprocessing as pp


@pytest.fixture(scope="module")
def pre(reference):
    return np.load(reference / "preprocessing" / "preprocessing.npz")


def test_get_preprocess_shape_table(manifest):
    table = manifest["preprocessing"]["get_preprocess_shape_table"]
    assert table
    for key, expected in table.items():
        size, side = key.split("->")
        h, w = (int(v) for v in size.split("x"))
        assert list(pp.get_preprocess_shape(h, w, int(side))) == expected, key
        assert list(pp.get_preprocess_shape_f32(h, w, int(side))) == expected, key


@pytest.mark.parametrize("name", ["land_96x128", "port_120x90", "big_200x300"])
@pytest.mark.parametrize("mode", ["custom256", "squash240"])
def test_image_transform_matches_official(pre, name, mode):
    raw = pre[f"raw.{name}"]
    custom, side = mode.startswith("custom"), int(mode.removeprefix("custom").removeprefix("squash"))
    tensor = pp.image_to_model_input(raw, side, custom)
    resized = pre[f"resized_uint8.{name}.{mode}"]
    h, w = resized.shape[:2]
    expected = (resized.astype(np.float32) / np.float32(255) - pp.IMAGENET_MEAN) / pp.IMAGENET_STD
    np.testing.assert_array_equal(tensor[:, :h, :w], expected.transpose(2, 0, 1))
    assert not tensor[:, h:, :].any() and not tensor[:, :, w:].any()
    if f"tensor.{name}.{mode}" in pre.files:
        np.testing.assert_array_equal(tensor, pre[f"tensor.{name}.{mode}"])


@pytest.mark.parametrize("name", ["m97x131", "m131x97", "m1x1blob_300x200"])
@pytest.mark.parametrize("mode", ["custom1024", "squash480", "custom480"])
def test_prompt_mask_matches_official(pre, name, mode):
    masks = [pre[k] for k in pre.files if k.startswith(f"rawmask.{name}.")]
    union = np.logical_or.reduce(masks)
    custom, side = mode.startswith("custom"), int(mode.removeprefix("custom").removeprefix("squash"))
    np.testing.assert_array_equal(pp.mask_to_prompt(union, side, custom), pre[f"mask256.{name}.{mode}"][0])


def test_coordinate_transforms_match_official(pre, manifest):
    cases = manifest["preprocessing"]["coord_cases"]
    for key, info in cases.items():
        custom, side, hw = info["mode"] == "custom", info["S"], tuple(info["orig_hw"])
        np.testing.assert_allclose(
            pp.transform_coords(pre["coords.points.in"], hw, side, custom), pre[f"coords.points.{key}"], rtol=1e-12
        )
        np.testing.assert_allclose(
            pp.transform_boxes(pre["coords.boxes.in"], hw, side, custom), pre[f"coords.boxes.{key}"], rtol=1e-12
        )


class TestToUint8Rgb:
    def test_uint8_rgb_is_kept(self):
        image = np.random.default_rng(0).integers(0, 255, (8, 9, 3), dtype=np.uint8)
        np.testing.assert_array_equal(pp.to_uint8_rgb(image), image)

    def test_rgba_drops_alpha(self):
        image = np.random.default_rng(0).integers(0, 255, (8, 9, 4), dtype=np.uint8)
        np.testing.assert_array_equal(pp.to_uint8_rgb(image), image[..., :3])

    def test_uint8_gray_is_replicated(self):
        image = np.arange(72, dtype=np.uint8).reshape(8, 9)
        out = pp.to_uint8_rgb(image)
        assert out.shape == (8, 9, 3) and (out == image[..., None]).all()

    def test_16bit_is_stretched_by_percentiles(self):
        rng = np.random.default_rng(1)
        image = rng.normal(1000, 50, (64, 64)).astype(np.uint16)
        image[0, 0] = 65535  # a hot pixel must not squash the contrast
        out = pp.to_uint8_rgb(image)
        assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
        assert out[..., 0].std() > 40
        low, high = pp.intensity_range(image)
        assert 800 < low < 1000 < high < 1200

    def test_shared_range_keeps_planes_comparable(self):
        dim = np.full((4, 4), 100, np.uint16)
        bright = np.full((4, 4), 1000, np.uint16)
        value_range = (0.0, 1000.0)
        assert pp.to_uint8_rgb(dim, value_range)[0, 0, 0] == 26
        assert pp.to_uint8_rgb(bright, value_range)[0, 0, 0] == 255

    def test_constant_and_bool_images(self):
        assert not pp.to_uint8_rgb(np.full((5, 5), 7.5)).any()
        out = pp.to_uint8_rgb(np.eye(5, dtype=bool))
        assert out[0, 0, 0] == 255 and out[0, 1, 0] == 0
