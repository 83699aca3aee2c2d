"""Lazy stacks (zarr, dask, any sliceable array-like): same labels as NumPy, planes read one at a time."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

import napari_label_anything as nla
from conftest import blob_image
from napari_label_anything.preprocessing import RANGE_SAMPLE, intensity_range


@pytest.fixture(scope="module")
def episode():
    image, labels = blob_image()
    ep = nla.Episode(["red", "green"])
    ep.add_support(image[..., 0].astype(np.uint16) * 40, labels=labels)
    return ep


@pytest.fixture(scope="module")
def stack():
    return np.stack([blob_image(seed=s)[0][..., 0].astype(np.uint16) * 40 + s for s in range(4)])


class PlaneCountingArray:
    """A read-only array-like that records every read, to prove that planes are read one by one."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.reads = array, []
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, selector):
        self.reads.append(selector)
        result = self.array[selector]
        assert result.ndim < self.array.ndim, f"the whole stack was read with {selector!r}"
        return result


@pytest.mark.parametrize("segmenter_name", ["classic", "mae_like"])
def test_zarr_and_dask_give_the_numpy_labels(request, episode, stack, tmp_path, segmenter_name):
    segmenter = (
        nla.load_segmenter("classic") if segmenter_name == "classic" else request.getfixturevalue("mae_like_segmenter")
    )
    expected = segmenter.predict_stack(episode, stack)
    stored = zarr.open_array(
        tmp_path / "stack.zarr", mode="w", shape=stack.shape, chunks=(1, 50, 50), dtype=stack.dtype
    )
    stored[:] = stack
    np.testing.assert_array_equal(segmenter.predict_stack(episode, stored), expected)
    np.testing.assert_array_equal(segmenter.predict_stack(episode, da.from_array(stack, chunks=(1, 96, 128))), expected)


def test_planes_are_read_one_at_a_time(sam_like_segmenter, episode, stack):
    lazy = PlaneCountingArray(stack)
    labels = sam_like_segmenter.predict_stack(episode, lazy, planes=[1, 3])
    plane_reads = [s for s in lazy.reads if isinstance(s, tuple) and isinstance(s[0], int)]
    assert [s[0] for s in plane_reads][-2:] == [1, 3]
    assert labels[0].max() == 0 and labels[2].max() == 0 and labels[1].any()


def test_output_can_be_a_zarr_array(sam_like_segmenter, episode, stack, tmp_path):
    expected = sam_like_segmenter.predict_stack(episode, stack)
    out = zarr.open_array(tmp_path / "labels.zarr", mode="w", shape=stack.shape, chunks=(1, 96, 128), dtype=np.uint8)
    assert sam_like_segmenter.predict_stack(episode, stack, out=out) is out
    np.testing.assert_array_equal(out[:], expected)
    with pytest.raises(ValueError, match="out has shape"):
        sam_like_segmenter.predict_stack(episode, stack, out=np.zeros((2, 96, 128), np.uint8))


def test_range_of_a_large_lazy_stack_reads_only_some_planes():
    plane = np.arange(1000 * 1000, dtype=np.float32).reshape(1000, 1000)
    lazy = PlaneCountingArray(np.stack([plane + i for i in range(40)]))  # 40 M values
    low, high = intensity_range(lazy)
    planes_read = {s for s in lazy.reads}
    assert len(planes_read) <= RANGE_SAMPLE // plane.size + 1
    exact = np.percentile(lazy.array, (0.5, 99.5))
    assert abs(low - exact[0]) < 0.01 * plane.size and abs(high - exact[1]) < 0.01 * plane.size
