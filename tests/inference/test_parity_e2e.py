"""End-to-end parity: raw images and prompts through the public API (e2e_cases/)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_label_anything as nla
from napari_label_anything.inference.label_anything.model_inputs import build_prompt_arrays

CASES = {
    "e2e_sam_like_demo_path": ("sam_like_segmenter", 16),
    "e2e_mae_like_dataset_path": ("mae_like_segmenter", 4),
}


def episode_from_case(case) -> nla.Episode:
    """The fixture's raw prompts, converted from the official (x, y) to napari (row, col)."""
    episode = nla.Episode(["cat", "dog"])
    points = [case["raw.support1.points.dog.0"], case["raw.support1.points.dog.1"]]
    episode.add_support(
        case["raw.image1"],
        labels=case["raw.support1.masks.cat.0"].astype(np.int64),
        points=[(y, x, "dog") for x, y in points],
    )
    x0, y0, x1, y1 = case["raw.support2.bboxes.cat.0"]
    episode.add_support(case["raw.image2"], boxes=[(y0, x0, y1, x1, "cat")])
    return episode


@pytest.fixture(params=sorted(CASES))
def e2e(request, reference):
    name = request.param
    segmenter = request.getfixturevalue(CASES[name][0])
    case = np.load(reference / "e2e_cases" / f"{name}.npz")
    rows = case["aux.class_rows"].tolist() if "aux.class_rows" in case.files else None
    return name, segmenter, case, rows


def test_prompt_tensors_equal_official(e2e):
    _, segmenter, case, _ = e2e
    arrays = build_prompt_arrays(
        episode_from_case(case), segmenter.config.image_size, segmenter.config.custom_preprocess
    )
    for key, value in arrays.items():
        expected = case[f"in.{key}"]
        assert value.shape == expected.shape, key
        np.testing.assert_array_equal(value.astype(np.float64), expected.astype(np.float64), err_msg=key)


def test_preprocessed_images_equal_official(e2e):
    name, segmenter, case, _ = e2e
    step = CASES[name][1]
    images = [segmenter._model_input(case[f"raw.image{i}"], None) for i in range(3)]
    subsampled = np.stack(images)[None, ..., ::step, ::step]
    np.testing.assert_array_equal(subsampled, case["pre.images_subsampled"])


def test_image_encoder_output_matches(e2e):
    _, segmenter, case, _ = e2e
    with torch.inference_mode():
        batch = torch.stack([torch.from_numpy(segmenter._model_input(case[f"raw.image{i}"], None)) for i in range(3)])
        features = segmenter.model.encode_images(batch).numpy()
    np.testing.assert_allclose(features, case["dbg.image_encoder_output"], atol=1e-5, rtol=1e-4)


def test_public_api_logits_and_labels_match(e2e):
    _, segmenter, case, rows = e2e
    episode = episode_from_case(case)
    query = case["raw.image0"]
    logits = segmenter.logits(episode, query, class_rows=rows).numpy()
    h, w = query.shape[:2]
    np.testing.assert_allclose(logits, case["out.logits"][0, :, :h, :w], atol=1e-5, rtol=1e-4)
    labels = segmenter.predict(episode, query, class_rows=rows)
    assert labels.dtype == np.uint8 and labels.shape == (h, w)
    np.testing.assert_array_equal(labels, case["out.label_map"][0])
    proba = segmenter.predict_proba(episode, query, class_rows=rows)
    assert proba.shape == (3, h, w) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(0), labels)


def test_full_official_forward_matches(e2e):
    """The official batch interface on raw images (images path), padding included."""
    name, segmenter, case, rows = e2e
    model = segmenter.model
    images = torch.stack([torch.from_numpy(segmenter._model_input(case[f"raw.image{i}"], None)) for i in range(3)])[
        None
    ]
    batch = {k[3:]: torch.from_numpy(case[k]) for k in case.files if k.startswith("in.")}
    for key in ("prompt_points", "prompt_bboxes", "prompt_masks"):
        batch[key] = batch[key].float()
    batch["images"] = images
    with torch.inference_mode():
        out = model(batch, class_rows=None if rows is None else torch.tensor(rows))
    expected = case["out.logits"]
    got = out["logits"].numpy()
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], atol=1e-5, rtol=1e-4)
