"""Depth context: a support taken from a stack keeps the planes around it (``Support.context``),
and the classic segmenter featurises stack planes across planes when every support has one."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_label_anything.episode import CONTEXT_REACH, Episode
from napari_label_anything.inference.base import PredictionCancelled
from napari_label_anything.inference.classic import ClassicSegmenter
from napari_label_anything.inference.classic import features as cf
from napari_label_anything.stacks import stack_layout

CLASSES = ["background", "nucleus"]


def smooth_stack(shape, seed=0) -> np.ndarray:
    """Float32 noise smoothed over every axis: each plane differs from its neighbours."""
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.normal(size=shape), 1.5).astype(np.float32)


def plane_labels(plane: np.ndarray) -> np.ndarray:
    """Complete labels of a grey plane: 2 (nucleus) where it is above its median, else 1."""
    return 1 + (plane > np.median(plane)).astype(np.int32)


def depth_episode(stack, z) -> Episode:
    episode = Episode(CLASSES)
    episode.add_support(stack, labels=plane_labels(stack[z]), plane=z)
    return episode


@pytest.mark.parametrize(
    ("plane", "low", "high", "position"),
    [(0, 0, 9, 0), (3, 0, 12, 3), (15, 7, 24, 8), (29, 21, 30, 8), (-1, 21, 30, 8), (-30, 0, 9, 0), (-5, 17, 30, 8)],
)
def test_context_slab_of_a_z_stack(plane, low, high, position):
    stack = smooth_stack((30, 12, 10))
    support = depth_episode(stack, plane).supports[0]
    assert support.context.shape == (high - low, 12, 10) and support.context_index == position
    np.testing.assert_array_equal(support.context, stack[low:high])
    np.testing.assert_array_equal(support.context[support.context_index], support.image)
    np.testing.assert_array_equal(support.image, stack[plane])
    stack[low] += 1  # a copy, not a view of the caller's stack
    assert not np.array_equal(support.context[0], stack[low])


def test_context_slab_of_time_series_colour_and_single_plane_axes():
    tz = smooth_stack((3, 20, 12, 10))
    episode = Episode(CLASSES)
    support = episode.add_support(tz, labels=plane_labels(tz[1, 18]), plane=(1, 18))
    np.testing.assert_array_equal(support.context, tz[1, 10:20])  # along Z, within time point 1
    assert support.context_index == 8
    support = episode.add_support(tz, labels=plane_labels(tz[2, 0]), plane=(-1, 0))
    np.testing.assert_array_equal(support.context, tz[2, 0:9])
    assert support.context_index == 0

    colour = np.random.default_rng(1).integers(0, 255, (20, 12, 10, 3)).astype(np.uint8)
    support = episode.add_support(colour, points=[(2, 2, 1)], plane=10)
    assert support.context.shape == (17, 12, 10, 3) and support.context_index == 8
    np.testing.assert_array_equal(support.context, colour[2:19])
    np.testing.assert_array_equal(support.context[8], support.image)

    for stack, plane in [(smooth_stack((1, 12, 10)), 0), (smooth_stack((3, 1, 12, 10)), (1, 0))]:
        support = episode.add_support(stack, points=[(2, 2, 1)], plane=plane)
        assert support.context is None and support.context_index is None
    support = episode.add_support(tz[0, 0], points=[(2, 2, 1)])  # 2D, no plane
    assert support.context is None and support.context_index is None


def test_context_indices_are_the_support_slab():
    """``StackLayout.context_indices`` names exactly the planes a support keeps, at every plane."""
    stack = smooth_stack((30, 12, 10))
    layout = stack_layout(stack.shape)
    for z in range(30):
        window, position = layout.context_indices((z,), CONTEXT_REACH)
        support = Episode(CLASSES).add_support(stack, points=[(1, 1, 1)], plane=z)
        np.testing.assert_array_equal(np.stack([layout.take(stack, i) for i in window]), support.context)
        assert position == support.context_index
    window, position = stack_layout((3, 20, 12, 10)).context_indices((1, 18), CONTEXT_REACH)
    assert window == [(1, z) for z in range(10, 20)] and position == 8


def test_nan_in_the_neighbouring_planes_is_refused():
    stack = smooth_stack((30, 12, 10))
    stack[12, 3, 3] = np.nan  # 2 planes below plane 10
    episode = Episode(CLASSES)
    with pytest.raises(ValueError, match="NaN or infinite"):
        episode.add_support(stack, points=[(1, 1, 1)], plane=10)
    assert episode.supports == []
    stack[12, 3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        episode.add_support(stack, points=[(1, 1, 1)], plane=10)
    episode.add_support(stack, points=[(1, 1, 1)], plane=25)  # out of reach: accepted


def test_signature_and_save_load_round_trip(tmp_path):
    stack = smooth_stack((30, 12, 10))
    episode = depth_episode(stack, 10)
    episode.add_support(stack[3], points=[(1, 1, 2)])  # a 2D support travels without context
    before = episode.signature()
    near, far = stack.copy(), stack.copy()
    near[14, 0, 0] += 1.0  # 4 planes from the support: in its context
    far[25, 0, 0] += 1.0  # out of reach
    assert depth_episode(near, 10).signature() != depth_episode(stack, 10).signature()
    assert depth_episode(far, 10).signature() == depth_episode(stack, 10).signature()
    same = np.repeat(stack[:1], 17, axis=0)  # planes 7 and 9: equal images and slabs, positions 7 and 8
    assert depth_episode(same, 7).signature() != depth_episode(same, 9).signature()

    path = episode.save(tmp_path / "depth.episode")
    loaded = Episode.load(path)
    assert loaded.signature() == before
    first, second = loaded.supports
    np.testing.assert_array_equal(first.context, stack[2:19])
    assert first.context_index == 8 and first.context.dtype == np.float32
    np.testing.assert_array_equal(first.image, stack[10])
    assert second.context is None and second.context_index is None

    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta["supports"][0]["context_index"] = 7  # names a plane that is not the stored image
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(tmp_path / "bad.episode", "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(ValueError, match="support 1: its image is not the plane its context names"):
        Episode.load(tmp_path / "bad.episode")


@pytest.mark.parametrize("z", [15, 2, 27])
def test_support_slab_and_full_stack_give_the_same_depth_features(z):
    """A support's saved slab, the window predict_stack reads and the whole stack all give one
    plane the same depth features: the kernels reach no further than the slab."""
    stack = smooth_stack((30, 40, 40), seed=z)
    segmenter = ClassicSegmenter(n_jobs=1)
    support = depth_episode(stack, z).supports[0]
    value_range = (float(stack.min()), float(stack.max()))
    layout = stack_layout(stack.shape)
    window, position = layout.context_indices((z,), CONTEXT_REACH)
    rows = slice(0, 40)
    from_support = cf.depth_features(segmenter.depth((support.context, support.context_index), value_range), rows)
    read = np.stack([layout.take(stack, i) for i in window])
    from_window = cf.depth_features(segmenter.depth((read, position), value_range), rows)
    from_whole = cf.depth_features(segmenter.depth((stack, z), value_range), rows)  # every plane
    assert from_support.shape == (40, 40, 6)
    np.testing.assert_allclose(from_support, from_window, atol=1e-5)
    np.testing.assert_allclose(from_support, from_whole, atol=1e-5)
    assert np.abs(from_support).max() > 1e-2  # not trivially zero


def test_depth_features_in_row_bands_match_the_whole_plane():
    stack = smooth_stack((20, 100, 24), seed=3)
    planes01 = (stack - stack.min()) / (stack.max() - stack.min())
    depth = cf.Depth(planes01, 10, (1.0, 2.0, 4.0), CONTEXT_REACH)
    whole = cf.depth_features(depth, slice(0, 100))
    bands = list(cf.feature_bands(planes01[10], 1.0, 4.0, max_pixels=32 * 24, depth=depth))
    assert len(bands) >= 3
    joined = np.concatenate([band for _, _, band in bands])
    n_plane = cf.pixel_features(planes01[10], 1.0, 4.0).shape[-1]
    assert joined.shape == (100, 24, n_plane + 6)
    np.testing.assert_allclose(joined[..., n_plane:], whole, atol=1e-5)
    np.testing.assert_allclose(joined[..., :n_plane], cf.pixel_features(planes01[10], 1.0, 4.0), atol=1e-3)
    picks = np.array([0, 24 * 31 + 5, 24 * 32 + 7, 24 * 99 + 23])
    at = cf.features_at(planes01[10], picks, 1.0, 4.0, depth=depth)
    np.testing.assert_allclose(at, joined.reshape(-1, joined.shape[-1])[picks], atol=1e-5)


def test_uses_depth_rules_and_context_is_ignored_without_depth():
    stack = smooth_stack((20, 40, 40), seed=5)
    with_context = depth_episode(stack, 10)
    segmenter = ClassicSegmenter(n_jobs=1)
    assert segmenter.uses_depth(with_context)
    assert not ClassicSegmenter(depth_sigmas=()).uses_depth(with_context)
    assert not segmenter.uses_depth(Episode(CLASSES))
    mixed = depth_episode(stack, 10)
    mixed.add_support(stack[4], labels=plane_labels(stack[4]))
    assert not segmenter.uses_depth(mixed)
    for bad in [(0.0,), (-1.0,), (CONTEXT_REACH + 0.5,), (1.0, 9.0)]:
        with pytest.raises(ValueError, match="depth_sigmas"):
            ClassicSegmenter(depth_sigmas=bad)
    ClassicSegmenter(depth_sigmas=(CONTEXT_REACH,))

    assert segmenter.fit(with_context, depth=True).depth and not segmenter.fit(mixed, depth=True).depth
    query, context = stack[15], (stack[7:20], 8)
    np.testing.assert_array_equal(  # no depth: the context changes nothing
        segmenter.predict_proba(mixed, query, context=context), segmenter.predict_proba(mixed, query)
    )
    assert not np.array_equal(  # depth: the context is looked at
        segmenter.predict_proba(with_context, query, context=context), segmenter.predict_proba(with_context, query)
    )
    flat = Episode(CLASSES)
    flat.add_support(stack[10], labels=plane_labels(stack[10]))
    np.testing.assert_array_equal(  # depth off: a plane with context predicts like the 2D plane
        ClassicSegmenter(depth_sigmas=(), n_jobs=1).predict_stack(with_context, stack),
        segmenter.predict_stack(flat, stack),
    )


def nuclei_stack(seed, n_planes=24, size=64):
    """Blobs on a 4x4 grid, each recurring every 6 planes; a blob's light falls off over depth
    (sigma 2 planes) and blobs differ in brightness, so one plane alone cannot tell a dim blob in
    focus from the out-of-focus light of a bright one. Truth: blobs centred within 1 plane."""
    rng = np.random.default_rng(seed)
    zz = np.arange(n_planes)[:, None, None]
    yy, xx = np.mgrid[:size, :size]
    stack = np.zeros((n_planes, size, size))
    truth = np.zeros((n_planes, size, size), np.uint8)
    phases = iter(rng.permutation(np.arange(16) % 6))
    for gy in (8, 24, 40, 56):
        for gx in (8, 24, 40, 56):
            cy, cx = gy + rng.uniform(-1.5, 1.5), gx + rng.uniform(-1.5, 1.5)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(4, 5.5) ** 2
            for cz in range(int(next(phases)), n_planes, 6):
                stack += rng.uniform(0.6, 1.4) * np.exp(-((zz - cz) ** 2) / (2 * 2.0**2)) * disc
                truth[max(0, cz - 1) : cz + 2][:, disc] = 1
    stack = ndi.gaussian_filter(stack, (0, 1, 1)) + rng.normal(0, 0.03, stack.shape)
    return stack.astype(np.float32), truth


def test_depth_tells_in_focus_nuclei_from_out_of_focus_light():
    # Checked with seeds 0..7 while writing: depth 0.72..0.82, one plane alone 0.42..0.56.
    stack, truth = nuclei_stack(seed=0)
    z, planes = 12, [i for i in range(24) if i != 12]
    labels = truth[z].astype(np.int32) + 1
    with_depth, flat = Episode(CLASSES), Episode(CLASSES)
    with_depth.add_support(stack, labels=labels, plane=z)
    flat.add_support(stack[z], labels=labels)
    segmenter = ClassicSegmenter(n_jobs=2)
    scores = []
    for episode in (with_depth, flat):
        predicted = segmenter.predict_stack(episode, stack, planes=planes)[planes] == 2
        expected = truth[planes] == 1
        scores.append((predicted & expected).sum() / (predicted | expected).sum())
    assert scores[0] > 0.65 and scores[0] > scores[1] + 0.15, scores


def test_a_plane_without_neighbours_predicts_through_predict_stack_like_predict():
    stack, truth = nuclei_stack(seed=0)
    episode = Episode(CLASSES)
    episode.add_support(stack, labels=truth[12].astype(np.int32) + 1, plane=12)
    segmenter = ClassicSegmenter(n_jobs=2)
    expected = segmenter.predict(episode, stack[5])
    np.testing.assert_array_equal(segmenter.predict_stack(episode, stack[5]), expected)
    np.testing.assert_array_equal(segmenter.predict_stack(episode, stack[3:6, None])[2, 0], expected)
    lone = segmenter.predict_proba(episode, stack[5], context=(stack[5:6], 0))  # a one-plane context
    np.testing.assert_array_equal(lone.argmax(axis=0), expected)


class CountingStack:
    """A lazy array-like that counts the reads of each plane (and refuses reading more than one)."""

    def __init__(self, array: np.ndarray, n_plane_axes: int) -> None:
        self.array, self.n = array, n_plane_axes
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.reads: dict[tuple, int] = {}

    def __getitem__(self, selector):
        index = tuple(int(i) for i in selector[: self.n])  # an int per plane axis, else TypeError
        self.reads[index] = self.reads.get(index, 0) + 1
        return self.array[selector]


def test_lazy_stack_planes_are_read_once_and_give_the_numpy_labels():
    stack = smooth_stack((2, 12, 32, 32), seed=7)
    episode = depth_episode(stack[0], 5)
    segmenter = ClassicSegmenter(n_jobs=2)
    lazy = CountingStack(stack, 2)
    # "auto" normalisation first reads up to DRIFT_PLANES sampled planes to look for brightness
    # drift; with the choice made, every plane is read once
    labels = segmenter.predict_stack(episode, lazy, normalise="stack")
    assert lazy.reads == {(t, z): 1 for t in range(2) for z in range(12)}
    np.testing.assert_array_equal(labels, segmenter.predict_stack(episode, stack, normalise="stack"))
    # the context of plane (1, z) is Z within time point 1
    expected = segmenter.predict(episode, stack[1, 3], context=(stack[1, 0:12], 3))
    np.testing.assert_array_equal(labels[1, 3], expected)
    assert not np.array_equal(expected, segmenter.predict(episode, stack[1, 3]))
    uncertain = list(segmenter.iter_predict_stack(episode, stack, uncertainty=True, planes=[(1, 3)]))
    np.testing.assert_array_equal(uncertain[0][1], expected)


def test_cancel_before_the_run_stops_a_depth_prediction():
    stack = smooth_stack((12, 32, 32), seed=8)
    episode = depth_episode(stack, 5)
    segmenter = ClassicSegmenter(n_jobs=1)
    assert segmenter.uses_depth(episode)
    cancel, lazy = threading.Event(), CountingStack(stack, 1)
    cancel.set()
    with pytest.raises(PredictionCancelled):
        segmenter.predict_stack(episode, lazy, cancel=cancel)
    assert lazy.reads == {}


def test_a_context_that_does_not_fit_the_query_is_refused():
    stack = smooth_stack((20, 40, 40), seed=5)
    episode = depth_episode(stack, 10)
    segmenter = ClassicSegmenter(n_jobs=1)
    with pytest.raises(ValueError, match="context planes are"):
        segmenter.predict_proba(episode, stack[15], context=(stack[7:20, :30], 8))
    with pytest.raises(ValueError, match="position"):
        segmenter.predict_proba(episode, stack[15], context=(stack[7:20], 13))


def test_context_is_read_only_hashed_once_and_runs_along_the_last_array_axis(monkeypatch):
    stack = smooth_stack((12, 20, 24), seed=2)
    episode = depth_episode(stack, 6)
    support = episode.supports[0]
    with pytest.raises(ValueError, match="read-only"):
        support.context[0, 0, 0] = 1.0
    first = episode.signature()
    calls = []
    monkeypatch.setattr(np, "ascontiguousarray", lambda a, *k, **kw: calls.append(a.shape) or np.asarray(a))
    assert episode.signature() == first and (12, 20, 24) not in calls  # the context's digest is kept
    # plane axes named out of order: the context still runs along the last array axis (Z of T, Z)
    layout = stack_layout((4, 20, 32, 32), axis=(1, 0))
    window, position = layout.context_indices((5, 2), CONTEXT_REACH)
    assert window[0] == (0, 2) and window[-1] == (13, 2) and window[position] == (5, 2)


def test_depth_planes_that_would_not_fit_are_refused_before_reading(monkeypatch):
    stack = smooth_stack((12, 20, 24), seed=2)
    episode = depth_episode(stack, 6)
    segmenter = ClassicSegmenter(n_jobs=1)
    segmenter.fit(episode, depth=True)
    monkeypatch.setattr(cf, "available_memory", lambda: 20 * 24 * 4)  # a few planes' worth
    with pytest.raises(cf.FeatureMemoryError, match="neighbouring planes"):
        segmenter.predict_stack(episode, stack, planes=[3])


def test_a_query_stack_without_a_range_is_normalised_once_for_all_its_planes(monkeypatch):
    """A uint8 episode and a uint16 stack: no episode range applies, and the neighbouring planes
    must not each get their own stretch (brighter-than-its-neighbours would mean nothing)."""
    rng = np.random.default_rng(0)
    stack8 = (smooth_stack((10, 24, 24), seed=4) * 60 + 128).clip(0, 255).astype(np.uint8)
    episode = depth_episode(stack8, 5)
    query = (stack8.astype(np.uint16) * 200 + rng.integers(0, 50, stack8.shape)).astype(np.uint16)
    segmenter = ClassicSegmenter(n_jobs=1)
    ranges = []
    original = ClassicSegmenter._depth_plane
    monkeypatch.setattr(ClassicSegmenter, "_depth_plane", lambda self, p, r: ranges.append(r) or original(self, p, r))
    segmenter.predict_stack(episode, query, planes=[2, 7])
    query_ranges = ranges[len(episode.supports[0].context) :]  # after the support's own planes
    assert query_ranges and all(r is not None and r == query_ranges[0] for r in query_ranges)
