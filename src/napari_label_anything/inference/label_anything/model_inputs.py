"""Episode prompts -> the model's prompt tensors, as the official demo collates them.

This is where napari's (row, column) convention becomes the model's (x, y) frame; nothing
outside this module and ``preprocessing`` sees (x, y).
"""

from __future__ import annotations

import numpy as np

from ...episode import Episode
from ...preprocessing import PROMPT_MASK_SIDE, mask_to_prompt, transform_boxes, transform_coords


def build_prompt_arrays(episode: Episode, side: int, custom: bool) -> dict[str, np.ndarray]:
    """Collate an episode's prompts into official-layout arrays (batch of one).

    Returns a dict with ``prompt_masks`` (1, M, C, 256, 256) float32, ``flag_masks`` (1, M, C),
    ``prompt_points`` (1, M, C, Np, 2) float32 (x, y), ``flag_points`` (1, M, C, Np),
    ``prompt_bboxes`` (1, M, C, Nb, 4) float32 (x1, y1, x2, y2), ``flag_bboxes`` (1, M, C, Nb)
    and ``flag_examples`` (1, M, C) bool, with C = N + 1 (class 0 = background, always
    flagged). Np/Nb are the largest per-(support, class) counts, 0 when no support has any.
    """
    m, c = len(episode.supports), episode.n_classes + 1
    masks = np.zeros((1, m, c, PROMPT_MASK_SIDE, PROMPT_MASK_SIDE), dtype=np.float32)
    mask_flags = np.zeros((1, m, c), dtype=np.uint8)
    points: list[list[list[np.ndarray]]] = [[[] for _ in range(c)] for _ in range(m)]
    boxes: list[list[list[np.ndarray]]] = [[[] for _ in range(c)] for _ in range(m)]
    for i, support in enumerate(episode.supports):
        hw = support.shape
        if support.labels is not None:
            for k in np.unique(support.labels):
                if k == 0:
                    continue
                masks[0, i, k] = mask_to_prompt(support.labels == k, side, custom)
                mask_flags[0, i, k] = 1
        for y, x, k in support.points:
            points[i][int(k)].append(transform_coords(np.array([x, y]), hw, side, custom))
        for y0, x0, y1, x1, k in support.boxes:
            boxes[i][int(k)].append(transform_boxes(np.array([x0, y0, x1, y1]), hw, side, custom))
    prompt_points, flag_points = _pad(points, 2)
    prompt_boxes, flag_boxes = _pad(boxes, 4)
    example_flags = (mask_flags > 0) | (flag_points.sum(-1) > 0) | (flag_boxes.sum(-1) > 0)
    example_flags[..., 0] = True
    return {
        "prompt_masks": masks,
        "flag_masks": mask_flags,
        "prompt_points": prompt_points,
        "flag_points": flag_points,
        "prompt_bboxes": prompt_boxes,
        "flag_bboxes": flag_boxes,
        "flag_examples": example_flags,
    }


def _pad(groups: list[list[list[np.ndarray]]], width: int) -> tuple[np.ndarray, np.ndarray]:
    m, c = len(groups), len(groups[0])
    n = max((len(items) for row in groups for items in row), default=0)
    values = np.zeros((1, m, c, n, width), dtype=np.float32)
    flags = np.zeros((1, m, c, n), dtype=np.uint8)
    for i, row in enumerate(groups):
        for k, items in enumerate(row):
            for j, item in enumerate(items):
                values[0, i, k, j] = item
                flags[0, i, k, j] = 1
    return values, flags


def to_prompt_tensors(arrays: dict[str, np.ndarray], device=None):
    """Wrap ``build_prompt_arrays`` output as a ``PromptTensors`` on ``device``."""
    import torch

    from ...model.prompt_encoder import PromptTensors

    def tensor(key: str, dtype=torch.float32):
        return torch.from_numpy(arrays[key]).to(device=device, dtype=dtype)

    return PromptTensors(
        example_flags=tensor("flag_examples", torch.bool),
        points=tensor("prompt_points"),
        point_flags=tensor("flag_points"),
        boxes=tensor("prompt_bboxes"),
        box_flags=tensor("flag_bboxes"),
        masks=tensor("prompt_masks"),
        mask_flags=tensor("flag_masks"),
    )
