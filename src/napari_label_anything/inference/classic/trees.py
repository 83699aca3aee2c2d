"""The classifier of the embedded classic segmenter: class-balanced extremely randomised trees.

``BalancedExtraTrees`` (scikit-learn's ``ExtraTreeClassifier`` grown on class-balanced or plain
bootstrap samples), ``predict_in_chunks`` (its probabilities with bounded temporary memory) and
``subsample`` (a uniform draw of training pixels over several supports).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from ..thread_pools import run_threaded

_PREDICT_CHUNK = 1 << 18  # pixels per predict call
_VOTE_GROUPS = 8
_THREAD_LOCAL = threading.local()


def _seeded_state(seed: int) -> np.random.RandomState:
    """This thread's ``RandomState``, reseeded with ``seed``.

    A tree draws its one seed from the state while it is fitted, in this thread, so a tree
    given this is the tree given ``random_state=seed``; reseeding costs a sixtieth of making
    a new state, which sklearn would do per tree (a tenth of a small tree's fit, holding the GIL).
    """
    state = getattr(_THREAD_LOCAL, "random_state", None)
    if state is None:
        state = _THREAD_LOCAL.random_state = np.random.RandomState()
    state.seed(seed)
    return state


class BalancedExtraTrees:
    """Extremely randomised trees, each grown on a class-balanced bootstrap sample.

    Every tree draws, with replacement, up to m pixels of each class, where m is the size of
    the largest prompted class, and at most ``background_ratio * m`` implicit background pixels.
    When background comes from a rule rather than from the user, it holds some unprompted
    objects; a tree that sees thousands of background pixels memorises those as background,
    one that sees about as many as there are prompted pixels is outvoted on them (bagging for
    positive-unlabelled learning). Leaves are weighted so every class has equal total weight.

    With ``balance=False`` every tree instead draws a plain bootstrap of all training pixels and
    keeps their proportions as class priors: right for complete masks, whose proportions are the
    image's (strokes only say what the user painted most, so they stay balanced).
    """

    def __init__(self, n_estimators: int = 40, min_samples_leaf: int = 3, background_ratio: float | None = 1.0,
                 n_jobs: int = 1, seed: int = 0, balance: bool = True,
                 column_sets: list[np.ndarray] | None = None) -> None:  # fmt: skip
        self.n_estimators, self.min_samples_leaf = n_estimators, min_samples_leaf
        self.column_sets = column_sets
        self.background_ratio, self.n_jobs, self.seed, self.balance = background_ratio, n_jobs, seed, balance

    def fit(self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray) -> BalancedExtraTrees:
        """x: (n, F) float32 features; y: (n,) int classes, 0 = background; sample_weight: (n,)."""
        from sklearn import config_context
        from sklearn.tree import ExtraTreeClassifier

        x = np.ascontiguousarray(x, dtype=np.float32)  # what the trees read unchecked
        sample_weight = np.asarray(sample_weight, dtype=np.float64)  # sklearn's own dtype: no copy per tree
        self.classes_ = np.unique(y)
        members = {c: np.flatnonzero(y == c) for c in self.classes_}
        prompted = [len(members[c]) for c in self.classes_ if c > 0 or self.background_ratio is None]
        m = max(prompted or [len(y)])
        sizes = {c: min(len(members[c]), m) for c in self.classes_}
        if self.background_ratio is not None and 0 in sizes:
            sizes[0] = min(len(members[0]), max(1, int(self.background_ratio * m)))

        sets = self.column_sets or [np.arange(x.shape[1])]

        def grow(job: tuple[int, int]):
            seed, which = job
            cols = sets[which]
            rng = np.random.default_rng(seed)
            if self.balance:
                rows = np.concatenate([rng.choice(members[c], sizes[c]) for c in self.classes_])
                totals = np.bincount(y[rows], weights=sample_weight[rows])
                weights = sample_weight[rows] * (totals[totals > 0].mean() / totals[y[rows]])
            else:  # one pixel of each class more, so every tree has a column for every class
                rows = np.concatenate([rng.choice(len(y), len(y)), [rng.choice(members[c]) for c in self.classes_]])
                weights = sample_weight[rows]
            # the features were checked once (float32, finite) and the parameters are ours, so
            # each tree skips sklearn's checks (its config is per thread, hence set here)
            with config_context(skip_parameter_validation=True):
                tree = ExtraTreeClassifier(max_features="sqrt", min_samples_leaf=self.min_samples_leaf,
                                           random_state=_seeded_state(seed))  # fmt: skip
                return tree.fit(np.ascontiguousarray(x[np.ix_(rows, cols)]), y[rows], sample_weight=weights,
                                check_input=False)  # fmt: skip

        seeds = np.random.default_rng(self.seed).integers(0, 2**31 - 1, self.n_estimators)
        jobs = [(int(s), i % len(sets)) for i, s in enumerate(seeds)]
        self.trees_ = run_threaded(grow, jobs, self.n_jobs)  # sklearn trees release the GIL
        self.tree_sets_ = [which for _, which in jobs]
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, len(classes_)) float32 mean of the trees' class frequencies."""

        x = np.ascontiguousarray(x, dtype=np.float32)  # what the trees read unchecked
        sets = self.column_sets or [np.arange(x.shape[1])]
        views = [x if len(c) == x.shape[1] and (c == np.arange(x.shape[1])).all() else np.ascontiguousarray(x[:, c])
                 for c in sets]  # fmt: skip

        def vote(indices):  # every tree saw every class, so their columns line up (see ``fit``)
            out = np.zeros((len(x), len(self.classes_)), np.float32)
            for i in indices:
                out += self.trees_[i].predict_proba(views[self.tree_sets_[i]], check_input=False)
            return out

        # A running sum per group of trees bounds memory; a fixed grouping and summing order
        # makes the result bit-identical whatever n_jobs is.
        n = len(self.trees_)
        groups = [range(i, n, _VOTE_GROUPS) for i in range(min(_VOTE_GROUPS, n))]
        return sum(run_threaded(vote, groups, self.n_jobs)) / np.float32(n)


def predict_in_chunks(
    classifier: BalancedExtraTrees, x: np.ndarray, check: Callable[[], None] | None = None
) -> np.ndarray:
    """``classifier.predict_proba`` of (n, F) features in chunks, which bounds the trees'
    temporary memory: (n, len(classes_)) float32. ``check`` (e.g. ``PlaneSteps.check``) is
    called before each chunk, so raising there stops the work early."""
    out = np.zeros((len(x), len(classifier.classes_)), np.float32)
    for start in range(0, len(x), _PREDICT_CHUNK):
        if check is not None:
            check()
        out[start : start + _PREDICT_CHUNK] = classifier.predict_proba(x[start : start + _PREDICT_CHUNK])
    return out


def subsample(masks: list[np.ndarray], cap: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Flat indices, per mask, of at most ``cap`` True pixels drawn uniformly over all masks."""
    where = [np.flatnonzero(m) for m in masks]
    starts = np.cumsum([0] + [len(w) for w in where])
    picks = np.sort(rng.choice(starts[-1], min(starts[-1], cap), replace=False))
    return [w[picks[(picks >= a) & (picks < a + len(w))] - a] for w, a in zip(where, starts[:-1], strict=True)]
