"""evaluate / evaluate_episodes: dataset-level scores of any Segmenter over seeded episodes."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest

import napari_label_anything as nla
from napari_label_anything.inference.base import PredictionCancelled
from napari_label_anything.training.datasets.synthetic import SyntheticDataset
from napari_label_anything.training.evaluation import EvaluationResult, compact_ids, evaluate, evaluate_episodes


@pytest.fixture(scope="module")
def dataset():
    return SyntheticDataset(12, n_classes=4, size=48, seed=0)


class Oracle:
    """A perfect segmenter: finds the query among the dataset's images and answers its labels."""

    name = "oracle"

    def __init__(self, dataset):
        self.samples = [dataset[i] for i in range(len(dataset))]
        self.id_of = {name: class_id for class_id, name in dataset.classes.items()}

    def predict(self, episode, query):
        (sample,) = [s for s in self.samples if s.image.shape == query.shape and np.array_equal(s.image, query)]
        local = np.zeros(sample.labels.shape, dtype=np.uint8)
        for k, name in enumerate(episode.classes, start=1):
            local[sample.labels == self.id_of[name]] = k
        return local


class Fixed:
    """Answers the given label maps in turn."""

    name = "fixed"

    def __init__(self, answers):
        self.answers = iter(answers)

    def predict(self, episode, query):
        return next(self.answers)


def made(target, class_ids):
    target = np.asarray(target, dtype=np.int64)
    return SimpleNamespace(episode=None, query=np.zeros(target.shape), target=target, class_ids=tuple(class_ids))


def test_classic_segmenter_is_reproducible_per_seed(dataset):
    calls = []
    first = evaluate(nla.load_segmenter("classic"), dataset, ways=2, shots=1, episodes=4, seed=42)
    again = evaluate(
        nla.load_segmenter("classic"), dataset, 2, 1, 4, seed=42, progress=lambda *done: calls.append(done)
    )
    assert isinstance(first, EvaluationResult)
    np.testing.assert_array_equal(first.confusion, again.confusion)
    assert first.miou == again.miou and first.fb_iou == again.fb_iou and first.per_class == again.per_class
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert first.official is None and first.official_confusion is None
    assert (first.ways, first.shots, first.seed, first.episodes, first.model) == (2, 1, 42, 4, "classic")
    assert first.confusion.shape == (5, 5) and first.confusion.dtype == np.int64
    assert 0.0 < first.miou < 1.0 and 0.0 < first.fb_iou < 1.0
    assert set(first.per_class) <= set(dataset.classes.values())

    other = evaluate(nla.load_segmenter("classic"), dataset, 2, 1, 4, seed=7)
    assert not np.array_equal(other.confusion, first.confusion)

    official = evaluate(nla.load_segmenter("classic"), dataset, 2, 1, 4, seed=42, official=True)
    assert set(official.official) == {"strict_miou", "bmiou", "official_fbiou"}
    assert official.miou == first.miou
    assert all(0.0 <= value <= 1.0 for value in official.official.values())


def test_a_perfect_segmenter_scores_one(dataset):
    result = evaluate(Oracle(dataset), dataset, ways=2, shots=1, episodes=4, seed=3, official=True)
    assert result.miou == 1.0 and result.fb_iou == 1.0 and result.background_iou == 1.0
    assert all(value == 1.0 for value in result.per_class.values())
    assert np.count_nonzero(result.confusion - np.diag(np.diag(result.confusion))) == 0
    assert result.official["bmiou"] == 1.0 and result.official["official_fbiou"] == 1.0


def test_scores_come_from_one_matrix_over_all_episodes():
    classes = {10: "ten", 20: "twenty", 30: "thirty"}  # compact ids 1, 2, 3
    episodes = [made([[0, 1, 1, 1]], [20]), made([[0, 1, 2, 2]], [10, 30])]
    answers = [np.array([[0, 1, 1, 0]]), np.array([[0, 1, 2, 0]])]
    result = evaluate_episodes(Fixed(answers), episodes, classes)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = 2
    expected[2, 2] = 2
    expected[2, 0] = 1
    expected[1, 1] = 1
    expected[3, 3] = 1
    expected[3, 0] = 1
    np.testing.assert_array_equal(result.confusion, expected)
    assert result.per_class == pytest.approx({"ten": 1.0, "twenty": 2 / 3, "thirty": 1 / 2})
    assert result.miou == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert result.episodes == 2 and result.ways is None and result.official is None
    assert result.fb_iou == pytest.approx((4 / 6 + 2 / 4) / 2)


