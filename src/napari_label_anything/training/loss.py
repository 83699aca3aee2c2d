"""The training loss of Label Anything: focal loss with inverse-log-frequency class weights.

The numbers match the official ``LabelAnythingLoss(components={"focal": ...}, class_weighting=True)``
(tests/data/reference/README.md §7.11 and §8): class weights ``1 / ln(1.1 + count / total)``, where
``total`` counts every pixel of the batch including the ignored (-100) ones; ignored pixels weigh 0
and classes absent from the batch keep weight 1; the focal term uses gamma 2 and the loss is the mean
over *all* pixels, ignored ones included (they add 0). The official code multiplies by the component
weight twice; ``official_weight_squared=True`` reproduces that, the default applies it once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100


def _check_labels(target: torch.Tensor, n_classes: int) -> None:
    import torch

    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor of class ids, got {target.dtype}")
    labels = target[target != IGNORE_INDEX]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"target holds class ids {int(labels.min())}..{int(labels.max())}; allowed are 0..{n_classes - 1} "
            f"and {IGNORE_INDEX} (ignored)"
        )


def _check_logits(logits: torch.Tensor, target: torch.Tensor) -> None:
    import torch

    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch tensor, got {type(logits).__name__}")
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, C, H, W), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch tensor, got {type(target).__name__}")
    if target.ndim != 3 or target.shape[0] != logits.shape[0] or target.shape[1:] != logits.shape[2:]:
        raise ValueError(
            f"target must be (B, H, W) matching logits {tuple(logits.shape)}, got shape {tuple(target.shape)}"
        )
    _check_labels(target, logits.shape[1])


def class_weights(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Per-class weights ``1 / ln(1.1 + count / total)`` of one batch.

    Args:
        target: (B, H, W) int64 class ids 0..n_classes-1, or -100 for ignored pixels.
        n_classes: C, the number of logit channels.

    Returns:
        (C,) float32 tensor on target's device. ``total`` is ``target.numel()`` (ignored pixels
        included, as the official code counts them); classes with no pixel in the batch get 1.
    """
    import torch

    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    _check_labels(target, n_classes)
    labels = target[target != IGNORE_INDEX]
    counts = torch.bincount(labels.reshape(-1), minlength=n_classes).to(torch.float32)
    total = max(target.numel(), 1)
    weights = 1.0 / torch.log(1.1 + counts / total)
    return torch.where(counts > 0, weights, torch.ones_like(weights))


def pixel_weights(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(B, H, W) float32: each pixel's class weight (``class_weights``), 0 where target is -100."""
    import torch

    weights = class_weights(target, n_classes)
    valid = target != IGNORE_INDEX
    return torch.where(valid, weights[target.clamp(min=0)], torch.zeros((), dtype=weights.dtype, device=target.device))


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    class_weighting: bool = True,
    weight: float = 1.0,
    official_weight_squared: bool = False,
) -> torch.Tensor:
    """Focal loss ``weight * mean_pixels(w_pixel * (1 - p_t)^gamma * -log p_t)``.

    Args:
        logits: (B, C, H, W) float logits as the model emits them; may hold -inf (padded classes,
            and padded pixels where class 0 is 0 and the others -inf). Computed in float32.
        target: (B, H, W) int64 local class ids 0..C-1, -100 for ignored (padded) pixels.
        gamma: the focusing exponent (official: 2).
        class_weighting: multiply each pixel by its class weight (``class_weights``); otherwise
            every valid pixel weighs 1. Ignored pixels always weigh 0.
        weight: the component weight.
        official_weight_squared: multiply by ``weight ** 2`` like the official code does.

    Returns:
        0-dim float32 tensor: the mean over all B*H*W pixels (ignored ones add 0, but count in
        the denominator, as in the official loss). The loss and its gradient stay finite with -inf
        logits, as long as the target class of every valid pixel has a finite logit.
    """
    import torch
    import torch.nn.functional as functional

    _check_logits(logits, target)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    valid = target != IGNORE_INDEX
    n_classes = logits.shape[1]
    # Ignored pixels get all-zero logits so that no inf ever enters the graph: a 0 weight times an
    # infinite cross-entropy would turn into NaN in the forward or the backward pass.
    safe_logits = torch.where(valid[:, None], logits.float(), torch.zeros((), device=logits.device))
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    cross_entropy = functional.cross_entropy(safe_logits, safe_target, reduction="none")
    p_target = torch.exp(-cross_entropy)
    focal = (1.0 - p_target).clamp(min=0.0) ** gamma * cross_entropy
    if class_weighting:
        focal = focal * pixel_weights(target, n_classes)
    else:
        focal = torch.where(valid, focal, torch.zeros((), device=focal.device))
    scale = weight * weight if official_weight_squared else weight
    return focal.mean() * scale
