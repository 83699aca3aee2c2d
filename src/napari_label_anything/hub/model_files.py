"""Finding and loading Label Anything checkpoints: local folders and Hugging Face hub repos.

A checkpoint is a folder holding ``config.json`` (constructor arguments that were passed,
defaults omitted) and ``model.safetensors`` (every key prefixed ``model.``), exactly as the
official ``save_pretrained`` writes it. Nothing here unpickles: weights come from
safetensors, and SAM ``.pth`` files go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..model.label_anything import LabelAnything

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATE_DICT_PREFIX = "model."


class CheckpointNotAvailableError(FileNotFoundError):
    """The checkpoint is neither a local folder nor in the hub cache, and cannot be downloaded."""


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache in use (honours ``HF_HUB_CACHE`` and ``HF_HOME``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and not Path(name).exists()


def hub_repo_folder(repo_id: str) -> Path:
    """Where huggingface_hub keeps ``repo_id`` in its cache (whether or not it exists yet)."""
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def manual_install_hint(repo_id: str) -> str:
    cache = hub_cache_dir()
    folder = hub_repo_folder(repo_id)
    return (
        f"To install it by hand, download {CONFIG_NAME} and {WEIGHTS_NAME} from "
        f"https://huggingface.co/{repo_id}/tree/main on a machine with internet access and either\n"
        f"  - put them in any folder and pass that folder's path instead of {repo_id!r}, or\n"
        f"  - place them in the hub cache as {folder}/snapshots/<any-name>/ and write <any-name> "
        f"into {folder}/refs/main.\n"
        f"The hub cache in use is {cache} (set HF_HOME or HF_HUB_CACHE to move it)."
    )


def cached_checkpoint(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` holding both files, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(repo_id, name, cache_dir=hub_cache_dir()) for name in (CONFIG_NAME, WEIGHTS_NAME)]
    if all(isinstance(path, str) for path in found):
        return Path(found[0]).parent
    return None


def resolve_checkpoint(name_or_path: str | os.PathLike, *, local_files_only: bool | None = None) -> Path:
    """Return a local folder holding ``config.json`` and ``model.safetensors``.

    ``name_or_path`` is a folder, or a hub repo id (``owner/name``) fetched through
    ``huggingface_hub`` into its cache (a cached copy is reused; ``HF_HUB_OFFLINE=1`` or
    ``local_files_only=True`` forbids the network).

    Raises:
        CheckpointNotAvailableError: not a folder, not cached, and not downloadable; the message
            names the cache folder and how to place the files by hand.
        FileNotFoundError: a folder that lacks one of the two files.
    """
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"checkpoint folder {path} is missing {', '.join(missing)}")
        return path
    name = os.fspath(name_or_path)
    if not looks_like_repo_id(name):
        raise CheckpointNotAvailableError(
            f"{name!r} is neither a checkpoint folder nor a Hugging Face repo id (owner/name)"
        )
    cached = cached_checkpoint(name)
    if cached is not None:
        return cached
    offline = is_offline() if local_files_only is None else local_files_only or is_offline()
    if offline:
        raise CheckpointNotAvailableError(
            f"checkpoint {name!r} is not in the hub cache and downloads are off (HF_HUB_OFFLINE).\n"
            + manual_install_hint(name)
        )
    return download_checkpoint(name)


def download_checkpoint(
    repo_id: str,
    progress: bool = True,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Download ``repo_id``'s two checkpoint files into the hub cache; returns the folder.

    Args:
        progress: show huggingface_hub's console progress bars.
        on_progress: called as ``on_progress(filename, bytes_done, bytes_total)`` while
            downloading (used by the napari widget); replaces the console bars.
    """
    import inspect

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if is_offline():
        raise CheckpointNotAvailableError(
            f"cannot download {repo_id!r}: downloads are off (HF_HUB_OFFLINE is set).\n" + manual_install_hint(repo_id)
        )
    supports_tqdm = "tqdm_class" in inspect.signature(hf_hub_download).parameters
    try:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            options = {}
            if supports_tqdm and (on_progress is not None or not progress):
                options["tqdm_class"] = _callback_tqdm(name, on_progress)
            path = hf_hub_download(repo_id, name, cache_dir=hub_cache_dir(), **options)
    except LocalEntryNotFoundError as err:
        raise CheckpointNotAvailableError(
            f"could not download {repo_id!r} (no network?): {err}\n" + manual_install_hint(repo_id)
        ) from None
    except HfHubHTTPError as err:
        raise CheckpointNotAvailableError(
            f"could not download {repo_id!r}: {err}\n" + manual_install_hint(repo_id)
        ) from None
    return resolve_checkpoint(Path(path).parent)


