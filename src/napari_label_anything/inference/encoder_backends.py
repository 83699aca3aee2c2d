"""Image-encoder backends: the same encoder + neck run by PyTorch or by ONNX Runtime.

The image encoder is nearly all of a prediction's cost on a CPU. ONNX Runtime's CPU kernels run
it faster than PyTorch eager with the same numbers (to within about 1e-5; docs/benchmarks.md).
The exported graph is cached on disk keyed by the weights
digest and the input size, so only the first use of a model pays for the export; the cache
folder is ``onnx_cache_dir()``.

``auto`` (the default of ``load_segmenter``, the CLI and the widget) is ONNX Runtime on a CPU in
float32 when onnxruntime and onnx import, else PyTorch (always on CUDA and MPS): ``resolve_encoder``
is that rule. When the ONNX encoder cannot be prepared for ``auto`` (the export fails, memory runs
out, onnxruntime is missing), the model runs its PyTorch encoder instead and the encoder carries one
``note`` saying so (said once: to the caller's ``on_status``, else as a logged warning); an explicit
``onnx`` raises instead.

``onnx-int8`` (opt-in, approximate) is that export with int8 weights in every MatMul (per output
channel) and activations quantised per call (``onnxruntime.quantization.quantize_dynamic``),
cached beside the float file under a name that records the quantiser's settings and version.
Faster again than float ONNX on a CPU with VNNI, its features slightly off (docs/benchmarks.md).
Features it computes are stored under their own
signature (``precision``: ``int8``), never mixed with float32 ones.

A backend is a callable ``(pixels: torch.Tensor (B, 3, S, S) float32) -> torch.Tensor
(B, D, S/16, S/16)`` on the model's device: the neck output that the prompt encoder and the
mask decoder consume. Its ``name`` is the backend that runs (``ENCODER_BACKENDS``).
"""

from __future__ import annotations

import logging
import os
import time
import types
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ENCODER_BACKENDS = ("torch", "onnx", "onnx-int8")  # the encoders that run
ENCODER_OPTIONS = ("auto", *ENCODER_BACKENDS)  # what load_segmenter, the CLI and the widget accept
ENCODER_LABELS = {"torch": "PyTorch", "onnx": "ONNX Runtime", "onnx-int8": "ONNX Runtime int8"}
PREPARING_TEXT = "preparing the fast encoder (one-off, cached)…"
MISSING_NOTE = (
    "ONNX Runtime is not installed, so the image encoder runs in PyTorch "
    "(pip install 'napari-label-anything[onnx]' for the faster CPU default)"
)
EXPORT_VERSION = 2  # part of the cached file's name: bump when the exported graph changes
# MatMul only, signed 8-bit weights: quantising Conv too (the patch embedding, the neck) or
# unsigned weights makes the encoder slower than float; reduce_range (7-bit weights, for AVX2
# CPUs without VNNI, whose u8 x s8 products can saturate) adds error; per-channel scales cost
# no time and follow trained weights' uneven channels.
QUANTIZE_SETTINGS = {"op_types_to_quantize": ["MatMul"], "per_channel": True, "reduce_range": False}


def onnx_cache_dir() -> Path:
    """Where exported encoders live: ``$NLA_CACHE_DIR/onnx`` or ``~/.cache/napari-label-anything/onnx``."""
    explicit = os.environ.get("NLA_CACHE_DIR")
    if explicit:
        return Path(explicit) / "onnx"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "napari-label-anything" / "onnx"


