"""napari layers <-> the core: prompt layers of a support, collecting an Episode, writing results.

No Qt here: these functions work on a ``napari.Viewer`` and its layers only, so they are tested
without the dock widget. Conventions: a support's prompt layers have the image's shape (minus
colour) and its scale/translate; points and rectangles carry their class in
``features["class"]``; every plane of a stack that holds prompts becomes one support. A
background prompt carries ``BACKGROUND_PROMPT`` in all three layers (``class_table.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..episode import Episode, count_prompts
from ..labels import BACKGROUND, labels_dtype
from ..preprocessing import select_channels
from .class_table import BACKGROUND_PROMPT, ClassTable, rgba


def unwrapped(layer):
    """The layer itself: a plugin's viewer hands out napari's PublicOnlyProxy wrappers."""
    return getattr(layer, "__wrapped__", layer)


def same_layer(a, b) -> bool:
    """Whether ``a`` and ``b`` are the same layer (wrapped or not)."""
    return unwrapped(a) is unwrapped(b)


def spatial_shape(layer) -> tuple[int, ...]:
    """Shape of an image layer without its colour axis."""
    shape = tuple(layer.data.shape)
    return shape[:-1] if layer.rgb else shape


def colour_channels(layer) -> int:
    """Colour channels of an image layer the user can choose from: 3 for RGB and RGBA (alpha is
    not a signal), 0 for a grey layer (a multichannel image opened with ``channel_axis`` is one
    layer per channel: choosing the layer chooses the channel)."""
    return 3 if layer.rgb else 0


def model_data(layer, channels=None):
    """``(data, rgb)``: what the model gets from an image layer, query or support alike.

    The one channel rule of the widget: ``channels`` (None: all) applies to colour layers
    through ``preprocessing.select_channels`` (one channel -> grey, several -> their mean);
    a grey layer is used as it is. A lazy layer stays lazy.
    """
    if channels is None or not layer.rgb:
        return layer.data, layer.rgb
    return select_channels(layer.data, channels), False


def label_colormap(classes: ClassTable):
    from napari.utils.colormaps import DirectLabelColormap

    colors = {None: np.zeros(4), 0: np.zeros(4), BACKGROUND_PROMPT: rgba(classes.color_of(0))}
    colors.update({k: rgba(c) for k, c in enumerate(classes.colors, start=1)})
    return DirectLabelColormap(color_dict=colors)


@dataclass
class SupportLayers:
    """The prompt layers of one support image layer."""

    image: object
    labels: object
    points: object
    shapes: object
    owns_labels: bool = True
    query_too: bool = False  # a query layer whose corrected planes were added as supports

    @property
    def name(self) -> str:
        return self.image.name

    def layers(self) -> list:
        return [self.labels, self.points, self.shapes]

    def prompt_counts(self, n_classes: int) -> dict[str, np.ndarray]:
        """Painted pixels, points and boxes per class 0..N over all planes (0: background prompts)."""
        return prompt_counts(
            np.asarray(self.labels.data), _classes_of(self.points), _classes_of(self.shapes), n_classes
        )

    def recolor(self, classes: ClassTable) -> None:
        """Show every point/box in its class colour and the labels in the class colours."""
        self.labels.colormap = label_colormap(classes)
        for layer, attribute in ((self.points, "face_color"), (self.shapes, "edge_color")):
            values = _classes_of(layer)
            if len(values):
                known = lambda k: 1 <= k <= len(classes) or k == BACKGROUND_PROMPT  # noqa: E731
                colors = np.array([rgba(classes.color_of(int(k))) if known(k) else (0.5,) * 4 for k in values])
                setattr(layer, attribute, colors)

    def set_active_class(self, classes: ClassTable) -> None:
        k = classes.active_prompt_value
        if k is None:
            return
        self.labels.selected_label = k
        color = classes.color_of(k)
        for layer in (self.points, self.shapes):
            layer.feature_defaults["class"] = k
        self.points.current_face_color = color
        self.shapes.current_edge_color = color

    def remove_class(self, k: int) -> None:
        """Drop class k's prompts and renumber the classes above it (background prompts stay)."""
        data = np.asarray(self.labels.data)
        above = (data > k) & (data != BACKGROUND_PROMPT)
        data = np.where(data == k, 0, np.where(above, data - 1, data)).astype(data.dtype)
        self.labels.data = data
        for layer in (self.points, self.shapes):
            doomed = set(np.nonzero(_classes_of(layer) == k)[0].tolist())
            if doomed:
                layer.selected_data = doomed
                layer.remove_selected()
            values = _classes_of(layer)
            if len(values):
                layer.features["class"] = np.where((values > k) & (values != BACKGROUND_PROMPT), values - 1, values)


def prompt_counts(labels, point_classes, box_classes, n_classes: int) -> dict[str, np.ndarray]:
    """``episode.count_prompts`` with background prompts counted as class 0."""
    labels, point_classes, box_classes = (np.asarray(v) for v in (labels, point_classes, box_classes))
    counts = count_prompts(labels, point_classes, box_classes, n_classes)
    for key, values in (("pixels", labels), ("points", point_classes), ("boxes", box_classes)):
        counts[key][0] = int(np.count_nonzero(values == BACKGROUND_PROMPT))
    return counts


def has_background_prompts(supports: list[SupportLayers]) -> bool:
    return any(
        (np.asarray(s.labels.data) == BACKGROUND_PROMPT).any()
        or (_classes_of(s.points) == BACKGROUND_PROMPT).any()
        or (_classes_of(s.shapes) == BACKGROUND_PROMPT).any()
        for s in supports
    )


def _classes_of(layer) -> np.ndarray:
    if len(layer.data) == 0 or "class" not in layer.features:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(layer.features["class"], dtype=np.int64)


