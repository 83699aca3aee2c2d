"""Property-based fuzzing of the public API with random episodes, images, stacks and prompt mixes.

Every call must either succeed with the documented output (shape, dtype, value range) or raise
one of the clean errors (``ValueError``/``TypeError``) — never anything else — and a refused
``add_support`` must leave the episode exactly as it was. Mutated ``.episode`` bytes load or
give a ``ValueError``/``OSError`` of one line.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import napari_label_anything as nla
from napari_label_anything.episode import check_image
from napari_label_anything.labels import labels_dtype
from napari_label_anything.stacks import stack_layout

CLEAN_ERRORS = (ValueError, TypeError)
# Derandomized so CI is repeatable; NLA_FUZZ_EXAMPLES=500 NLA_FUZZ_RANDOM=1 hunts deeper locally.
EXAMPLES = int(os.environ.get("NLA_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=os.environ.get("NLA_FUZZ_RANDOM") != "1",
)
SLOW_FUZZ = settings(FUZZ, max_examples=max(1, EXAMPLES * 2 // 5))

GOOD_DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float16, np.float32, np.float64, np.bool_]
BAD_DTYPES = [np.complex64, np.dtype("timedelta64[s]"), np.dtype("datetime64[D]"), np.dtype("U2")]


def special_floats(array: np.ndarray, draw) -> np.ndarray:
    """Sprinkle NaN, inf or values near the float limits into a float array (sometimes)."""
    if array.dtype.kind != "f" or array.size == 0:
        return array
    kind = draw(st.sampled_from(["none", "none", "nan", "inf", "huge"]))
    if kind == "none":
        return array
    array = array.copy()
    index = draw(st.integers(0, array.size - 1))
    value = {"nan": np.nan, "inf": -np.inf, "huge": np.finfo(array.dtype).max}[kind]
    array.flat[index] = value
    if kind == "huge":
        array.flat[(index + 1) % array.size] = -np.finfo(array.dtype).max
    return array


@st.composite
def images(draw, min_side: int = 1, max_side: int = 24, planes: int = 0):
    """Random images: mostly valid (grey/RGB/RGBA, real dtypes), sometimes not (bad dtype, channels, sides)."""
    broken = draw(st.integers(0, 3)) == 0  # one image in four is invalid on purpose
    height = draw(st.integers(min_side if broken else 2, max_side))
    width = draw(st.integers(min_side if broken else 2, max_side))
    channels = draw(st.sampled_from([None, None, 3, 4] + ([1, 2, 5] if broken else [])))
    shape = (*(draw(st.integers(0 if broken else 1, 3)) for _ in range(planes)), height, width)
    if channels is not None:
        shape = (*shape, channels)
    dtype = np.dtype(draw(st.sampled_from(GOOD_DTYPES + (BAD_DTYPES if broken else []))))
    if dtype.kind in "mMU":
        return np.zeros(shape, dtype)
    if dtype.kind == "c":
        return np.ones(shape, dtype)
    elements = (
        st.booleans()
        if dtype == np.bool_
        else st.integers(int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
        if dtype.kind in "iu"
        else st.floats(-1e4, 1e4, width=32 if dtype == np.float32 else 64 if dtype == np.float64 else 16)
    )
    array = draw(hnp.arrays(dtype, shape, elements=elements, fill=elements))
    return special_floats(array, draw) if broken else array


@st.composite
def prompts(draw, shape: tuple[int, ...], n_classes: int):
    """A mix of label, point and box prompts for an image of ``shape``; some out of bounds or degenerate."""
    height, width = (shape + (1, 1))[:2] if len(shape) >= 2 else (1, 1)
    broken = draw(st.integers(0, 3)) == 0  # one prompt set in four holds mistakes on purpose
    kinds = draw(st.sets(st.sampled_from(["labels", "points", "boxes"]), min_size=0 if broken else 1, max_size=3))
    result = {}
    if "labels" in kinds:
        label_shape = draw(st.sampled_from([(height, width), (height + 1, width)])) if broken else (height, width)
        values = st.integers(-1 if broken else 0, n_classes + (1 if broken else 0))
        dtype = draw(st.sampled_from([np.uint8, np.int32, np.float32] + ([np.bool_] if n_classes == 1 else [])))
        result["labels"] = draw(hnp.arrays(np.int64, label_shape, elements=values)).astype(dtype)
    if broken:
        coordinate_y = st.one_of(st.floats(-2, height + 2), st.just(float("nan")), st.just(float("inf")))
        coordinate_x = st.floats(-2, width + 2)
        class_id = st.one_of(st.integers(0, n_classes + 1), st.sampled_from(["c1", "nope"]))
    else:
        coordinate_y, coordinate_x = st.floats(0, height - 0.01), st.floats(0, width - 0.01)
        class_id = st.one_of(st.integers(1, n_classes), st.just("c1"))
    if "points" in kinds:
        result["points"] = draw(st.lists(st.tuples(coordinate_y, coordinate_x, class_id), max_size=4))
    if "boxes" in kinds:
        result["boxes"] = draw(
            st.lists(st.tuples(coordinate_y, coordinate_x, coordinate_y, coordinate_x, class_id), max_size=3)
        )
    return result


def add_support_or_refuse(episode: nla.Episode, image, kwargs) -> bool:
    """Add a support; on refusal check the error kind and that the episode is unchanged."""
    before, count = episode.signature(), len(episode.supports)
    try:
        episode.add_support(image, **kwargs)
    except CLEAN_ERRORS:
        assert episode.signature() == before and len(episode.supports) == count
        return False
    assert len(episode.supports) == count + 1
    return True


@st.composite
def episodes(draw):
    n_classes = draw(st.integers(1, 3))
    episode = nla.Episode([f"c{k}" for k in range(1, n_classes + 1)])
    for _ in range(draw(st.integers(1, 3))):
        image = draw(images(min_side=1))
        add_support_or_refuse(episode, image, draw(prompts(image.shape, n_classes)))
    if draw(st.integers(0, 3)):  # mostly complete: one more support with a point of every class
        image = draw(images(min_side=n_classes + 1).filter(lambda a: a.dtype.kind in "biuf" and min(a.shape[:2]) > 3))
        points = [(k % image.shape[0], k % image.shape[1], k) for k in range(1, n_classes + 1)]
        add_support_or_refuse(episode, image, {"points": points})
    return episode


@pytest.fixture(scope="module")
def classic():
    return nla.load_segmenter("classic")


@FUZZ
@given(data=st.data())
def test_add_support_succeeds_or_refuses_cleanly(data):
    n_classes = data.draw(st.integers(1, 4))
    episode = nla.Episode([f"c{k}" for k in range(1, n_classes + 1)])
    for _ in range(3):
        image = data.draw(images(min_side=1))
        kwargs = data.draw(prompts(image.shape, n_classes))
        if add_support_or_refuse(episode, image, kwargs):
            support = episode.supports[-1]
            assert support.image.shape[:2] == image.shape[:2]
            assert support.prompted_classes() <= set(range(1, n_classes + 1))
            assert support.prompted_classes(), "a support without prompts was accepted"


@FUZZ
@given(data=st.data())
def test_episode_file_round_trip(tmp_path_factory, data):
    episode = data.draw(episodes())
    path = tmp_path_factory.mktemp("fuzz") / "e.episode"
    episode.save(path)
    assert nla.Episode.load(path).signature() == episode.signature()


@pytest.fixture(scope="module")
def episode_files(tmp_path_factory) -> dict[str, bytes]:
    """A small episode file's bytes (a support from a stack, with context; points, boxes, labels),
    as ``save`` writes it (deflated) and with stored members (headers in the file as they are)."""
    stack = np.random.default_rng(0).integers(0, 255, (3, 40, 60)).astype(np.uint16)  # members over 4 KiB
    labels = np.zeros((40, 60), np.uint8)
    labels[2:5, 3:7] = 1
    episode = nla.Episode(["a", "b"], colors={"a": "#ff0000"})
    episode.add_support(stack, labels=np.stack([labels] * 3), points=[(8, 9, 2)], boxes=[(1, 1, 6, 6, "b")], plane=1)
    path = tmp_path_factory.mktemp("episode") / "e.episode"
    episode.save(path)
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    stored = io.BytesIO()
    np.savez(stored, **arrays)
    return {"deflated": path.read_bytes(), "stored": stored.getvalue()}


def places(raw: bytes) -> list[list[int]]:
    """Offsets where a mutation is most telling: [compression methods and name lengths of the zip
    headers, every byte of the .npy headers that lie in the file as they are], each non-empty."""
    fields, headers = [], []
    for mark, offsets in ((b"PK\x03\x04", (8, 26)), (b"PK\x01\x02", (10, 28))):
        at = raw.find(mark)
        while at >= 0:
            fields += [at + offset for offset in offsets if at + offset < len(raw)]
            at = raw.find(mark, at + 1)
    at = raw.find(b"{'descr'")
    while at >= 0:
        end = raw.find(b"}", at)
        headers += range(at, len(raw) if end < 0 else end + 1)
        at = raw.find(b"{'descr'", at + 1)
    return [found for found in (fields, headers) if found]


@FUZZ
@given(data=st.data())
def test_mutated_episode_files_load_or_refuse_in_one_line(episode_files, tmp_path_factory, data):
    """Flipped, overwritten, inserted, deleted bytes and truncation: ``Episode.load`` gives an
    episode or a ``ValueError``/``OSError`` of one short line, never another exception."""
    raw = bytearray(episode_files[data.draw(st.sampled_from(sorted(episode_files)))])
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.one_of(st.integers(0, len(raw) - 1), *map(st.sampled_from, places(bytes(raw)))))
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if kind == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            raw[at] = data.draw(st.sampled_from([0, 0xFF, ord("("), ord(")"), ord("9"), ord("'")]))
        elif kind == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del raw[at : at + data.draw(st.integers(1, 8))]
        else:
            del raw[at:]
        if not raw:
            break
    path = tmp_path_factory.mktemp("mutated") / "m.episode"
    path.write_bytes(bytes(raw))
    try:
        nla.Episode.load(path)
    except (ValueError, OSError) as err:
        assert "\n" not in str(err) and len(str(err)) < 2000, str(err)


@pytest.fixture(scope="module")
def outcomes():
    """Counts of successful and refused predictions: a fuzzer that only ever sees refusals tests little."""
    counts = {"predicted": 0, "refused": 0}
    yield counts
    total = counts["predicted"] + counts["refused"]
    assert counts["predicted"] >= 0.25 * total, f"too few valid cases reached the model: {counts}"


def accepted(check) -> bool:
    try:
        check()
    except CLEAN_ERRORS:
        return False
    return True


def check_prediction(segmenter, episode, query, outcomes) -> None:
    """Inputs the validators accept must predict; inputs they refuse must raise a clean error."""
    if not (accepted(episode.validate) and accepted(lambda: check_image(query))):
        outcomes["refused"] += 1
        with pytest.raises(CLEAN_ERRORS):
            segmenter.predict(episode, query)
        return
    outcomes["predicted"] += 1
    labels = segmenter.predict(episode, query)
    assert labels.shape == query.shape[:2] and labels.dtype == labels_dtype(episode.n_classes)
    assert labels.max() <= episode.n_classes


def check_stack_prediction(segmenter, episode, stack, planes, outcomes) -> None:
    def valid_stack():
        layout = stack_layout(stack.shape)
        for index in layout.plane_indices() if planes is None else layout.check_planes(planes):
            check_image(layout.take(stack, index))

    if not (accepted(episode.validate) and accepted(valid_stack)):
        outcomes["refused"] += 1
        with pytest.raises(CLEAN_ERRORS):
            segmenter.predict_stack(episode, stack, planes=planes)
        return
    outcomes["predicted"] += 1
    labels = segmenter.predict_stack(episode, stack, planes=planes)
    spatial = stack.shape[:-1] if stack.ndim >= 3 and stack.shape[-1] in (3, 4) else stack.shape
    assert labels.shape == spatial and labels.dtype == labels_dtype(episode.n_classes)
    assert labels.max() <= episode.n_classes


@pytest.fixture(scope="module", params=["classic", "mae_like"])
def segmenter(request, classic):
    """The embedded default and a (tiny) Label Anything model."""
    return classic if request.param == "classic" else request.getfixturevalue("mae_like_segmenter")


@SLOW_FUZZ
@given(data=st.data())
def test_predictions_succeed_or_refuse_cleanly(segmenter, outcomes, data):
    episode = data.draw(episodes())
    check_prediction(segmenter, episode, data.draw(images(min_side=1, max_side=32)), outcomes)
    stack = data.draw(images(min_side=1, max_side=20, planes=1))
    planes = data.draw(st.one_of(st.none(), st.lists(st.integers(-4, 4), max_size=3)))
    check_stack_prediction(segmenter, episode, stack, planes, outcomes)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint16])
def test_regressions_found_by_fuzzing(segmenter, dtype):
    """Cases the random search found once, kept as fixed examples: constant and boolean images."""
    episode = nla.Episode(["c1"])
    episode.add_support(np.zeros((6, 6), dtype), points=[(1, 1, 1)])
    assert segmenter.predict(episode, np.zeros((9, 11), dtype)).shape == (9, 11)
    assert segmenter.predict_stack(episode, np.zeros((2, 9, 11), dtype)).shape == (2, 9, 11)
