"""Corrected planes: what the user taught the tool, kept as taught and fed back whole.

The annotation loop: run, find the worst plane, correct the output there, feed that plane back
as a support, run again. Two rules make it keep what the user teaches it:

- **A corrected plane is a complete annotation.** Every pixel of it says its class, background
  included, so fed back as a support its background pixels are background prompts (for models
  that take them; Label Anything uses the classes only). ``as_complete_prompts`` turns the
  output plane into such prompts; correcting only the worst regions is enough, because the
  model's other pixels are accepted as the user left them.
- **A complete plane is never repainted.** A support plane whose prompts cover every pixel
  (fed back, or painted completely) shows exactly those prompts in the output of every later
  run or preview (``keep_planes``); where the model now disagrees, the number of pixels is
  reported, not painted.

NumPy only: the widget (``widget/feedback.py``), the Python API and the loop benchmark use
these same functions.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np

PlaneIndex = tuple[int, ...]


def as_complete_prompts(labels: np.ndarray, background_prompt: int) -> np.ndarray:
    """An output plane as complete mask prompts: background (0) becomes ``background_prompt``.

    Args:
        labels: (Y, X) integer labels, 0 = background, k = class k.
        background_prompt: the prompt value that means "background" (e.g. the widget's 255, or
            the index of an Episode's "background" class).

    Returns:
        (Y, X) array of ``labels``' dtype (widened if ``background_prompt`` does not fit) with
        no 0 left.
    """
    labels = np.asarray(labels)
    dtype = np.promote_types(labels.dtype, np.min_scalar_type(background_prompt))
    return np.where(labels == 0, background_prompt, labels).astype(dtype)


def is_complete(prompts: np.ndarray) -> bool:
    """Whether mask prompts cover every pixel of a (Y, X) plane (0 = unprompted)."""
    prompts = np.asarray(prompts)
    return prompts.size > 0 and bool(np.all(prompts != 0))


def complete_planes(prompts: np.ndarray, background_prompt: int, n_plane_axes: int) -> dict[PlaneIndex, np.ndarray]:
    """The planes of a prompt stack that are complete annotations, as output labels.

    Args:
        prompts: (..., Y, X) mask prompts of one image (2D or a stack), 0 = unprompted.
        background_prompt: the prompt value meaning background; it becomes label 0.
        n_plane_axes: how many leading axes of ``prompts`` are plane axes (0 for a 2D image).

    Returns:
        {plane index: (Y, X) labels} for every plane whose prompts cover every pixel (the
        index is ``()`` for a 2D image).
    """
    prompts = np.asarray(prompts)
    shape = prompts.shape[:n_plane_axes]
    flat = prompts.reshape(-1, *prompts.shape[n_plane_axes:])
    found = np.nonzero(np.all(flat.reshape(flat.shape[0], -1) != 0, axis=1))[0]
    kept = {}
    for i in found:
        index = tuple(int(v) for v in np.unravel_index(i, shape)) if shape else ()
        kept[index] = np.where(flat[i] == background_prompt, 0, flat[i])
    return kept


def keep_planes(
    planes: MutableMapping[PlaneIndex, np.ndarray], kept: Mapping[PlaneIndex, np.ndarray]
) -> dict[PlaneIndex, int]:
    """Put the kept planes over a run's predicted planes, in place.

    Args:
        planes: {plane index: (Y, X) predicted labels} of a run (changed in place).
        kept: {plane index: (Y, X) labels the user gave} (``complete_planes``).

    Returns:
        {plane index: pixels where the prediction differed from the kept labels} for every
        kept plane the run predicted.
    """
    disagreements = {}
    for index, labels in kept.items():
        if index in planes:
            predicted = np.asarray(planes[index])
            disagreements[index] = int(np.count_nonzero(predicted != labels))
            planes[index] = np.asarray(labels, dtype=predicted.dtype)
    return disagreements
