"""Data-parallel training across processes (``torchrun``): the only module using ``torch.distributed``.

Launch ``torchrun --nproc-per-node G -m napari_label_anything.cli train --config FILE`` (or
``--nnodes``/``--rdzv-endpoint`` for several machines). Every process reads its place from the
environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``)
and joins a process group: NCCL when it trains on CUDA (one GPU per process, ``cuda:LOCAL_RANK``),
gloo on CPUs. Without those variables training runs in one process, as usual.

**One global batch, split.** Every rank plans the same batch, with the same per-step seeded
generator a single-process run uses, and builds (reads) only its contiguous share of the
episodes (``share``, through ``EpisodeSampler.sample_batch(select=)``); the encoder, forward
and backward run only on the share. The update therefore
equals the single-process update on the whole batch, provided the loss of the share is its
exact part of the whole batch's loss. The official loss is a mean over every pixel of the
padded batch with class weights ``1/ln(1.1 + count/total)`` from the whole batch, so a rank
cannot compute it alone. ``global_focal_loss`` all-reduces the class pixel counts, the episode
count and the padded height and width first, then returns this rank's summed focal terms weighted
with the batch-wide class weights and divided by the batch-wide pixel count, times the world
size (DDP averages gradients over ranks; the factor turns that average into the sum).

One caveat is the official model's own: what a prompt-type padding does to an episode depends on
the other episodes of its batch (points are embedded for every episode as soon as one has any;
tests/data/reference/README.md §7.4). A share is a smaller batch, so with mixed prompt types
its episodes can see different padding tokens than in the whole batch, exactly as in the
official multi-GPU training. With one prompt type (e.g. masks), shares and whole batch match.

Only rank 0 writes checkpoints and logs and runs validation (``is_main``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ENV_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass
class DistributedContext:
    """Where this process stands: ``world_size`` 1 means a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: Any = None
    owns_group: bool = False  # this module created the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when the torchrun variables say this process is one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: Any) -> DistributedContext:
    """Join the process group torchrun describes (or stay single); returns the context.

    Args:
        device: the resolved ``torch.device`` the config asked for. Under torchrun a CUDA
            device becomes ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: inconsistent torchrun variables.
    """
    import torch
    import torch.distributed as dist

    if not launched_by_torchrun():
        return DistributedContext(device=device)
    try:
        rank, world, local = (int(os.environ[name]) for name in ENV_VARIABLES)
    except (KeyError, ValueError):
        raise ValueError(
            f"WORLD_SIZE > 1 but {', '.join(ENV_VARIABLES)} are not all integers: launch with torchrun"
        ) from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK {rank} must lie in 0..WORLD_SIZE-1 ({world - 1})")
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistributedContext(rank, world, local, backend, device, owns)


def teardown(context: DistributedContext) -> None:
    """Leave the process group if ``setup`` created it."""
    import torch.distributed as dist

    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        context.owns_group = False


def share(items: Sequence, context: DistributedContext) -> list:
    """This rank's contiguous part of ``items`` (sizes differ by at most one; may be empty)."""
    n, world = len(items), context.world_size
    start = context.rank * n // world
    stop = (context.rank + 1) * n // world
    return list(items[start:stop])


def wrap_model(model, context: DistributedContext):
    """The model as ``DistributedDataParallel`` when several processes train; else unchanged.

    ``find_unused_parameters``: parameters of prompt types absent from a share (point or box
    embeddings) get no gradient there, which DDP must be told about.
    """
    if not context.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def all_reduce(tensor, context: DistributedContext, op: str = "sum"):
    """In-place sum or max over ranks (no-op in a single process); returns ``tensor``."""
    if context.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def any_rank(flag: bool, context: DistributedContext) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. a cancel request seen by one rank)."""
    if not context.enabled:
        return bool(flag)
    import torch

    value = torch.tensor([1.0 if flag else 0.0], device=context.device)
    return bool(all_reduce(value, context, "max").item() > 0)


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        import torch.distributed as dist

        if context.backend == "nccl":
            dist.barrier(device_ids=[context.device.index])
        else:
            dist.barrier()


def global_focal_loss(
    logits,
    target,
    context: DistributedContext,
    *,
    gamma: float = 2.0,
    class_weighting: bool = True,
    weight: float = 1.0,
    official_weight_squared: bool = False,
    active: bool = True,
):
    """This rank's part of the whole batch's focal loss (see the module docstring).

    Args:
        logits: (b, C, h, w) float logits of this rank's episodes.
        target: (b, h, w) int64 local ids, -100 ignored.
        active: False for a rank whose share is empty: it ran a stand-in episode to take part
            in the gradient exchange, and contributes nothing.

    Returns:
        (loss_for_backward, loss_of_whole_batch): the first carries this rank's gradient (scaled
        for DDP's averaging), the second is the batch loss every rank reports (no gradient).
        In a single process both are ``loss.focal_loss`` of the batch.
    """
    import torch

    from .loss import IGNORE_INDEX, focal_loss

    options = {"gamma": gamma, "weight": weight, "official_weight_squared": official_weight_squared}
    if not context.enabled:
        loss = focal_loss(logits, target, class_weighting=class_weighting, **options)
        return loss, loss.detach()
    n_classes = logits.shape[1]
    valid = target != IGNORE_INDEX
    counts = torch.bincount(target[valid].reshape(-1), minlength=n_classes).to(torch.float64)
    episodes = torch.tensor([float(target.shape[0])], dtype=torch.float64, device=target.device)
    if not active:
        counts.zero_()
        episodes.zero_()
    size = torch.tensor([float(target.shape[1]), float(target.shape[2])], dtype=torch.float64, device=target.device)
    all_reduce(counts, context)
    all_reduce(episodes, context)
    all_reduce(size, context, "max")
    # The single-process batch pads every episode to the largest height and width of the batch.
    total = float(episodes.item() * size[0].item() * size[1].item())
    if class_weighting:
        class_weight = torch.where(counts > 0, 1.0 / torch.log(1.1 + counts / total), torch.ones_like(counts))
    else:
        class_weight = torch.ones_like(counts)
    # Summed focal terms of each class, through the single formula in loss.py (a mean times its count).
    # Starts at a zero that depends on the logits, so backward works on a rank without labelled pixels.
    part = focal_loss(logits, torch.full_like(target, IGNORE_INDEX), class_weighting=False) * 0.0
    for k in range(n_classes):
        only_k = torch.where(target == k, target, torch.full_like(target, IGNORE_INDEX))
        if not bool((only_k != IGNORE_INDEX).any()):
            continue
        summed = focal_loss(logits, only_k, class_weighting=False, **options) * target.numel()
        part = part + float(class_weight[k]) * summed
    part = part / total
    if not active:
        part = part * 0.0
    reported = all_reduce(part.detach().clone(), context)
    return part * context.world_size, reported