def _callback_tqdm(filename: str, on_progress: Callable[[str, int, int], None] | None) -> type:
    """A tqdm stand-in that forwards byte counts to ``on_progress`` (or stays silent)."""

    class CallbackTqdm:
        def __init__(self, *args, total=None, initial=0, **kwargs):
            self.total, self.n = int(total or 0), int(initial or 0)

        def update(self, n=1):
            self.n += int(n or 0)
            if on_progress is not None:
                on_progress(filename, self.n, self.total)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def close(self):
            pass

        def set_description(self, *args, **kwargs):
            pass

    return CallbackTqdm


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, with a clear error for a corrupt file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(os.fspath(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None


def load_weights(model: LabelAnything, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load published weights (keys ``model.*``) strictly into ``model``.

    Raises:
        ValueError: listing missing keys, unexpected keys and shape mismatches.
    """
    expected = model.state_dict()
    stripped = {}
    unprefixed = []
    for key, value in state_dict.items():
        if key.startswith(STATE_DICT_PREFIX):
            stripped[key[len(STATE_DICT_PREFIX) :]] = value
        else:
            unprefixed.append(key)
    missing = sorted(set(expected) - set(stripped))
    unexpected = sorted(STATE_DICT_PREFIX + k for k in set(stripped) - set(expected)) + sorted(unprefixed)
    mismatched = [
        f"{STATE_DICT_PREFIX}{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in stripped.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): " + ", ".join(STATE_DICT_PREFIX + k for k in missing[:20]))
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:20]))
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): " + "; ".join(mismatched[:20]))
    if problems:
        raise ValueError(f"{source} does not fit the model its config.json describes:\n  " + "\n  ".join(problems))
    check_finite(state_dict, source)
    model.load_state_dict(stripped, strict=True)


def check_finite(state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Refuse weights that are not finite floating-point numbers: integer or boolean tensors (no
    weight of this model is one; such a file was not written for it), NaN or infinity (a model
    that would only ever predict garbage).

    Raises:
        ValueError: one line naming the first offending tensors.
    """
    import torch

    def named(keys: list[str]) -> str:
        return f"{len(keys)} tensor(s): {', '.join(keys[:10])}" + (", ..." if len(keys) > 10 else "")

    not_float = [f"{key} ({str(value.dtype).removeprefix('torch.')})" for key, value in state_dict.items()
                 if not torch.is_floating_point(value)]  # fmt: skip
    if not_float:
        raise ValueError(
            f"{source} holds weights that are not floating-point numbers in {named(not_float)}; "
            "it is damaged or not a checkpoint of this model"
        )
    bad = [key for key, value in state_dict.items() if not bool(torch.isfinite(value).all())]
    if bad:
        raise ValueError(
            f"{source} holds NaN or infinite weights in {named(bad)}; the file is damaged or the training diverged"
        )


def load_model(name_or_path: str | os.PathLike, *, local_files_only: bool | None = None) -> LabelAnything:
    """Build a ``LabelAnything`` from a checkpoint folder or hub repo id, weights loaded, eval mode."""
    from ..model.config import LabelAnythingConfig
    from ..model.label_anything import LabelAnything

    folder = resolve_checkpoint(name_or_path, local_files_only=local_files_only)
    config = LabelAnythingConfig.from_json(folder / CONFIG_NAME)
    model = LabelAnything(config)
    load_weights(model, read_state_dict(folder / WEIGHTS_NAME), source=str(folder))
    return model.eval()


def save_model(model: LabelAnything, folder: str | os.PathLike) -> Path:
    """Write ``model`` as a checkpoint folder the official ``from_pretrained`` can read."""
    import json

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True))
    tensors = {STATE_DICT_PREFIX + k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, os.fspath(folder / WEIGHTS_NAME))
    return folder


def load_sam_image_encoder(model: LabelAnything, sam_checkpoint: str | os.PathLike) -> None:
    """Initialise the image encoder from Meta's SAM checkpoint (e.g. ``sam_vit_b_01ec64.pth``).

    Loaded with ``torch.load(weights_only=True)``: a file holding anything but tensors is refused.
    """
    import torch

    if model.image_encoder is None:
        raise ValueError("this model has no image encoder to initialise")
    try:
        weights = torch.load(os.fspath(sam_checkpoint), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for unsafe/corrupt files
        raise ValueError(f"{sam_checkpoint} is not a plain-tensor SAM checkpoint: {err}") from None
    if not isinstance(weights, dict):
        raise ValueError(f"{sam_checkpoint} holds a {type(weights).__name__}, not a state dict of tensors")
    encoder_weights = {
        k[len("image_encoder.") :]: v
        for k, v in weights.items()
        if isinstance(k, str) and k.startswith("image_encoder.") and hasattr(v, "shape")
    }
    if not encoder_weights:
        raise ValueError(f"{sam_checkpoint} holds no image_encoder.* weights")
    check_finite(encoder_weights, str(sam_checkpoint))
    result = model.image_encoder.load_state_dict(encoder_weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{sam_checkpoint} does not match the image encoder: missing {result.missing_keys[:10]}, "
            f"unexpected {result.unexpected_keys[:10]}"
        )
