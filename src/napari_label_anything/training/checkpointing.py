"""Training checkpoints: the published model format plus the state needed to resume exactly.

``out/checkpoint-STEP/`` holds what ``checkpoint.save_model`` writes (``config.json`` +
``model.safetensors``: it loads anywhere a published checkpoint does) and two more files:

- ``training_state.safetensors``: every optimizer tensor (AdamW moments and step counts, keys
  ``optimizer.PARAM.NAME``) and the torch random-number states (``rng.*``);
- ``training_state.json``: the optimizer's parameter groups and scalar state, the learning-rate
  scheduler's state, the step and the history so far (the run's config is ``training_summary.json``).

Nothing is pickled. A checkpoint is written into a hidden temporary folder beside its final
place and renamed into place when complete, so an interrupted write (a crash, a cancel, a kill)
never leaves a half-written ``checkpoint-STEP``: only a ``.partial`` folder that the next
save of that step, or ``remove_partials``, cleans away.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
SUMMARY_JSON = "training_summary.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def optimizer_state(optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """``optimizer.state_dict()`` split into (tensors by flat key, JSON-able rest)."""
    import torch

    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(param), {})[name] = value
    return tensors, {"param_groups": _json_value(state["param_groups"]), "scalars": scalars}


def restore_optimizer(optimizer, tensors: dict[str, Any], saved: dict[str, Any]) -> None:
    """Load what ``optimizer_state`` produced back into ``optimizer`` (same parameters, same order)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param, name = key.split(".", 2)
            state.setdefault(int(param), {})[name] = value
    for param, values in saved["scalars"].items():
        state.setdefault(int(param), {}).update(values)
    groups = []
    for group in saved["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_tensors() -> dict[str, Any]:
    """torch's random-number states (CPU, and every CUDA device when present) as uint8 tensors."""
    import torch

    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return tensors


def restore_rng(tensors: dict[str, Any]) -> None:
    import torch

    if "rng.torch_cpu" in tensors:
        torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def _place(temporary: Path, folder: Path) -> None:
    """Rename a complete ``temporary`` folder to ``folder``, replacing any previous one."""
    if folder.exists():
        trash = folder.parent / f".{folder.name}.old-{os.getpid()}"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(folder, trash)
        os.replace(temporary, folder)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(temporary, folder)


def write_checkpoint(
    folder: str | os.PathLike,
    model,
    optimizer=None,
    scheduler=None,
    state: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (see the module docstring).

    Args:
        model: the plain ``LabelAnything`` (not a DDP wrapper).
        optimizer, scheduler: with both given the folder can be resumed from.
        state: JSON-able run state (step, history, config, ...) stored in ``training_state.json``.
        summary: JSON-able facts (config, metrics) stored as ``training_summary.json`` for the record.
    """
    from safetensors.torch import save_file

    from ..checkpoint import save_model

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".partial"))
    try:
        save_model(model, temporary)
        if optimizer is not None and scheduler is not None:
            tensors, optimizer_json = optimizer_state(optimizer)
            tensors.update(rng_tensors())
            save_file(tensors, os.fspath(temporary / STATE_TENSORS))
            record = {
                **(state or {}),
                "optimizer": optimizer_json,
                "scheduler": _json_value(scheduler.state_dict()),
            }
            (temporary / STATE_JSON).write_text(json.dumps(record, indent=1))
        if summary is not None:
            (temporary / SUMMARY_JSON).write_text(json.dumps(_json_value(summary), indent=2))
        _place(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return folder


def read_training_state(folder: str | os.PathLike, optimizer, scheduler) -> dict[str, Any]:
    """Restore optimizer, scheduler and torch RNG from a checkpoint folder; returns the run state.

    Raises:
        FileNotFoundError: the folder has no training state (e.g. ``final``, or a published model).
        ValueError: the state does not fit this optimizer.
    """
    from ..checkpoint import read_state_dict

    folder = Path(folder)
    missing = [name for name in (STATE_TENSORS, STATE_JSON) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} holds no training state ({', '.join(missing)} missing): resume needs a checkpoint-STEP folder"
        )
    try:
        record = json.loads((folder / STATE_JSON).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / STATE_JSON} is damaged: {err}") from None
    tensors = read_state_dict(folder / STATE_TENSORS)
    try:
        restore_optimizer(optimizer, tensors, record.pop("optimizer"))
    except (KeyError, ValueError, RuntimeError) as err:
        raise ValueError(f"{folder}: the optimizer state does not fit this model's parameters: {err}") from None
    scheduler.load_state_dict(record.pop("scheduler"))
    restore_rng(tensors)
    return record


def checkpoint_folders(out: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete ``checkpoint-STEP`` folders in ``out``, oldest step first."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = []
    for path in out.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir() and (path / STATE_JSON).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete ``checkpoint-STEP`` folder in ``out``, or None."""
    found = checkpoint_folders(out)
    return found[-1][1] if found else None


def prune_checkpoints(out: str | os.PathLike, keep: int | None) -> None:
    """Remove all but the ``keep`` newest ``checkpoint-STEP`` folders (None keeps all)."""
    if keep is None:
        return
    for _, path in checkpoint_folders(out)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def remove_partials(out: str | os.PathLike) -> None:
    """Delete ``.partial`` folders left by writes that were killed."""
    out = Path(out)
    if out.is_dir():
        for path in out.glob(".*.partial"):
            shutil.rmtree(path, ignore_errors=True)
