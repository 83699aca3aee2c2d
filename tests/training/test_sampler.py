"""Episode sampling for training (configurations, fallbacks, prompts, seeds) and evaluation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_label_anything.training.datasets.base import Instance, Sample, build_index
from napari_label_anything.training.datasets.synthetic import SyntheticDataset
from napari_label_anything.training.prompts import prompt_type_combinations
from napari_label_anything.training.sampler import (
    DEFAULT_CONFIGURATIONS,
    EpisodeSampler,
    TrainingEpisode,
    sample_eval_episodes,
)


class TinyDataset:
    """Image i holds one square per class of ``layouts[i]``; pixel (0, 0) stores i for checks."""

    def __init__(self, layouts: list[list[int]], size: int = 24, augment: bool = False, copies: int = 1):
        self.layouts = layouts
        self.size = size
        self.augment = augment
        self.copies = copies  # objects per class in each image
        self.classes = {c: f"c{c}" for layout in layouts for c in layout}
        self.index = build_index([set(layout) for layout in layouts])

    def __len__(self) -> int:
        return len(self.layouts)

    def __getitem__(self, i: int) -> Sample:
        image = np.full((self.size, self.size + 4), 100, dtype=np.uint16)
        labels = np.zeros(image.shape, dtype=np.int64)
        instances = []
        for slot, c in enumerate(self.layouts[i]):
            for copy in range(self.copies):
                mask = np.zeros(image.shape, dtype=bool)
                y, x = 1 + 3 * copy, 1 + 5 * slot
                mask[y : y + 2, x : x + 4] = True
                labels[mask] = c
                image[mask] = 1000 + 50 * c
                instances.append(Instance(c, mask))
        image[0, 0] = i
        return Sample(image, labels, instances, f"img{i}")


def image_id(image: np.ndarray) -> int:
    return int(image[0, 0])


def check_episode(item: TrainingEpisode, dataset: TinyDataset, ways: int, examples: int) -> None:
    episode = item.episode
    assert episode.n_classes == ways and len(item.class_ids) == ways == len(set(item.class_ids))
    assert len(episode.supports) == examples
    episode.validate()  # every class prompted somewhere
    assert item.target.dtype == np.int64 and item.target.shape == item.query.shape[:2]
    assert (item.target == 1).any()  # the query holds the first class
    query = image_id(item.query)
    supports = [image_id(s.image) for s in episode.supports]
    assert query not in supports and len(set(supports)) == examples
    local = {c: k for k, c in enumerate(item.class_ids, start=1)}
    for support, index in zip(episode.supports, supports, strict=True):
        present = {local[c] for c in dataset.layouts[index] if c in local}
        assert present and support.prompted_classes() == present  # every present class is prompted
    labels = dataset[query].labels
    expected = np.zeros_like(labels)
    for c, k in local.items():
        expected[labels == c] = k
    assert (item.target == expected).all()


LAYOUTS = [[1, 2, 3, 4], [1, 2], [3, 4, 5], [5, 1], [2, 3, 4, 5, 1], [4], [2, 5], [3, 1, 4, 2]]


def test_batches_follow_the_configurations_and_the_episode_rules():
    dataset = TinyDataset(LAYOUTS)
    sampler = EpisodeSampler(dataset, seed=0)
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no configuration needs a fallback here
        for _ in range(60):
            batch = sampler.sample_batch()
            ways, examples = batch[0].episode.n_classes, len(batch[0].episode.supports)
            seen.add((len(batch), ways, examples))
            for item in batch:
                check_episode(item, dataset, ways, examples)
    assert seen == set(DEFAULT_CONFIGURATIONS)


def test_every_prompt_combination_occurs():
    dataset = TinyDataset(LAYOUTS, copies=3)
    sampler = EpisodeSampler(dataset, configurations=[(4, 2, 2)], seed=1)
    used = set()
    for _ in range(40):
        for item in sampler.sample_batch():
            kinds = set()
            for support in item.episode.supports:
                kinds |= {"mask"} if support.labels is not None else set()
                kinds |= {"point"} if len(support.points) else set()
                kinds |= {"bbox"} if len(support.boxes) else set()
                # at most 10 points for each of the 3 objects of a class
                assert np.unique(support.points[:, 2], return_counts=True)[1].max(initial=0) <= 30
            used.add(tuple(k for k in ("point", "bbox", "mask") if k in kinds))
    assert used == set(prompt_type_combinations())


def test_prompt_types_restrict_and_box_noise_switches_off():
    dataset = TinyDataset(LAYOUTS)
    sampler = EpisodeSampler(dataset, configurations=[(2, 2, 2)], prompt_types=("bbox",), box_noise=False, seed=2)
    for item in sampler.sample_batch():
        for support in item.episode.supports:
            assert support.labels is None and not len(support.points)
            for y0, x0, y1, x1, _ in support.boxes:  # exact boxes of the squares
                assert (y1 - y0, x1 - x0) == (2, 4) and y0 == 1 and (x0 - 1) % 5 == 0


def test_the_same_seed_gives_the_same_batches():
    def run(seed):
        sampler = EpisodeSampler(SyntheticDataset(12, n_classes=6, size=32), seed=seed)
        return [
            (item.episode.signature(), item.target.tobytes(), item.class_ids)
            for _ in range(4)
            for item in sampler.sample_batch()
        ]

    assert run(3) == run(3)
    assert run(3) != run(4)
    dataset = TinyDataset(LAYOUTS)
    a = EpisodeSampler(dataset).sample_batch(np.random.default_rng(9))
    b = EpisodeSampler(dataset, seed=5).sample_batch(np.random.default_rng(9))
    assert [x.episode.signature() for x in a] == [x.episode.signature() for x in b]
    assert next(iter(EpisodeSampler(dataset, seed=1)))[0].episode.signature() == (
        EpisodeSampler(dataset, seed=1).sample_batch()[0].episode.signature()
    )


def test_impossible_configurations_fall_back_to_smaller_ones():
    single = TinyDataset([[1], [1], [2], [2], [3], [3], [4], [4], [5]])  # one class per image
    sampler = EpisodeSampler(single, configurations=[(2, 4, 1)], seed=0)
    with pytest.warns(UserWarning, match="4 ways x 1 examples; using 1 x 1"):  # one support cannot hold 4
        batch = sampler.sample_batch()
    for item in batch:
        check_episode(item, single, 1, 1)
    few = TinyDataset([[1], [1], [2], [2]])
    sampler = EpisodeSampler(few, configurations=[(2, 2, 4), (2, 6, 1)], seed=0)
    with pytest.warns(UserWarning) as record:
        sizes = {len(sampler.sample_batch()[0].episode.supports) for _ in range(20)}
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2  # each fallback is reported once
    assert "2 ways x 4 examples; using 2 x 3" in messages[0]  # only 3 images besides the query
    assert "6 ways x 1 examples; using 1 x 1" in messages[1]
    assert sizes == {1, 3}  # (6, 1) cannot take 6 classes and falls back to 1 x 1
    assert sampler.fallbacks[(2, 4)] == (2, 3)


def test_datasets_that_cannot_serve_any_configuration_are_refused():
    with pytest.raises(ValueError, match="at least 2 images"):
        EpisodeSampler(TinyDataset([[1], [2], [3]]))
    with pytest.raises(ValueError, match="needs at least 3"):
        EpisodeSampler(TinyDataset([[1], [1, 2], [2]]), configurations=[(1, 3, 1), (2, 4, 2)])
    with pytest.raises(ValueError, match="configurations"):
        EpisodeSampler(TinyDataset(LAYOUTS), configurations=[(2, 0, 1)])
    with pytest.raises(ValueError, match="configurations"):
        EpisodeSampler(TinyDataset(LAYOUTS), configurations=[(2, 1)])
    with pytest.raises(ValueError, match="prompt_types"):
        EpisodeSampler(TinyDataset(LAYOUTS), prompt_types=("scribble",))
    with pytest.raises(TypeError, match="lacks"):
        EpisodeSampler(object())


def test_augmentation_follows_the_dataset_unless_overridden():
    plain = TinyDataset(LAYOUTS, augment=False)
    augmented = TinyDataset(LAYOUTS, augment=True)

    def dtypes(dataset, augment):
        batch = EpisodeSampler(dataset, configurations=[(2, 2, 2)], augment=augment, seed=0).sample_batch()
        return {item.query.dtype for item in batch} | {s.image.dtype for i in batch for s in i.episode.supports}

    # augment.augment returns uint8; the dataset's images are uint16
    assert dtypes(plain, None) == {np.dtype(np.uint16)}
    assert dtypes(augmented, None) == {np.dtype(np.uint8)}
    assert dtypes(augmented, False) == {np.dtype(np.uint16)}
    assert dtypes(plain, True) == {np.dtype(np.uint8)}
    batch = EpisodeSampler(augmented, configurations=[(4, 2, 2)], seed=3).sample_batch()
    turned = False
    for item in batch:  # geometry moves images, objects and targets alike
        item.episode.validate()
        assert (item.target == 1).any() and item.target.shape == item.query.shape
        turned |= item.query.shape != (24, 28)
    assert turned


def test_eval_episodes_are_masks_only_and_reproducible():
    dataset = TinyDataset(LAYOUTS, augment=True)
    episodes = list(sample_eval_episodes(dataset, ways=2, shots=2, episodes=6, seed=42))
    assert len(episodes) == 6
    for item in episodes:
        assert item.query.dtype == np.uint16  # never augmented
        assert len(item.episode.supports) == 4
        for support in item.episode.supports:
            assert support.labels is not None and not len(support.points) and not len(support.boxes)
        check_episode(item, dataset, 2, 4)
        # K supports hold each class
        for k in (1, 2):
            assert sum(k in s.prompted_classes() for s in item.episode.supports) >= 2
    again = list(sample_eval_episodes(dataset, ways=2, shots=2, episodes=3, seed=42))
    assert [e.episode.signature() for e in again] == [e.episode.signature() for e in episodes[:3]]
    other = list(sample_eval_episodes(dataset, ways=2, shots=2, episodes=6, seed=43))
    assert [e.episode.signature() for e in other] != [e.episode.signature() for e in episodes]
    points = next(sample_eval_episodes(dataset, 1, 1, 1, seed=0, prompt_types=("point",)))
    assert all(s.labels is None and len(s.points) for s in points.episode.supports)


def test_eval_episodes_refuse_impossible_requests():
    dataset = TinyDataset(LAYOUTS)
    with pytest.raises(ValueError, match="6 classes"):
        sample_eval_episodes(dataset, ways=6, shots=1, episodes=1, seed=0)  # refused at the call
    with pytest.raises(ValueError, match="shots"):
        next(sample_eval_episodes(dataset, ways=1, shots=0, episodes=1, seed=0))
    with pytest.raises(ValueError, match="episodes"):
        next(sample_eval_episodes(dataset, ways=1, shots=1, episodes=-1, seed=0))


def test_an_index_that_disagrees_with_the_samples_is_reported():
    class Liar(TinyDataset):
        def __getitem__(self, i):
            sample = super().__getitem__(i)
            return Sample(sample.image, sample.labels, [], sample.name)  # the index promised objects

    with pytest.raises(ValueError, match="index and the samples disagree"):
        EpisodeSampler(Liar(LAYOUTS), seed=0).sample_batch()


def test_a_selected_part_of_a_batch_equals_it_and_reads_nothing_else():
    from napari_label_anything.training.features import FixedViews

    class Counting(TinyDataset):
        def __getitem__(self, i):
            self.read.append(i)
            return super().__getitem__(i)

    def keys(items):
        return [(x.episode.signature(), x.target.tobytes(), x.class_ids) for x in items]

    for augmented in (False, True):  # True: fixed augmented views, reseeded per episode
        dataset = Counting(LAYOUTS, augment=augmented)
        source = FixedViews(dataset, 3, seed=2) if augmented else dataset
        sampler = EpisodeSampler(source, configurations=[(4, 2, 2)], seed=0)
        dataset.read = []
        whole = sampler.sample_batch(np.random.default_rng(7))
        read_whole = len(dataset.read)
        dataset.read = []
        part = sampler.sample_batch(np.random.default_rng(7), select=lambda n: [1, 3])
        assert keys(part) == keys([whole[1], whole[3]])
        assert 0 < len(dataset.read) < read_whole  # the other two episodes were planned, not read
