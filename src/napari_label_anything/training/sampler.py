"""Episodes for training and validation, drawn from any dataset of the ``datasets.base`` protocol.

Training follows the official recipe: every batch draws one configuration (batch size, N ways,
M support examples); an episode takes N classes, a query image holding its first class and M
other images as supports, each holding at least one episode class, together holding every
episode class. Every episode class found in a support gets prompts (``prompts.py``).

Episodes are planned from the dataset's ``index`` alone (no image is read until the plan
succeeds), so drawing again when a plan does not work out costs little. A configuration that
the dataset cannot serve (too few classes, too few images, or M < N on data whose images hold
too few classes together) falls back to the largest smaller (N, M) that works: N is kept as
large as possible first, then M. Every episode of a batch still shares N and M.

Once a batch is planned, each of its episodes draws from a generator of its own (seeded from
the batch's), so ``sample_batch(select=...)`` can build some of them only (a distributed rank
its share) and they come out exactly as in the whole batch; the others are never read. A
dataset with a ``reseed(*entropy)`` method (``features.FixedViews``) is reseeded from the
episode's generator before its samples are read, for the same reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..episode import Episode
from .datasets.base import Sample
from .prompts import MAX_POINT_ANNOTATIONS, MAX_POINTS, check_prompt_types, draw_combination, support_prompts

DEFAULT_CONFIGURATIONS = ((2, 1, 4), (2, 4, 2), (2, 1, 2), (4, 2, 2), (4, 4, 1), (16, 1, 1))
PLAN_ATTEMPTS = 50  # plans tried per episode before a configuration falls back to a smaller one


@dataclass
class TrainingEpisode:
    """One episode with its answer.

    Attributes:
        episode: the classes (names of the global classes) and supports with prompts.
        query: (Y, X) or (Y, X, 3) image, the sample's dtype.
        target: (Y, X) int64, local ids 0..N (0 = background or a class not in the episode).
        class_ids: global class id of local class 1..N.
    """

    episode: Episode
    query: np.ndarray
    target: np.ndarray
    class_ids: tuple[int, ...]


def check_configurations(configurations: Sequence[Sequence[int]]) -> tuple[tuple[int, int, int], ...]:
    """Validate (batch, N ways, M examples) triples of positive integers."""
    try:
        triples = tuple(tuple(int(v) for v in c) for c in configurations)
        ok = all(len(t) == 3 and all(v >= 1 for v in t) for t in triples) and bool(triples)
        ok = ok and all(float(v) == int(v) for c in configurations for v in c)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"configurations must be a non-empty list of (batch, ways, examples) positive integer triples, "
            f"got {configurations!r}"
        )
    return triples


class _Catalogue:
    """The dataset's index both ways: class -> images and image -> classes."""

    def __init__(self, dataset) -> None:
        for name in ("classes", "index"):
            if not hasattr(dataset, name):
                raise TypeError(f"dataset {type(dataset).__name__} lacks '{name}' (see datasets.base protocol)")
        self.dataset = dataset
        self.images: dict[int, list[int]] = {
            int(c): sorted({int(i) for i in found}) for c, found in dataset.index.items() if len(found)
        }
        self.classes_of: dict[int, set[int]] = {}
        for c, found in self.images.items():
            for i in found:
                self.classes_of.setdefault(i, set()).add(c)
        # A class needs a query image and another image for its support.
        self.eligible = sorted(c for c, found in self.images.items() if len(found) >= 2)

    def names(self, class_ids: Sequence[int]) -> list[str]:
        """Episode class names: the dataset's names, made unique where two ids share one."""
        names = [str(self.dataset.classes.get(c, c)) for c in class_ids]
        return [
            f"{n} ({c})" if names.count(n) > 1 or not n.strip() else n for n, c in zip(names, class_ids, strict=True)
        ]


