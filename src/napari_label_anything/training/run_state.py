"""Training checkpoints: the published model format plus the state needed to resume exactly.

``out/checkpoint-STEP/`` holds what ``hub.model_files.save_model`` writes (``config.json`` +
``model.safetensors``: it loads anywhere a published checkpoint does) and two more files:

- ``training_state.safetensors``: every optimizer tensor (AdamW moments and step counts, keys
  ``optimizer.PARAM.NAME``) and the torch random-number states (``rng.*``);
- ``training_state.json``: the optimizer's parameter groups and scalar state, the learning-rate
  scheduler's state, the step and the history so far (the run's config is ``training_summary.json``).

Nothing is pickled. A checkpoint is written into a hidden temporary folder beside its final
place and renamed into place when complete, so an interrupted write (a crash, a cancel, a kill)
never leaves a half-written ``checkpoint-STEP``: only a ``.partial`` folder that the next
save of that step, or ``remove_partials``, cleans away. A write that fails (a full disk) is one
OSError naming the file.

A run claims its ``out`` folder (``claimed_run``: ``<out>.claim``, see ``claims``), so two runs
never write one folder, and refuses a folder holding an earlier run (``previous_run``) unless it
resumes it or is told to overwrite it (then the earlier run's files are removed first, so a run
that is killed never leaves a log or checkpoints of another run beside its own).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
SUMMARY_JSON = "training_summary.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
RUN_FILES = ("final", "log.csv", "train_config.json")  # with the checkpoint-STEP folders: what a run leaves in out


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

    from ..hub.model_files import WEIGHTS_NAME, save_model

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    writing = folder
    try:
        temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".partial"))
    except OSError as err:
        raise _write_error(folder, err) from None
    try:
        writing = folder / WEIGHTS_NAME
        save_model(model, temporary)
        if optimizer is not None and scheduler is not None:
            tensors, optimizer_json = optimizer_state(optimizer)
            tensors.update(rng_tensors())
            writing = folder / STATE_TENSORS
            save_file(tensors, os.fspath(temporary / STATE_TENSORS))
            record = {
                **(state or {}),
                "optimizer": optimizer_json,
                "scheduler": _json_value(scheduler.state_dict()),
            }
            writing = folder / STATE_JSON
            (temporary / STATE_JSON).write_text(json.dumps(record, indent=1))
        if summary is not None:
            writing = folder / SUMMARY_JSON
            (temporary / SUMMARY_JSON).write_text(json.dumps(_json_value(summary), indent=2))
        writing = folder
        _place(temporary, folder)
    except Exception as err:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(err, OSError) or type(err).__name__ == "SafetensorError":  # safetensors' I/O errors
            named = folder / Path(err.filename).name if getattr(err, "filename", None) else writing
            raise _write_error(named, err) from None
        raise
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return folder


def _write_error(path: Path, err: Exception) -> OSError:
    """``io.label_files.write_error`` naming the checkpoint file that could not be written."""
    from ..io.label_files import write_error

    return write_error(f"the checkpoint {path} (nothing of it is left half-written)", err)


def read_training_state(folder: str | os.PathLike, optimizer, scheduler) -> dict[str, Any]:
    """Restore optimizer, scheduler and torch RNG from a checkpoint folder; returns the run state.

    Raises:
        FileNotFoundError: the folder has no training state (e.g. ``final``, or a published model).
        ValueError: the state does not fit this optimizer.
    """
    from ..hub.model_files import read_state_dict

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


def previous_run(out: str | os.PathLike, log: str | os.PathLike | None = None) -> list[Path]:
    """What an earlier run left in ``out`` (``RUN_FILES``, ``checkpoint-STEP`` folders) and its
    ``log`` file when that is elsewhere; [] for a new, an empty or an unrelated folder."""
    out = Path(out)
    found = []
    if out.is_dir():
        found = [out / name for name in RUN_FILES if (out / name).exists()]
        found += [path for path in sorted(out.iterdir()) if CHECKPOINT_PATTERN.match(path.name)]
    if log is not None and Path(log).exists() and Path(log) not in found:
        found.append(Path(log))
    return found


def check_previous_run(out, log=None, resume: Any = None, overwrite: bool = False) -> list[Path]:
    """``previous_run(out, log)``, refused (ValueError naming the folder and what to do) unless
    the run resumes (``resume`` set) or ``overwrite``s it."""
    resuming = resume is not None and resume is not False
    if resuming and overwrite:
        raise ValueError("--overwrite and --resume exclude each other: replace the run in out, or continue it")
    left = previous_run(out, log)
    if left and not (resuming or overwrite):
        names = ", ".join(path.name for path in left[:4]) + (", ..." if len(left) > 4 else "")
        raise ValueError(
            f"{out} holds a training run already ({names}); replace it with --overwrite (overwrite=True), "
            "continue it with --resume, or choose another --out"
        )
    return left


@contextmanager
def claimed_run(out, log=None, resume: Any = None, overwrite: bool = False, writer: bool = True) -> Iterator[list[str]]:
    """Hold the claim of ``out`` for a run (``claims.claimed``: a second run into it stops), then
    ``check_previous_run``; with ``overwrite`` the earlier run's files are removed before anything
    is written. Yields the note of a claim taken over from a run that died ([] else). ``writer``
    False (distributed ranks other than 0 write nothing; rank 0 checks and claims): nothing."""
    from ..io.claims import claimed

    if not writer:
        yield []
        return
    with claimed([out]) as claims:
        for path in check_previous_run(out, log, resume, overwrite):  # refused unless resume or overwrite
            if overwrite and path.is_dir():
                shutil.rmtree(path)
            elif overwrite:
                path.unlink(missing_ok=True)
        yield [c.note for c in claims if c.note]
