"""The napari plugin: the dock widget and the layer helpers it uses (imports napari and Qt)."""

from .dock import LabelAnythingWidget

__all__ = ["LabelAnythingWidget"]
