"""Image and prompt preprocessing, exactly as the official Label Anything pipeline does it.

Two frames exist. ``custom`` (SAM checkpoints): resize the long side to S keeping the aspect
ratio, then zero-pad right/bottom to S x S. ``squash`` (MAE checkpoints): resize to S x S.
Everything here is NumPy/PIL plus ``torch.nn.functional.interpolate`` for the masks.

Microscopy images (any dtype, one channel) are first brought to 8-bit RGB by
``to_uint8_rgb``: a robust per-image (or per-stack) percentile stretch (docs/api.md, "Images and intensity").

Channels: ``select_channels`` is the one rule for which colour channels the model sees (all of
them, the default, or chosen ones: one channel becomes a grey image, several become their mean,
also grey), and ``signal_in_one_channel`` tells when a colour image holds (nearly) all its
signal in one channel, e.g. a DAPI image exported as RGB with only blue non-zero.
"""

from __future__ import annotations

import numpy as np

from .model.geometry import get_preprocess_shape_f32  # noqa: F401 - part of this module's API

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
PROMPT_MASK_SIDE = 256  # hard-coded in the official data pipeline
DEFAULT_PERCENTILES = (0.5, 99.5)
RANGE_SAMPLE = 4_000_000  # values read to find a stack's intensity range
PER_PLANE = "plane"  # a value_range meaning "this image's own percentiles", uint8 included
NORMALISE_MODES = ("auto", "stack", "plane")  # how the planes of a stack are normalised
DRIFT_SHARE = 0.15  # a plane whose levels move this share of the stack's range has drifted
DRIFT_PLANES = 32  # planes sampled to tell whether brightness drifts through a stack


CHANNEL_NAMES = ("red", "green", "blue", "alpha")
ONE_CHANNEL_RATIO = 0.25  # every other channel's spread at most this fraction of the top one's


def channel_label(channel: int, n_channels: int) -> str:
    """How a channel is named to the user: "2 (blue)" for RGB(A) images, "5" otherwise."""
    return f"{channel} ({CHANNEL_NAMES[channel]})" if n_channels in (3, 4) and channel < 4 else str(channel)


MAX_COLOUR_CHANNELS = 4  # a trailing axis of 3 or 4 is a colour axis (RGB, RGBA)


def check_channels(channels, n_channels: int) -> tuple[int, ...] | None:
    """``channels`` (None: all; an int; or a sequence of ints) as a sorted tuple of distinct
    channels in 0..n_channels-1, or None for all; ValueError naming a bad one."""
    if channels is None:
        return None
    values = (channels,) if np.isscalar(channels) else tuple(channels)
    if not values:
        raise ValueError("channels is empty: give at least one channel, or None for all")
    checked = []
    for c in values:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
            raise TypeError(f"a channel must be an integer, got {c!r}")
        if not 0 <= c < n_channels:
            raise ValueError(f"channel {c} does not exist: the image has {n_channels} channel(s), 0..{n_channels - 1}")
        checked.append(int(c))
    return tuple(sorted(set(checked)))


def select_channels(image, channels) -> np.ndarray:
    """The image the model sees when only ``channels`` of a (..., Y, X, C) colour image count.

    ``channels`` None keeps the image as it is (all channels: the model's own colour rule).
    One channel gives that channel as a grey (..., Y, X) image; several give their mean, also
    grey (the model then sees where any of them has signal, none diluted by the channels left
    out). The dtype is kept (an integer mean is rounded), so uint8 keeps its fixed 0..255 scale
    and other dtypes their percentile stretch. A lazy array (zarr, dask, ...) stays lazy: see
    ``ChannelSelection``.
    """
    if channels is None:
        return image
    shape = tuple(image.shape)
    if len(shape) < 3 or shape[-1] not in (3, MAX_COLOUR_CHANNELS):
        raise ValueError(f"channels apply to colour images (..., Y, X, 3 or 4); this one has shape {shape}")
    return pick_channels(image, channels)


def pick_channels(image, channels) -> np.ndarray:
    """``select_channels``' rule for a trailing channel axis of any length (e.g. the 2 or 6
    channels of a hyperstack that ``io.label_files.read_image`` returns as (..., Y, X, C)): one channel
    -> that grey (..., Y, X) image, several -> their mean, dtype kept; lazy arrays stay lazy.
    ``channels`` must be given (an int or a sequence of ints)."""
    if not isinstance(image, np.ndarray):
        return ChannelSelection(image, channels)
    chosen = check_channels(channels, image.shape[-1])
    if len(chosen) == 1:
        return image[..., chosen[0]]
    mean = image[..., list(chosen)].mean(axis=-1)
    if image.dtype.kind in "biu":
        mean = np.rint(mean)
    return mean.astype(image.dtype)


