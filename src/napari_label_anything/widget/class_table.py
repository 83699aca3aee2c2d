"""The episode's classes as the widget edits them: names, colours, the active class.

Row 0 is the built-in background: label value 0 in the output, never renamed or removed, and
no user class may be called "background" (a model such as 'classic' would merge it into 0).
Class k (1..N) is label value k in every layer. In prompt layers 0 means "not prompted", so a
background scribble is stored as ``BACKGROUND_PROMPT`` (255, which every label dtype holds);
``layer_conversion.supports_to_episode`` turns it into the model's background. Removing class k
renumbers the classes above it, and the prompt layers follow (``SupportLayers.remove_class``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from psygnal import Signal

from ..labels import (  # noqa: F401 - re-exported: their home is labels.py
    BACKGROUND_COLOR,
    BACKGROUND_PROMPT,
    PALETTE,
    default_color,
    is_background_name,
)

MAX_CLASSES = BACKGROUND_PROMPT - 1  # the prompt value of background stays free


@dataclass
class ClassInfo:
    name: str
    color: str  # "#rrggbb"


def rgba(color: str) -> np.ndarray:
    """'#rrggbb' -> (4,) float RGBA in 0..1."""
    color = color.lstrip("#")
    return np.array([int(color[i : i + 2], 16) / 255 for i in (0, 2, 4)] + [1.0])


class ClassTable:
    """Row 0 (background) and the ordered classes 1..N; emits ``changed`` on any edit and
    ``active_changed(k)``. Row 0 can be the active row only while ``background_paintable``."""

    changed = Signal()
    active_changed = Signal(int)
    removed = Signal(int)  # the removed class id, before renumbering takes effect in layers

    def __init__(self, names: list[str] | None = None) -> None:
        self._classes: list[ClassInfo] = []
        self._active = 0
        self._background_paintable = True
        for name in names or []:
            self.add(name)

    def __len__(self) -> int:
        return len(self._classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._classes]

    @property
    def colors(self) -> list[str]:
        return [c.color for c in self._classes]

    def color_of(self, k: int) -> str:
        return BACKGROUND_COLOR if k in (0, BACKGROUND_PROMPT) else self._classes[k - 1].color

    @property
    def background_paintable(self) -> bool:
        """Whether the model takes background prompts, so that row 0 can be painted."""
        return self._background_paintable

    @background_paintable.setter
    def background_paintable(self, paintable: bool) -> None:
        if paintable == self._background_paintable:
            return
        self._background_paintable = paintable
        self.changed.emit()
        if not paintable and self._active == 0:
            self.set_active(1)

    @property
    def active(self) -> int:
        """The row new prompts get: 1..N a class, 0 the background (or no class at all)."""
        return self._active

    @property
    def active_prompt_value(self) -> int | None:
        """The value a prompt of the active row carries, None when nothing can be painted."""
        if self._active:
            return self._active
        return BACKGROUND_PROMPT if self._background_paintable else None

    def set_active(self, k: int) -> None:
        """Make row ``k`` active; values past either end wrap around (Alt-N / Alt-P)."""
        first = 0 if self._background_paintable else 1
        count = len(self._classes) + 1 - first
        if count <= 0:
            return
        k = (k - first) % count + first
        if k != self._active:
            self._active = k
            self.active_changed.emit(k)

    def add(self, name: str | None = None, color: str | None = None) -> int:
        k = len(self._classes) + 1
        if k > MAX_CLASSES:
            raise ValueError(f"at most {MAX_CLASSES} classes")
        name = (name or f"class {k}").strip()
        self._check_name(name)
        self._classes.append(ClassInfo(name, color or default_color(k)))
        self.changed.emit()
        self.set_active(k)
        return k

    def rename(self, k: int, name: str) -> None:
        if k == 0:
            raise ValueError("the background row is built in: it cannot be renamed")
        name = name.strip()
        if name == self._classes[k - 1].name:
            return
        self._check_name(name)
        self._classes[k - 1].name = name
        self.changed.emit()

    def recolor(self, k: int, color: str) -> None:
        if k == 0:
            raise ValueError("the background row is built in: its prompts are always grey")
        self._classes[k - 1].color = color
        self.changed.emit()

    def remove(self, k: int) -> None:
        if k == 0:
            raise ValueError("the background row is built in: it cannot be removed")
        self.removed.emit(k)
        del self._classes[k - 1]
        self.changed.emit()
        active = self._active
        self._active = -1  # none, so that the next set_active always tells the layers
        self.set_active(active - 1 if active > k else min(active, len(self._classes)))

    def insert(self, k: int, name: str, color: str) -> None:
        """Put a class back as class ``k`` (the classes from k on move up by one): undo of remove."""
        self._check_name(name.strip())
        self._classes.insert(k - 1, ClassInfo(name.strip(), color))
        self.changed.emit()
        self._active = -1
        self.set_active(k)

    def reset(self, names: list[str], colors: list[str] | None = None) -> None:
        self._classes = [
            ClassInfo(n, (colors or [])[i] if colors else default_color(i + 1)) for i, n in enumerate(names)
        ]
        self._active = -1
        self.changed.emit()
        self.set_active(1)

    def _check_name(self, name: str) -> None:
        if not name:
            raise ValueError("a class name must not be empty")
        if name in self.names:
            raise ValueError(f"there is already a class named {name!r}")
        if is_background_name(name):
            raise ValueError(
                f"{name!r} is the built-in first row (label 0): select that row to paint background; "
                "give your class another name (e.g. 'background tissue')"
            )
