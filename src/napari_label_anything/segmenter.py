"""Segmenters: turn an ``Episode`` plus a query image into a multi-class label image.

``Segmenter`` is the interface shared by every model (the napari widget and the CLI only
use it); ``LabelAnythingSegmenter`` runs the Label Anything network and caches what is
expensive: image features per distinct image, class prototypes per episode.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .episode import Episode, check_image
from .labels import labels_dtype
from .preprocessing import image_to_model_input, intensity_range, to_uint8_rgb
from .stacks import as_stack, stack_layout

ProgressCallback = Callable[[int, int], Any]
CancelCheck = Callable[[], bool] | threading.Event


class PredictionCancelled(RuntimeError):
    """Raised inside a stack prediction when its ``cancel`` check turns true."""


def _is_cancelled(cancel: CancelCheck | None) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())


class Segmenter(ABC):
    """Few-shot multi-class segmentation from an ``Episode``.

    Subclasses implement ``predict_proba``; everything else derives from it.
    """

    name: str = "segmenter"
    device: str = "cpu"

    @abstractmethod
    def predict_proba(self, episode: Episode, query: Any, **options: Any) -> np.ndarray:
        """Class probabilities of a 2D query: (N+1, Y, X) float32, class 0 = background."""

    def predict(self, episode: Episode, query: Any, **options: Any) -> np.ndarray:
        """Label image of a 2D query (Y, X): value k = class k, 0 = background."""
        proba = self.predict_proba(episode, query, **options)
        return proba.argmax(axis=0).astype(labels_dtype(episode.n_classes))

    def iter_predict_stack(
        self,
        episode: Episode,
        stack: Any,
        axis: int | tuple[int, ...] = 0,
        planes: Sequence[tuple[int, ...] | int] | None = None,
        cancel: CancelCheck | None = None,
        rgb: bool | None = None,
        **options: Any,
    ) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """Yield ``(plane_index, labels)`` for each plane of ``stack`` (see ``predict_stack``).

        Planes are predicted with one shared intensity range, so 16-bit planes keep the same
        contrast through the stack. ``cancel`` is checked before every plane.
        """
        stack = as_stack(stack)
        layout = stack_layout(stack.shape, axis, rgb)
        episode.validate()
        indices = layout.plane_indices() if planes is None else layout.check_planes(planes)
        if "value_range" not in options and np.dtype(stack.dtype) not in (np.uint8, np.bool_):
            low, high = intensity_range(stack)
            if high > low:  # else the stack is constant (every plane becomes black) or holds NaN (refused per plane)
                options["value_range"] = (low, high)
        for index in indices:
            if _is_cancelled(cancel):
                raise PredictionCancelled("prediction cancelled")
            yield index, self.predict(episode, layout.take(stack, index), **options)

    def predict_stack(
        self,
        episode: Episode,
        stack: Any,
        axis: int | tuple[int, ...] = 0,
        progress: ProgressCallback | None = None,
        planes: Sequence[tuple[int, ...] | int] | None = None,
        cancel: CancelCheck | None = None,
        rgb: bool | None = None,
        out: Any = None,
        **options: Any,
    ) -> np.ndarray:
        """Label every plane of a (Z, Y, X), (T, Z, Y, X) or (..., Y, X, 3|4) stack.

        Args:
            episode: classes and prompted supports.
            stack: the array, NumPy or lazy (zarr, dask, memmap: planes are read one at a time);
                all axes in front of (Y, X[, C]) are plane axes by default.
            axis: the plane axis or axes (see ``stacks.stack_layout``).
            progress: called as ``progress(done, total)`` after each plane.
            planes: only these plane indices (others stay 0), e.g. ``[(3,), (4,)]``.
            cancel: a ``threading.Event`` or a callable; when it turns true the run stops with
                ``PredictionCancelled``.
            rgb: whether the last axis is colour (default: guessed from its size, see
                ``stacks.stack_layout``).
            out: where to write the labels (e.g. a zarr array, so memory does not grow with
                the number of planes); it must have the shape of the result. Default: a new
                NumPy array.

        Returns:
            Labels with the stack's shape minus any colour axis, uint8 (uint16 above 255
            classes); ``out`` when given.
        """
        stack = as_stack(stack)
        layout = stack_layout(stack.shape, axis, rgb)
        if out is None:
            out = np.zeros(layout.labels_shape, dtype=labels_dtype(episode.n_classes))
        elif tuple(out.shape) != layout.labels_shape:
            raise ValueError(f"out has shape {tuple(out.shape)}; this stack's labels need {layout.labels_shape}")
        total = layout.n_planes if planes is None else len(layout.check_planes(planes))
        for done, (index, labels) in enumerate(
            self.iter_predict_stack(episode, stack, axis, planes=planes, cancel=cancel, rgb=rgb, **options), start=1
        ):
            out[layout.labels_index(index)] = labels
            if progress is not None:
                progress(done, total)
        return out


class LabelAnythingSegmenter(Segmenter):
    """Runs a ``LabelAnything`` model; caches image features and class prototypes.

    Changing prompts re-runs only the (cheap) prompt encoder; every distinct image is encoded
    once while it stays in the cache (``cache_size`` images).
    """

    def __init__(self, model, device: Any = "auto", name: str = "label-anything", cache_size: int = 32) -> None:
        from .device import resolve_device

        self.device_obj = resolve_device(device)
        self.device = str(self.device_obj)
        self.model = model.to(self.device_obj).eval()
        self.name = name
        self.cache_size = cache_size
        self._features: OrderedDict[str, Any] = OrderedDict()
        self._prototypes: OrderedDict[tuple, Any] = OrderedDict()
        self.stats = {"encoded_images": 0, "feature_cache_hits": 0, "prompt_encodings": 0}

    @property
    def config(self):
        return self.model.config

    def __repr__(self) -> str:
        c = self.config
        return (
            f"LabelAnythingSegmenter({self.name!r}, encoder={c.encoder}, "
            f"image_size={c.image_size}, device={self.device})"
        )

    def clear_cache(self) -> None:
        self._features.clear()
        self._prototypes.clear()

    # -- cached steps --------------------------------------------------------------------

    def _model_input(self, image: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
        rgb = to_uint8_rgb(image, value_range)
        return image_to_model_input(rgb, self.config.image_size, self.config.custom_preprocess)

    def features(self, image: np.ndarray, value_range: tuple[float, float] | None = None):
        """Neck output of one image, (1, D, h, w) float32 on the model device (cached)."""
        import torch

        pixels = self._model_input(check_image(image, "image"), value_range)
        key = hashlib.sha1(pixels.tobytes()).hexdigest()
        if key in self._features:
            self._features.move_to_end(key)
            self.stats["feature_cache_hits"] += 1
            return self._features[key]
        with torch.inference_mode():
            batch = torch.from_numpy(pixels)[None].to(self.device_obj)
            result = self.model.apply_neck(self.model.encode_images(batch))
        self.stats["encoded_images"] += 1
        self._features[key] = result
        while len(self._features) > self.cache_size:
            self._features.popitem(last=False)
        return result

    def _class_rows(self, episode: Episode, class_rows: Sequence[int] | None):
        import torch

        bank = self.config.class_bank_size
        if class_rows is None:
            return None
        rows = [int(r) for r in class_rows]
        if bank is None:
            warnings.warn("this model has no class-token pool; class_rows is ignored", stacklevel=3)
            return None
        if len(rows) != episode.n_classes + 1:
            raise ValueError(
                f"class_rows needs {episode.n_classes + 1} entries "
                f"(background + {episode.n_classes} classes), got {len(rows)}"
            )
        if any(not 0 <= r < bank for r in rows):
            raise ValueError(f"class_rows must lie in 0..{bank - 1}, got {rows}")
        return torch.tensor(rows, dtype=torch.long, device=self.device_obj)

    def class_embeddings(self, episode: Episode, class_rows: Sequence[int] | None = None):
        """Class prototypes of an episode (``ClassEmbeddings``), cached per episode content."""
        import torch

        from .model_inputs import build_prompt_arrays, to_prompt_tensors

        episode.validate()
        bank = self.config.class_bank_size
        if bank is not None and episode.n_classes + 1 > bank:
            raise ValueError(
                f"this model's class-token pool has {bank} rows (one is the background), so an episode "
                f"can have at most {bank - 1} classes; this one has {episode.n_classes}"
            )
        rows = self._class_rows(episode, class_rows)
        key = (episode.signature(), None if rows is None else tuple(rows.tolist()))
        if key in self._prototypes:
            self._prototypes.move_to_end(key)
            return self._prototypes[key]
        support_features = torch.cat([self.features(s.image) for s in episode.supports])[None]
        arrays = build_prompt_arrays(episode, self.config.image_size, self.config.custom_preprocess)
        with torch.inference_mode():
            result = self.model.encode_prompts(support_features, to_prompt_tensors(arrays, self.device_obj), rows)
        self.stats["prompt_encodings"] += 1
        self._prototypes[key] = result
        while len(self._prototypes) > 4:
            self._prototypes.popitem(last=False)
        return result

    # -- prediction ----------------------------------------------------------------------

    def logits(
        self,
        episode: Episode,
        query: Any,
        class_rows: Sequence[int] | None = None,
        value_range: tuple[float, float] | None = None,
    ):
        """Logits of a 2D query at its own size: (N+1, Y, X) float32 torch tensor."""
        import torch

        query = check_image(query, "query image")
        classes = self.class_embeddings(episode, class_rows)
        features = self.features(query, value_range)
        with torch.inference_mode():
            lowres = self.model.decode(features, classes)
            return self.model.upscale_logits(lowres, query.shape[:2])[0]

    def predict_proba(
        self,
        episode: Episode,
        query: Any,
        class_rows: Sequence[int] | None = None,
        value_range: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Softmax of the logits, (N+1, Y, X) float32; ``class_rows`` picks class-token rows."""
        import torch

        logits = self.logits(episode, query, class_rows, value_range)
        return torch.softmax(logits, dim=0).float().cpu().numpy()

    def predict(
        self,
        episode: Episode,
        query: Any,
        class_rows: Sequence[int] | None = None,
        value_range: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Label image (Y, X): the argmax of the logits (uint8; uint16 above 255 classes)."""
        logits = self.logits(episode, query, class_rows, value_range)
        return logits.argmax(dim=0).cpu().numpy().astype(labels_dtype(episode.n_classes))


def load_segmenter(
    name_or_path: str = "auto", device: Any = "auto", *, local_files_only: bool | None = None
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
    """
    from .checkpoint import load_model
    from .device import resolve_device
    from .registry import CLASSIC, resolve_model_name

    device = resolve_device(device)
    resolved = resolve_model_name(str(name_or_path), device.type)
    if resolved == CLASSIC:
        from .classic import ClassicSegmenter

        return ClassicSegmenter()
    model = load_model(resolved, local_files_only=local_files_only)
    return LabelAnythingSegmenter(model, device=device, name=resolved)
