"""``load_segmenter``: a name, hub repo id or folder -> a ready ``Segmenter``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .base import Segmenter


def load_segmenter(
    name_or_path: str = "auto",
    device: Any = "auto",
    *,
    local_files_only: bool | None = None,
    embeddings: str | os.PathLike | None = None,
    encoder: str = "auto",
    batch_size: int | None = None,
    precision: str = "float32",
    tiling: str = "auto",
    on_status: Callable[[str], Any] | None = None,
) -> Segmenter:
    """Load a segmenter by name, hub repo id or checkpoint folder.

    Args:
        name_or_path: a Hugging Face repo id such as ``pasqualedem/label_anything_sam_1024_coco``,
            a short name from ``napari-label-anything models`` (e.g. ``mae-480-coco``), a folder
            holding ``config.json`` + ``model.safetensors``, ``classic`` (the embedded segmenter,
            no weights) or ``auto`` (the best Label Anything checkpoint already on this
            machine, else ``classic``).
        device: ``auto`` (CUDA, then MPS, then CPU), ``cuda``, ``mps`` or ``cpu``.
        local_files_only: never touch the network (also implied by ``HF_HUB_OFFLINE=1``).
        embeddings: a folder where image features are kept on disk (``EmbeddingStore``) and
            reused across runs; Label Anything models only (``classic`` has no image features).
        encoder: ``auto`` (default): ONNX Runtime on a CPU (in float32, when the ``[onnx]`` extra
            is installed), PyTorch on CUDA and MPS; ``torch``; ``onnx``: the image encoder
            exported once to ONNX (cached by weights digest) and run by ONNX Runtime, faster on a
            CPU, the same numbers within 1e-5; or ``onnx-int8``: that export with int8 weights,
            faster again but approximate (docs/benchmarks.md). The ONNX ones run on the CPU only.
            When ``auto``'s export fails, the model runs its PyTorch encoder, with one note
            (to ``on_status``, else a logged warning); ``segmenter.encoder_backend`` says which
            encoder runs, ``segmenter.encoder_note`` why.
        batch_size: query planes encoded together in stack predictions (default 4 on CUDA,
            1 on a CPU, where batching gains nothing).
        precision: ``float32`` (default), ``bfloat16`` or ``float16`` autocast for the network;
            for GPUs (on a CPU bfloat16 is several times slower).
        tiling: ``auto`` (default: tile planes much larger than the supports), ``resize``
            (always the model's own resize, the official behaviour) or ``tile``.
        on_status: called with one-line messages while a one-off ONNX export runs, and with the
            note of a fallback (the CLI prints them; the widget shows them on its status line).
    """
    from ..hub.device import resolve_device
    from ..hub.model_files import load_model
    from ..hub.registry import CLASSIC, resolve_model_name
    from .label_anything.segmenter import LabelAnythingSegmenter

    device = resolve_device(device)
    resolved = resolve_model_name(str(name_or_path), device.type)
    if resolved == CLASSIC:
        from .classic import ClassicSegmenter

        return ClassicSegmenter()
    model = load_model(resolved, local_files_only=local_files_only)
    return LabelAnythingSegmenter(
        model,
        device=device,
        name=resolved,
        store=embeddings,
        encoder=encoder,
        batch_size=batch_size,
        precision=precision,
        tiling=tiling,
        release_torch_encoder=True,  # the model was loaded for this segmenter alone
        on_status=on_status,
    )
