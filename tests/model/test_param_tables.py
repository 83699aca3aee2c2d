"""The full-size releases: every parameter name and shape equals the official state dict."""

from __future__ import annotations

import json

import pytest
import torch

from napari_label_anything.hub.model_files import STATE_DICT_PREFIX
from napari_label_anything.model.config import LabelAnythingConfig
from napari_label_anything.model.label_anything import LabelAnything


@pytest.mark.parametrize("table", ["full_sam1024_param_shapes.json", "full_mae480_param_shapes.json"])
def test_full_size_state_dict_matches_release(reference, table):
    data = json.loads((reference / table).read_text())
    config = LabelAnythingConfig.from_dict(data["constructor_kwargs"])
    with torch.device("meta"):
        model = LabelAnything(config)
    ours = {STATE_DICT_PREFIX + k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v["shape"]) for k, v in data["state_dict"].items()}
    assert set(ours) == set(theirs), (sorted(set(ours) - set(theirs))[:5], sorted(set(theirs) - set(ours))[:5])
    assert ours == theirs
    assert len(ours) == data["num_tensors"]
    buffers = {STATE_DICT_PREFIX + name for name, _ in model.named_buffers()}
    assert buffers == {k for k, v in data["state_dict"].items() if v["kind"] == "buffer"}
    assert sum(v.numel() for v in model.state_dict().values()) == data["num_values_total"]
