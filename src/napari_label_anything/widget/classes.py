"""The episode's classes as the widget edits them: names, colours, the active class.

Class k (1..N) is label value k in every layer; 0 is background. Removing class k renumbers
the classes above it, and the prompt layers follow (see ``PromptLayers.remove_class``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from psygnal import Signal

# Distinct, colour-blind-friendly colours (Okabe-Ito first); class k uses PALETTE[(k-1) % n].
PALETTE = (
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
    "#8dd3c7", "#fb8072", "#80b1d3", "#b3de69", "#fccde5", "#bebada", "#ffed6f",
)  # fmt: skip


@dataclass
class ClassInfo:
    name: str
    color: str  # "#rrggbb"


def default_color(k: int) -> str:
    return PALETTE[(k - 1) % len(PALETTE)]


def rgba(color: str) -> np.ndarray:
    """'#rrggbb' -> (4,) float RGBA in 0..1."""
    color = color.lstrip("#")
    return np.array([int(color[i : i + 2], 16) / 255 for i in (0, 2, 4)] + [1.0])


class ClassTable:
    """Ordered classes; emits ``changed`` on any edit and ``active_changed(k)``."""

    changed = Signal()
    active_changed = Signal(int)
    removed = Signal(int)  # the removed class id, before renumbering takes effect in layers

    def __init__(self, names: list[str] | None = None) -> None:
        self._classes: list[ClassInfo] = []
        self._active = 0
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
        return self._classes[k - 1].color

    @property
    def active(self) -> int:
        """The class new prompts get (1..N), 0 when there are no classes."""
        return self._active

    def set_active(self, k: int) -> None:
        if not self._classes:
            return
        k = (k - 1) % len(self._classes) + 1
        if k != self._active:
            self._active = k
            self.active_changed.emit(k)

    def add(self, name: str | None = None, color: str | None = None) -> int:
        k = len(self._classes) + 1
        name = (name or f"class {k}").strip()
        self._check_name(name)
        self._classes.append(ClassInfo(name, color or default_color(k)))
        self.changed.emit()
        self.set_active(k)
        return k

    def rename(self, k: int, name: str) -> None:
        name = name.strip()
        if name == self._classes[k - 1].name:
            return
        self._check_name(name)
        self._classes[k - 1].name = name
        self.changed.emit()

    def recolor(self, k: int, color: str) -> None:
        self._classes[k - 1].color = color
        self.changed.emit()

    def remove(self, k: int) -> None:
        self.removed.emit(k)
        del self._classes[k - 1]
        self.changed.emit()
        if self._active > len(self._classes) or self._active == k:
            self._active = 0
            self.set_active(min(k, len(self._classes)) if self._classes else 0)

    def reset(self, names: list[str], colors: list[str] | None = None) -> None:
        self._classes = [
            ClassInfo(n, (colors or [])[i] if colors else default_color(i + 1)) for i, n in enumerate(names)
        ]
        self._active = 0
        self.changed.emit()
        self.set_active(1)

    def _check_name(self, name: str) -> None:
        if not name:
            raise ValueError("a class name must not be empty")
        if name in self.names:
            raise ValueError(f"there is already a class named {name!r}")
