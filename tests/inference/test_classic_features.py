"""Classic segmenter features and memory: bands join without seams, memory is checked up front,
supports and queries share one intensity range. Synthetic data or scikit-image's own images only."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_label_anything.episode import Episode
from napari_label_anything.inference.classic import ClassicSegmenter
from napari_label_anything.inference.classic import features as classic_features
from napari_label_anything.inference.classic.features import (
    BRIGHTNESS_COLUMN,
    FeatureMemoryError,
    brightness_threshold,
    feature_bands,
    features_at,
    n_features,
    pixel_features,
)


@pytest.fixture(scope="module")
def image01():
    from skimage import data

    return data.camera()[100:400, 60:260].astype(np.float32) / 255  # 300 x 200, not a band multiple


@pytest.mark.parametrize("colour", [False, True])
def test_bands_match_the_whole_image(image01, colour):
    image = np.stack([image01, image01[::-1], np.roll(image01, 50, axis=1)], axis=-1) if colour else image01
    whole = pixel_features(image, 1.0, 16.0)
    assert whole.shape == (*image01.shape, n_features(1.0, 16.0, colour)) and whole.dtype == np.float32
    bands = list(feature_bands(image, 1.0, 16.0, max_pixels=64 * image01.shape[1]))
    assert len(bands) == 5 and bands[0][:2] == (0, 64) and bands[-1][1] == image01.shape[0]
    tiled = np.concatenate([band for _, _, band in bands])
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_the_brightness_cut(image01):
    """The above-Otsu column: by default at the image's own threshold (so a dimmer, offset copy
    gets the same column), else at the one passed, which every band of an image shares; all 0 on
    a flat image; the classic segmenter cuts every image at its supports' pooled threshold."""
    column = BRIGHTNESS_COLUMN
    bright = pixel_features(image01, 1.0, 16.0)[..., column]
    assert set(np.unique(bright)) == {0.0, 1.0} and 0.2 < bright.mean() < 0.8
    dim = pixel_features(image01 * 0.4 + 0.3, 1.0, 16.0)[..., column]
    assert np.mean(dim != bright) < 1e-3
    own = brightness_threshold([image01], 1.0)
    at_half = pixel_features(image01, 1.0, 16.0, threshold=0.5)[..., column]
    assert own != pytest.approx(0.5) and not np.array_equal(at_half, bright)
    top_rows = next(feature_bands(image01, 1.0, 16.0, max_pixels=64 * image01.shape[1]))[2][..., column]
    np.testing.assert_array_equal(top_rows, bright[:64])  # the band used the whole image's threshold
    assert brightness_threshold([np.full((20, 30), 0.25, np.float32)], 1.0) == pytest.approx(0.25)
    assert not pixel_features(np.full((20, 30), 0.25, np.float32), 1.0, 4.0)[..., BRIGHTNESS_COLUMN].any()

    episode = _episode(image01)
    episode.add_support((image01[::-1, ::-1] * 2000).astype(np.uint16), labels=episode.supports[0].labels)
    segmenter = ClassicSegmenter()
    fitted = segmenter.fit(episode)
    images = [segmenter.image01(s.image, fitted.value_range) for s in episode.supports]
    assert fitted.threshold == pytest.approx(brightness_threshold(images, 1.0))
    assert fitted.threshold != pytest.approx(brightness_threshold(images[:1], 1.0))


def test_features_at_and_threads_agree(image01):
    whole = pixel_features(image01, 1.0, 8.0)
    np.testing.assert_array_equal(pixel_features(image01, 1.0, 8.0, n_jobs=3), whole)
    picks = np.random.default_rng(0).choice(image01.size, 500, replace=False)
    got = features_at(image01, picks, 1.0, 8.0)
    np.testing.assert_array_equal(got, whole.reshape(-1, whole.shape[-1])[picks])


def _episode(image: np.ndarray) -> Episode:
    truth = image > 0.5
    labels = np.zeros(image.shape, np.int32)
    labels[::7, ::7] = np.where(truth[::7, ::7], 2, 1)
    episode = Episode(["background", "bright"])
    episode.add_support((image * 4000).astype(np.uint16), labels=labels)
    return episode


def test_prediction_in_bands_has_no_seams(image01, monkeypatch):
    episode = _episode(image01)
    query = (image01[::-1] * 4000).astype(np.uint16)
    whole = ClassicSegmenter().predict_proba(episode, query)
    monkeypatch.setattr(classic_features, "BAND_PIXELS", 64 * query.shape[1])
    banded = ClassicSegmenter().predict_proba(episode, query)
    np.testing.assert_allclose(banded, whole, atol=1e-5)
    labels = ClassicSegmenter().predict(episode, query)
    assert labels.dtype == np.uint8 and np.mean(labels == 2) > 0.1


def test_memory_is_checked_before_allocating(image01, monkeypatch):
    episode = _episode(image01)
    monkeypatch.setattr(classic_features, "available_memory", lambda: 10_000_000)
    with pytest.raises(FeatureMemoryError, match=r"4000 x 3000 plane needs about .* GiB") as error:
        ClassicSegmenter().predict(episode, np.zeros((4000, 3000), np.uint16))
    assert isinstance(error.value, MemoryError) and "0.0 GiB of memory is available" in str(error.value)
    ClassicSegmenter().predict(episode, np.zeros((100, 100), np.uint16))  # small planes still run