class ChannelSelection:
    """A lazy (..., Y, X) view of ``select_channels(stack, channels)``: a plane is read (all its
    channels) and reduced only when it is indexed, so a zarr or dask stack is never read whole."""

    def __init__(self, stack, channels) -> None:
        self.stack = stack
        self.channels = check_channels(channels, int(stack.shape[-1]))
        self.shape = tuple(int(s) for s in stack.shape[:-1])
        self.dtype = np.dtype(stack.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return select_channels(np.asarray(self.stack[(*key, slice(None))]), self.channels)

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype)


def signal_in_one_channel(image, ratio: float = ONE_CHANNEL_RATIO) -> int | None:
    """The channel of a (..., Y, X, C) colour image that holds (nearly) all its signal, or None.

    A channel's signal is its robust spread (99.5th minus 0.5th percentile, of a subsample for
    large images). When one channel's spread is positive and every other channel's is at most
    ``ratio`` times it (by default a quarter: camera noise in empty channels is tolerated), that
    channel is returned: mixing the channels (RGB to luminance, or an average) would dilute it.
    Alpha (the 4th of four channels) is ignored. A grey image (channels equal) gives None.
    """
    shape = tuple(image.shape)
    n = shape[-1] if len(shape) >= 3 else 0
    if n < 2:
        return None
    n = 3 if n == 4 else n
    step = max(1, int(np.prod(shape[:-1])) // RANGE_SAMPLE)
    if isinstance(image, np.ndarray):
        sample = image.reshape(-1, shape[-1])[::step, :n]
    else:  # lazy: sample whole planes along the first axis, as intensity_range does
        sample = np.stack([_intensity_sample(ChannelSelection(image, c)) for c in range(n)], axis=-1)
    sample = sample.astype(np.float64)
    spreads = np.array([np.subtract(*np.percentile(sample[:, c], (99.5, 0.5))) for c in range(n)])
    top = int(np.argmax(spreads))
    if not spreads[top] > 0:
        return None
    others = np.delete(spreads, top)
    return top if (others <= ratio * spreads[top]).all() else None


def get_preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) after resizing so that the long side is ``long_side`` (rounded half up)."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def model_frame_shape(height: int, width: int, side: int, custom: bool) -> tuple[int, int]:
    """Size of the resized (unpadded) image inside the S x S model input."""
    return get_preprocess_shape(height, width, side) if custom else (side, side)


def intensity_range(image, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> tuple[float, float]:
    """Robust (low, high) intensity of an image or stack, ignoring the extreme tails.

    Large arrays are subsampled (about ``RANGE_SAMPLE`` values) so a whole stack costs little.
    A lazy stack (zarr, dask, anything not a NumPy array) larger than that is sampled from
    evenly spaced planes along its first axis, so only those planes are read.
    """
    sample = _intensity_sample(image)
    if sample.dtype == np.bool_:  # NumPy cannot interpolate booleans
        sample = sample.astype(np.uint8)
    if sample.dtype.kind == "f":
        # Percentile interpolation overflows for values near the float limits: work on a scaled copy.
        scale = _overflow_scale(float(np.max(np.abs(sample))) if sample.size else 1.0)
        low, high = np.percentile(sample.astype(np.float64) / scale, percentiles) * scale
    else:
        low, high = np.percentile(sample, percentiles)
    return float(low), float(high)


def _overflow_scale(magnitude: float) -> float:
    """What to divide values of this magnitude by before subtracting them: 1 unless they come
    near the float64 limit, where a difference of two of them would overflow."""
    return magnitude if np.isfinite(magnitude) and magnitude > 1e300 else 1.0


def check_value_range(value_range) -> tuple[float, float] | str:
    """A user's ``value_range`` as (low, high) floats, or ``PER_PLANE``; ValueError unless two
    finite numbers with low < high."""
    if isinstance(value_range, str) and value_range == PER_PLANE:
        return PER_PLANE
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be two numbers (low, high), got {value_range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"value_range must be finite with low < high, got {value_range!r}")
    return low, high


def stack_value_range(stack) -> tuple[float, float] | None:
    """The one intensity range every plane of a stack shares (None: 8-bit, boolean or constant).

    ``predict_stack`` and ``embed_stack`` both use it, so precomputed features match predictions.
    """
    if np.dtype(stack.dtype) in (np.uint8, np.bool_):
        return None
    low, high = intensity_range(stack)
    return (low, high) if high > low else None  # constant, or NaN (refused per plane later)


def check_normalise(normalise: str) -> str:
    if normalise not in NORMALISE_MODES:
        raise ValueError(f"normalise must be one of {NORMALISE_MODES}, got {normalise!r}")
    return normalise


def _levels_sample(image) -> np.ndarray:
    """About 65,000 values of a 2D (Y, X[, C]) image, float64, 1D."""
    image = np.asarray(image)
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 65_536)))
    return image[::step, ::step].astype(np.float64).ravel()


