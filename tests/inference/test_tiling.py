"""Tiling large planes (inference/tiling.py): plans, blending windows, stitching without seams."""

from __future__ import annotations

import numpy as np
import pytest

from napari_label_anything.inference.tiling import AUTO_TILE_FACTOR, Stitcher, choose_tiling, plan_tiles

SHAPES = [(1000, 1000), (700, 1300), (300, 900), (256, 256), (257, 511), (100, 80), (1, 1)]


def stitch(tiles_and_values, shape, channels=1) -> np.ndarray:
    """Per-tile (C, h, w) values blended into one (C, Y, X) array, as LabelAnythingSegmenter does."""
    stitcher = Stitcher(shape, channels)
    for tile, values in tiles_and_values:
        stitcher.add(tile, values)
    return stitcher.result()


def predict_tiled(fn, image, tile, overlap=0) -> np.ndarray:
    """``fn`` run on each tile of a (Y, X[, C]) plane, its (C, h, w) results blended."""
    plan = plan_tiles(image.shape[:2], tile, overlap)
    results = [(t, np.asarray(fn(image[t.slices]))) for t in plan]
    return stitch(results, image.shape[:2], channels=results[0][1].shape[0])


def smooth_field(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A known smooth (2, ...) field of absolute coordinates."""
    return np.stack([np.sin(y / 37.0) + np.cos(x / 53.0), (y * 0.001) * (x * 0.002) - 0.5]).astype(np.float32)


def box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Local mean over a (2r+1)^2 window, reflect-padded: a 'model' that looks at neighbours."""
    padded = np.pad(image.astype(np.float64), radius, mode="reflect")
    out = np.zeros(image.shape, np.float64)
    size = 2 * radius + 1
    for dy in range(size):
        for dx in range(size):
            out += padded[dy : dy + image.shape[0], dx : dx + image.shape[1]]
    return out / size**2


LEVELS = np.array([0.0, 0.3, 0.6, 0.9])  # background, then three classes of discs/stripes


def synthetic_scene(shape=(700, 950), seed=0, noise=0.0):
    """Discs and a stripe of known class on a background; the answer is class membership."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.uint8)
    rng = np.random.default_rng(seed)
    for k in (1, 2, 3, 1, 2, 3, 1, 2):
        cy, cx, r = rng.integers(60, shape[0] - 60), rng.integers(60, shape[1] - 60), rng.integers(25, 70)
        truth[(y - cy) ** 2 + (x - cx) ** 2 <= r * r] = k
    truth[:, 400:430] = 3  # a stripe crossing every tile row
    image = LEVELS[truth] + (rng.normal(0, noise, shape) if noise else 0)
    return image.astype(np.float32), truth


def local_threshold_model(tile_image: np.ndarray) -> np.ndarray:
    """(4, h, w) logits: closeness of the locally averaged intensity to each class level."""
    smoothed = box_mean(tile_image, 2)
    return (-((smoothed[None] - LEVELS[:, None, None]) ** 2) * 100).astype(np.float32)


def seam_excess(tiled: np.ndarray, whole: np.ndarray, plan) -> float:
    """Largest step across a tile border of ``tiled`` beyond the same step in ``whole``."""
    excess = 0.0
    for t in plan:
        for axis, start in ((1, t.y), (2, t.x)):
            if start > 0:
                pair = slice(start - 1, start + 1)
                index = (
                    (slice(None), pair, slice(t.x, t.x + t.w))
                    if axis == 1
                    else (slice(None), slice(t.y, t.y + t.h), pair)
                )
                steps = np.abs(np.diff(tiled[index], axis=axis)) - np.abs(np.diff(whole[index], axis=axis))
                excess = max(excess, float(steps.max()))
    return excess


# -- plans ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("tile", "overlap"), [(256, 64), (128, 0), (100, 90), ((64, 96), (8, 16))])
def test_plans_cover_every_pixel_with_full_size_tiles_in_bounds(shape, tile, overlap):
    plan = plan_tiles(shape, tile, overlap)
    ty, tx = (tile, tile) if np.ndim(tile) == 0 else tile
    oy, ox = (overlap, overlap) if np.ndim(overlap) == 0 else overlap
    covered = np.zeros(shape, np.int32)
    for t in plan:
        assert 0 <= t.y and t.y + t.h <= shape[0] and 0 <= t.x and t.x + t.w <= shape[1]
        assert t.shape == (min(ty, shape[0]), min(tx, shape[1]))  # full size, or the whole axis
        covered[t.slices] += 1
        assert t.weight.shape == t.shape and t.weight.dtype == np.float32
    assert covered.min() >= 1
    # neighbours overlap by at least `overlap` (the last row/column more, never less)
    ys = sorted({t.y for t in plan})
    xs = sorted({t.x for t in plan})
    assert all(b - a <= ty - oy for a, b in zip(ys, ys[1:], strict=False))
    assert all(b - a <= tx - ox for a, b in zip(xs, xs[1:], strict=False))
    assert ys[0] == 0 and xs[0] == 0 and ys[-1] + plan[-1].h == shape[0] and xs[-1] + plan[-1].w == shape[1]


def test_weights_positive_symmetric_and_not_lowered_at_the_plane_border():
    # a 3 x 3 plan of (64, 48) tiles overlapping by 10: the middle tile has neighbours on every edge
    plan = plan_tiles((64 + 2 * 54, 48 + 2 * 38), (64, 48), 10)
    assert len(plan) == 9 and plan[4].index == (1, 1)
    w = plan[4].weight
    assert w.dtype == np.float32 and w.min() > 0 and w.max() == 1
    np.testing.assert_array_equal(w, w[::-1])
    np.testing.assert_array_equal(w, w[:, ::-1])
    assert w[32, 24] == 1 and w[0, 24] == pytest.approx(1 / 11) and w[32, 0] == pytest.approx(1 / 11)
    # two tiles overlapping by exactly `overlap`: the ramps sum to one (partition of unity)
    row = w[32]
    np.testing.assert_allclose(row[-10:] + row[:10], 1.0, atol=1e-6)
    for t in plan_tiles((24, 24), 8, 0):
        np.testing.assert_array_equal(t.weight, np.ones((8, 8), np.float32))
    # a tile at the top-left corner of a plane: no ramp on the border edges
    corner = plan[0].weight
    assert corner[0, 0] == 1 and corner[0, :38].min() == 1 and corner[-1, -1] == pytest.approx(1 / 121)
    for shape in SHAPES:
        for t in plan_tiles(shape, 128, 32):
            weight = t.weight
            assert weight.min() > 0
            if t.y == 0:
                assert weight[0].max() == 1  # the plane's top edge is never down-weighted
            if t.y + t.h == shape[0]:
                assert weight[-1].max() == 1
            if t.x == 0:
                assert weight[:, 0].max() == 1
            if t.x + t.w == shape[1]:
                assert weight[:, -1].max() == 1
    big = plan_tiles((1000, 1000), 256, 64)
    assert big[0].weight[0, 0] == 1 and big[-1].weight[-1, -1] == 1  # plane corners


# -- stitching ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1000, 1000), (700, 1300), (300, 900), (100, 80)])
def test_stitching_a_field_of_absolute_coordinates_reproduces_it_exactly(shape):
    y, x = np.mgrid[: shape[0], : shape[1]]
    truth = smooth_field(y, x)

    def tiles():
        for t in plan_tiles(shape, 200, 48):
            ty, tx = np.mgrid[t.y : t.y + t.h, t.x : t.x + t.w]
            yield t, smooth_field(ty, tx)

    out = stitch(tiles(), shape, channels=2)
    assert out.shape == (2, *shape) and out.dtype == np.float32
    np.testing.assert_allclose(out, truth, atol=2e-6, rtol=0)


def test_stitching_per_tile_constants_blends_smoothly_without_jumps():
    shape, overlap = (900, 1100), 40
    plan = plan_tiles(shape, 256, overlap)
    rng = np.random.default_rng(1)
    constants = rng.uniform(-3, 3, len(plan))
    out = stitch(((t, np.full((1, *t.shape), c)) for t, c in zip(plan, constants, strict=True)), shape)[0]
    spread = constants.max() - constants.min()
    steps = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert steps <= spread / (overlap + 1) + 1e-5  # a ramp, never a seam
    assert out.min() >= constants.min() - 1e-5 and out.max() <= constants.max() + 1e-5
    # without overlap the same tiles meet in jumps: the ramp is what removes them
    hard = stitch(
        ((t, np.full((1, *t.shape), c)) for t, c in zip(plan_tiles(shape, 256, 0), constants, strict=False)), shape
    )
    assert np.abs(np.diff(hard[0], axis=1)).max() > 10 * steps
    # tiles' cores keep their own value exactly
    for t, c in zip(plan, constants, strict=True):
        core = out[
            t.y + 2 * overlap + 1 : t.y + t.h - 2 * overlap - 1, t.x + 2 * overlap + 1 : t.x + t.w - 2 * overlap - 1
        ]
        if t.y + t.h < shape[0] - 256 and t.x + t.w < shape[1] - 256 and core.size:
            np.testing.assert_allclose(core, c, atol=1e-5)


def test_stitch_refuses_wrong_shapes_and_uncovered_pixels():
    plan = plan_tiles((300, 300), 200, 50)
    with pytest.raises(ValueError, match=r"\(C, h, w\)"):
        stitch([(plan[0], np.zeros((200, 200)))], (300, 300))
    with pytest.raises(ValueError, match="shape"):
        stitch([(plan[0], np.zeros((2, 199, 200)))], (300, 300), channels=2)
    with pytest.raises(ValueError, match="covered by no tile"):
        stitch([(plan[0], np.zeros((1, 200, 200)))], (300, 300))
    with pytest.raises(ValueError, match="channels"):
        Stitcher((300, 300), 0)
    with pytest.raises(ValueError, match="outside"):
        Stitcher((100, 100), 1).add(plan[-1], np.zeros((1, 200, 200)))


# -- tiles predicted and blended: the known answer ----------------------------------------------


def test_tiled_prediction_equals_the_untiled_answer_on_a_known_scene_without_seams():
    image, truth = synthetic_scene()
    whole = local_threshold_model(image)
    labels_whole = whole.argmax(0)
    # the model is right away from class boundaries (the local mean blurs 2 pixels)
    boundary = np.zeros(truth.shape, bool)
    boundary[:-1] |= truth[:-1] != truth[1:]
    boundary[:, :-1] |= truth[:, :-1] != truth[:, 1:]
    edges = box_mean(boundary.astype(np.float32), 3) > 0
    np.testing.assert_array_equal(labels_whole[~edges], truth[~edges])

    tiled = predict_tiled(local_threshold_model, image, 256, 64)
    plan = plan_tiles(image.shape, 256, 64)
    assert tiled.shape == whole.shape and tiled.dtype == np.float32
    np.testing.assert_array_equal(tiled.argmax(0), labels_whole)  # the same labels, every pixel
    # logits differ from the untiled ones only within the model's 2-pixel reach of a tile's
    # inner edge, and only by a small share there (the ramp down-weights tile edges)
    error = np.abs(tiled - whole).max(0)
    near_inner_edge = np.zeros(image.shape, bool)
    for t in plan:
        if t.y > 0:
            near_inner_edge[t.y : t.y + 2, t.x : t.x + t.w] = True
        if t.y + t.h < image.shape[0]:
            near_inner_edge[t.y + t.h - 2 : t.y + t.h, t.x : t.x + t.w] = True
        if t.x > 0:
            near_inner_edge[t.y : t.y + t.h, t.x : t.x + 2] = True
        if t.x + t.w < image.shape[1]:
            near_inner_edge[t.y : t.y + t.h, t.x + t.w - 2 : t.x + t.w] = True
    assert (edges & near_inner_edge).sum() > 100  # class boundaries do cross tile borders
    assert error[~near_inner_edge].max() < 1e-4
    scale = np.abs(whole).max()
    assert error.max() < 0.01 * scale
    # no seams: across every tile border the tiled logits step no more than the untiled ones
    # do (to 1% of their range); abutting tiles without blending show a seam of half of it
    assert seam_excess(tiled, whole, plan) < 0.01 * scale
    hard = predict_tiled(local_threshold_model, image, 256, 0)
    assert seam_excess(hard, whole, plan_tiles(image.shape, 256, 0)) > 0.3 * scale


def test_tiled_prediction_of_a_pointwise_model_is_exact_on_colour_and_odd_planes():
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 1, (333, 517, 3)).astype(np.float32)

    def model(t):
        assert t.ndim == 3 and t.shape[2] == 3  # trailing axes reach fn
        return np.moveaxis(t * 2 - 1, -1, 0)

    out = predict_tiled(model, image, (128, 160), (16, 40))
    np.testing.assert_allclose(out, np.moveaxis(image * 2 - 1, -1, 0), atol=1e-6, rtol=0)
    grey = image[..., 0]
    np.testing.assert_allclose(predict_tiled(lambda t: t[None], grey, 100, 30)[0], grey, atol=1e-6, rtol=0)


# -- edges -------------------------------------------------------------------------------------


def test_a_plane_smaller_than_a_tile_is_one_tile_the_plane():
    for shape in [(100, 80), (1, 1), (256, 256)]:
        (only,) = plan_tiles(shape, 256, 64)
        assert (only.y, only.x, only.shape) == (0, 0, shape)
        np.testing.assert_array_equal(only.weight, 1)  # no neighbours, no ramp
        image = np.random.default_rng(3).uniform(size=shape).astype(np.float32)
        np.testing.assert_array_equal(predict_tiled(lambda t: t[None], image, 256, 64)[0], image)


def test_non_square_planes_and_one_long_axis():
    plan = plan_tiles((100, 2000), 256, 64)
    assert {t.shape for t in plan} == {(100, 256)} and len({t.y for t in plan}) == 1
    assert len(plan) == 11  # ceil((2000 - 256) / 192) + 1
    plan = plan_tiles((257, 256), 256, 64)
    assert [(t.y, t.x) for t in plan] == [(0, 0), (1, 0)]


@pytest.mark.parametrize(("tile", "overlap"), [(64, 64), (64, 100), ((64, 64), (10, 64)), (0, 0), (64, -1)])
def test_bad_tile_or_overlap_is_refused_naming_the_values(tile, overlap):
    with pytest.raises(ValueError, match="tile") as info:
        plan_tiles((500, 500), tile, overlap)
    assert str(overlap if np.ndim(overlap) == 0 else overlap[1]) in str(info.value)


def test_non_integer_sizes_are_refused():
    for bad in [12.5, "64", True, (1, 2, 3)]:
        with pytest.raises(ValueError):
            plan_tiles((500, 500), bad, 0)
    with pytest.raises(ValueError, match="plane"):
        plan_tiles((0, 10), 8, 0)
    with pytest.raises(ValueError, match="image_size"):
        choose_tiling((100, 100), 1024.0)


# -- policy --------------------------------------------------------------------------------------


def test_choose_tiling_auto_resizes_up_to_the_factor_and_tiles_above():
    assert AUTO_TILE_FACTOR == 2
    for size in (1024, 480):
        limit = int(AUTO_TILE_FACTOR * size)
        assert not choose_tiling((limit, limit // 2), size).tiled  # default mode is "auto"
        assert not choose_tiling((300, 200), size, "auto").tiled
        above = choose_tiling((limit + 1, 100), size)
        assert above.tiled and above.tile == size and above.overlap == size // 4
        assert "tiles" in above.reason
    assert not choose_tiling((8000, 8000), 1024, "resize").tiled
    forced = choose_tiling((300, 300), 1024, "tile", tile=512, overlap=32)
    assert (forced.tiled, forced.tile, forced.overlap) == (True, 512, 32)
    with pytest.raises(ValueError, match="'tiles'"):
        choose_tiling((100, 100), 1024, "tiles")
    with pytest.raises(ValueError, match="overlap"):
        choose_tiling((100, 100), 1024, "tile", overlap=1024)
    # the choice plugs straight into plan_tiles
    choice = choose_tiling((2100, 900), 1024)
    assert len(plan_tiles((2100, 900), choice.tile, choice.overlap)) == 3


def test_tiled_prediction_on_a_noisy_scene_differs_only_at_near_ties():
    """With noise, a pixel on a class boundary at a tile's inner edge can be a near-tie that the
    missing context outside the tile tips over; nowhere else do the labels differ."""
    image, truth = synthetic_scene(noise=0.03)
    whole = local_threshold_model(image)
    tiled = predict_tiled(local_threshold_model, image, 256, 64)
    differ = tiled.argmax(0) != whole.argmax(0)
    assert differ.mean() < 1e-4
    top2 = np.sort(whole, axis=0)[-2:]
    margin = top2[1] - top2[0]
    assert (margin[differ] < 0.2).all()  # logits span about 80: these are ties
