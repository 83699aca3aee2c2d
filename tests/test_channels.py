"""Which colour channels the model sees: ``select_channels`` and ``signal_in_one_channel``."""

from __future__ import annotations

import numpy as np
import pytest

from napari_label_anything.preprocessing import (
    ChannelSelection,
    channel_label,
    check_channels,
    select_channels,
    signal_in_one_channel,
)


def dapi_rgb(shape=(96, 128), seed=0, noise=40) -> tuple[np.ndarray, np.ndarray]:
    """A DAPI-like image exported as RGB: five bright nuclei in blue only, camera noise in red
    and green (0..noise) and dark blue background; and its nucleus mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    for _ in range(5):
        cy, cx = rng.uniform(15, shape[0] - 15), rng.uniform(15, shape[1] - 15)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < 81
    image = rng.integers(0, noise, size=(*shape, 3)).astype(np.uint8)
    image[..., 2] = rng.integers(0, 20, size=shape)
    image[..., 2][mask] = rng.integers(150, 230, size=int(mask.sum()))
    return image, mask


def test_all_channels_keep_the_image_and_one_channel_is_grey():
    image = np.arange(2 * 4 * 5 * 3, dtype=np.uint16).reshape(2, 4, 5, 3)
    assert select_channels(image, None) is image
    blue = select_channels(image, 2)
    assert blue.shape == (2, 4, 5) and blue.dtype == np.uint16
    np.testing.assert_array_equal(blue, image[..., 2])
    np.testing.assert_array_equal(select_channels(image, [2]), image[..., 2])


def test_several_channels_are_their_mean_in_the_same_dtype():
    image = np.zeros((3, 4, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 21, 200
    mean = select_channels(image, (1, 0))
    assert mean.dtype == np.uint8 and mean.shape == (3, 4)
    assert (mean == 16).all()  # (10 + 21) / 2 = 15.5, rounded to even
    floats = select_channels(image.astype(np.float32), [0, 2])
    assert floats.dtype == np.float32 and np.allclose(floats, 105.0)


@pytest.mark.parametrize(
    ("channels", "error"), [(3, ValueError), (-1, ValueError), ([], ValueError), (1.0, TypeError), (True, TypeError)]
)
def test_bad_channels_are_refused_by_name(channels, error):
    with pytest.raises(error, match="channel"):
        select_channels(np.zeros((4, 4, 3), np.uint8), channels)


def test_check_channels_sorts_and_deduplicates():
    assert check_channels(None, 3) is None
    assert check_channels([2, 0, 2], 3) == (0, 2)
    assert channel_label(2, 3) == "2 (blue)" and channel_label(3, 4) == "3 (alpha)" and channel_label(5, 7) == "5"


def test_channels_apply_to_colour_images_only():
    grey = np.zeros((40, 50), np.uint8)  # its last axis is X, not a colour channel
    assert select_channels(grey, None) is grey
    for image in (grey, np.zeros((6, 40, 50), np.uint8), np.zeros((40, 50, 5), np.uint8)):
        with pytest.raises(ValueError, match=r"channels apply to colour images \(\.\.\., Y, X, 3 or 4\)"):
            select_channels(image, [2])


class LazyStack:
    """An array-like that counts how many values it hands out (like zarr: read on indexing)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.read = array, array.shape, array.dtype, 0

    def __getitem__(self, key):
        out = np.asarray(self.array[key])
        self.read += out.size
        return out


def test_a_lazy_stack_stays_lazy_and_reads_one_plane_per_index():
    array = np.random.default_rng(0).integers(0, 255, size=(6, 16, 20, 3)).astype(np.uint8)
    lazy = LazyStack(array)
    view = select_channels(lazy, 1)
    assert isinstance(view, ChannelSelection) and view.shape == (6, 16, 20) and view.dtype == np.uint8
    assert lazy.read == 0
    np.testing.assert_array_equal(view[3], array[3, ..., 1])
    assert lazy.read == 16 * 20 * 3
    np.testing.assert_array_equal(view[(2, slice(None), slice(None))], array[2, ..., 1])
    np.testing.assert_array_equal(np.asarray(view), array[..., 1])
    np.testing.assert_array_equal(view[..., 4], array[..., 4, 1])


def test_signal_in_one_channel_finds_a_dapi_export_and_not_a_colour_or_grey_image():
    image, _ = dapi_rgb()
    assert signal_in_one_channel(image) == 2
    assert signal_in_one_channel(np.stack([image] * 2)) == 2  # a stack
    assert signal_in_one_channel(LazyStack(np.stack([image] * 3))) == 2  # lazy: sampled planes
    rgba = np.concatenate([image, np.full((*image.shape[:2], 1), 255, np.uint8)], axis=-1)
    assert signal_in_one_channel(rgba) == 2  # alpha is not a channel of signal
    grey = np.repeat(image[..., 2:], 3, axis=-1)
    assert signal_in_one_channel(grey) is None
    colour = image.copy()
    colour[..., 0] = image[..., 2][:, ::-1]  # red has as much structure as blue
    assert signal_in_one_channel(colour) is None
    assert signal_in_one_channel(np.zeros((8, 8, 3), np.uint8)) is None  # no signal anywhere
    assert signal_in_one_channel(image[..., 2]) is None  # a grey 2D image has no channels


def test_the_chosen_channel_finds_nuclei_that_mixing_loses():
    """A grey DAPI support and the same kind of image exported as blue-only RGB: with all channels
    the classic model sees the query's luminance (blue weighs 7 %) and finds nothing; the blue
    channel alone is what it learned."""
    import napari_label_anything as nla

    support, support_mask = dapi_rgb(seed=1)
    query, query_mask = dapi_rgb(seed=2)
    labels = np.where(support_mask, 1, 2).astype(np.uint8)
    episode = nla.Episode(["nucleus", "background"])
    episode.add_support(support[..., 2], labels=labels)
    segmenter = nla.load_segmenter("classic", device="cpu")

    def iou(channels) -> float:
        found = segmenter.predict(episode, select_channels(query, channels)) == 1
        return (found & query_mask).sum() / max(1, (found | query_mask).sum())

    assert iou(None) < 0.2
    assert iou(2) > 0.85
