"""Prompt encoder: support features + prompts -> one prototype (class embedding) per class.

Shapes use B = batch, M = support images ("examples"), C = classes including background
(class 0), D = embed_dim, (H, W) = feature grid, S = model input side.

The order of operations, including three quirks of the official implementation that the
published weights were trained with, is kept exactly (see the fixtures README, section 7):
the pad point appended when a batch has no box gets the *negative-point* embedding; box
padding flags are tiled rather than interleaved; and sparse tokens of all classes of one
support attend to each other without a padding mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .layers import AttentionMLPBlock, LayerNorm2d
from .transformer import TwoWayTransformer

# Point labels of the official code: 1 = positive point, 0 = padding, -1 = negative point.
POSITIVE, PADDING, NEGATIVE = 1, 0, -1


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised (x, y) coordinates (SAM's positional encoding)."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        coords = coords.to(self.positional_encoding_gaussian_matrix.dtype)
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def grid(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the pixel centres of an (h, w) grid, shape (2*num_pos_feats, h, w)."""
        h, w = size
        ones = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device)
        y = (ones.cumsum(dim=0) - 0.5) / h
        x = (ones.cumsum(dim=1) - 0.5) / w
        return self._encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def encode_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encode (..., N, 2) (x, y) pixel coordinates of an (h, w) frame; returns (..., N, 2*F)."""
        scale = torch.tensor([1.0 / image_size[1], 1.0 / image_size[0]], dtype=coords.dtype, device=coords.device)
        return self._encode(coords * scale)


class RandomMatrixClassEncoder(nn.Module):
    """The class-token pool: a bank of random vectors, one row added per class.

    Row 0 is always the background. The official code draws the foreground rows at random
    on every forward pass; here the caller chooses them (default: rows 0..C-1).
    """

    def __init__(self, bank_size: int, embed_dim: int) -> None:
        super().__init__()
        self.bank_size = bank_size
        self.pos_embedding = nn.Parameter(torch.randn(1, 1, bank_size, embed_dim) * 0.02)

    def forward(
        self, dense: torch.Tensor, sparse: torch.Tensor, class_rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add row ``class_rows[c]`` to class c of dense (B,M,C,D,H,W) and sparse (B,M,C,N,D)."""
        code = self.pos_embedding[0, 0, class_rows]  # (C, D)
        return dense + code[None, None, :, :, None, None], sparse + code[None, None, :, None, :]


@dataclass
class PromptTensors:
    """Prompts of a batch of episodes, in the model's (x, y) input frame.

    points: (B, M, C, Np, 2) float; point_flags: (B, M, C, Np), 1 = real point.
    boxes: (B, M, C, Nb, 4) float (x1, y1, x2, y2); box_flags: (B, M, C, Nb).
    masks: (B, M, C, 256, 256) float 0/1; mask_flags: (B, M, C).
    example_flags: (B, M, C) bool, True where class c has any prompt in support m.
    A prompt type whose flags are all zero in the batch is treated as absent.
    """

    example_flags: torch.Tensor
    points: torch.Tensor | None = None
    point_flags: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    box_flags: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    mask_flags: torch.Tensor | None = None

    @classmethod
    def from_batch(cls, batch: dict[str, torch.Tensor]) -> PromptTensors:
        """Take the prompts out of an official batch dictionary (``prompt_*``/``flag_*`` keys)."""
        return cls(
            example_flags=batch["flag_examples"].bool(),
            points=batch.get("prompt_points"),
            point_flags=batch.get("flag_points"),
            boxes=batch.get("prompt_bboxes"),
            box_flags=batch.get("flag_bboxes"),
            masks=batch.get("prompt_masks"),
            mask_flags=batch.get("flag_masks"),
        )

    def used(self, kind: str) -> bool:
        flags = getattr(self, f"{kind}_flags")
        return flags is not None and flags.numel() > 0 and bool((flags != 0).any())


@dataclass
class ClassEmbeddings:
    """Output of the prompt encoder.

    prototypes: (B, C, D) one embedding per class, averaged over the supports that prompt it.
    per_example: (B, M, C, D) the embedding of each (support, class) pair after mixing.
    example_flags: (B, M, C) bool, which pairs carried a prompt.
    """

    prototypes: torch.Tensor
    per_example: torch.Tensor
    example_flags: torch.Tensor