def test_supports_and_queries_share_one_intensity_range(image01):
    """A query a little darker than the support stays darker (one range for both); a query whose
    highlights moved far (another exposure) is stretched by its own percentiles, supports too
    (``base.brightness_differs``); ``normalise="stack"`` keeps one range whatever the planes."""
    from napari_label_anything.preprocessing import PER_PLANE

    episode = _episode(image01)
    segmenter = ClassicSegmenter()
    query = (image01 * 4000).astype(np.uint16)
    bright = segmenter.predict(episode, query)
    dimmer = (query * 0.9).astype(np.uint16)
    shared_dimmer = segmenter.predict(episode, dimmer, value_range=None)
    np.testing.assert_array_equal(segmenter.predict(episode, dimmer), shared_dimmer)
    dim = segmenter.predict(episode, query // 4)
    np.testing.assert_array_equal(dim, segmenter.predict(episode, query // 4, value_range=PER_PLANE))
    assert np.mean(bright == dim) > 0.95
    shared = segmenter.predict(episode, query // 4, value_range=None)
    assert np.mean(bright == 2) > 0.2 and np.mean(shared == 2) < 0.02
    stack = np.stack([query, query // 4])
    np.testing.assert_array_equal(segmenter.predict_stack(episode, stack, normalise="stack"),
                                  np.stack([segmenter.predict(episode, query, value_range=None), shared]))  # fmt: skip


@pytest.mark.parametrize("shape", [(300, 200), (37, 129), (3, 5), (1, 9), (64, 1), (1500, 40)])
def test_fast_kernels_match_the_library(shape):
    """The pyramid's block means and linear upsampling, the Sobel magnitude and the derivatives
    are written with slices for speed, and features are written a block of rows at a time; they
    must give what the library functions they replace give."""
    from scipy.ndimage import sobel, zoom

    image = np.random.default_rng(sum(shape)).random(shape).astype(np.float32)
    for axis in (0, 1):
        if shape[axis] > 1:
            np.testing.assert_array_equal(classic_features._derivative(image, axis), np.gradient(image, axis=axis))
    out = np.zeros((*shape, 5), np.float32)
    classic_features._write_columns(out, 1, [image, 2 * image, image > 0.5])
    np.testing.assert_array_equal(out, np.stack([0 * image, image, 2 * image, image > 0.5, 0 * image], axis=-1))
    expected = np.hypot(sobel(image, 0), sobel(image, 1))
    np.testing.assert_allclose(classic_features.sobel_magnitude(image), expected, atol=1e-5)
    for f in (2, 4, 8):
        padded = np.pad(image, ((0, -shape[0] % f), (0, -shape[1] % f)), mode="edge")
        means = classic_features._block_means(padded, f)
        np.testing.assert_allclose(means, padded.reshape(means.shape[0], f, means.shape[1], f).mean(axis=(1, 3)),
                                   atol=1e-6)  # fmt: skip
        up = classic_features._upsample_linear(classic_features._upsample_linear(means, f, 0)[: shape[0]], f, 1)
        expected = zoom(means, f, order=1, grid_mode=True, mode="nearest")[: shape[0], : shape[1]]
        assert up[:, : shape[1]].shape == expected.shape
        np.testing.assert_allclose(up[:, : shape[1]], expected, atol=1e-6)


@pytest.mark.parametrize("colour", [False, True])
def test_fewer_scales_are_a_prefix_of_more(image01, colour):
    """The features of scales 1..4 are columns of those of 1..16 (``scale_columns``): what the
    scale ensemble's fine trees read from the one set of features computed per band."""
    from napari_label_anything.inference.classic.features import scale_columns

    image = np.stack([image01, image01[::-1], image01[:, ::-1]], axis=-1) if colour else image01
    wide, narrow = pixel_features(image, 1.0, 16.0), pixel_features(image, 1.0, 4.0)
    columns = scale_columns(1.0, 16.0, 4.0, colour, n_depth=2)
    assert len(columns) == narrow.shape[-1] + 2 and columns[-1] == wide.shape[-1] + 1  # the depth columns follow
    np.testing.assert_allclose(wide[..., columns[:-2]], narrow, atol=1e-6)


def _hue_mosaic(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(96, 96, 3) uint8 image of three textured regions whose luminance has the same statistics,
    told apart by hue alone, and its (96, 96) truth 0..2."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    truth = ((xx + 8 * np.sin(yy / (9 + seed))) // 32).clip(0, 2).astype(np.uint8)
    luma = np.array([0.2125, 0.7154, 0.0721])
    hues = np.array([[1.0, 0.2, 0.5], [0.2, 0.55, 0.9], [0.3, 0.5, 0.0]])
    hues *= 0.5 / (hues @ luma)[:, None]  # equal luminance
    grain = ndi.gaussian_filter(rng.normal(0, 1, (96, 96)), 1.5)
    shade = 1 + 0.5 * grain / grain.std()  # one texture, the same in every region
    image = hues[truth] * shade[..., None] * 0.8
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), truth


def test_hue_tells_apart_what_brightness_cannot():
    """Per-channel features: regions of one texture at equal luminance differ only in hue. Colour
    separates them; the same images as grey cannot."""
    support, truth = _hue_mosaic(0)
    query, query_truth = _hue_mosaic(1)

    def mean_iou(sup, qry) -> float:
        episode = Episode(["a", "b", "c"])
        episode.add_support(sup, labels=truth + 1)
        labels = ClassicSegmenter().predict(episode, qry) - 1
        return np.mean([((labels == k) & (query_truth == k)).sum() / ((labels == k) | (query_truth == k)).sum()
                        for k in range(3)])  # fmt: skip

    luma = np.array([0.2125, 0.7154, 0.0721])
    assert mean_iou(support, query) > 0.85
    assert mean_iou((support @ luma).astype(np.uint8), (query @ luma).astype(np.uint8)) < 0.6


def test_fine_scale_is_checked():
    with pytest.raises(ValueError, match="fine_scale"):
        ClassicSegmenter(fine_scale=32.0)
    ClassicSegmenter(fine_scale=None)
