"""The SAM ViT image encoder against the official standalone encoder (image_encoder/)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_label_anything.hub.model_files import read_state_dict
from napari_label_anything.model.config import SamViTSpec
from napari_label_anything.model.image_encoder import build_sam_vit


@pytest.mark.parametrize("project_last_hidden", [True, False])
def test_tiny_sam_vit_matches_official(reference, manifest, project_last_hidden):
    hp = manifest["image_encoder"]["hyperparameters"]
    spec = SamViTSpec(
        embed_dim=hp["embed_dim"],
        depth=hp["depth"],
        num_heads=hp["num_heads"],
        global_attn_indexes=tuple(hp["global_attn_indexes"]),
        out_chans=hp["out_chans"],
        img_size=hp["img_size"],
        patch_size=hp["patch_size"],
        window_size=hp["window_size"],
    )
    encoder = build_sam_vit(spec, project_last_hidden=project_last_hidden)
    encoder.load_state_dict(read_state_dict(reference / "image_encoder" / "tiny_sam_vit.safetensors"), strict=True)
    case = np.load(reference / "image_encoder" / "tiny_sam_vit_case.npz")
    with torch.inference_mode():
        out = encoder.eval()(torch.from_numpy(case["in.image"]).float()).numpy()
    key = "out.project_last_hidden_true" if project_last_hidden else "out.project_last_hidden_false"
    np.testing.assert_allclose(out, case[key], atol=1e-5, rtol=0)


def test_smaller_input_interpolates_position_embedding(reference):
    """Opt-in speed mode: a 512 input on a 1024 encoder runs and keeps the 1/16 grid."""
    spec = SamViTSpec(16, 2, 2, (1,), out_chans=16)
    encoder = build_sam_vit(spec, project_last_hidden=False).eval()
    with torch.inference_mode():
        out = encoder(torch.zeros(1, 3, 512, 512))
    assert out.shape == (1, 16, 32, 32)
