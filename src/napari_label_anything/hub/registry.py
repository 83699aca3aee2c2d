"""Known models: the published Label Anything checkpoints, local folders, and the default.

``load_segmenter`` accepts a short name from this registry, a hub repo id, a checkpoint
folder, ``classic`` (the embedded segmenter, no weights) or ``auto``: the best published
Label Anything checkpoint already on this machine, else ``classic`` (never a registered local
model: those are chosen by name).

Local folders are registered in ``models.json`` under the user config folder
(``NAPARI_LABEL_ANYTHING_HOME`` overrides it), changed under an exclusive lock (``models.json.lock``)
so that registrations running at once keep every entry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLASSIC = "classic"
AUTO = "auto"


@dataclass(frozen=True)
class KnownModel:
    """A published checkpoint (facts from the official project's README and demo)."""

    name: str
    repo_id: str
    encoder: str
    image_size: int
    embed_dim: int
    trained_on: str
    approx_size_mb: int


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel(
        "sam-1024-coco", "pasqualedem/label_anything_sam_1024_coco", "SAM ViT-B", 1024, 512, "COCO, all 80 classes", 470
    ),
    KnownModel(
        "sam-1024-coco-256",
        "pasqualedem/label_anything_256_sam_1024_coco",
        "SAM ViT-B",
        1024,
        256,
        "COCO, all 80 classes",
        420,
    ),
    KnownModel(
        "mae-480-coco", "pasqualedem/label_anything_mae_480_coco", "ViT-MAE base", 480, 256, "COCO, all 80 classes", 381
    ),
    KnownModel(
        "mae-480-coco-fold0",
        "pasqualedem/label_anything_coco_fold0_mae_7a5p0t63",
        "ViT-MAE base",
        480,
        256,
        "COCO-20i fold 0 held out",
        381,
    ),
    KnownModel(
        "mae-480-coco-fold1",
        "pasqualedem/label_anything_coco_fold1_mae_coh54ws0",
        "ViT-MAE base",
        480,
        256,
        "COCO-20i fold 1 held out",
        381,
    ),
    KnownModel(
        "mae-480-coco-fold2",
        "pasqualedem/label_anything_coco_fold2_mae_2pnppb7k",
        "ViT-MAE base",
        480,
        256,
        "COCO-20i fold 2 held out",
        381,
    ),
    KnownModel(
        "mae-480-coco-fold3",
        "pasqualedem/label_anything_coco_fold3_mae_a2gk7tet",
        "ViT-MAE base",
        480,
        256,
        "COCO-20i fold 3 held out",
        381,
    ),
)

# What "auto" tries, in order: the large SAM model is only worth it with a GPU.
AUTO_PREFERENCE_GPU = ("sam-1024-coco", "sam-1024-coco-256", "mae-480-coco")
AUTO_PREFERENCE_CPU = ("mae-480-coco", "sam-1024-coco-256", "sam-1024-coco")


def config_dir() -> Path:
    """Where user settings live (``NAPARI_LABEL_ANYTHING_HOME`` or ``~/.config/napari-label-anything``)."""
    if "NAPARI_LABEL_ANYTHING_HOME" in os.environ:
        return Path(os.environ["NAPARI_LABEL_ANYTHING_HOME"])
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "napari-label-anything"


def _local_file() -> Path:
    return config_dir() / "models.json"


def local_models() -> dict[str, Path]:
    """Folders registered with ``register_local_model``: {name: folder}."""
    path = _local_file()
    if not path.is_file():
        return {}
    try:
        return {name: Path(folder) for name, folder in json.loads(path.read_text()).items()}
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{path} is damaged; fix or delete it") from None


def register_local_model(name: str, folder: str | os.PathLike) -> Path:
    """Give a checkpoint folder a name usable everywhere a model name is (CLI, napari, Python)."""
    from .model_files import resolve_checkpoint

    if name in (CLASSIC, AUTO) or find_known(name) is not None:
        raise ValueError(f"{name!r} is a reserved model name")
    folder = resolve_checkpoint(Path(folder).expanduser().resolve())
    with _locked_entries() as entries:
        entries[name] = str(folder)
    return folder


def unregister_local_model(name: str) -> None:
    with _locked_entries() as entries:
        if entries.pop(name, None) is None:
            raise ValueError(f"no local model named {name!r}")


@contextmanager
def _locked_entries() -> Iterator[dict[str, str]]:
    """The registered entries to change in the ``with`` block, read and written back under an
    exclusive lock (``claims.locked``: models.json.lock beside it), so registrations running at
    once all keep theirs; nothing is written when the block raises."""
    from ..io.claims import locked

    with locked(_local_file()):
        entries = {k: str(v) for k, v in local_models().items()}
        yield entries
        _write_entries(entries)


def _write_entries(entries: dict[str, str]) -> None:
    """Replace the local models file at once (a crash never leaves it half-written); callers hold
    the lock (``_locked_entries``)."""
    from ..io.label_files import atomic_write

    _local_file().parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(_local_file()) as partial:
        partial.write_text(json.dumps(entries, indent=2))


def find_known(name: str) -> KnownModel | None:
    for model in KNOWN_MODELS:
        if name in (model.name, model.repo_id):
            return model
    return None


def resolve_model_name(name: str, device: str = "cpu") -> str:
    """Map a user-facing model name to a repo id, a folder path or ``classic``.

    ``auto`` becomes the first cached *published* checkpoint of the preference list for
    ``device``, else ``classic``: never a model the user trained or registered (those are chosen
    by their name), so what ``auto`` means does not change behind the user's back after a
    fine-tune.
    """
    if name == AUTO:
        from .model_files import cached_checkpoint

        preference = AUTO_PREFERENCE_CPU if device == "cpu" else AUTO_PREFERENCE_GPU
        for short in preference:
            known = find_known(short)
            if cached_checkpoint(known.repo_id) is not None:
                return known.repo_id
        return CLASSIC
    known = find_known(name)
    if known is not None:
        return known.repo_id
    local = local_models()
    if name in local:
        return str(local[name])
    return name


@dataclass
class ModelStatus:
    name: str
    source: str
    description: str
    cached: bool
    size_mb: float
    path: Path | None


def list_models() -> list[ModelStatus]:
    """Every model this machine knows: published ones (cached or not), local folders, classic."""
    from .model_files import WEIGHTS_NAME, cached_checkpoint, hub_repo_folder

    rows = []
    for model in KNOWN_MODELS:
        folder = cached_checkpoint(model.repo_id)
        size = (folder / WEIGHTS_NAME).stat().st_size / 1e6 if folder else float(model.approx_size_mb)
        expected = hub_repo_folder(model.repo_id)
        description = f"{model.encoder} {model.image_size}px, embed {model.embed_dim}, {model.trained_on}"
        rows.append(ModelStatus(model.name, model.repo_id, description, folder is not None, size, folder or expected))
    for name, folder in local_models().items():
        weights = folder / WEIGHTS_NAME
        size = weights.stat().st_size / 1e6 if weights.is_file() else 0.0
        rows.append(ModelStatus(name, "local folder", str(folder), weights.is_file(), size, folder))
    rows.append(ModelStatus(CLASSIC, "embedded", "few-shot pixel classifier, no weights", True, 0.0, None))
    return rows
