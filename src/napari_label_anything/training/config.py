"""``TrainConfig``: every option of a training or fine-tuning run, from YAML/JSON or Python.

One dataclass serves ``napari-label-anything train --config FILE``, ``finetune`` and the Python
calls. Each field carries its documentation in its metadata; ``options_table()`` renders them
as the Markdown table in ``TrainConfig``'s docstring (and in docs/training.md). Unknown keys
are refused with the list of allowed ones, so a typo never silently trains the default.

Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .prompts import PROMPT_TYPES

FULL_SIZE_ENCODERS = ("vit_b", "vit_l", "vit_h", "vit_b_mae")  # random + frozen = useless features

# (batch size, N ways, M support examples), one drawn per batch (README reference, 9 "Episodes").
OFFICIAL_CONFIGURATIONS = ((2, 1, 4), (2, 4, 2), (2, 1, 2), (4, 2, 2), (4, 4, 1), (16, 1, 1))
DATASET_KINDS = ("synthetic", "folder", "episodes", "coco")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp32")

# Starting points for training from scratch (``model_config: <name>``). "tiny" is small enough
# to train on a laptop CPU in minutes (the tests use it); the two others are the published
# architectures, whose image encoders should then come from ``encoder_checkpoint``.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # A SAM-style encoder: its output is the last block's residual stream, which keeps the image's
    # brightness even with random weights; the ViT-MAE's final LayerNorm rescales every token, so a
    # frozen *random* MAE passes on little more than texture and trains far worse.
    "tiny": {
        "encoder": "test_tiny_sam_vit",
        "use_vit_sam_neck": False,
        "image_size": 128,
        "image_embed_dim": 16,
        "embed_dim": 32,
        "example_class_attention": False,
        "spatial_convs": 3,
    },
    "mae-480": {
        "encoder": "vit_b_mae",
        "image_size": 480,
        "image_embed_dim": 768,
        "embed_dim": 256,
        "custom_preprocess": False,
        "example_class_attention": False,
        "spatial_convs": 3,
    },
    "sam-1024": {
        "encoder": "vit_b",
        "image_size": 1024,
        "use_vit_sam_neck": False,
        "image_embed_dim": 768,
        "embed_dim": 512,
        "example_attention": True,
        "example_class_attention": False,
        "spatial_convs": 3,
        "class_encoder": {"name": "RandomMatrixEncoder", "bank_size": 100, "embed_dim": 512},
    },
}


def _option(default: Any, doc: str, *, factory: bool = False) -> Any:
    if factory:
        return field(default_factory=default, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class TrainConfig:
    # -- the model ------------------------------------------------------------------------
    model: str | None = _option(
        None,
        "Checkpoint to start from: a model name (`napari-label-anything models`), a Hugging Face repo id "
        "or a folder holding config.json + model.safetensors. Leave empty to train from scratch "
        "with `model_config`.",
    )
    model_config: str | dict[str, Any] | None = _option(
        None,
        "Architecture for training from scratch: a preset name (tiny, mae-480, sam-1024) or a dict of "
        "`LabelAnythingConfig` arguments (a dict may hold `preset: NAME` plus overrides). The paper's "
        "ablation switches are trained this way: `spatial_convs` (null or the number of 3x3 convolutions "
        "in the decoder head), `class_attention`, `example_attention` and `example_class_attention` "
        "(the class-example mixer), `class_encoder: {name: RandomMatrixEncoder, bank_size, embed_dim}` "
        "(the class-token pool). Only with `model` empty.",
    )
    encoder_checkpoint: str | None = _option(
        None,
        "Meta's SAM checkpoint (e.g. sam_vit_b_01ec64.pth) to initialise the image encoder of a model "
        "trained from scratch (read with weights_only=True).",
    )
    freeze_encoder: bool = _option(
        True,
        "Keep the image encoder fixed and train the rest on cached encoder features (the official recipe; "
        "several times faster). false = full fine-tuning, the encoder runs in every step.",
    )
    # -- data -----------------------------------------------------------------------------
    data: list[dict[str, Any]] = _option(
        list,
        "Training datasets, each `{kind: KIND, ...}` (KIND: synthetic, folder, episodes or coco) with the "
        "dataset's own arguments (e.g. `{kind: folder, path: DIR}`, `{kind: episodes, paths: [a.episode]}`, "
        "`{kind: synthetic, n_samples: 200}`, `{kind: coco, ...}`); optional `classes: [ids]` keeps only "
        "those classes. Several datasets are merged, classes with equal names becoming one class.",
        factory=True,
    )
    validation: list[dict[str, Any]] = _option(
        list,
        "Held-out datasets scored every `validate_every` steps and at the end (same form as `data`). Empty: "
        "no validation.",
        factory=True,
    )
    augment: bool | None = _option(
        None,
        "Apply training augmentations (flips, 90-degree rotations, intensity/gamma jitter, noise). "
        "null = each dataset's own default (on for folders and .episode files, off for synthetic and COCO).",
    )
    augment_views: int = _option(
        4,
        "With augmentation and a frozen encoder: how many fixed augmented views each sample has. The "
        "encoder features of a view are computed once and cached, so more views cost memory and first-use "
        "encoder time, never per-step time. Ignored when the encoder is trained (fresh views every step).",
    )
    configurations: list[list[int]] = _option(
        lambda: [list(c) for c in OFFICIAL_CONFIGURATIONS],
        "Episode shapes [batch size, N ways, M support images]; one is drawn per batch. Default: the official list.",
        factory=True,
    )
    prompt_types: list[str] = _option(
        lambda: list(PROMPT_TYPES),
        "Prompt kinds the sampler may draw (point, bbox, mask); each episode uses a random non-empty subset.",
        factory=True,
    )
    # -- optimisation ---------------------------------------------------------------------
    steps: int | None = _option(1000, "Optimizer steps (batches); `epochs` replaces it when set.")
    epochs: float | None = _option(
        None,
        "Length in passes over the training samples (one pass = number of samples / mean batch size steps); "
        "replaces `steps` when set.",
    )
    lr: float = _option(5e-5, "Peak learning rate of AdamW (official 5e-5).")
    weight_decay: float = _option(0.01, "AdamW weight decay (official 0.01).")
    warmup_steps: int | None = _option(
        None,
        "Steps of linear warm-up from 0 to `lr`. null = min(1000, 10% of the steps) (official: 1000).",
    )
    schedule: str = _option("cosine", "After warm-up: cosine decay to 0 (`cosine`) or a flat rate (`constant`).")
    grad_clip: float | None = _option(1.0, "Clip the gradient norm to this value; null = no clipping.")
    focal_gamma: float = _option(2.0, "Focusing parameter of the focal loss (official 2).")
    class_weighting: bool = _option(True, "Weight classes by 1 / ln(1.1 + pixel share), as the official loss does.")
    official_weight_squared: bool = _option(
        False,
        "Reproduce the official loss's quirk of applying the component weight twice (weight squared).",
    )
    seed: int = _option(42, "Seed of model initialisation, episode sampling and augmentation.")
    # -- machine ---------------------------------------------------------------------------
    device: str = _option("auto", "auto, cuda, cuda:N, mps or cpu (under torchrun: each rank's own GPU).")
    precision: str = _option(
        "auto", "auto = bf16 autocast on CUDA and float32 elsewhere; bf16; fp32. Weights stay float32."
    )
    feature_cache: str | None = _option(
        None,
        "Folder where frozen-encoder features are also kept on disk (zarr), reused across runs; null = memory only.",
    )
    feature_cache_size: int = _option(2048, "Encoder features kept in memory (images; least recently used go first).")
    # -- output -----------------------------------------------------------------------------
    out: str = _option("runs/train", "Output folder: checkpoint-STEP/, final/, log.csv, train_config.json.")
    checkpoint_every: int = _option(1000, "Write out/checkpoint-STEP every this many steps (0 = only out/final).")
    keep_checkpoints: int | None = _option(3, "Keep only this many newest checkpoint-STEP folders; null = keep all.")
    validate_every: int = _option(500, "Score the validation data every this many steps (0 = only at the end).")
    val_episodes: int = _option(100, "Episodes per validation run (masks only, seeded, the same every time).")
    val_ways: int = _option(1, "Classes per validation episode (N-way).")
    val_shots: int = _option(1, "Support images per class in validation episodes (K-shot).")
    log: str | None = _option(None, "CSV log of step, loss, lr and validation metrics; null = out/log.csv.")
    resume: str | bool | None = _option(
        None,
        "Continue a run exactly where it stopped: a checkpoint-STEP folder, or true (or `latest`) = the newest "
        "one in `out` (none there yet: start afresh, handy for jobs that may be preempted).",
    )
    register_as: str | None = _option(
        None, "Register out/final under this model name, so it appears in the model picker and CLI."
    )

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build and validate a config from a mapping of option names.

        Raises:
            ValueError: unknown keys (naming them and listing the allowed ones) or bad values.
            TypeError: ``values`` is not a mapping.
        """
        if not isinstance(values, dict):
            raise TypeError(f"a training config must be a mapping of options, got {type(values).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown training option(s): {', '.join(map(str, unknown))}; allowed: {', '.join(allowed)}"
            )
        config = cls(**values)
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a YAML (``.yaml``/``.yml``) or JSON file holding one mapping of options."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such training config file: {path}")
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ValueError(
                    f"{path}: reading YAML needs PyYAML (pip install 'napari-label-anything[train]'); "
                    "or write the config as JSON"
                ) from None
            try:
                values = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise ValueError(f"{path} is not valid YAML: {err}") from None
        elif path.suffix.lower() == ".json":
            try:
                values = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from None
        else:
            raise ValueError(f"{path}: a training config must be .yaml, .yml or .json, got {path.suffix!r}")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of training options, got {type(values).__name__}")
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """Every option as plain JSON-able values (``from_dict(to_dict())`` gives an equal config)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with some options changed."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # -- checks -------------------------------------------------------------------------------

    def validate(self, require_data: bool = True) -> None:
        """Refuse values that would only fail later, with a message naming the option.

        ``require_data=False`` accepts an empty ``data`` (``finetune`` passes datasets directly).

        Raises:
            ValueError: naming the option, its value and what is allowed.
        """
        if self.model is not None and self.model_config is not None:
            raise ValueError("give either model (a checkpoint to start from) or model_config (from scratch), not both")
        if self.model is None and self.model_config is None:
            raise ValueError(
                "no model: set model (a checkpoint name or folder) or model_config "
                f"(a preset: {', '.join(MODEL_PRESETS)}, or LabelAnythingConfig arguments)"
            )
        if self.model is not None and not isinstance(self.model, str):
            raise ValueError(f"model must be a name or folder path, got {self.model!r}")
        if self.model_config is not None:
            arguments = self.model_arguments()  # validates the preset name / dict shape
            _check_model_arguments(arguments)
            if (
                self.model is None
                and self.freeze_encoder
                and self.encoder_checkpoint is None
                and (arguments.get("encoder") in FULL_SIZE_ENCODERS)
            ):
                warnings.warn(
                    f"a frozen, randomly initialised {arguments['encoder']} encoder: the model trains on "
                    "meaningless features; set encoder_checkpoint (SAM) or start from a checkpoint (model)",
                    stacklevel=2,
                )
        if self.encoder_checkpoint is not None and self.model is not None:
            raise ValueError("encoder_checkpoint initialises a model trained from scratch; it needs model_config")
        for name in ("freeze_encoder", "class_weighting", "official_weight_squared"):
            _check_bool(name, getattr(self, name))
        if self.augment is not None:
            _check_bool("augment", self.augment)
        if self.resume is not None and not isinstance(self.resume, bool | str):
            raise ValueError(f"resume must be a checkpoint folder or true, got {self.resume!r}")
        if require_data and not self.data:
            raise ValueError("data is empty: give at least one dataset, e.g. {kind: folder, path: DIR}")
        for option in ("data", "validation"):
            specs = getattr(self, option)
            if not isinstance(specs, list):
                raise ValueError(f"{option} must be a list of dataset specs, got {specs!r}")
            for spec in specs:
                check_dataset_spec(spec, option)
        self._check_configurations()
        if not self.prompt_types or any(p not in PROMPT_TYPES for p in self.prompt_types):
            raise ValueError(
                f"prompt_types must be a non-empty subset of {list(PROMPT_TYPES)}, got {self.prompt_types}"
            )
        if self.epochs is None:
            _check_int("steps", self.steps, 1)
        if self.epochs is not None and not (_is_number(self.epochs) and self.epochs > 0):
            raise ValueError(f"epochs must be a positive number, got {self.epochs!r}")
        for name in ("lr", "focal_gamma"):
            value = getattr(self, name)
            if not (_is_number(value) and value >= 0 and (name != "lr" or value > 0)):
                raise ValueError(
                    f"{name} must be a {'positive' if name == 'lr' else 'non-negative'} number, got {value!r}"
                )
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and not (_is_number(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a positive number or null, got {self.grad_clip!r}")
        if self.warmup_steps is not None:
            _check_int("warmup_steps", self.warmup_steps, 0)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a string such as auto, cpu or cuda:0, got {self.device!r}")
        _check_int("seed", self.seed, 0)
        minimums = {"augment_views": 1, "feature_cache_size": 1, "checkpoint_every": 0, "validate_every": 0}
        minimums.update(val_episodes=1, val_ways=1, val_shots=1)
        for name, minimum in minimums.items():
            _check_int(name, getattr(self, name), minimum)
        if self.keep_checkpoints is not None:
            _check_int("keep_checkpoints", self.keep_checkpoints, 1)
        for name in ("out", "log", "feature_cache", "register_as", "encoder_checkpoint"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value):
                raise ValueError(f"{name} must be a non-empty string (a path or name), got {value!r}")

    def _check_configurations(self) -> None:
        if not isinstance(self.configurations, list | tuple) or not self.configurations:
            raise ValueError(
                f"configurations must be a non-empty list of [batch, ways, shots], got {self.configurations!r}"
            )
        for triple in self.configurations:
            if not (
                isinstance(triple, list | tuple) and len(triple) == 3 and all(_is_int(v) and v >= 1 for v in triple)
            ):
                raise ValueError(
                    f"each configuration must be [batch size, N ways, M examples] of positive integers, got {triple!r}"
                )

    # -- derived values ---------------------------------------------------------------------

    def model_arguments(self) -> dict[str, Any]:
        """``LabelAnythingConfig`` arguments of ``model_config`` (a preset expanded, overrides applied)."""
        spec = self.model_config
        if isinstance(spec, str):
            spec = {"preset": spec}
        if not isinstance(spec, dict):
            raise ValueError(f"model_config must be a preset name or a mapping, got {spec!r}")
        spec = dict(spec)
        preset = spec.pop("preset", None)
        if preset is not None and preset not in MODEL_PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; presets: {', '.join(MODEL_PRESETS)}")
        return {**(MODEL_PRESETS[preset] if preset else {}), **spec}

    def total_steps(self, n_samples: int) -> int:
        """Optimizer steps of the run: ``steps``, or ``epochs`` converted through the mean batch size."""
        if self.epochs is None:
            return int(self.steps)
        mean_batch = sum(c[0] for c in self.configurations) / len(self.configurations)
        return max(1, int(-(-self.epochs * n_samples // mean_batch)))

    def warmup(self, total_steps: int) -> int:
        """Warm-up steps: the option, or min(1000, 10% of ``total_steps``) when it is null."""
        return int(self.warmup_steps) if self.warmup_steps is not None else min(1000, total_steps // 10)

    def log_path(self) -> Path:
        return Path(self.log) if self.log is not None else Path(self.out) / "log.csv"


def check_dataset_spec(spec: Any, option: str = "data") -> None:
    """A dataset spec is a mapping with a known ``kind`` (its other keys go to the dataset class)."""
    if not isinstance(spec, dict):
        raise ValueError(f"{option}: each dataset must be a mapping with a 'kind', got {spec!r}")
    if spec.get("kind") not in DATASET_KINDS:
        raise ValueError(f"{option}: dataset kind must be one of {', '.join(DATASET_KINDS)}, got {spec.get('kind')!r}")
    classes = spec.get("classes")
    if classes is not None and not (isinstance(classes, list) and classes and all(_is_int(c) for c in classes)):
        raise ValueError(f"{option}: 'classes' must be a non-empty list of class ids, got {classes!r}")


def options_table() -> str:
    """Every option as a Markdown table (name, default, meaning), for docs and the docstring."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()
        shown = json.dumps(default) if not isinstance(default, str) else default
        rows.append(f"| `{f.name}` | `{shown}` | {f.metadata['doc']} |")
    return "\n".join(rows)


def _check_model_arguments(arguments: dict[str, Any]) -> None:
    """``model_config``'s arguments pass the checks a checkpoint's ``config.json`` passes (types,
    allowed ranges such as image_size's), before any model is built."""
    from ..model.config import LabelAnythingConfig

    try:
        LabelAnythingConfig.from_dict(arguments)
    except ValueError as err:
        raise ValueError(f"model_config: {str(err).removeprefix('config.json: ')}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not (_is_int(value) and value >= minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


TrainConfig.__doc__ = (
    "Options of a training or fine-tuning run (``TrainConfig.from_file`` reads YAML/JSON).\n\n"
    "Example (YAML)::\n\n"
    "    model_config: tiny\n"
    "    data: [{kind: synthetic, n_samples: 200, classes: [1, 2, 3, 4, 5, 6, 7, 8]}]\n"
    "    validation: [{kind: synthetic, n_samples: 50, seed: 1, classes: [9, 10, 11, 12]}]\n"
    "    steps: 300\n"
    "    out: runs/tiny\n\n" + options_table() + "\n"
)