def onnx_runtime_available() -> bool:
    """Whether onnxruntime and onnx import (the ``[onnx]`` extra)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a broken install whose native library fails to load
        return False
    return True


def resolve_encoder(encoder: str, device_type: str = "cpu", precision: str = "float32") -> str:
    """The backend ``encoder`` stands for (``ENCODER_BACKENDS``): ``auto`` is ``onnx`` on a CPU in
    float32 when onnxruntime and onnx import, else ``torch`` (CUDA, MPS, autocast precisions);
    the other names stand for themselves.

    Raises:
        ValueError: for a name not in ``ENCODER_OPTIONS``.
    """
    if encoder not in ENCODER_OPTIONS:
        raise ValueError(f"unknown encoder backend {encoder!r}; choose one of {', '.join(ENCODER_OPTIONS)}")
    if encoder != "auto":
        return encoder
    if device_type == "cpu" and precision == "float32" and onnx_runtime_available():
        return "onnx"
    return "torch"


def encoder_label(segmenter) -> str | None:
    """The words for the image encoder ``segmenter`` runs (``ENCODER_LABELS``, e.g. ONNX Runtime),
    or None for a segmenter without one (classic)."""
    return ENCODER_LABELS.get(getattr(segmenter, "encoder_backend", None))


def fallback_note(error: BaseException) -> str:
    """The one line saying that ``auto`` runs PyTorch because the ONNX encoder failed with ``error``."""
    reason = " ".join(str(error).split()) or "no message"
    reason = reason if len(reason) <= 200 else reason[:199] + "…"
    return (
        f"the fast encoder (ONNX Runtime) could not be prepared ({type(error).__name__}: {reason}); "
        "the image encoder runs in PyTorch, with the same results"
    )


def _announce(on_status: Callable[[str], Any] | None, message: str, warning: bool = False) -> None:
    """``message`` to ``on_status`` (and the log, as information); a ``warning`` without
    ``on_status`` is logged as a warning, so that it is said once either way."""
    if warning and on_status is None:
        logger.warning(message)
        return
    logger.info(message)
    if on_status is not None:
        on_status(message)


class TorchEncoder:
    """The model's own encoder and neck, in PyTorch (any device).

    ``note``: None, or why ``auto`` runs this encoder on a CPU (``fallback_note``, ``MISSING_NOTE``).
    """

    name = "torch"

    def __init__(self, model, note: str | None = None) -> None:
        self.model = model
        self.note = note

    def __call__(self, pixels):
        import torch

        with torch.inference_mode():
            return self.model.apply_neck(self.model.encode_images(pixels))


class _EncoderWithNeck:
    """What gets exported: image encoder then neck, one module (built lazily to keep torch lazy)."""

    @staticmethod
    def build(model):
        import torch

        class EncoderWithNeck(torch.nn.Module):
            def __init__(self, inner) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, pixels):
                return self.inner.apply_neck(self.inner.encode_images(pixels))

        return EncoderWithNeck(model).eval()


class OnnxEncoder:
    """The encoder + neck exported to ONNX (cached on disk) and run by ONNX Runtime on the CPU.

    Args:
        model: a ``LabelAnything`` with an image encoder, on the CPU.
        digest: the weights digest (``embedding_store.weights_digest``): the cache key.
        cache_dir: where the exported file is kept (default ``onnx_cache_dir()``).
        threads: intra-op threads (default: what torch uses).
        release_torch_encoder: drop the model's PyTorch encoder once the session is ready (only
            then: a failure before leaves the model whole, so ``auto`` can fall back to it).
        int8: run the float export quantised to int8 (``quantize_encoder``; approximate), its
            own cached file beside the float one. ``precision`` tells which (``float32``/``int8``).
        on_status: called with ``PREPARING_TEXT`` before a one-off export or quantisation, and
            with a line saying it is done (the CLI prints them, the widget shows them); for
            ``auto`` (``make_encoder``), also with the note of a fallback to PyTorch.

    Raises:
        ValueError: when onnxruntime/onnx are not installed (``pip install
            napari-label-anything[onnx]``) or the model has no image encoder.
    """

    note = None  # the encoder asked for runs

    def __init__(
        self,
        model,
        digest: str,
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
        release_torch_encoder: bool = False,
        int8: bool = False,
        on_status: Callable[[str], Any] | None = None,
    ):
        try:
            import onnx  # noqa: F401  (the export and the int8 quantiser need it)
            import onnxruntime
        except ImportError:
            raise ValueError(
                "the ONNX encoder needs onnxruntime and onnx: pip install 'napari-label-anything[onnx]'"
            ) from None
        import torch

        if model.image_encoder is None:
            raise ValueError("this model has no image encoder to export")
        self.name, self.precision = ("onnx-int8", "int8") if int8 else ("onnx", "float32")
        side = model.config.image_size
        folder = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
        self.float_path = folder / f"{digest}-{side}-v{EXPORT_VERSION}.onnx"
        self.path = self.float_path.with_suffix(quantized_name_suffix()) if int8 else self.float_path
        self.exported_now = self.quantized_now = False
        if not self.path.is_file():
            _announce(on_status, PREPARING_TEXT)
            started = time.perf_counter()
            if not self.float_path.is_file():
                export_encoder(model, self.float_path)
                self.exported_now = True
            if int8:
                quantize_encoder(self.float_path, self.path)
                self.quantized_now = True
            _announce(on_status, f"fast encoder prepared in {time.perf_counter() - started:.0f} s (cached in {folder})")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No pre-planned memory pattern: it holds every activation of SAM's 4096 x 4096 global
        # attention at once (see docs/benchmarks.md for the peak it saves at the same speed);
        # switching off the arena or thread spinning cost time instead.
        options.enable_mem_pattern = False
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        if release_torch_encoder:
            # The exported encoder now serves every image: the PyTorch copy (~360 MB for ViT-B)
            # would only raise the peak of the runs to come.
            import gc

            model.image_encoder = None
            gc.collect()

    def __call__(self, pixels):
        import numpy as np
        import torch

        array = np.ascontiguousarray(pixels.detach().cpu().numpy(), dtype=np.float32)
        (features,) = self.session.run(None, {"pixels": array})
        return torch.from_numpy(features).to(pixels.device)


# Query rows of a global-attention block computed at once in the exported graph. SAM ViT-B at
# 1024 has a 64 x 64 token grid: 16 rows keep one attention chunk at 12 x 1024 x 4096 floats
# (200 MB) instead of 12 x 4096 x 4096 (800 MB), which sets ONNX Runtime's peak.
EXPORT_ATTENTION_ROWS = 16


def _chunked_global_attention(self, x):
    """segment_anything's ``Attention.forward``, the query rows taken ``EXPORT_ATTENTION_ROWS`` at
    a time: the same arithmetic per row (softmax runs over all keys), a fraction of the memory."""
    import torch
    from segment_anything.modeling.image_encoder import get_rel_pos

    batch, height, width, _ = x.shape
    qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, batch * self.num_heads, height * width, -1).unbind(0)
    channels = q.shape[-1]
    if self.use_rel_pos:
        rel_h_table = get_rel_pos(height, height, self.rel_pos_h)
        rel_w_table = get_rel_pos(width, width, self.rel_pos_w)
    rows = []
    for r0 in range(0, height, EXPORT_ATTENTION_ROWS):
        r1 = min(r0 + EXPORT_ATTENTION_ROWS, height)
        q_rows = q.reshape(-1, height, width, channels)[:, r0:r1]
        attn = (q_rows.reshape(q.shape[0], -1, channels) * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            rel_h = torch.einsum("bhwc,hkc->bhwk", q_rows, rel_h_table[r0:r1])
            rel_w = torch.einsum("bhwc,wkc->bhwk", q_rows, rel_w_table)
            attn = attn.view(-1, r1 - r0, width, height, width) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
            attn = attn.view(q.shape[0], (r1 - r0) * width, height * width)
        rows.append(attn.softmax(dim=-1) @ v)
    out = torch.cat(rows, dim=1)
    out = out.view(batch, self.num_heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
    return self.proj(out)


@contextmanager
def _chunked_attention_for_export(model):
    """Swap the global-attention blocks of a SAM encoder to ``_chunked_global_attention``."""
    patched = []
    for block in getattr(model.image_encoder, "blocks", []):
        if getattr(block, "window_size", None) == 0 and hasattr(block.attn, "qkv"):
            block.attn.forward = types.MethodType(_chunked_global_attention, block.attn)
            patched.append(block.attn)
    try:
        yield
    finally:
        for attention in patched:
            del attention.forward


def export_encoder(model, path: Path) -> Path:
    """Export ``model``'s encoder + neck to ONNX at ``path`` (atomically; batch axis dynamic)."""
    import torch

    from ..io.label_files import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _EncoderWithNeck.build(model)
    side = model.config.image_size
    example = torch.zeros(1, 3, side, side)
    with (
        atomic_write(path) as partial,
        torch.no_grad(),
        warnings.catch_warnings(),
        _chunked_attention_for_export(model),
    ):
        # The tracer warns about every shape it bakes in; the input size is fixed per model.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper,
            (example,),
            str(partial),
            input_names=["pixels"],
            output_names=["features"],
            dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def quantize_encoder(float_path: Path, path: Path) -> Path:
    """Write ``float_path``'s graph with int8 MatMul weights to ``path`` (atomically), see
    ``QUANTIZE_SETTINGS``: weights quantised once, activations per call from their own range."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.quant_utils import add_pre_process_metadata

    from ..io.label_files import atomic_write

    # quantize_dynamic writes (then deletes) a shape-inferred copy beside its input: working on
    # a private copy keeps two processes quantising at once out of each other's files. The copy
    # is tagged as pre-processed, which only silences quantize_dynamic's advice to pre-process,
    # logged on the root logger (where it would configure logging for the whole process).
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".quantize-") as private:
        source = Path(private) / "encoder.onnx"
        graph = onnx.load(str(float_path))
        add_pre_process_metadata(graph)
        onnx.save(graph, str(source))
        del graph
        with atomic_write(path) as partial:
            quantize_dynamic(source, partial, weight_type=QuantType.QInt8, **QUANTIZE_SETTINGS)
    return path


def quantized_name_suffix() -> str:
    """The int8 file's suffix: a digest of ``QUANTIZE_SETTINGS`` and the ONNX Runtime version,
    so changed settings or another quantiser never reuse an old file."""
    import hashlib
    import json

    import onnxruntime

    text = json.dumps([QUANTIZE_SETTINGS, onnxruntime.__version__], sort_keys=True)
    return f".int8-{hashlib.blake2b(text.encode(), digest_size=4).hexdigest()}.onnx"


def make_encoder(
    backend: str,
    model,
    digest: Any = None,
    device_type: str = "cpu",
    release_torch_encoder: bool = False,
    precision: str = "float32",
    on_status: Callable[[str], Any] | None = None,
):
    """The encoder ``backend`` (``ENCODER_OPTIONS``) stands for, for ``model`` (``digest``: the
    weights digest, or a callable giving it).

    ``auto`` resolves by ``resolve_encoder``; when its ONNX encoder cannot be prepared (any
    error, out of memory included) or onnxruntime is missing on a CPU, it gives the PyTorch
    encoder with a ``note`` saying why, said once: to ``on_status``, else as a logged warning.
    ``release_torch_encoder``: for a non-torch backend, drop the model's PyTorch encoder once
    the backend is ready (only for a model that belongs to the caller alone). ``on_status``:
    see ``OnnxEncoder``.

    Raises:
        ValueError: for an unknown backend, or ONNX (float or int8) on a non-CPU device.
    """
    resolved = resolve_encoder(backend, device_type, precision)
    if resolved == "torch":
        missing = backend == "auto" and device_type == "cpu" and precision == "float32"
        if missing:  # resolve_encoder found no onnxruntime
            _announce(on_status, MISSING_NOTE, warning=True)
        return TorchEncoder(model, MISSING_NOTE if missing else None)
    if device_type != "cpu":
        raise ValueError(
            f"the ONNX encoders run on the CPU only; on {device_type} choose the torch encoder "
            "(encoder='torch', --encoder torch) or the CPU (device='cpu', --device cpu)"
        )
    digest = digest() if callable(digest) else digest
    options = {"release_torch_encoder": release_torch_encoder, "int8": resolved == "onnx-int8", "on_status": on_status}
    if backend != "auto":
        return OnnxEncoder(model, digest, **options)
    try:
        return OnnxEncoder(model, digest, **options)
    except Exception as error:  # noqa: BLE001 - MemoryError too: auto falls back, with one note
        note = fallback_note(error)
        _announce(on_status, note, warning=True)
        return TorchEncoder(model, note)
