"""Learning-rate schedule of the official recipe: linear warm-up from 0, then cosine decay to 0
(``kind="cosine"``) or a constant rate (``kind="constant"``), stepped once per batch.

Within ``0..total_steps`` the multiplier is the one of transformers' ``get_scheduler("cosine")`` and
``get_scheduler("constant_with_warmup")`` (tests/data/reference/README.md §9), without needing
transformers. The multiplier is a small callable object rather than a closure so that
``scheduler.state_dict()`` holds plain numbers and strings (JSON-friendly, for resuming).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SCHEDULE_KINDS = ("cosine", "constant")


class WarmupSchedule:
    """The learning-rate multiplier at a given optimizer step (0-based count of ``scheduler.step()`` calls).

    Warm-up: ``step / warmup_steps`` for ``step < warmup_steps`` (0 at step 0). Afterwards ``1`` for
    ``"constant"``; for ``"cosine"``, ``0.5 * (1 + cos(pi * progress))`` with
    ``progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)``, reaching 0 at
    ``total_steps``. Past ``total_steps`` the cosine multiplier stays 0 (transformers would let it
    rise again).
    """

    def __init__(self, warmup_steps: int, total_steps: int, kind: str = "cosine") -> None:
        for name, value, lowest in (("warmup_steps", warmup_steps, 0), ("total_steps", total_steps, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"{name} must be an int >= {lowest}, got {value!r}")
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"kind must be one of {SCHEDULE_KINDS}, got {kind!r}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.kind = kind

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return float(step) / float(max(1, self.warmup_steps))
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, float(step - self.warmup_steps) / float(max(1, self.total_steps - self.warmup_steps)))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    def __repr__(self) -> str:
        return f"WarmupSchedule(warmup_steps={self.warmup_steps}, total_steps={self.total_steps}, kind={self.kind!r})"


def lr_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, kind: str = "cosine"
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying ``WarmupSchedule(warmup_steps, total_steps, kind)`` to every param group.

    Call ``scheduler.step()`` once per batch, after ``optimizer.step()``. Right after creation the
    learning rate is 0 (step 0 of the warm-up) when ``warmup_steps > 0``. A ``warmup_steps`` larger
    than ``total_steps`` is allowed (as in transformers) but the peak rate is then never reached.
    """
    import torch

    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupSchedule(warmup_steps, total_steps, kind))