def brightness_drifts(planes, share: float = DRIFT_SHARE) -> bool:
    """Whether the planes of a stack differ in brightness (bleaching, section thickness,
    illumination): some plane's median *and* 98th percentile both lie more than ``share`` of the
    stack's intensity range (0.5th..99.5th percentiles over the planes) from the planes' usual
    values (the median over planes of each), in the same direction.

    Args:
        planes: a sequence of 2D (Y, X[, C]) planes, e.g. evenly spaced planes of the stack
            (``stacks.sample_planes``); each is subsampled to about 65,000 values.

    A plane whose whole intensity distribution moved has drifted; one whose median moved alone
    (a plane with more or fewer objects, or another image of the same kind) has not, so its
    content is not stretched to look like the others'.
    """
    samples = [_levels_sample(plane) for plane in planes]
    if len(samples) < 2:
        return False
    low, high = np.percentile(np.concatenate(samples), DEFAULT_PERCENTILES)
    if not high > low:
        return False
    levels = np.array([np.percentile(s, (50, 98)) for s in samples])  # (planes, 2)
    shift = (levels - np.median(levels, axis=0)) / (high - low)
    moved = (np.abs(shift) > share).all(axis=1) & (np.sign(shift[:, 0]) == np.sign(shift[:, 1]))
    return bool(moved.any())


HIGHLIGHT_SHIFT = 0.25  # an image whose bright level moves this share of the supports' range differs
MIN_CONTENT = 0.1  # ... if its own range spans at least this share of theirs (else it is an empty field)


def highlights_move(supports, images, share: float = HIGHLIGHT_SHIFT) -> bool:
    """Whether some image's bright level (98th percentile) lies more than ``share`` of the
    supports' intensity range (0.5th..99.5th percentiles) from the supports': the same objects
    imaged at another exposure, gain or stain strength. On a dark background (fluorescence)
    that moves the highlights while the median stays where the background is, which
    ``brightness_drifts`` needs to move as well. Colour images are compared channel by channel
    (a stain or a white balance moves one channel more than the others). An image whose own
    range is under ``MIN_CONTENT`` of the supports' (an empty field, noise only) has not moved:
    stretching it would make its noise look like objects.

    Args:
        supports, images: sequences of 2D (Y, X[, C]) arrays.
    """
    supports, images = [np.asarray(s) for s in supports], [np.asarray(im) for im in images]
    colour = all(a.ndim == 3 and a.shape[-1] >= 3 for a in [*supports, *images])
    channels = [(lambda a, c=c: a[..., c]) for c in range(3)] if colour else [lambda a: a]
    for channel in channels:
        reference = np.concatenate([_levels_sample(channel(s)) for s in supports])
        low, high = np.percentile(reference, DEFAULT_PERCENTILES)
        if not high > low:
            continue
        level, span = np.percentile(reference, 98), high - low
        for image in images:  # moved, and holds more than noise: an empty field is not stretched to look full
            values = _levels_sample(channel(image))
            own_low, own_high = np.percentile(values, DEFAULT_PERCENTILES)
            if abs(np.percentile(values, 98) - level) > share * span and own_high - own_low > MIN_CONTENT * span:
                return True
    return False