def _pick(rng: np.random.Generator, candidates: Sequence[int], used: set[int]) -> int | None:
    """A uniform element of ``candidates`` not in ``used`` (None when there is none)."""
    for _ in range(8):  # ``used`` is tiny next to most candidate lists: rejection is cheapest
        value = candidates[int(rng.integers(len(candidates)))]
        if value not in used:
            return value
    free = [v for v in candidates if v not in used]
    return free[int(rng.integers(len(free)))] if free else None


def _plan(catalogue: _Catalogue, ways: int, examples: int, rng: np.random.Generator):
    """(class ids, query index, support indices) for one training episode, or None on a dead end."""
    first = catalogue.eligible[int(rng.integers(len(catalogue.eligible)))]
    query = catalogue.images[first][int(rng.integers(len(catalogue.images[first])))]
    classes, supports, used = [first], [], {query}
    held: set[int] = set()  # classes the chosen supports hold
    while len(classes) < ways or len(supports) < examples:
        uncovered = [c for c in classes if c not in held]
        if uncovered and len(supports) < examples:
            image = _pick(rng, catalogue.images[uncovered[0]], used)
        elif len(classes) < ways:
            if len(supports) < examples:  # a support can still be added for it
                pool = [c for c in catalogue.images if c not in classes]
            else:  # only classes the chosen supports hold can still be covered
                pool = sorted(held - set(classes))
            if not pool:
                return None
            classes.append(pool[int(rng.integers(len(pool)))])
            continue
        else:  # all classes chosen and covered: more supports of any episode class
            owner = classes[int(rng.integers(len(classes)))]
            image = _pick(rng, catalogue.images[owner], used)
        if image is None:
            return None
        supports.append(image)
        used.add(image)
        held |= catalogue.classes_of[image]
    if any(c not in held for c in classes):
        return None
    return classes, query, supports


def _plan_with_retries(catalogue: _Catalogue, ways: int, examples: int, rng: np.random.Generator):
    for _ in range(PLAN_ATTEMPTS):
        plan = _plan(catalogue, ways, examples, rng)
        if plan is not None:
            return plan
    return None


def _fallbacks(ways: int, examples: int) -> list[tuple[int, int]]:
    """(N, M) to try, the requested one first, then smaller ones keeping N large."""
    return [(n, m) for n in range(ways, 0, -1) for m in range(examples, 0, -1)]


