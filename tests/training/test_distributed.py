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

# Runs train() and records the gradient each optimizer step sees (the averaged one under DDP),
# by wrapping AdamW.step: instrumentation of the test only, the trainer is untouched.
WORKER = """
import json, os, sys, torch
from safetensors.torch import save_file
torch.set_num_threads(1)
from napari_label_anything.training.config import TrainConfig
from napari_label_anything.training.trainer import train
config = TrainConfig.from_dict(json.loads(sys.argv[1]))
gradients, original_step = {}, torch.optim.AdamW.step
def recording_step(self, *args, **kwargs):
    step = 1 + len({k.split(".")[0] for k in gradients})
    for i, p in enumerate(p for group in self.param_groups for p in group["params"]):
        if p.grad is not None:
            gradients[f"{step}.{i}"] = p.grad.detach().clone()
    return original_step(self, *args, **kwargs)
torch.optim.AdamW.step = recording_step
result = train(config, console=False)
save_file(gradients, os.path.join(config.out, "gradients-rank" + os.environ.get("RANK", "0") + ".safetensors"))
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
    assert rank0_losses == pytest.approx(single_losses, rel=1e-4, abs=1e-6)
    # 1. The gradient of step 1 (same parameters, same global batch): DDP's averaged gradient on
    # every rank equals the single process's, up to float rounding of a differently split sum.
    grads = {name: load_file(str(tmp_path / name / "gradients-rank0.safetensors")) for name in ("single", "ddp")}
    rank1 = load_file(str(tmp_path / "ddp" / "gradients-rank1.safetensors"))
    assert grads["single"].keys() == grads["ddp"].keys() == rank1.keys()
    assert all(torch.equal(grads["ddp"][k], rank1[k]) for k in rank1)
    first = [k for k in grads["single"] if k.startswith("1.")]
    scale = max(float(grads["single"][k].abs().max()) for k in first)
    gap = max(float((grads["single"][k] - grads["ddp"][k]).abs().max()) for k in first)
    assert gap <= 1e-4 * scale, f"step-1 gradients differ by {gap} (largest gradient {scale})"

    # 2. The parameters after 3 steps. Adam divides every coordinate by its own running scale, so
    # a coordinate whose gradient is zero up to rounding (flat directions of the loss, e.g. the
    # class MLP's last bias: it shifts every class logit alike, which the softmax ignores) moves
    # by up to about lr per step on that rounding, differently in the two runs. So: nearly all
    # coordinates agree to 1e-5, every one within Adam's step bound, and the models agree.
    a = load_file(str(tmp_path / "single" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    initial = build_model(TrainConfig.from_dict(ddp_config(tmp_path / "x"))).state_dict()
    moved = max(float((a[k] - initial[k[len("model.") :]]).abs().max()) for k in a)
    assert moved > 1e-3  # the runs did train
    differences = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    close = float((differences <= 1e-5).float().mean())
    assert close > 0.995, f"only {close:.2%} of the parameters agree to 1e-5"
    assert float(differences.max()) <= 2 * 3 * 1e-3, f"a parameter differs by {float(differences.max())}"
    assert_same_predictions(tmp_path / "single" / "final", tmp_path / "ddp" / "final")


def assert_same_predictions(first: Path, second: Path) -> None:
    from napari_label_anything.hub.model_files import load_model
    from napari_label_anything.training.collate import collate
    from napari_label_anything.training.datasets import SyntheticDataset
    from napari_label_anything.training.sampler import sample_eval_episodes

    models = [load_model(folder) for folder in (first, second)]
    c = models[0].config
    episodes = list(sample_eval_episodes(SyntheticDataset(20, size=64, seed=9), ways=2, shots=1, episodes=4, seed=0))
    batch, _ = collate(episodes, c.image_size, c.custom_preprocess)
    with torch.no_grad():
        p, q = (torch.softmax(model(batch)["logits"], dim=1).nan_to_num() for model in models)
    assert float((p - q).abs().max()) < 1e-4


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