class PromptEncoder(nn.Module):
    """Encodes support features and their prompts into per-class prototypes."""

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        transformer: TwoWayTransformer,
        class_encoder: RandomMatrixClassEncoder | None = None,
        class_attention: bool = False,
        example_attention: bool = False,
        example_class_attention: bool = True,
        class_embedding_dim: int | None = None,
        mask_in_chans: int = 16,
        num_heads: int = 8,
        mlp_dim: int = 2048,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0 negative point, 1 positive point, 2 and 3 the two box corners.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self.not_a_mask_embed = nn.Embedding(1, embed_dim)
        self.no_sparse_embedding = nn.Embedding(1, embed_dim)
        self.transformer = transformer
        self.class_encoder = class_encoder
        self.sparse_embedding_attention = AttentionMLPBlock(embed_dim, 1, mlp_dim, num_heads)

        if class_embedding_dim is not None:
            mixer_dim, mixer_downsample = class_embedding_dim, 1
            self.class_projector_in: nn.Module = nn.Linear(embed_dim, class_embedding_dim)
            self.class_projector_out: nn.Module = nn.Linear(class_embedding_dim, embed_dim)
        else:
            mixer_dim, mixer_downsample = embed_dim, 2
            self.class_projector_in = nn.Identity()
            self.class_projector_out = nn.Identity()

        def mixer(enabled: bool) -> AttentionMLPBlock | None:
            return AttentionMLPBlock(mixer_dim, mixer_downsample, mlp_dim, num_heads) if enabled else None

        self.class_attention = mixer(class_attention)
        self.example_attention = mixer(example_attention)
        self.class_example_attention = mixer(example_class_attention)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the feature grid, (1, D, H, W)."""
        return self.pe_layer.grid(self.image_embedding_size).unsqueeze(0)

    # -- sparse prompts ------------------------------------------------------------------

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """(BMC, Np, 2) points and (BMC, Np) labels -> (BMC, Np [+1], D) tokens."""
        points = points + 0.5  # pixel centres
        if pad:
            # Official quirk: the pad point is appended after the shift, at (0, 0), with
            # the negative label, so it gets the negative-point embedding.
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), NEGATIVE)], dim=1)
        emb = self.pe_layer.encode_coords(points, self.input_image_size)
        emb = torch.where((labels == PADDING)[..., None], self.not_a_point_embed.weight, emb)
        emb = emb + (labels == NEGATIVE)[..., None] * self.point_embeddings[0].weight
        emb = emb + (labels == POSITIVE)[..., None] * self.point_embeddings[1].weight
        return emb

    def _embed_boxes(self, boxes: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        """(B, M, C, Nb, 4) boxes and (B, M, C, Nb) flags -> (BMC, 2*Nb, D) corner tokens."""
        b, m, c, n = boxes.shape[:4]
        corners = (boxes + 0.5).reshape(b * m * c * n, 2, 2)
        emb = self.pe_layer.encode_coords(corners, self.input_image_size)
        emb = emb + torch.stack([self.point_embeddings[2].weight[0], self.point_embeddings[3].weight[0]])
        emb = emb.reshape(b, m, c, n * 2, -1)
        # Official quirk: flags are tiled ([f0..fn, f0..fn]) against corners ordered
        # (box, corner), so with several boxes the pad flags land on the wrong corners.
        corner_flags = flags.repeat(1, 1, 1, 2)
        emb = torch.where((corner_flags == PADDING)[..., None], self.not_a_point_embed.weight, emb)
        return emb.reshape(b * m * c, n * 2, -1)

    def embed_sparse(self, prompts: PromptTensors) -> torch.Tensor:
        """Point and box tokens after the per-support attention, (B, M, C, N, D)."""
        b, m, c = prompts.example_flags.shape
        use_points, use_boxes = prompts.used("point"), prompts.used("box")
        tokens = []
        if use_points:
            tokens.append(
                self._embed_points(
                    prompts.points.reshape(b * m * c, -1, 2),
                    prompts.point_flags.reshape(b * m * c, -1),
                    pad=not use_boxes,
                )
            )
        if use_boxes:
            tokens.append(self._embed_boxes(prompts.boxes, prompts.box_flags))
        if tokens:
            sparse = torch.cat(tokens, dim=1)
        else:
            sparse = self.no_sparse_embedding.weight.expand(b * m * c, 1, -1)
        n = sparse.shape[1]
        # All classes' tokens of one support attend to each other (no padding mask).
        sparse = self.sparse_embedding_attention(sparse.reshape(b * m, c * n, -1))
        return sparse.reshape(b, m, c, n, -1)

    # -- dense prompts -------------------------------------------------------------------

    def embed_dense(self, prompts: PromptTensors, b: int, m: int, c: int) -> torch.Tensor:
        """Mask embeddings, (B, M, C, D, h, w); the no-mask embedding when no mask is used."""
        if prompts.used("mask"):
            masks = prompts.masks
            dense = self.mask_downscaling(masks.reshape(b * m * c, 1, *masks.shape[-2:]))
            dense = dense.reshape(b, m, c, *dense.shape[1:])
            missing = (prompts.mask_flags == PADDING)[..., None, None, None]
            return torch.where(missing, self.not_a_mask_embed.weight[0][:, None, None], dense)
        h, w = self.image_embedding_size
        return self.no_mask_embed.weight.reshape(1, 1, 1, -1, 1, 1).expand(b, m, c, -1, h, w)

    # -- fusion and mixing ---------------------------------------------------------------

    def _mix(self, emb: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        """Class / example / class-example attention over (B, M, C, D) embeddings."""
        b, m, c, _ = emb.shape
        emb = self.class_projector_in(emb)
        if self.class_attention is not None:
            emb = self.class_attention(emb.reshape(b * m, c, -1), flags.reshape(b * m, c)).reshape(b, m, c, -1)
        if self.example_attention is not None:
            x = emb.transpose(1, 2).reshape(b * c, m, -1)
            x = self.example_attention(x, flags.transpose(1, 2).reshape(b * c, m))
            emb = x.reshape(b, c, m, -1).transpose(1, 2)
        if self.class_example_attention is not None:
            x = self.class_example_attention(emb.reshape(b, m * c, -1), flags.reshape(b, m * c))
            emb = x.reshape(b, m, c, -1)
        return self.class_projector_out(emb)

    def forward(
        self,
        support_embeddings: torch.Tensor,
        prompts: PromptTensors,
        class_rows: torch.Tensor | None = None,
    ) -> ClassEmbeddings:
        """Turn support features and prompts into class prototypes.

        Args:
            support_embeddings: (B, M, D, H, W) float support features (after the neck).
            prompts: the prompts, see ``PromptTensors``.
            class_rows: (C,) int64 rows of the class-token pool (only used when the model
                has one); default 0..C-1.
        """
        b, m, c = prompts.example_flags.shape
        _, _, d, h, w = support_embeddings.shape
        sparse = self.embed_sparse(prompts)
        dense = self.embed_dense(prompts, b, m, c)
        if dense.shape[-2:] != (h, w):
            dense = F.interpolate(
                dense.reshape(b * m * c, d, *dense.shape[-2:]), size=(h, w), mode="bilinear", align_corners=False
            ).reshape(b, m, c, d, h, w)
        src = support_embeddings[:, :, None] + dense
        if self.class_encoder is not None:
            if class_rows is None:
                class_rows = torch.arange(c, device=src.device)
            src, sparse = self.class_encoder(src, sparse, class_rows.to(src.device))
        _, keys = self.transformer(
            src.reshape(b * m * c, d, h, w), self.get_dense_pe(), sparse.reshape(b * m * c, sparse.shape[3], d)
        )
        # The image-side output of the fusion transformer, averaged over space, is the
        # embedding of a (support, class) pair; the token side is discarded.
        per_example = keys.mean(dim=1).reshape(b, m, c, d)
        flags = prompts.example_flags.bool()
        per_example = self._mix(per_example, flags)
        weights = flags[..., None].to(per_example.dtype)
        count = weights.sum(dim=1).clamp_min(1.0)
        prototypes = (per_example * weights).sum(dim=1) / count
        return ClassEmbeddings(prototypes=prototypes, per_example=per_example, example_flags=flags)
