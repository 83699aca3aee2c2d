"""A procedural dataset of textured shapes on varied backgrounds, for tests and quick experiments.

Every class is one combination of three appearance cues: a shape kind, a texture (flat or
stripes/checks of a given orientation) and an intensity level. The cue counts (4 shapes,
5 textures, 3 levels) are pairwise coprime, so class ``k`` takes cue ``(k - 1) % count`` of each
and the first 60 classes are all distinct (Chinese remainder theorem) while neighbouring ids
differ in every cue. A model that learned "segment what looks like the prompted object" can
therefore segment a class it never saw in training, which is what held-out-class tests need.

Nothing is stored: sample ``i`` is rebuilt from a generator seeded with ``(seed, i)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .base import Instance, Sample, build_index

SHAPES = ("ellipse", "rectangle", "triangle", "star")
TEXTURES = ("flat", "stripes 0", "stripes 90", "stripes 45", "checks")
# Far from the background band (about 0.37..0.68) even with the texture's +-0.08 swing.
LEVELS = (0.06, 0.22, 0.9)
MAX_CLASSES = len(SHAPES) * len(TEXTURES) * len(LEVELS)

TEXTURE_AMPLITUDE = 0.08
TEXTURE_PERIOD = 7.0  # pixels; jittered per object
# Occluded secondary objects with fewer visible pixels than this are removed from the scene.
MIN_VISIBLE = 12


def class_cues(class_id: int) -> tuple[str, str, float]:
    """(shape kind, texture kind, intensity level) of a global class id in 1..MAX_CLASSES."""
    k = class_id - 1
    return SHAPES[k % len(SHAPES)], TEXTURES[k % len(TEXTURES)], LEVELS[k % len(LEVELS)]


@dataclass(frozen=True)
class _Object:
    class_id: int
    cy: float
    cx: float
    radius: float  # every shape fits in the circle of this radius around (cy, cx)
    angle: float
    aspect: float
    period: float
    texture_angle: float
    phase: float
    anchor: bool  # one per class, never overlapping another anchor: the class stays visible


@dataclass(frozen=True)
class _Scene:
    base: float
    gradient: tuple[float, float]  # (dy, dx) change over the whole image
    waves: tuple[tuple[float, float, float, float], ...]  # (amplitude, ky, kx, phase)
    noise: float
    objects: tuple[_Object, ...]  # in painting order: later ones cover earlier ones


class SyntheticDataset:
    """Deterministic synthetic samples: (size, size) uint8 images, int64 labels.

    Args:
        n_samples: number of samples (indices 0..n_samples-1).
        n_classes: classes 1..n_classes (at most ``MAX_CLASSES`` = 60), named "class k".
        size: image side in pixels (>= 32).
        depth: number of planes of ``stack(i)`` (z-stacks); ``__getitem__`` is always 2D.
        seed: base seed; sample ``i`` uses ``np.random.default_rng((seed, i))``.

    Each image holds 1-4 classes with 1-3 instances each; instances may touch or overlap
    (the later one covers the earlier one; instance masks are the visible parts).
    """

    augment = False

    def __init__(self, n_samples: int, n_classes: int = 12, size: int = 96, depth: int | None = None, seed: int = 0):
        for name, value, low in (("n_samples", n_samples, 1), ("n_classes", n_classes, 1), ("size", size, 32)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"SyntheticDataset {name}={value!r}: must be an integer >= {low}")
        if n_classes > MAX_CLASSES:
            raise ValueError(f"SyntheticDataset n_classes={n_classes}: at most {MAX_CLASSES} distinct classes")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1):
            raise ValueError(f"SyntheticDataset depth={depth!r}: must be None or an integer >= 1")
        self.n_samples = int(n_samples)
        self.n_classes = int(n_classes)
        self.size = int(size)
        self.depth = None if depth is None else int(depth)
        self.seed = int(seed)
        self.classes = {k: f"class {k}" for k in range(1, self.n_classes + 1)}

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        return (
            f"SyntheticDataset(n_samples={self.n_samples}, n_classes={self.n_classes}, size={self.size}, "
            f"depth={self.depth}, seed={self.seed})"
        )

    @functools.cached_property
    def index(self) -> dict[int, list[int]]:
        """class id -> sample indices; from the scene plans alone (no rendering), since every
        planned class keeps a fully visible anchor object."""
        return build_index([{o.class_id for o in self._scene(i).objects} for i in range(self.n_samples)])

    def _check_index(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"SyntheticDataset index {i!r}: must be an integer")
        if not -self.n_samples <= i < self.n_samples:
            raise IndexError(f"SyntheticDataset index {i} out of range for {self.n_samples} samples")
        return int(i) % self.n_samples

    def _scene(self, i: int) -> _Scene:
        rng = np.random.default_rng((self.seed, i))
        size = self.size
        n_present = int(rng.integers(1, min(4, self.n_classes) + 1))
        present = rng.choice(np.arange(1, self.n_classes + 1), size=n_present, replace=False)
        anchors: list[_Object] = []
        extras: list[_Object] = []
        for class_id in present:
            count = int(rng.integers(1, 4))
            for j in range(count):
                radius = float(rng.uniform(0.08, 0.17) * size)
                if j == 0:
                    centre = _free_centre(rng, radius, anchors, size)
                    if centre is None:
                        radius = 0.08 * size
                        centre = _free_centre(rng, radius, anchors, size)
                    if centre is None:  # no room left for this class: leave it out of the image
                        break
                else:
                    centre = tuple(rng.uniform(0, size - 1, 2))
                obj = _Object(
                    class_id=int(class_id),
                    cy=float(centre[0]),
                    cx=float(centre[1]),
                    radius=radius,
                    angle=float(rng.uniform(0, 2 * np.pi)),
                    aspect=float(rng.uniform(0.5, 1.0)),
                    period=float(TEXTURE_PERIOD * rng.uniform(0.85, 1.15)),
                    texture_angle=float(np.deg2rad(rng.uniform(-8, 8))),
                    phase=float(rng.uniform(0, 2 * np.pi)),
                    anchor=j == 0,
                )
                (anchors if j == 0 else extras).append(obj)
        waves = tuple(
            (
                float(rng.uniform(0, 0.02)),
                float(rng.uniform(-1, 1) * 2 * np.pi / (size / 1.5)),
                float(rng.uniform(-1, 1) * 2 * np.pi / (size / 1.5)),
                float(rng.uniform(0, 2 * np.pi)),
            )
            for _ in range(int(rng.integers(0, 3)))
        )
        gradient_angle = rng.uniform(0, 2 * np.pi)
        gradient = float(rng.uniform(0, 0.08))
        return _Scene(
            base=float(rng.uniform(0.47, 0.58)),
            gradient=(gradient * float(np.sin(gradient_angle)), gradient * float(np.cos(gradient_angle))),
            waves=waves,
            noise=float(rng.uniform(0.005, 0.035)),
            # Anchors last so nothing covers them (they never overlap each other).
            objects=tuple(extras) + tuple(anchors),
        )

    @functools.cached_property
    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        axis = np.arange(self.size, dtype=np.float32)
        return axis[:, None], axis[None, :]

    def _background(self, scene: _Scene) -> np.ndarray:
        yy, xx = self._grid
        centred_y, centred_x = yy / self.size - 0.5, xx / self.size - 0.5
        background = scene.base + scene.gradient[0] * centred_y + scene.gradient[1] * centred_x
        for amplitude, ky, kx, phase in scene.waves:
            background = background + amplitude * np.sin(ky * yy + kx * xx + phase)
        return np.broadcast_to(background, (self.size, self.size)).astype(np.float32)

    def _render(self, scene: _Scene, objects: list[_Object], noise_rng: np.random.Generator):
        """Paint ``objects`` (in order) over the scene's background.

        Returns (image (Y, X) uint8, labels (Y, X) int64, instances).
        """
        size = self.size
        image = self._background(scene)
        owner = np.full((size, size), -1, dtype=np.int64)
        drawn: list[tuple[_Object, tuple[slice, slice], np.ndarray, np.ndarray]] = []
        for obj in objects:
            window, mask, values = self._draw(obj)
            if mask.any():
                owner[window][mask] = len(drawn)
                drawn.append((obj, window, mask, values))
        visible = np.bincount(owner[owner >= 0], minlength=len(drawn))
        # Small leftovers of covered objects make useless prompts: repaint without them (removing
        # objects only uncovers the others, so one more pass is enough).
        keep = [k for k, (obj, *_) in enumerate(drawn) if obj.anchor or visible[k] >= MIN_VISIBLE]
        if len(keep) < len(drawn):
            owner[:] = -1
            drawn = [drawn[k] for k in keep]
            for k, (_, window, mask, _) in enumerate(drawn):
                owner[window][mask] = k
        labels = np.zeros((size, size), dtype=np.int64)
        instances: list[Instance] = []
        for k, (obj, window, _mask, values) in enumerate(drawn):
            own = owner[window] == k
            if not own.any():
                continue
            image[window][own] = values[own]
            labels[window][own] = obj.class_id
            full = np.zeros((size, size), dtype=bool)
            full[window] = own
            instances.append(Instance(obj.class_id, full))
        image += noise_rng.normal(0.0, scene.noise, image.shape).astype(np.float32)
        np.clip(image, 0.0, 1.0, out=image)
        # uint8 keeps the absolute intensity cue: the intensity rule maps uint8 by /255, while a
        # float image would be stretched to its own percentiles.
        return np.rint(image * 255).astype(np.uint8), labels, instances

    def _draw(self, obj: _Object):
        """The object's bounding window, its (h, w) bool mask and textured values there."""
        size = self.size
        reach = int(np.ceil(obj.radius)) + 1
        y0, y1 = max(0, int(obj.cy) - reach), min(size, int(obj.cy) + reach + 2)
        x0, x1 = max(0, int(obj.cx) - reach), min(size, int(obj.cx) + reach + 2)
        window = (slice(y0, y1), slice(x0, x1))
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - obj.cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - obj.cx
        shape, texture, level = class_cues(obj.class_id)
        cos, sin = np.cos(obj.angle), np.sin(obj.angle)
        u = cos * dx + sin * dy
        v = -sin * dx + cos * dy
        r = obj.radius
        if shape == "ellipse":
            mask = (u / r) ** 2 + (v / (r * obj.aspect)) ** 2 <= 1.0
        elif shape == "rectangle":
            half_long = r / np.sqrt(1.0 + obj.aspect**2)
            mask = (np.abs(u) <= half_long) & (np.abs(v) <= half_long * obj.aspect)
        elif shape == "triangle":
            mask = np.ones(u.shape, dtype=bool)
            for k in range(3):
                edge = obj.angle + k * 2 * np.pi / 3
                mask &= np.cos(edge) * dx + np.sin(edge) * dy <= r / 2
        else:  # star: five points, the inner radius 30% of the outer one
            polar = np.arctan2(v, u)
            mask = np.hypot(u, v) <= r * (0.65 + 0.35 * np.cos(5 * polar))
        values = level + TEXTURE_AMPLITUDE * _texture(texture, dy, dx, obj)
        return window, mask, np.broadcast_to(values, mask.shape)

    def __getitem__(self, i: int) -> Sample:
        """Sample ``i``: image (size, size) uint8, labels (size, size) int64 ids 0..n_classes."""
        i = self._check_index(i)
        scene = self._scene(i)
        image, labels, instances = self._render(scene, list(scene.objects), np.random.default_rng((self.seed, i, 1)))
        return Sample(image=image, labels=labels, instances=instances, name=f"synthetic {i}")

    def stack(self, i: int, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A z-stack version of sample ``i``: objects grow and shrink like sections through
        3D bodies and drift slowly from plane to plane; the background is shared.

        Returns (image (Z, size, size) uint8, labels (Z, size, size) int64), with
        Z = ``depth`` or the dataset's ``depth``.
        """
        i = self._check_index(i)
        depth = self.depth if depth is None else depth
        if depth is None or isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
            raise ValueError(f"SyntheticDataset.stack needs depth >= 1 (here or in the constructor), got {depth!r}")
        scene = self._scene(i)
        rng = np.random.default_rng((self.seed, i, 2))
        n = len(scene.objects)
        centre_z = rng.uniform(0, depth - 1, n) if depth > 1 else np.zeros(n)
        half_thickness = rng.uniform(0.5, 1.0, n) * max(depth, 2)
        drift = rng.uniform(-0.4, 0.4, (n, 2))
        spin = rng.uniform(-0.03, 0.03, n)
        images = np.empty((depth, self.size, self.size), dtype=np.uint8)
        labels = np.empty((depth, self.size, self.size), dtype=np.int64)
        for z in range(depth):
            planned = []
            for k, obj in enumerate(scene.objects):
                offset = z - centre_z[k]
                scale = 1.0 - (offset / half_thickness[k]) ** 2
                if scale <= 0:
                    continue
                radius = obj.radius * float(np.sqrt(scale))
                if radius < 2.0:
                    continue
                planned.append(
                    _replace(
                        obj,
                        cy=obj.cy + drift[k, 0] * offset,
                        cx=obj.cx + drift[k, 1] * offset,
                        radius=radius,
                        angle=obj.angle + spin[k] * offset,
                    )
                )
            images[z], labels[z], _ = self._render(scene, planned, rng)
        return images, labels


def _replace(obj: _Object, **changes) -> _Object:
    from dataclasses import replace

    return replace(obj, **changes)


def _free_centre(rng: np.random.Generator, radius: float, placed: list[_Object], size: int):
    """A centre whose circle lies inside the image and touches no placed circle, or None."""
    for _ in range(30):
        centre = rng.uniform(radius, size - 1 - radius, 2)
        if all(np.hypot(centre[0] - o.cy, centre[1] - o.cx) >= radius + o.radius + 1 for o in placed):
            return centre
    return None


def _texture(kind: str, dy: np.ndarray, dx: np.ndarray, obj: _Object) -> np.ndarray | float:
    """Texture in [-1, 1] over the window (coordinates relative to the centre)."""
    if kind == "flat":
        return 0.0
    k = 2 * np.pi / obj.period
    if kind == "checks":
        cos, sin = np.cos(obj.texture_angle), np.sin(obj.texture_angle)
        return np.sign(np.sin(k * (cos * dx + sin * dy) + obj.phase) * np.sin(k * (-sin * dx + cos * dy)))
    orientation = {"stripes 0": 0.0, "stripes 90": np.pi / 2, "stripes 45": np.pi / 4}[kind] + obj.texture_angle
    # Stripes run along ``orientation``: intensity varies across it.
    return np.sin(k * (-np.sin(orientation) * dx + np.cos(orientation) * dy) + obj.phase)
