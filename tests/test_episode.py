"""Episode: prompt conventions, validation messages and the .episode file format."""

from __future__ import annotations

import numpy as np
import pytest

import napari_label_anything as nla

IMAGE = np.zeros((40, 50), dtype=np.uint16)


@pytest.fixture
def episode():
    return nla.Episode(classes=["nucleus", "membrane"])


def test_class_ids_and_names(episode):
    support = episode.add_support(IMAGE, points=[(5, 6, 1), (7, 8, "membrane")], boxes=[(30, 40, 10, 20, 2)])
    np.testing.assert_array_equal(support.points, [[5, 6, 1], [7, 8, 2]])
    # Corners in any order become (y0, x0, y1, x1).
    np.testing.assert_array_equal(support.boxes, [[10, 20, 30, 40, 2]])
    assert support.prompted_classes() == {1, 2}
    counts = support.prompt_counts(2)
    assert counts["points"].tolist() == [0, 1, 1] and counts["boxes"].tolist() == [0, 0, 1]


def test_labels_prompt(episode):
    labels = np.zeros(IMAGE.shape, dtype=np.int32)
    labels[2:5, 2:5] = 2
    support = episode.add_support(IMAGE, labels=labels)
    assert support.prompted_classes() == {2}
    assert support.prompt_counts(2)["pixels"].tolist() == [0, 0, 9]


def test_support_from_a_stack_plane(episode):
    stack = np.random.default_rng(0).integers(0, 100, (5, 40, 50)).astype(np.uint16)
    labels = np.zeros(stack.shape, dtype=np.uint8)
    labels[3, 1:4, 1:4] = 1
    support = episode.add_support(stack, labels=labels, plane=3)
    np.testing.assert_array_equal(support.image, stack[3])
    assert support.prompted_classes() == {1}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "at least one prompt"),
        ({"labels": np.zeros((40, 50), int)}, ValueError, "at least one prompt"),
        ({"labels": np.full((40, 50), 3)}, ValueError, r"values 3\.\.3 but only 0\.\.2"),
        ({"labels": np.full((40, 50), -1)}, ValueError, "only 0..2"),
        ({"labels": np.ones((40, 51), int)}, ValueError, r"labels have shape \(40, 51\)"),
        ({"labels": np.full((40, 50), 0.5)}, TypeError, "labels must hold integers"),
        ({"points": [(5, 60, 1)]}, ValueError, "outside the 40x50 image"),
        ({"points": [(-1, 5, 1)]}, ValueError, "outside"),
        ({"points": [(5, 5, 3)]}, ValueError, "unknown class 3"),
        ({"points": [(5, 5, "cytoplasm")]}, ValueError, "unknown class 'cytoplasm'"),
        ({"points": [(5, 5)]}, ValueError, "must have 3 values"),
        ({"points": [(np.nan, 5, 1)]}, ValueError, "NaN"),
        ({"boxes": [(5, 5, 5, 9, 1)]}, ValueError, "is empty"),
        ({"boxes": [(0, 0, 41, 9, 1)]}, ValueError, "reaches outside"),
    ],
)
def test_bad_prompts(episode, kwargs, error, match):
    with pytest.raises(error, match=match):
        episode.add_support(IMAGE, **kwargs)
    assert episode.supports == []  # nothing half-added


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.full((10, 10), np.nan), ValueError, "NaN or infinite"),
        (np.full((10, 10), np.inf, dtype=np.float32), ValueError, "NaN or infinite"),
        (np.zeros((4, 10, 10)), ValueError, "must be 2D"),
        (np.zeros(10), ValueError, "must be 2D"),
        (np.array([["a"]]), TypeError, "numeric"),
        (np.zeros((10, 10), dtype=complex), TypeError, "real-valued"),
    ],
)
def test_bad_images(episode, image, error, match):
    with pytest.raises(error, match=match):
        episode.add_support(image, points=[(0, 0, 1)])


def test_validate_names_unprompted_classes(episode):
    with pytest.raises(ValueError, match="no support image"):
        episode.validate()
    episode.add_support(IMAGE, points=[(1, 1, 1)])
    with pytest.raises(ValueError, match=r"\['membrane'\] have no prompt"):
        episode.validate()
    episode.add_support(IMAGE, points=[(1, 1, 2)])
    episode.validate()


def test_bad_class_lists():
    with pytest.raises(ValueError, match="at least one class"):
        nla.Episode([])
    with pytest.raises(ValueError, match="unique"):
        nla.Episode(["a", "a"])


def test_save_load_round_trip(tmp_path, episode):
    labels = np.zeros(IMAGE.shape, dtype=np.int64)
    labels[1:3, 1:3] = 1
    episode.model = "pasqualedem/label_anything_sam_1024_coco"
    episode.add_support(IMAGE + 7, labels=labels, name="first")
    episode.add_support(np.zeros((20, 30, 3), np.uint8), points=[(1.5, 2.25, 2)], boxes=[(1, 1, 5, 5, 1)])
    path = episode.save(tmp_path / "run.episode")
    assert path.name == "run.episode"
    loaded = nla.Episode.load(path)
    assert loaded.classes == episode.classes and loaded.model == episode.model
    assert loaded.signature() == episode.signature()
    assert loaded.supports[0].name == "first" and loaded.supports[0].image.dtype == np.uint16


def test_the_channel_choice_is_checked_saved_and_loaded(tmp_path, episode):
    import json

    assert episode.channels is None
    episode.channels = [2]
    assert episode.channels == (2,)
    episode.add_support(IMAGE, points=[(1, 1, 1), (2, 2, 2)])
    loaded = nla.Episode.load(episode.save(tmp_path / "blue.episode"))
    assert loaded.channels == (2,)
    assert nla.Episode.load(nla.Episode(["a"]).save(tmp_path / "all.episode")).channels is None
    with pytest.raises(ValueError, match="channel 4 does not exist"):
        nla.Episode(["a"], channels=[4])
    with pytest.raises(ValueError, match="channels is empty"):
        episode.channels = []
    with pytest.raises(TypeError, match="a channel must be an integer"):
        nla.Episode(["a"], channels=["blue"])
    assert episode.channels == (2,)  # a refused value changes nothing
    with np.load(tmp_path / "blue.episode") as archive:  # a header naming a channel that cannot be
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    arrays["meta"] = np.frombuffer(json.dumps({**meta, "channels": [9]}).encode(), np.uint8)
    with open(tmp_path / "bad.episode", "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(ValueError, match="damaged: bad classes, model or channels"):
        nla.Episode.load(tmp_path / "bad.episode")


def test_load_rejects_other_files(tmp_path):
    (tmp_path / "junk.episode").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable episode file"):
        nla.Episode.load(tmp_path / "junk.episode")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an episode file"):
        nla.Episode.load(tmp_path / "other.npz")


def test_signature_tracks_prompts(episode):
    episode.add_support(IMAGE, points=[(1, 1, 1), (2, 2, 2)])
    before = episode.signature()
    episode.supports[0].points[0, 0] = 3
    assert episode.signature() != before