def _local_target(labels: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    target = np.zeros(labels.shape, dtype=np.int64)
    for k, c in enumerate(class_ids, start=1):
        target[labels == c] = k
    return target


def _build(
    catalogue: _Catalogue,
    class_ids: Sequence[int],
    query_index: int,
    support_indices: Sequence[int],
    rng: np.random.Generator,
    augment: bool,
    prompt_types: Sequence[str],
    box_noise: bool,
    max_points: int,
    max_point_annotations: int,
) -> TrainingEpisode:
    """Read the planned samples, augment them, draw prompts and assemble the episode."""
    reseed = getattr(catalogue.dataset, "reseed", None)
    if reseed is not None:
        reseed(int(rng.integers(2**63 - 1)))
    class_map = {c: k for k, c in enumerate(class_ids, start=1)}
    combination = draw_combination(rng, prompt_types)
    query = _load(catalogue.dataset, query_index, rng, augment, ())
    episode = Episode(catalogue.names(class_ids))
    for i in support_indices:
        sample = _load(catalogue.dataset, i, rng, augment, class_map)
        prompts = support_prompts(
            sample.instances,
            class_map,
            sample.labels.shape,
            combination,
            rng,
            box_noise=box_noise,
            max_points=max_points,
            max_point_annotations=max_point_annotations,
        )
        if prompts["labels"] is None and not len(prompts["points"]) and not len(prompts["boxes"]):
            raise ValueError(
                f"the dataset's index lists sample {i} ({sample.name!r}) under class(es) "
                f"{sorted(catalogue.classes_of.get(i, set()) & set(class_ids))}, but it has no "
                "non-empty instance of them: the index and the samples disagree"
            )
        episode.add_support(sample.image, name=sample.name or None, **prompts)
    try:
        episode.validate()
    except ValueError as err:
        raise ValueError(f"the dataset's index and its samples disagree: {err}") from None
    return TrainingEpisode(episode, query.image, _local_target(query.labels, class_ids), tuple(class_ids))


def _load(dataset, index: int, rng: np.random.Generator, augment: bool, needed) -> Sample:
    sample = dataset[index]
    if not augment:
        return sample
    from .datasets.augment import augment as apply_augment

    changed = apply_augment(sample, rng)
    # A support must keep an object of an episode class; if augmentation lost them, keep the original.
    if needed and not any(inst.class_id in needed and inst.mask.any() for inst in changed.instances):
        return sample
    return changed


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class EpisodeSampler:
    """Training episodes from a dataset, one configuration per batch (seeded, reproducible).

    Args:
        dataset: anything following ``datasets.base.SegmentationDataset`` (``classes``,
            ``index``, ``__getitem__``; optional ``augment``).
        configurations: (batch size, N ways, M examples) triples; one is drawn uniformly per batch.
        prompt_types: the types episodes may combine ("point", "bbox", "mask").
        box_noise: jitter boxes as the official training does.
        max_points: most points per object.
        max_point_annotations: classes with more objects than this in an image get masks only.
        augment: None follows the dataset's ``augment`` attribute, True always augments
            (``datasets.augment.augment``), False never does.
        seed: seed of the sampler's own generator (used when ``sample_batch`` gets no ``rng``).

    Raises:
        ValueError: the dataset has no class with two images, or fewer such classes than the
            smallest N of every configuration.
    """

    def __init__(
        self,
        dataset,
        configurations: Sequence[Sequence[int]] = DEFAULT_CONFIGURATIONS,
        prompt_types: Sequence[str] = ("point", "bbox", "mask"),
        box_noise: bool = True,
        max_points: int = MAX_POINTS,
        max_point_annotations: int = MAX_POINT_ANNOTATIONS,
        augment: bool | None = None,
        seed: int = 0,
    ) -> None:
        self.configurations = check_configurations(configurations)
        self.prompt_types = check_prompt_types(prompt_types)
        _check_positive(max_points=max_points, max_point_annotations=max_point_annotations)
        if augment not in (None, True, False):
            raise TypeError(f"augment must be None, True or False, got {augment!r}")
        self.catalogue = _Catalogue(dataset)
        self.dataset = dataset
        smallest = min(ways for _, ways, _ in self.configurations)
        if len(self.catalogue.eligible) < smallest:
            raise ValueError(
                f"the dataset has {len(self.catalogue.eligible)} class(es) with at least 2 images "
                f"(a query and a support), but every configuration needs at least {smallest}: "
                f"configurations {self.configurations}"
            )
        self.box_noise = bool(box_noise)
        self.max_points = int(max_points)
        self.max_point_annotations = int(max_point_annotations)
        self.augment = bool(getattr(dataset, "augment", False)) if augment is None else augment
        self.rng = np.random.default_rng(seed)
        self.fallbacks: dict[tuple[int, int], tuple[int, int]] = {}  # last (N, M) served instead, for reports

    def __iter__(self) -> Iterator[list[TrainingEpisode]]:
        while True:
            yield self.sample_batch()

    def sample_batch(
        self, rng: np.random.Generator | None = None, select: Callable[[int], Sequence[int]] | None = None
    ) -> list[TrainingEpisode]:
        """One batch: a configuration (batch, N, M) drawn uniformly, then ``batch`` episodes.

        Every episode of the batch has N classes and M supports (N and M possibly reduced, see
        the module docstring). ``rng`` defaults to the sampler's own seeded generator.
        ``select(batch)`` gives the positions of the episodes to build (default: all); the
        others are planned but not read, and the built ones equal their place in the whole batch.
        """
        rng = self.rng if rng is None else rng
        batch, ways, examples = self.configurations[int(rng.integers(len(self.configurations)))]
        for n, m in _fallbacks(ways, examples):
            plans = []
            for _ in range(batch):
                plan = _plan_with_retries(self.catalogue, n, m, rng)
                if plan is None:
                    break
                plans.append(plan)
            if len(plans) == batch:
                if (n, m) != (ways, examples) and self.fallbacks.get((ways, examples)) != (n, m):
                    warnings.warn(
                        f"the dataset cannot serve episodes of {ways} ways x {examples} examples; "
                        f"using {n} x {m} instead",
                        stacklevel=2,
                    )
                    self.fallbacks[(ways, examples)] = (n, m)
                seeds = rng.integers(2**63 - 1, size=batch)
                chosen = range(batch) if select is None else select(batch)
                return [
                    _build(
                        self.catalogue,
                        *plans[i],
                        np.random.default_rng(int(seeds[i])),
                        self.augment,
                        self.prompt_types,
                        self.box_noise,
                        self.max_points,
                        self.max_point_annotations,
                    )
                    for i in chosen
                ]
        raise ValueError("the dataset cannot serve even a 1-way 1-example episode")  # excluded by __init__


def _plan_eval(catalogue: _Catalogue, ways: int, shots: int, rng: np.random.Generator, firsts, others):
    first = firsts[int(rng.integers(len(firsts)))]
    pool = [c for c in others if c != first]
    rest = [pool[i] for i in rng.choice(len(pool), size=ways - 1, replace=False)] if ways > 1 else []
    classes = [first, *rest]
    query = catalogue.images[first][int(rng.integers(len(catalogue.images[first])))]
    used, supports = {query}, []
    for c in classes:
        for _ in range(shots):
            image = _pick(rng, catalogue.images[c], used)
            if image is None:
                return None
            supports.append(image)
            used.add(image)
    return [int(c) for c in classes], query, supports


def sample_eval_episodes(
    dataset,
    ways: int,
    shots: int,
    episodes: int,
    seed: int,
    prompt_types: Sequence[str] = ("mask",),
) -> Iterator[TrainingEpisode]:
    """Validation episodes: N ways, K shots, as the official validation draws them.

    Each episode takes N classes, a query image holding the first, and K further images per
    class holding it (N * K distinct supports, none the query). Every episode class present in
    a support gets a prompt; masks only by default, never box noise, never augmentation.
    Episode ``i`` depends only on ``seed`` and ``i``, so a longer run starts with the same
    episodes as a shorter one.

    Raises:
        ValueError: bad arguments, or the dataset has too few classes with enough images.
    """
    _check_positive(ways=ways, shots=shots)
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 0:
        raise ValueError(f"episodes must be a non-negative integer, got {episodes!r}")
    prompt_types = check_prompt_types(prompt_types)
    catalogue = _Catalogue(dataset)
    firsts = [c for c, found in catalogue.images.items() if len(found) >= shots + 1]
    others = [c for c, found in catalogue.images.items() if len(found) >= shots]
    if not firsts or len(others) < ways:
        raise ValueError(
            f"a {ways}-way {shots}-shot episode needs {ways} classes with at least {shots} images "
            f"(the first class {shots + 1}); the dataset has {len(others)} with {shots} and "
            f"{len(firsts)} with {shots + 1}"
        )
    return _eval_episodes(catalogue, ways, shots, int(episodes), int(seed), prompt_types, firsts, others)


def _eval_episodes(catalogue, ways, shots, episodes, seed, prompt_types, firsts, others) -> Iterator[TrainingEpisode]:
    for i in range(episodes):
        rng = np.random.default_rng([seed, i])
        plan = None
        for _ in range(PLAN_ATTEMPTS):
            plan = _plan_eval(catalogue, ways, shots, rng, firsts, others)
            if plan is not None:
                break
        if plan is None:
            raise ValueError(f"could not draw {shots} distinct support images per class for episode {i}")
        classes, query, supports = plan
        yield _build(
            catalogue, classes, query, supports, rng, False, prompt_types, False, MAX_POINTS, MAX_POINT_ANNOTATIONS
        )