def create_support_layers(viewer, image_layer, classes: ClassTable, labels_layer=None) -> SupportLayers:
    """Add a Labels, a Points and a Shapes layer for prompting ``image_layer``.

    ``labels_layer``: an existing Labels layer of the same shape to use as mask prompts
    (it is not modified by the plugin except by the user's own painting).
    """
    shape = spatial_shape(image_layer)
    geometry = {"scale": image_layer.scale, "translate": image_layer.translate}
    owns_labels = labels_layer is None
    if labels_layer is None:
        labels_layer = viewer.add_labels(
            np.zeros(shape, dtype=labels_dtype(len(classes))), name=f"{image_layer.name} mask prompts", **geometry
        )
    elif tuple(labels_layer.data.shape) != shape:
        raise ValueError(
            f"labels layer {labels_layer.name!r} has shape {tuple(labels_layer.data.shape)}, "
            f"but image {image_layer.name!r} is {shape}"
        )
    ndim = len(shape)
    points = viewer.add_points(
        np.zeros((0, ndim)),
        name=f"{image_layer.name} point prompts",
        features={"class": np.zeros(0, dtype=np.int64)},
        size=max(3, min(shape[-2:]) // 60),
        border_width=0,
        **geometry,
    )
    shapes = viewer.add_shapes(
        None,
        ndim=ndim,
        name=f"{image_layer.name} box prompts",
        features={"class": np.zeros(0, dtype=np.int64)},
        face_color="transparent",
        edge_width=max(1, min(shape[-2:]) // 200),
        **geometry,
    )
    support = SupportLayers(image_layer, labels_layer, points, shapes, owns_labels)
    support.recolor(classes)
    support.set_active_class(classes)
    for layer in (points, shapes):

        def on_data(event=None, support=support):
            support.recolor(classes)

        layer.events.data.connect(on_data)
    viewer.layers.selection.active = labels_layer
    return support


def _plane_of(coords: np.ndarray, ndim: int) -> tuple[int, ...]:
    return tuple(int(round(c)) for c in coords[: ndim - 2])


def supports_to_episode(
    supports: list[SupportLayers],
    classes: ClassTable,
    model: str | None = None,
    background: bool = True,
    channels=None,
) -> Episode:
    """Build an Episode: one support per (image layer, plane) that carries prompts.

    Background prompts become one more class, named "background", after the N classes: the
    core's way to say "these pixels are background" (the 'classic' model maps that class to
    label 0, and ``background_class_value`` tells the widget to do so for any model).
    ``background=False`` leaves background prompts out. Boxes are clipped to the image;
    points keep their coordinates (Episode rejects points outside the image, naming them).
    ``channels``: the colour channels the model sees (``model_data``; None: all), also recorded
    as ``Episode.channels`` so a saved episode reduces colour queries the same way.
    """
    background = background and has_background_prompts(supports)
    n = len(classes)
    episode = Episode(
        classes.names + ([BACKGROUND] if background else []), model=model, channels=channels,
        colors=dict(zip(classes.names, classes.colors, strict=True)),  # saved with the episode
    )  # fmt: skip

    def as_class(values: np.ndarray) -> np.ndarray:
        return np.where(values == BACKGROUND_PROMPT, n + 1 if background else 0, values)

    for support in supports:
        image = np.asarray(model_data(support.image, channels)[0])
        shape = spatial_shape(support.image)
        ndim = len(shape)
        labels = as_class(np.asarray(support.labels.data)).astype(labels_dtype(n + 1))
        point_classes, box_classes = as_class(_classes_of(support.points)), as_class(_classes_of(support.shapes))
        per_plane: dict[tuple[int, ...], dict[str, list]] = {}
        if ndim == 2:
            if labels.any():
                per_plane.setdefault((), {"points": [], "boxes": []})
        else:
            flat = labels.reshape(-1, *shape[-2:])
            for i in np.nonzero(flat.reshape(flat.shape[0], -1).any(axis=1))[0]:
                per_plane.setdefault(tuple(np.unravel_index(i, shape[:-2])), {"points": [], "boxes": []})
        for coords, k in zip(np.asarray(support.points.data), point_classes, strict=True):
            if not k:  # a background prompt left out
                continue
            entry = per_plane.setdefault(_plane_of(coords, ndim), {"points": [], "boxes": []})
            entry["points"].append((coords[-2], coords[-1], int(k)))
        for vertices, k in zip(support.shapes.data, box_classes, strict=True):
            if not k:
                continue
            vertices = np.asarray(vertices)
            lo, hi = vertices[:, -2:].min(0), vertices[:, -2:].max(0)
            lo, hi = np.clip(lo, 0, shape[-2:]), np.clip(hi, 0, shape[-2:])
            entry = per_plane.setdefault(_plane_of(vertices[0], ndim), {"points": [], "boxes": []})
            entry["boxes"].append((lo[0], lo[1], hi[0], hi[1], int(k)))
        for plane, prompts in sorted(per_plane.items()):
            plane_labels = labels[plane] if plane else labels
            name = support.name + (f" [{', '.join(map(str, plane))}]" if plane else "")
            episode.add_support(
                image,  # with plane, so the support keeps its neighbouring planes as context
                plane=plane or None,
                labels=plane_labels if plane_labels.any() else None,
                points=prompts["points"] or None,
                boxes=prompts["boxes"] or None,
                name=name,
            )
    return episode


def background_class_value(episode: Episode, classes: ClassTable) -> int | None:
    """The label value of the background class ``supports_to_episode`` added, or None."""
    return len(classes) + 1 if episode.n_classes == len(classes) + 1 else None
