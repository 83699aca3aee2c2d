"""The Label Anything network: image encoder -> neck -> prompt encoder -> mask decoder.

The module exposes the pipeline in steps so that callers can cache what does not change:
``encode_images`` (the expensive ViT), ``neck``, ``encode_prompts`` (class prototypes from
the supports) and ``decode`` (one query). ``forward`` takes the official batch dictionary
and returns the official outputs; it exists for parity with the reference implementation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .config import LabelAnythingConfig, MaeViTSpec
from .geometry import get_preprocess_shape_f32
from .layers import Attention, LayerNorm2d
from .mask_decoder import MaskDecoder
from .prompt_encoder import ClassEmbeddings, PromptEncoder, PromptTensors, RandomMatrixClassEncoder
from .transformer import TwoWayTransformer


def _two_way(config: LabelAnythingConfig, downsample_rate: int) -> TwoWayTransformer:
    return TwoWayTransformer(
        depth=2, embedding_dim=config.embed_dim, num_heads=8, mlp_dim=2048, attention_downsample_rate=downsample_rate
    )


class LabelAnything(nn.Module):
    """Multi-class few-shot segmentation from visual prompts (Label Anything, ECAI 2025)."""

    def __init__(self, config: LabelAnythingConfig) -> None:
        super().__init__()
        self.config = config
        grid = config.embedding_grid
        self.image_encoder: nn.Module | None = None
        if config.use_vit:
            spec = config.encoder_spec
            if isinstance(spec, MaeViTSpec):
                from .image_encoder import build_mae_vit

                self.image_encoder = build_mae_vit(spec)
            else:
                from .image_encoder import build_sam_vit

                self.image_encoder = build_sam_vit(spec, project_last_hidden=config.use_vit_sam_neck)
        self.neck: nn.Module | None = None
        if config.image_embed_dim != config.embed_dim:
            d_in, d = config.image_embed_dim, config.embed_dim
            self.neck = nn.Sequential(
                nn.Conv2d(d_in, d, kernel_size=1, bias=False),
                LayerNorm2d(d),
                nn.Conv2d(d, d, kernel_size=3, padding=1, bias=False),
                LayerNorm2d(d),
            )
        class_encoder = None
        if config.class_encoder is not None:
            class_encoder = RandomMatrixClassEncoder(config.class_bank_size, int(config.class_encoder["embed_dim"]))
        self.prompt_encoder = PromptEncoder(
            embed_dim=config.embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            transformer=_two_way(config, config.encoder_attention_downsample_rate),
            class_encoder=class_encoder,
            class_attention=config.class_attention,
            example_attention=config.example_attention,
            example_class_attention=config.example_class_attention,
            class_embedding_dim=config.class_embedding_dim,
        )
        self.mask_decoder = MaskDecoder(
            transformer_dim=config.embed_dim,
            transformer=_two_way(config, config.decoder_attention_downsample_rate),
            spatial_convs=config.spatial_convs,
            classification_layer_downsample_rate=config.classification_layer_downsample_rate,
        )
        self.eval()

    # -- options -------------------------------------------------------------------------

    def honour_key_masks(self, enabled: bool = True) -> None:
        """Let padded examples/classes be masked out of attention (off by default).

        The official model never masks (see the fixtures README, 7.1) and the published
        weights were trained that way; switching this on changes their outputs.
        """
        for module in self.modules():
            if isinstance(module, Attention):
                module.honour_key_mask = enabled

    # -- pipeline steps ------------------------------------------------------------------

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image encoder only: (N, 3, S, S) normalised images -> (N, D_img, S/16, S/16)."""
        if self.image_encoder is None:
            raise RuntimeError("this checkpoint has no image encoder (use_vit=False); pass embeddings instead")
        return self.image_encoder(images)

    def apply_neck(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D_img, h, w) encoder features -> (N, D, h, w) features the decoder uses."""
        return features if self.neck is None else self.neck(features)

    def encode_prompts(
        self, support_features: torch.Tensor, prompts: PromptTensors, class_rows: torch.Tensor | None = None
    ) -> ClassEmbeddings:
        """(B, M, D, h, w) support features (after the neck) + prompts -> class prototypes."""
        return self.prompt_encoder(support_features, prompts, class_rows)

    def decode(self, query_features: torch.Tensor, classes: ClassEmbeddings) -> torch.Tensor:
        """(B, D, h, w) query features (after the neck) -> (B, C, 4h, 4w) low-resolution logits."""
        class_mask = classes.example_flags.any(dim=1).int()
        return self.mask_decoder(query_features, self.prompt_encoder.get_dense_pe(), classes.prototypes, class_mask)

    def upscale_logits(self, lowres: torch.Tensor, original_hw: tuple[int, int]) -> torch.Tensor:
        """(B, C, h, w) low-res logits of one query size -> (B, C, H, W) at the original size.

        Bilinear to S x S, crop the padding (custom preprocessing), bilinear to (H, W).
        """
        side = self.config.image_size
        x = F.interpolate(lowres, (side, side), mode="bilinear", align_corners=False)
        if self.config.custom_preprocess:
            new_h, new_w = get_preprocess_shape_f32(*original_hw, side)
            x = x[..., :new_h, :new_w]
        return F.interpolate(x, tuple(original_hw), mode="bilinear", align_corners=False)

    # -- the official batch interface ----------------------------------------------------

    def forward(
        self, batch: dict[str, torch.Tensor], class_rows: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Run the official batch dictionary through the model.

        Keys as in the official code: ``images`` (B, 1+M, 3, S, S) or ``embeddings``
        (B, 1+M, D_img, h, w) with index 0 the query; ``prompt_points``/``flag_points``,
        ``prompt_bboxes``/``flag_bboxes``, ``prompt_masks``/``flag_masks``, ``flag_examples``
        (B, M, C), ``dims`` (B, 1+M, 2) and optional ``flag_gts`` (B, C).

        Returns ``logits`` (B, C, Hmax, Wmax), padded with -inf (0 for the background) to the
        largest of all ``dims``, and ``class_examples_embeddings`` (B, M, C, D).
        """
        if "embeddings" in batch:
            features = batch["embeddings"]
        else:
            images = batch["images"]
            features = self.encode_images(images.flatten(0, 1)).unflatten(0, images.shape[:2])
        b, n = features.shape[:2]
        features = self.apply_neck(features.flatten(0, 1)).unflatten(0, (b, n))
        classes = self.encode_prompts(features[:, 1:], PromptTensors.from_batch(batch), class_rows)
        lowres = self.decode(features[:, 0], classes)
        dims = batch["dims"]
        max_h, max_w = (int(v) for v in dims.reshape(-1, 2).max(dim=0).values)
        logits = []
        for i in range(b):
            h, w = (int(v) for v in dims[i, 0])
            up = self.upscale_logits(lowres[i : i + 1], (h, w))
            logits.append(F.pad(up, (0, max_w - w, 0, max_h - h), value=float("-inf")))
        logits = torch.cat(logits)
        background = logits[:, 0]
        background[background == float("-inf")] = 0
        if "flag_gts" in batch:
            logits[~batch["flag_gts"].bool()] = float("-inf")
        return {"logits": logits, "class_examples_embeddings": classes.per_example}
