"""Mask decoder: query features x class prototypes -> per-class logits at 4x the feature grid."""

from __future__ import annotations

import torch
from torch import nn

from .layers import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Two-way transformer, transposed-conv upscaling, spatial convs, prototype dot product."""

    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        spatial_convs: int | None = None,
        classification_layer_downsample_rate: int = 8,
    ) -> None:
        super().__init__()
        dim = transformer_dim
        rate = classification_layer_downsample_rate
        first = rate // 2 if rate > 1 else 1
        out_dim = dim // rate
        self.transformer = transformer
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // first, kernel_size=2, stride=2),
            LayerNorm2d(dim // first),
            nn.GELU(),
            nn.ConvTranspose2d(dim // first, out_dim, kernel_size=2, stride=2),
        )
        self.class_mlp = MLP(dim, dim, out_dim, 3)
        self.spatial_convs: nn.Module | None = None
        if spatial_convs is not None:
            modules: list[nn.Module] = []
            for i in range(spatial_convs):
                modules.append(nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1))
                if i < spatial_convs - 1:
                    modules += [LayerNorm2d(out_dim), nn.GELU()]
            self.spatial_convs = nn.Sequential(*modules)

    def forward(
        self,
        query_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        prototypes: torch.Tensor,
        class_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Classify every pixel of the query against the class prototypes.

        Args:
            query_embeddings: (B, D, h, w) float query features (after the neck).
            image_pe: (1, D, h, w) positional encoding of the feature grid.
            prototypes: (B, C, D) float class prototypes.
            class_mask: optional (B, C) 1 where the class has any prompt.

        Returns:
            (B, C, 4h, 4w) float logits (unscaled dot products).
        """
        b, _, h, w = query_embeddings.shape
        # Class tokens act as their own positional encoding inside the transformer.
        prototypes, pixels = self.transformer(query_embeddings, image_pe, prototypes, class_mask)
        pixels = pixels.transpose(1, 2).reshape(b, -1, h, w)
        prototypes = self.class_mlp(prototypes)
        pixels = self.output_upscaling(pixels)
        if self.spatial_convs is not None:
            pixels = self.spatial_convs(pixels)
        d, hh, ww = pixels.shape[1:]
        return (prototypes @ pixels.reshape(b, d, hh * ww)).reshape(b, -1, hh, ww)
