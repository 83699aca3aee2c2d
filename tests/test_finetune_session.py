"""finetune_session: the widget's door to training (split, held-out scores before/after, registration)."""

from __future__ import annotations

import numpy as np
import pytest

import napari_label_anything as nla
from conftest import REFERENCE, blob_image
from napari_label_anything.finetune_session import (
    episode_configurations,
    finetune_episode,
    held_out_miou,
    split_held_out,
)


def painted_episode(n: int) -> nla.Episode:
    episode = nla.Episode(["red", "green"])
    for seed in range(n):
        image, labels = blob_image((64, 80), seed=seed)
        episode.add_support(image, labels=labels, name=f"plane {seed}")
    episode.add_support(blob_image((64, 80), seed=9)[0], points=[(20, 25, 1)], name="clicks")
    return episode


def test_split_holds_out_the_last_quarter_of_painted_planes():
    learn, held = split_held_out(painted_episode(8))
    assert learn == [0, 1, 2, 3, 4, 5] and held == [6, 7]
    assert split_held_out(painted_episode(3)) == ([0, 1], [2])
    assert split_held_out(painted_episode(4), held_out=[0]) == ([1, 2, 3], [0])


@pytest.mark.parametrize(("n", "held", "message"), [(2, None, "at least 3 painted"), (4, [4], "not painted"),
                                                    (3, [0, 1], "at least 2 and 1")])  # fmt: skip
def test_split_refuses_what_cannot_train_or_score(n, held, message):
    with pytest.raises(ValueError, match=message):
        split_held_out(painted_episode(n), held_out=held)


def test_configurations_fit_the_episode():
    assert episode_configurations(2, 2) == ((2, 1, 1), (2, 2, 1))
    assert episode_configurations(1, 5) == ((2, 1, 1), (2, 1, 2))


def test_classic_cannot_be_finetuned(tmp_path):
    with pytest.raises(ValueError, match="needs a Label Anything model"):
        finetune_episode(nla.load_segmenter("classic"), painted_episode(3), tmp_path, steps=1)


def test_held_out_score_of_a_perfect_segmenter_is_one():
    class Oracle:
        name = "oracle"

        def predict(self, episode, query):
            return next(s.labels for s in held_planes if s.image is query)

    episode = painted_episode(4)
    held_planes = [episode.supports[3]]
    assert held_out_miou(Oracle(), episode, [3]) == pytest.approx(1.0)


@pytest.mark.slow
def test_finetune_episode_writes_a_loadable_registered_model(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_LABEL_ANYTHING_HOME", str(tmp_path / "home"))
    segmenter = nla.load_segmenter(str(REFERENCE / "mae_like"), device="cpu")
    weights = {k: v.clone() for k, v in segmenter.model.state_dict().items()}
    outcome = finetune_episode(segmenter, painted_episode(4), tmp_path / "out", steps=2, register_as="mine")
    assert outcome.steps == 2 and len(outcome.losses) == 2 and not outcome.cancelled
    assert outcome.held_out == ["plane 3"] and outcome.trained_on == 3
    assert 0.0 <= outcome.before <= 1.0 and 0.0 <= outcome.after <= 1.0
    assert (tmp_path / "out" / "finetune-data.episode").is_file()
    assert all(np.array_equal(v, segmenter.model.state_dict()[k]) for k, v in weights.items()), "copied, not changed"
    tuned = nla.load_segmenter("mine", device="cpu")
    labels = tuned.predict(painted_episode(3), blob_image((64, 80), seed=5)[0])
    assert labels.shape == (64, 80) and labels.max() <= 2
