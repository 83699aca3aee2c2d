"""Small building blocks shared by the prompt encoder and the mask decoder.

Parameter names (``q_proj``, ``lin1``, ``layers.0`` ...) are those of the published
checkpoints; renaming any attribute breaks checkpoint loading.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor (eps 1e-6, as released)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Two linear layers with an activation in between (the transformer feed-forward)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them and none after the last."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip([input_dim, *hidden], [*hidden, output_dim], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


class Attention(nn.Module):
    """Multi-head attention whose internal width may be reduced by ``downsample_rate``.

    ``key_mask`` (B, N_keys; 1 = real, 0 = padding) is accepted everywhere the official
    code passes one. The official layer builds its mask from ``zeros_like`` and so never
    masks anything; the published weights were trained that way, so masks are ignored
    unless ``honour_key_mask`` is switched on (see ``LabelAnything.honour_key_masks``).
    """

    honour_key_mask: bool = False

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the internal width {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend ``q`` (B, Nq, D) to ``k``/``v`` (B, Nk, D); returns (B, Nq, D)."""
        q = self._split_heads(self.q_proj(q))
        k = self._split_heads(self.k_proj(k))
        v = self._split_heads(self.v_proj(v))
        attend = None
        if key_mask is not None and self.honour_key_mask:
            keep = key_mask.bool()
            # A row whose keys are all padding keeps them all: softmax of all -inf is NaN.
            keep = keep | ~keep.any(dim=-1, keepdim=True)
            attend = keep[:, None, None, :]
        if q.is_cuda:
            # Fused kernels (flash / memory-efficient) where they pay: on GPUs.
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
        else:
            # On CPUs the explicit product: PyTorch's CPU kernel drifts by ~1e-4 on the official
            # fixtures (attn_variants), past the parity tolerance, and gains nothing there.
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if attend is not None:
                scores = scores.masked_fill(~attend, float("-inf"))
            out = torch.softmax(scores, dim=-1) @ v
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class AttentionMLPBlock(nn.Module):
    """Post-norm self/cross attention followed by an MLP, sharing one LayerNorm.

    The official block normalises both residual sums with the same ``norm``; the
    published weights depend on that, so it is kept.
    """

    def __init__(
        self,
        embed_dim: int,
        downsample_rate: int,
        mlp_dim: int,
        num_heads: int,
        act: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim)
        self.mlp = MLPBlock(embed_dim, mlp_dim, act)
        self.attn = Attention(embed_dim, num_heads=num_heads, downsample_rate=downsample_rate)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention over the tokens of ``x`` (B, N, D); returns (B, N, D)."""
        x = self.norm(self.attn(x, x, x, key_mask) + x)
        return self.norm(self.mlp(x) + x)
