"""Replays every embeddings-path case of the official implementation (decoder_cases/)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import REFERENCE
from napari_label_anything.hub.model_files import load_model
from napari_label_anything.model.layers import LayerNorm2d
from napari_label_anything.model.prompt_encoder import PromptTensors

CASES = sorted(p.stem for p in (REFERENCE / "decoder_cases").glob("*.npz"))
TOLERANCE = {"sam_like": (1e-5, 1e-4), "mae_like": (1e-5, 1e-4), "attn_variants": (1e-4, 1e-4)}
_MODELS: dict[str, torch.nn.Module] = {}


def official_batch(case: np.lib.npyio.NpzFile) -> dict[str, torch.Tensor]:
    """The official input dict, cast as the fixtures README prescribes."""
    batch = {}
    for key in case.files:
        if not key.startswith("in."):
            continue
        name, value = key[3:], torch.from_numpy(case[key])
        if name in ("embeddings", "prompt_points", "prompt_bboxes", "prompt_masks"):
            value = value.float()
        if name in ("flag_examples", "flag_gts"):
            value = value.bool()
        batch[name] = value
    return batch


def model_for(reference, config_dir: str):
    if config_dir not in _MODELS:
        _MODELS[config_dir] = load_model(reference / config_dir)
    return _MODELS[config_dir]


def run_case(reference, manifest, name: str, model=None):
    case = np.load(reference / "decoder_cases" / f"{name}.npz")
    config_dir = manifest["cases"][name]["config_dir"]
    model = model or model_for(reference, config_dir)
    rows = torch.from_numpy(case["aux.class_rows"]) if "aux.class_rows" in case.files else None
    with torch.inference_mode():
        out = model(official_batch(case), class_rows=rows)
    return case, config_dir, out


def assert_logits_match(expected: np.ndarray, got: torch.Tensor, atol: float, rtol: float) -> None:
    got = got.numpy()
    assert got.shape == expected.shape
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected), err_msg="-inf positions differ")
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], atol=atol, rtol=rtol)


@pytest.mark.parametrize("name", CASES)
def test_decoder_case_matches_official(reference, manifest, name):
    case, config_dir, out = run_case(reference, manifest, name)
    atol, rtol = TOLERANCE[config_dir]
    assert_logits_match(case["out.logits"], out["logits"], atol, rtol)
    np.testing.assert_allclose(
        out["class_examples_embeddings"].numpy(), case["out.class_examples_embeddings"], atol=atol, rtol=rtol
    )


@pytest.mark.parametrize("name", CASES)
def test_decoder_case_intermediates(reference, manifest, name):
    """Where the official intermediates are stored, each pipeline step matches on its own."""
    case = np.load(reference / "decoder_cases" / f"{name}.npz")
    stored = {k for k in case.files if k.startswith("dbg.")}
    config_dir = manifest["cases"][name]["config_dir"]
    model = model_for(reference, config_dir)
    atol, rtol = TOLERANCE[config_dir]
    batch = official_batch(case)
    rows = torch.from_numpy(case["aux.class_rows"]) if "aux.class_rows" in case.files else None
    emb = batch["embeddings"]
    with torch.inference_mode():
        features = model.apply_neck(emb.flatten(0, 1)).unflatten(0, emb.shape[:2])
        classes = model.encode_prompts(features[:, 1:], PromptTensors.from_batch(batch), rows)
        lowres = model.decode(features[:, 0], classes)
    checks = {
        "dbg.query_embeddings_after_neck": features[:, 0],
        "dbg.class_embeddings": classes.prototypes,
        "dbg.lowres_logits": lowres,
    }
    assert stored, "every decoder case stores at least one intermediate"
    for key, value in checks.items():
        if key in stored:
            np.testing.assert_allclose(value.numpy(), case[key], atol=atol, rtol=rtol, err_msg=key)


def test_every_case_is_replayed(reference, manifest):
    decoder_cases = {n for n, c in manifest["cases"].items() if c["file"].startswith("decoder_cases/")}
    assert decoder_cases == set(CASES) and len(CASES) == 12


@pytest.mark.parametrize(
    "breakage",
    ["honour_key_masks", "layernorm_eps", "class_rows_default", "drop_spatial_convs"],
)
def test_parity_fails_loudly_when_miswired(reference, manifest, breakage):
    """Break one thing at a time: the comparison must fail well outside the tolerance."""
    name = "sam_mixed_N3K3_absent_B2"
    model = load_model(reference / "sam_like")
    case = np.load(reference / "decoder_cases" / f"{name}.npz")
    rows = torch.from_numpy(case["aux.class_rows"])
    if breakage == "honour_key_masks":
        model.honour_key_masks(True)
    elif breakage == "layernorm_eps":
        for module in model.modules():
            if isinstance(module, LayerNorm2d):
                module.eps = 1e-5
    elif breakage == "class_rows_default":
        rows = None
    elif breakage == "drop_spatial_convs":
        model.mask_decoder.spatial_convs = torch.nn.Identity()
    with torch.inference_mode():
        got = model(official_batch(case), class_rows=rows)["logits"].numpy()
    expected = case["out.logits"]
    finite = np.isfinite(expected)
    assert np.abs(got[finite] - expected[finite]).max() > 1e-4