def test_official_numbers_use_the_sequential_remap():
    classes = {1: "a", 2: "b", 3: "c"}
    # Local class 1 -> global 2, then local 2 -> global 3: the official remap merges class 2 into 3.
    episode = made([[1, 1, 2, 2]], [2, 3])
    result = evaluate_episodes(Fixed([np.array([[1, 1, 2, 2]])]), [episode], classes, official=True)
    assert result.miou == 1.0 and result.per_class == {"b": 1.0, "c": 1.0}
    assert result.official_confusion[3, 3] == 4 and result.official_confusion[2].sum() == 0
    assert result.official["bmiou"] == 1.0
    assert result.official["strict_miou"] == pytest.approx((1.0 * 4 - 0.0) / 3)


def test_json_table_and_dict(tmp_path):
    classes = {1: "nucleus", 2: "membrane", 3: "never seen"}
    result = evaluate_episodes(
        Fixed([np.array([[0, 1, 2, 2]])]), [made([[0, 1, 2, 0]], [1, 2])], classes, official=True
    )
    path = result.to_json(tmp_path / "scores.json")
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(json.dumps(result.as_dict()))
    assert loaded["per_class"] == {"nucleus": 1.0, "membrane": 0.5}
    assert loaded["confusion"] == result.confusion.tolist()
    assert set(loaded["official"]) == {"strict_miou", "bmiou", "official_fbiou"}
    assert not list(tmp_path.glob(".*.part"))
    table = result.table()
    for expected in ("nucleus", "membrane", "mIoU", "FB-IoU", "1 of 3 classes", "official", "BmIoU"):
        assert expected in table
    assert str(result) == table


def test_nan_becomes_null_in_json(tmp_path):
    result = evaluate_episodes(Fixed([np.zeros((2, 2), dtype=int)]), [made(np.zeros((2, 2)), [1])], {1: "a"})
    assert np.isnan(result.miou)
    assert json.loads(result.to_json(tmp_path / "r.json").read_text())["miou"] is None
    assert "n/a" in result.table()


@pytest.mark.parametrize("kind", ["event", "callable"])
def test_cancel_stops_between_episodes(kind):
    stop = threading.Event()
    cancel = stop if kind == "event" else stop.is_set
    episodes = [made([[0, 1]], [1]) for _ in range(5)]
    done = []

    def progress(count, total):
        done.append((count, total))
        if count == 2:
            stop.set()

    with pytest.raises(PredictionCancelled):
        evaluate_episodes(Fixed([np.array([[0, 1]])] * 5), episodes, {1: "a"}, progress=progress, cancel=cancel)
    assert done == [(1, 5), (2, 5)]


def test_duplicate_names_stay_apart():
    result = evaluate_episodes(Fixed([np.array([[1, 2]])]), [made([[1, 2]], [5, 7])], {5: "cell", 7: "cell"})
    assert result.per_class == {"cell (1)": 1.0, "cell (2)": 1.0}


def test_compact_ids_follow_sorted_dataset_ids():
    assert compact_ids({87: "x", 1: "y", 5: "z"}) == {1: 1, 5: 2, 87: 3}


def test_bad_inputs_are_named(dataset):
    with pytest.raises(TypeError, match="predict"):
        evaluate(object(), dataset, 2, 1, 2)
    with pytest.raises(ValueError, match="episodes"):
        evaluate(Oracle(dataset), dataset, 2, 1, 0)
    with pytest.raises(TypeError, match="classes"):
        evaluate(Oracle(dataset), object(), 2, 1, 2)
    with pytest.raises(ValueError, match="not a class of the dataset"):
        evaluate_episodes(Fixed([np.zeros((1, 2), dtype=int)]), [made([[0, 1]], [9])], {1: "a"})
    with pytest.raises(ValueError, match="shape"):
        evaluate_episodes(Fixed([np.zeros((2, 2), dtype=int)]), [made([[0, 1]], [1])], {1: "a"})
    with pytest.raises(ValueError, match="classes"):
        evaluate_episodes(Fixed([]), [], {})
