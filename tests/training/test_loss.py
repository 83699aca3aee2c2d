"""Focal loss with class weighting against the official values (reference README §7.11, §8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_label_anything.training.loss import class_weights, focal_loss, pixel_weights

# Official LabelAnythingLoss values, manifest.json -> loss_metrics.loss
OFFICIAL = {
    "with_ignore": {"weighted": 8.677321, "unweighted": 2.348841, "weight2_squared": 34.709286},
    "no_ignore": {"weighted": 4.535299, "unweighted": 1.648794, "weight2_squared": 18.141195},
}


@pytest.fixture(scope="module")
def loss_data(reference):
    with np.load(reference / "loss_metrics" / "loss_metrics.npz") as data:
        return {key: data[key] for key in data.files if key.startswith("loss.")}


def case(loss_data, name):
    logits = torch.from_numpy(loss_data[f"loss.{name}.logits"])
    target = torch.from_numpy(loss_data[f"loss.{name}.target"])
    return logits, target


@pytest.mark.parametrize("name", ["with_ignore", "no_ignore"])
def test_focal_loss_matches_official_values(loss_data, manifest, name):
    logits, target = case(loss_data, name)
    official = manifest["loss_metrics"]["loss"][name]
    assert official["focal_class_weighting_true"] == pytest.approx(OFFICIAL[name]["weighted"], rel=1e-6)

    weighted = focal_loss(logits, target)
    unweighted = focal_loss(logits, target, class_weighting=False)
    squared = focal_loss(logits, target, weight=2.0, official_weight_squared=True)
    once = focal_loss(logits, target, weight=2.0)

    assert weighted.ndim == 0 and weighted.dtype == torch.float32
    assert float(weighted) == pytest.approx(official["focal_class_weighting_true"], rel=1e-5)
    assert float(unweighted) == pytest.approx(official["focal_class_weighting_false"], rel=1e-5)
    assert float(squared) == pytest.approx(official["focal_weight_2.0_class_weighting_true"], rel=1e-5)
    assert float(once) == pytest.approx(2 * official["focal_class_weighting_true"], rel=1e-5)


@pytest.mark.parametrize("name", ["with_ignore", "no_ignore"])
def test_class_and_pixel_weights_match_fixture(loss_data, name):
    logits, target = case(loss_data, name)
    n_classes = logits.shape[1]
    np.testing.assert_allclose(
        class_weights(target, n_classes).numpy(), loss_data[f"loss.{name}.class_weights"], rtol=1e-5
    )
    np.testing.assert_allclose(
        pixel_weights(target, n_classes).numpy(), loss_data[f"loss.{name}.weight_matrix"], rtol=1e-5
    )


def test_fixture_has_the_model_like_infinities(loss_data):
    logits, target = case(loss_data, "with_ignore")
    assert torch.isinf(logits).any()
    assert (target == -100).any()


def test_gradients_are_finite_with_infinite_logits(loss_data):
    logits, target = case(loss_data, "with_ignore")
    logits = logits.clone().requires_grad_(True)
    for kwargs in ({}, {"class_weighting": False}, {"weight": 2.0, "official_weight_squared": True}):
        logits.grad = None
        loss = focal_loss(logits, target, **kwargs)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(logits.grad).all()
        ignored = (target == -100)[:, None].expand_as(logits)
        assert (logits.grad[ignored] == 0).all(), "ignored pixels must not receive gradient"
        assert logits.grad[~ignored].abs().sum() > 0


def test_ignored_pixels_count_in_the_mean_but_add_nothing():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    full = focal_loss(logits, target, class_weighting=False)
    padded_logits = torch.cat([logits, torch.zeros(1, 3, 4, 4)], dim=3)
    padded_target = torch.cat([target, torch.full((1, 4, 4), -100)], dim=2)
    padded = focal_loss(padded_logits, padded_target, class_weighting=False)
    assert float(padded) == pytest.approx(float(full) / 2, rel=1e-6)


def test_absent_classes_keep_weight_one_and_total_includes_ignored():
    target = torch.tensor([[[0, 0, 1, -100]]])
    weights = class_weights(target, 4)
    expected = [1 / np.log(1.1 + 2 / 4), 1 / np.log(1.1 + 1 / 4), 1.0, 1.0]
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(
        pixel_weights(target, 4).numpy(), [[[expected[0], expected[0], expected[1], 0.0]]], rtol=1e-6
    )


def test_gamma_zero_is_cross_entropy():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 3, (2, 5, 6))
    loss = focal_loss(logits, target, gamma=0.0, class_weighting=False)
    expected = torch.nn.functional.cross_entropy(logits, target)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_bad_inputs_are_named():
    logits = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="logits must be"):
        focal_loss(torch.zeros(2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="target must be"):
        focal_loss(logits, torch.zeros(1, 4, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        focal_loss(logits, torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="class ids"):
        focal_loss(logits, torch.full((1, 3, 3), 2, dtype=torch.long))
    with pytest.raises(ValueError, match="n_classes"):
        class_weights(torch.zeros(1, 3, 3, dtype=torch.long), 0)
