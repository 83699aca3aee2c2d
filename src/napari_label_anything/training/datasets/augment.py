"""Training augmentations suited to microscopy: orientation-free geometry and intensity jitter.

Geometric changes (flips, 90-degree rotations) are exact pixel permutations, applied alike to
the image, the labels and every instance mask, so annotations stay aligned and object areas are
preserved. Intensity changes act on the image after the package's intensity rule
(``preprocessing.normalise_image``), so they mean the same for uint8, uint16 or float data.

The result is uint8: the model only ever sees ``to_uint8_rgb`` of an image, which keeps uint8 as
it is but stretches any float image to its own percentiles, and that stretch would undo the
brightness/contrast jitter.
"""

from __future__ import annotations

import numpy as np

from .base import Instance, Sample

FLIP_PROBABILITY = 0.5
CONTRAST_RANGE = (0.75, 1.25)  # multiplies the normalised image
BRIGHTNESS_RANGE = (-0.1, 0.1)  # added to the normalised image
GAMMA_LOG_RANGE = (np.log(0.7), np.log(1.4))  # gamma drawn log-uniformly: darker and brighter alike
INTENSITY_PROBABILITY = 0.8
NOISE_PROBABILITY = 0.5
NOISE_SIGMA_MAX = 0.04


def augment(sample: Sample, rng: np.random.Generator) -> Sample:
    """A randomly flipped, rotated, intensity-jittered and noisier copy of ``sample``.

    Args:
        sample: image (Y, X) or (Y, X, 3|4) of any real dtype, labels (Y, X) int64, instances
            with (Y, X) bool masks.
        rng: the only source of randomness; the same generator state gives the same result, and
            every call draws the same number of values whatever it decides, so what follows in a
            shared generator does not depend on these decisions.

    Returns:
        A new Sample: image (Y', X') or (Y', X', 3) uint8, labels (Y', X') int64 and instance
        masks (Y', X') bool, where (Y', X') is (X, Y) after an odd number of quarter turns.
        Class ids, instance order, instance areas and the name are kept; the input is unchanged.
    """
    from ...preprocessing import normalise_image

    image = np.asarray(sample.image)
    labels = np.asarray(sample.labels)
    if image.shape[:2] != labels.shape or labels.ndim != 2:
        raise ValueError(
            f"augment: image shape {image.shape} and labels shape {labels.shape} differ in (Y, X) "
            f"(labels must be 2D and match the image)"
        )

    flip_y, flip_x = rng.random(2) < FLIP_PROBABILITY
    quarter_turns = int(rng.integers(0, 4))
    do_intensity = rng.random() < INTENSITY_PROBABILITY
    contrast = rng.uniform(*CONTRAST_RANGE)
    brightness = rng.uniform(*BRIGHTNESS_RANGE)
    gamma = float(np.exp(rng.uniform(*GAMMA_LOG_RANGE)))
    do_noise = rng.random() < NOISE_PROBABILITY
    sigma = rng.uniform(0.0, NOISE_SIGMA_MAX)
    noise_seed = int(rng.integers(0, 2**63))

    def geometric(array: np.ndarray) -> np.ndarray:
        if flip_y:
            array = array[::-1]
        if flip_x:
            array = array[:, ::-1]
        return np.ascontiguousarray(np.rot90(array, quarter_turns, axes=(0, 1)))

    values = normalise_image(image)
    if do_intensity:
        # gamma first, on 0..1, where it is defined; then a linear brightness/contrast change
        values = np.power(values, np.float32(gamma), dtype=np.float32)
        values = (values - 0.5) * np.float32(contrast) + np.float32(0.5 + brightness)
    if do_noise:
        values = values + np.random.default_rng(noise_seed).normal(0.0, sigma, values.shape).astype(np.float32)
    values = np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)

    return Sample(
        image=geometric(values),
        labels=geometric(labels.astype(np.int64, copy=False)),
        instances=[Instance(inst.class_id, geometric(np.asarray(inst.mask, dtype=bool))) for inst in sample.instances],
        name=sample.name,
    )
