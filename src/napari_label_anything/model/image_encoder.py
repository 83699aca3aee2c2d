"""Image encoders: SAM's ViT (through ``segment_anything``) and ViT-MAE (Hugging Face layout).

Both return the last hidden state as a (N, D_img, S/16, S/16) feature map. Their state-dict
keys are those of the published checkpoints under ``model.image_encoder.``.
"""

from __future__ import annotations

import functools
import math
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from .config import MaeViTSpec, SamViTSpec


def build_sam_vit(spec: SamViTSpec, project_last_hidden: bool) -> nn.Module:
    """A SAM ``ImageEncoderViT``; with ``project_last_hidden=False`` its own neck is skipped.

    The neck is built either way, because the published checkpoints contain it.
    """
    encoder = _sam_encoder_class()(
        depth=spec.depth,
        embed_dim=spec.embed_dim,
        img_size=spec.img_size,
        mlp_ratio=spec.mlp_ratio,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=spec.num_heads,
        patch_size=spec.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=spec.global_attn_indexes,
        window_size=spec.window_size,
        out_chans=spec.out_chans,
    )
    encoder.project_last_hidden = project_last_hidden
    return encoder


@functools.cache
def _sam_encoder_class() -> type:
    from segment_anything.modeling import ImageEncoderViT

    class SamViTEncoder(ImageEncoderViT):
        """SAM's ViT, optionally without its neck, accepting inputs smaller than img_size."""

        project_last_hidden = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch_embed(x)
            pos = self.pos_embed
            if pos.shape[1:3] != x.shape[1:3]:
                # Only reached for inputs smaller than img_size (an opt-in speed mode); the
                # official model always runs at img_size.
                pos = F.interpolate(
                    pos.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bicubic", align_corners=False
                ).permute(0, 2, 3, 1)
            x = x + pos
            for block in self.blocks:
                x = block(x)
            x = x.permute(0, 3, 1, 2)
            return self.neck(x) if self.project_last_hidden else x

    return SamViTEncoder


class _MaeEmbeddings(nn.Module):
    def __init__(self, spec: MaeViTSpec) -> None:
        super().__init__()
        grid = spec.image_size // spec.patch_size
        self.patch_size = spec.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, grid * grid + 1, spec.hidden_size))
        self.patch_embeddings = nn.Module()
        self.patch_embeddings.projection = nn.Conv2d(
            3, spec.hidden_size, kernel_size=spec.patch_size, stride=spec.patch_size
        )

    def _position_embeddings(self, rows: int, cols: int) -> torch.Tensor:
        """Bicubic resize of the patch position grid to (rows, cols), CLS position kept."""
        cls_pos, patch_pos = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        grid = math.isqrt(int(patch_pos.shape[1]))
        if (rows, cols) == (grid, grid):
            return self.position_embeddings
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, grid, grid, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(rows, cols), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embeddings.projection(pixel_values)
        rows, cols = (int(n) for n in patches.shape[-2:])  # plain ints also when traced for ONNX export
        tokens = patches.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self._position_embeddings(rows, cols)


class _MaeLayer(nn.Module):
    """Pre-norm transformer layer with Hugging Face ``ViTLayer`` parameter names."""

    def __init__(self, spec: MaeViTSpec) -> None:
        super().__init__()
        d = spec.hidden_size
        self.num_heads = spec.num_attention_heads
        self.attention = nn.Module()
        self.attention.attention = nn.Module()
        self.attention.attention.query = nn.Linear(d, d)
        self.attention.attention.key = nn.Linear(d, d)
        self.attention.attention.value = nn.Linear(d, d)
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(d, d)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, spec.intermediate_size)
        self.output = nn.Module()
        self.output.dense = nn.Linear(spec.intermediate_size, d)
        self.layernorm_before = nn.LayerNorm(d, eps=spec.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(d, eps=spec.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        attn = self.attention.attention
        h = self.layernorm_before(x)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

        context = F.scaled_dot_product_attention(heads(attn.query(h)), heads(attn.key(h)), heads(attn.value(h)))
        x = x + self.attention.output.dense(context.transpose(1, 2).reshape(b, n, d))
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class MaeViTEncoder(nn.Module):
    """The ViT-MAE encoder as the official code uses it (a Hugging Face ``ViTModel``).

    Written here with the same parameter names instead of imported from ``transformers``,
    whose version 5 renamed them: the published checkpoints load unchanged whatever
    ``transformers`` is installed. Position embeddings are resized bicubically to the input
    grid; the final LayerNorm is applied and the CLS token dropped. The pooler is unused but
    part of every published checkpoint.
    """

    def __init__(self, spec: MaeViTSpec) -> None:
        super().__init__()
        self.patch_size = spec.patch_size
        self.embeddings = _MaeEmbeddings(spec)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_MaeLayer(spec) for _ in range(spec.num_hidden_layers))
        self.layernorm = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(spec.hidden_size, spec.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, hidden, H/16, W/16) last hidden state."""
        h, w = pixel_values.shape[-2:]
        x = self.embeddings(pixel_values)
        for layer in self.encoder.layer:
            x = layer(x)
        x = self.layernorm(x)[:, 1:]
        return x.reshape(x.shape[0], h // self.patch_size, w // self.patch_size, -1).permute(0, 3, 1, 2).contiguous()


def build_mae_vit(spec: MaeViTSpec) -> nn.Module:
    """A ViT-MAE encoder with random weights (the Label Anything checkpoint carries the real ones).

    The official code downloads ``facebook/vit-mae-base`` inside its constructor; here the
    architecture is built offline and every weight comes from the checkpoint.
    """
    return MaeViTEncoder(spec)
