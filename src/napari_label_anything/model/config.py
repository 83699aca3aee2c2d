"""Model configuration: the constructor arguments of a Label Anything checkpoint.

A published ``config.json`` holds only the arguments that were passed when the model was
built; everything else takes the official constructor defaults, which live here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SamViTSpec:
    """Hyper-parameters of a SAM ``ImageEncoderViT`` (built through ``segment_anything``)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    out_chans: int = 256
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class MaeViTSpec:
    """Hyper-parameters of a Hugging Face ``ViTModel`` (the ViT-MAE encoder)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    image_size: int = 224
    patch_size: int = 16
    layer_norm_eps: float = 1e-12


# The official registry builds every SAM ViT at 1024 px, window 14, out_chans 256, whatever
# the checkpoint's own image_size says. The two test_tiny_* names are the fixtures' encoders.
ENCODER_SPECS: dict[str, SamViTSpec | MaeViTSpec] = {
    "vit_b": SamViTSpec(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamViTSpec(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamViTSpec(1280, 32, 16, (7, 15, 23, 31)),
    "vit_b_mae": MaeViTSpec(),
    "test_tiny_sam_vit": SamViTSpec(16, 2, 2, (1,), out_chans=16),
    "test_tiny_vit_mae": MaeViTSpec(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48),
}

# Options of the official constructor that change the architecture in ways no published
# checkpoint uses; a config asking for another value is refused with a clear message.
_SUPPORTED_ONLY = {
    "few_type": "Prototype",
    "fusion_transformer": "TwoWayTransformer",
    "binary": False,
    "segment_example_logits": False,
    "use_support_features_in_prompt_encoder": True,
    "transformer_feature_size": None,
    "is_pyramids": False,
}


_POSITIVE_INTS = ("image_embed_dim", "embed_dim", "image_size", "vit_patch_size", "encoder_attention_downsample_rate",
                  "decoder_attention_downsample_rate", "classification_layer_downsample_rate")  # fmt: skip
# Upper bounds of the sizes a config may ask for: beyond them a model would not fit in any
# machine's memory (image_size 2048 already gives a 128 x 128 token grid with global attention).
_MAXIMUMS = {"image_size": 2048, "vit_patch_size": 64, "image_embed_dim": 8192, "embed_dim": 8192,
             "class_embedding_dim": 8192, "spatial_convs": 64}  # fmt: skip
_CLASS_ENCODER_MAXIMUMS = {"bank_size": 65536, "embed_dim": 8192}
_BOOLS = ("use_vit", "use_vit_sam_neck", "class_attention", "example_attention", "example_class_attention",
          "custom_preprocess")  # fmt: skip


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_types(values: dict[str, Any]) -> None:
    """Refuse values that would only fail later, deep inside the model or PIL.

    Raises:
        ValueError: naming the argument, its value and what is allowed.
    """
    for name in _POSITIVE_INTS:
        if name in values and not (_is_int(values[name]) and values[name] > 0):
            raise ValueError(f"config.json: {name} must be a positive integer, got {values[name]!r}")
    for name, maximum in _MAXIMUMS.items():
        if _is_int(values.get(name)) and values[name] > maximum:
            raise ValueError(f"config.json: {name} must lie in 1..{maximum}, got {values[name]!r}")
    for name in _BOOLS:
        if name in values and not isinstance(values[name], bool):
            raise ValueError(f"config.json: {name} must be true or false, got {values[name]!r}")
    size, patch = values.get("image_size", 1024), values.get("vit_patch_size", 16)
    if size % patch:
        raise ValueError(f"config.json: image_size {size} must be a multiple of vit_patch_size {patch}")
    for name in ("spatial_convs", "class_embedding_dim"):
        value = values.get(name)
        if value is not None and not (_is_int(value) and value >= 0):
            raise ValueError(f"config.json: {name} must be null or an integer >= 0, got {value!r}")
    encoder = values.get("class_encoder")
    if encoder is None:
        return
    if not isinstance(encoder, dict) or encoder.get("name") != "RandomMatrixEncoder":
        raise ValueError(f"config.json: unsupported class_encoder {encoder!r}: only RandomMatrixEncoder exists")
    for name, minimum in (("bank_size", 2), ("embed_dim", 1)):
        value, maximum = encoder.get(name), _CLASS_ENCODER_MAXIMUMS[name]
        if not (_is_int(value) and minimum <= value <= maximum):
            raise ValueError(
                f"config.json: class_encoder.{name} must be an integer in {minimum}..{maximum}, got {value!r} "
                "(RandomMatrixEncoder needs bank_size and embed_dim)"
            )


@dataclass(frozen=True)
class LabelAnythingConfig:
    """Constructor arguments of ``LabelAnything`` with the official defaults."""

    encoder: str = "vit_b"
    use_vit: bool = True
    use_vit_sam_neck: bool = True
    image_embed_dim: int = 256
    embed_dim: int = 256
    image_size: int = 1024
    vit_patch_size: int = 16
    class_attention: bool = False
    example_attention: bool = False
    example_class_attention: bool = True
    class_embedding_dim: int | None = None
    spatial_convs: int | None = None
    encoder_attention_downsample_rate: int = 2
    decoder_attention_downsample_rate: int = 2
    classification_layer_downsample_rate: int = 8
    class_encoder: dict[str, Any] | None = None
    custom_preprocess: bool = True
    dropout: float = 0.0
    # Stored for the record only: they never change the inference graph here.
    checkpoint: str | None = None
    use_sam_checkpoint: bool = False
    class_fusion: str = "sum"
    transformer_keys_are_images: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def embedding_grid(self) -> int:
        """Side of the image-feature grid (image_size / patch size)."""
        return self.image_size // self.vit_patch_size

    @property
    def encoder_spec(self) -> SamViTSpec | MaeViTSpec:
        try:
            return ENCODER_SPECS[self.encoder]
        except KeyError:
            raise ValueError(
                f"unknown image encoder {self.encoder!r}; known: {', '.join(sorted(ENCODER_SPECS))}"
            ) from None

    @property
    def is_mae(self) -> bool:
        return isinstance(self.encoder_spec, MaeViTSpec)

    @property
    def class_bank_size(self) -> int | None:
        """Rows of the random-matrix class-token pool, or None when the model has none."""
        return None if self.class_encoder is None else int(self.class_encoder["bank_size"])

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LabelAnythingConfig:
        """Build a config from the arguments a ``config.json`` holds, applying defaults.

        Raises:
            ValueError: on unknown arguments or architecture options this package does not
                implement (none of the published checkpoints uses them).
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in values.items() if k in names}
        unsupported = {k: v for k, v in values.items() if k in _SUPPORTED_ONLY and v != _SUPPORTED_ONLY[k]}
        if unsupported:
            raise ValueError(
                "this checkpoint asks for architecture options that are not implemented: "
                + ", ".join(f"{k}={v!r} (only {_SUPPORTED_ONLY[k]!r})" for k, v in unsupported.items())
            )
        unknown = sorted(set(values) - names - set(_SUPPORTED_ONLY))
        if unknown:
            raise ValueError(f"config.json holds unknown arguments: {', '.join(unknown)}")
        _check_types(known)
        if known.get("dropout", 0.0):
            raise ValueError("dropout > 0 is a training-time option of the official code; not supported")
        config = cls(**known, extra={k: v for k, v in values.items() if k in _SUPPORTED_ONLY})
        if config.use_vit:
            config.encoder_spec  # noqa: B018 - validates the encoder name early
        return config

    @classmethod
    def from_json(cls, path: str | Path) -> LabelAnythingConfig:
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object of constructor arguments")
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """The arguments that differ from the defaults, as the hub mixin would write them."""
        defaults = LabelAnythingConfig()
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name == "encoder" or value != getattr(defaults, f.name):
                out[f.name] = value
        return out
