"""The public prediction API on a small checkpoint: shapes, dtypes, stacks, caching, cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import napari_label_anything as nla
from conftest import blob_image


def test_predict_shapes_and_dtypes(sam_like_segmenter, episode):
    query, _ = blob_image((70, 90), seed=3)
    labels = sam_like_segmenter.predict(episode, query)
    assert labels.shape == (70, 90) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2}
    proba = sam_like_segmenter.predict_proba(episode, query)
    assert proba.shape == (3, 70, 90) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(0), 1, atol=1e-5)


def test_grayscale_16bit_and_float_queries(sam_like_segmenter, episode):
    gray = np.random.default_rng(0).integers(0, 4000, (50, 60)).astype(np.uint16)
    assert sam_like_segmenter.predict(episode, gray).shape == (50, 60)
    assert sam_like_segmenter.predict(episode, gray.astype(np.float32) / 4000).shape == (50, 60)


def test_class_rows_change_the_prediction(sam_like_segmenter, episode):
    query, _ = blob_image(seed=5)
    default = sam_like_segmenter.predict_proba(episode, query)
    explicit_default = sam_like_segmenter.predict_proba(episode, query, class_rows=[0, 1, 2])
    np.testing.assert_array_equal(default, explicit_default)
    other = sam_like_segmenter.predict_proba(episode, query, class_rows=[0, 28, 37])
    assert np.abs(other - default).max() > 1e-4
    with pytest.raises(ValueError, match="needs 3 entries"):
        sam_like_segmenter.predict(episode, query, class_rows=[0, 1])
    with pytest.raises(ValueError, match=r"0\.\.99"):
        sam_like_segmenter.predict(episode, query, class_rows=[0, 1, 100])


def test_predictions_are_deterministic(sam_like_segmenter, episode):
    query, _ = blob_image(seed=6)
    sam_like_segmenter.clear_cache()
    first = sam_like_segmenter.predict_proba(episode, query)
    sam_like_segmenter.clear_cache()
    np.testing.assert_array_equal(first, sam_like_segmenter.predict_proba(episode, query))


def test_changed_prompts_do_not_re_encode_images(reference):
    seg = nla.load_segmenter(str(reference / "sam_like"), device="cpu")
    image, labels = blob_image()
    query, _ = blob_image(seed=9)
    ep = nla.Episode(["red", "green"])
    ep.add_support(image, labels=labels)
    seg.predict(ep, query)
    assert seg.stats["encoded_images"] == 2 and seg.stats["prompt_encodings"] == 1
    seg.predict(ep, query)
    assert seg.stats["encoded_images"] == 2 and seg.stats["prompt_encodings"] == 1
    ep.supports[0].points = np.array([[10.0, 10.0, 1.0]])
    seg.predict(ep, query)
    assert seg.stats["encoded_images"] == 2 and seg.stats["prompt_encodings"] == 2


def test_unprompted_class_is_refused(sam_like_segmenter):
    image, labels = blob_image()
    ep = nla.Episode(["red", "green", "blue"])
    ep.add_support(image, labels=labels)
    with pytest.raises(ValueError, match=r"\['blue'\] have no prompt"):
        sam_like_segmenter.predict(ep, image)


def test_bad_query(sam_like_segmenter, episode):
    with pytest.raises(ValueError, match="NaN"):
        sam_like_segmenter.predict(episode, np.full((10, 10), np.nan))
    with pytest.raises(ValueError, match="must be 2D"):
        sam_like_segmenter.predict(episode, np.zeros((3, 10, 10)))


@pytest.mark.parametrize(
    ("shape", "axis", "labels_shape"),
    [
        ((3, 40, 50), 0, (3, 40, 50)),
        ((2, 2, 40, 50), 0, (2, 2, 40, 50)),
        ((3, 40, 50, 3), 0, (3, 40, 50)),
        ((40, 50, 3), 2, (40, 50, 3)),
    ],
)
def test_predict_stack_layouts(sam_like_segmenter, episode, shape, axis, labels_shape):
    stack = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    progress = []
    out = sam_like_segmenter.predict_stack(episode, stack, axis=axis, progress=lambda d, t: progress.append((d, t)))
    assert out.shape == labels_shape and out.dtype == np.uint8
    n_planes = int(np.prod(labels_shape)) // (40 * 50)
    assert progress[-1] == (n_planes, n_planes) and len(progress) == n_planes


def test_stack_plane_equals_2d_prediction(sam_like_segmenter, episode):
    stack = np.stack([blob_image(seed=s)[0] for s in (1, 2, 3)])
    out = sam_like_segmenter.predict_stack(episode, stack)
    np.testing.assert_array_equal(out[1], sam_like_segmenter.predict(episode, stack[1]))


def test_predict_stack_selected_planes(sam_like_segmenter, episode):
    stack = np.stack([blob_image(seed=s)[0] for s in range(4)])
    out = sam_like_segmenter.predict_stack(episode, stack, planes=[2])
    assert not out[[0, 1, 3]].any() and out[2].any()


def test_cancel_stops_a_stack(sam_like_segmenter, episode):
    stack = np.stack([blob_image(seed=s)[0] for s in range(5)])
    stop = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        if done == 2:
            stop.set()

    with pytest.raises(nla.PredictionCancelled):
        sam_like_segmenter.predict_stack(episode, stack, progress=progress, cancel=stop)
    assert seen == [1, 2]


def test_device_selection():
    import torch

    assert nla.resolve_device("cpu") == torch.device("cpu")
    assert nla.available_devices()[-1] == "cpu"
    assert nla.resolve_device("auto").type == nla.available_devices()[0]
    with pytest.raises(ValueError, match="unknown device"):
        nla.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            nla.resolve_device("cuda")


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, napari_label_anything; print('torch' in sys.modules, 'qtpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
