"""Data-parallel training: 2 CPU processes on gloo equal one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_label_anything.training.distributed import DistributedContext, global_focal_loss, share

WORKER = """
import json, sys, torch
torch.set_num_threads(1)
from napari_label_anything.training.config import TrainConfig
from napari_label_anything.training.trainer import train
result = train(TrainConfig.from_dict(json.loads(sys.argv[1])), console=False)
print("LOSSES", json.dumps(result.losses))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_config(out: Path) -> dict:
    return {
        "model_config": {"preset": "tiny", "image_size": 64},
        # Masks only: then an episode's logits do not depend on the other episodes of its batch
        # (see distributed.py), so a share computes exactly its part of the whole batch.
        "prompt_types": ["mask"],
        "freeze_encoder": False,  # encoder gradients are exchanged too
        "data": [{"kind": "synthetic", "n_samples": 30, "size": 64, "classes": [1, 2, 3, 4, 5]}],
        # Batches of 3 split 2 + 1 and of 2 split 1 + 1: uneven shares and 2-way class weights.
        "configurations": [[3, 1, 1], [2, 2, 1]],
        "steps": 3,
        "lr": 1e-3,
        "warmup_steps": 0,
        "schedule": "constant",
        "device": "cpu",
        "checkpoint_every": 0,
        "out": str(out),
    }


def run_worker(config: dict, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(config)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def losses_of(output: str) -> list[float]:
    line = next(line for line in output.splitlines() if line.startswith("LOSSES "))
    return json.loads(line[len("LOSSES ") :])


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tmp_path):
    from safetensors.torch import load_file

    from napari_label_anything.training.config import TrainConfig
    from napari_label_anything.training.trainer import build_model

    single = run_worker(ddp_config(tmp_path / "single"), {"WORLD_SIZE": "1"})
    port = str(free_port())
    ranks = [
        run_worker(
            ddp_config(tmp_path / "ddp"),
            {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
        )
        for r in range(2)
    ]
    outputs = []
    for process in [single, *ranks]:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        outputs.append(stdout)
    single_losses, rank0_losses, rank1_losses = (losses_of(o) for o in outputs)
    assert rank0_losses == rank1_losses  # every rank reports the whole batch's loss
    assert rank0_losses == pytest.approx(single_losses, rel=1e-5, abs=1e-6)
    a = load_file(str(tmp_path / "single" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    initial = build_model(TrainConfig.from_dict(ddp_config(tmp_path / "x"))).state_dict()
    moved = max(float((a[k] - initial[k[len("model.") :]]).abs().max()) for k in a)
    assert moved > 1e-3  # the runs did train
    # The class MLP's biases are flat directions of the loss: the last one adds one vector to every
    # class embedding, a shift the softmax ignores, so their gradient is zero up to rounding (about
    # 1e-10 here, equal in both runs to that rounding). Adam divides each coordinate by its own
    # running scale, which turns that rounding into steps of up to lr, different in the two runs.
    # They are bounded by steps x lr; the models' outputs are compared below instead.
    flat = {k for k in a if ".class_mlp." in k and k.endswith(".bias")}
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if k not in flat)
    assert worst < 5e-5, f"largest parameter difference after 3 steps: {worst} (largest change {moved})"
    assert max(float((a[k] - b[k]).abs().max()) for k in flat) <= 3 * 1e-3 + 1e-6
    assert_same_predictions(tmp_path / "single" / "final", tmp_path / "ddp" / "final")


def assert_same_predictions(first: Path, second: Path) -> None:
    from napari_label_anything.checkpoint import load_model
    from napari_label_anything.training.collate import collate
    from napari_label_anything.training.datasets import SyntheticDataset
    from napari_label_anything.training.sampler import sample_eval_episodes

    episodes = list(sample_eval_episodes(SyntheticDataset(20, size=64, seed=9), ways=2, shots=1, episodes=4, seed=0))
    batch, _ = collate(episodes, 64, False)
    with torch.no_grad():
        p, q = (torch.softmax(load_model(f)(batch)["logits"], dim=1).nan_to_num() for f in (first, second))
    assert float((p - q).abs().max()) < 1e-5


def test_shares_split_the_batch_contiguously():
    items = list(range(7))
    parts = [share(items, DistributedContext(rank=r, world_size=3)) for r in range(3)]
    assert parts == [[0, 1], [2, 3], [4, 5, 6]]
    assert [share([1], DistributedContext(rank=r, world_size=2)) for r in range(2)] == [[], [1]]


def test_single_process_loss_is_the_focal_loss():
    from napari_label_anything.training.loss import focal_loss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 9, generator=generator, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 9), generator=generator)
    target[1, 5:] = -100
    loss, reported = global_focal_loss(logits, target, DistributedContext())
    assert torch.equal(loss, focal_loss(logits, target)) and float(reported) == float(loss.detach())