def _intensity_sample(image) -> np.ndarray:
    """At most about ``RANGE_SAMPLE`` values of ``image`` (all of them when it is smaller), 1D."""
    if isinstance(image, np.ndarray) or not hasattr(image, "shape") or len(image.shape) < 3:
        flat = np.asarray(image).ravel()
        return flat[:: max(1, flat.size // RANGE_SAMPLE)]
    # A lazy stack is read plane by plane (all planes when small): never whole at once.
    size = int(np.prod(image.shape))
    n_planes = image.shape[0]
    per_plane = size // n_planes
    chosen = np.unique(np.linspace(0, n_planes - 1, min(n_planes, max(1, RANGE_SAMPLE // per_plane))).round())
    step = max(1, per_plane * len(chosen) // RANGE_SAMPLE)
    return np.concatenate([np.asarray(image[int(i)]).ravel()[::step] for i in chosen])


def normalise_image(image: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """(Y, X[, 3|4]) image of any real dtype -> (Y, X[, 3]) float32 in 0..1: the intensity rule.

    Every segmenter sees images through this one rule (``to_uint8_rgb`` quantises its result):
    uint8 is divided by 255 unless ``value_range`` is given; bool maps to 0/1; anything else
    maps ``value_range`` (default: this image's 0.5th..99.5th percentiles, over all channels)
    linearly to 0..1 and is clipped, so hot pixels do not set the contrast. ``PER_PLANE``
    takes this image's own percentiles whatever its dtype (a stack normalised plane by plane).
    A constant image becomes 0. Alpha is dropped.

    Args:
        image: (Y, X), (Y, X, 3) or (Y, X, 4) array of any real dtype, finite values.
        value_range: (low, high) mapped to 0..1; pass one range for every plane of a stack so
            all planes get the same contrast; or ``PER_PLANE``.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    if image.dtype == np.uint8 and value_range is None:
        return image.astype(np.float32) / np.float32(255.0)
    value_range = check_value_range(value_range) if value_range is not None else PER_PLANE
    low, high = intensity_range(image) if value_range == PER_PLANE else value_range
    if not high > low:
        return np.zeros(image.shape, np.float32)
    # float64; near the float limits (x - low) would overflow, so such ranges are scaled down first.
    magnitude = _overflow_scale(max(abs(low), abs(high)))
    low_s, high_s = low / magnitude, high / magnitude
    with np.errstate(over="ignore", invalid="ignore"):  # values far outside the range clip to 0 or 1
        scaled = ((image.astype(np.float64) / magnitude - low_s) * (1.0 / (high_s - low_s))).astype(np.float32)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def to_uint8_rgb(image: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Convert a 2D image to (H, W, 3) uint8 RGB, the model's input format.

    uint8 RGB is kept as it is (RGBA drops alpha; grayscale is replicated to three channels, as
    ``PIL.Image.convert("RGB")`` does); every other image goes through ``normalise_image`` and
    is rounded to 0..255.

    Args:
        image: (H, W), (H, W, 3) or (H, W, 4) array of any real dtype, finite values.
        value_range: see ``normalise_image``.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8 and value_range is None:
        out = image[..., :3] if image.ndim == 3 else image
    else:
        out = np.rint(normalise_image(image, value_range) * np.float32(255.0)).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    return np.ascontiguousarray(out)


def image_to_model_input(rgb: np.ndarray, side: int, custom: bool) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, S, S) float32 normalised (and zero-padded in custom mode).

    PIL bilinear resize (antialiased when shrinking), /255, ImageNet mean/std, as the
    official CustomResize/Resize + ToTensor + Normalize.
    """
    from PIL import Image

    h, w = rgb.shape[:2]
    new_h, new_w = model_frame_shape(h, w, side, custom)
    resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BILINEAR))
    tensor = resized.astype(np.float32) / np.float32(255.0)
    tensor = ((tensor - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    out = np.zeros((3, side, side), dtype=np.float32)
    out[:, :new_h, :new_w] = tensor
    return out


def transform_coords(xy: np.ndarray, original_hw: tuple[int, int], side: int, custom: bool) -> np.ndarray:
    """Map (..., 2) (x, y) pixel coordinates of the original image into the model frame."""
    old_h, old_w = original_hw
    new_h, new_w = model_frame_shape(old_h, old_w, side, custom)
    out = np.array(xy, dtype=np.float64, copy=True)
    out[..., 0] = out[..., 0] * (new_w / old_w)
    out[..., 1] = out[..., 1] * (new_h / old_h)
    return out


def transform_boxes(boxes: np.ndarray, original_hw: tuple[int, int], side: int, custom: bool) -> np.ndarray:
    """Map (N, 4) (x1, y1, x2, y2) boxes of the original image into the model frame."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return transform_coords(boxes.reshape(-1, 2, 2), original_hw, side, custom).reshape(boxes.shape)


def mask_to_prompt(mask: np.ndarray, side: int, custom: bool) -> np.ndarray:
    """(H, W) boolean mask -> (256, 256) float32 0/1 prompt mask.

    Custom mode: nearest resize to the model frame, zero-pad to S x S, nearest to 256 x 256.
    Squash mode: nearest straight to 256 x 256. "Nearest" is torch's legacy ``nearest``
    (source index = floor(dst * in / out)), which the official tensor resize uses.
    """
    import torch
    from torch.nn import functional as F

    mask_t = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    if custom:
        new_h, new_w = get_preprocess_shape(*mask.shape, side)
        mask_t = F.interpolate(mask_t, size=(new_h, new_w), mode="nearest")
        mask_t = F.pad(mask_t, (0, side - new_w, 0, side - new_h))
    mask_t = F.interpolate(mask_t, size=(PROMPT_MASK_SIDE, PROMPT_MASK_SIDE), mode="nearest")
    return mask_t[0, 0].numpy()
