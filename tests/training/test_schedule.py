"""Warm-up + cosine / constant learning-rate schedule (the curve of transformers' get_scheduler)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from napari_label_anything.training.schedule import WarmupSchedule, lr_schedule


def transformers_cosine(step: int, warmup: int, total: int) -> float:
    """transformers' cosine-with-warm-up multiplier (num_cycles 0.5, min_lr_rate 0), written out."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def transformers_constant(step: int, warmup: int) -> float:
    return step / max(1.0, warmup) if step < warmup else 1.0


def learning_rates(kind: str, warmup: int, total: int, base_lr: float = 5e-5) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([parameter], lr=base_lr)
    scheduler = lr_schedule(optimizer, warmup, total, kind=kind)
    rates = []
    for _ in range(total + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize(("warmup", "total"), [(10, 50), (0, 7), (1000, 1000), (3, 4)])
def test_cosine_curve_matches_transformers(warmup, total):
    rates = learning_rates("cosine", warmup, total, base_lr=1.0)
    expected = [transformers_cosine(step, warmup, total) for step in range(total + 1)]
    assert rates == pytest.approx(expected, abs=1e-12)
    assert rates[0] == (0.0 if warmup else 1.0)
    if warmup < total:
        assert rates[-1] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("warmup", "total"), [(10, 50), (0, 5)])
def test_constant_curve_matches_transformers(warmup, total):
    rates = learning_rates("constant", warmup, total, base_lr=1.0)
    assert rates == pytest.approx([transformers_constant(step, warmup) for step in range(total + 1)], abs=1e-12)


def test_landmarks_of_the_official_recipe():
    schedule = WarmupSchedule(1000, 11000, "cosine")
    assert schedule(0) == 0.0
    assert schedule(500) == pytest.approx(0.5)
    assert schedule(1000) == pytest.approx(1.0)
    assert schedule(6000) == pytest.approx(0.5)
    assert schedule(11000) == pytest.approx(0.0, abs=1e-15)
    assert schedule(20000) == 0.0, "past the end the rate stays 0"
    rates = [schedule(step) for step in range(1000, 11001, 100)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False)), "cosine decay is monotone"


def test_base_lr_scales_and_every_group_follows():
    first, second = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [first], "lr": 1e-3}, {"params": [second], "lr": 1e-4}])
    scheduler = lr_schedule(optimizer, 4, 8)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.5e-3, 0.5e-4])


def test_state_dict_is_json_friendly_and_resumes():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=1.0)
    scheduler = lr_schedule(optimizer, 5, 20)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    state = json.loads(json.dumps(scheduler.state_dict()))

    resumed_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = lr_schedule(resumed_optimizer, 5, 20)
    resumed.load_state_dict(state)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        resumed_optimizer.step()
        resumed.step()
    assert resumed.get_last_lr() == pytest.approx(scheduler.get_last_lr())
    assert scheduler.get_last_lr()[0] == pytest.approx(transformers_cosine(10, 5, 20))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 10, "cosine"), "warmup_steps"),
        ((0, 0, "cosine"), "total_steps"),
        ((1.5, 10, "cosine"), "warmup_steps"),
        ((0, 10, "linear"), "kind"),
    ],
)
def test_bad_arguments_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        WarmupSchedule(*args)


def test_optimizer_must_be_an_optimizer():
    with pytest.raises(TypeError, match="optimizer"):
        lr_schedule([torch.zeros(1)], 1, 2)
