"""The dock's Objects panel: the query's result split into objects, measured, shown as a table.

``ObjectsPanel`` is the dock's part (its host described by ``ObjectsHost``). *Split into objects* takes the output
layer of the query (``"<query> labels"``), splits it with ``objects.split_objects`` (connected
components, touching objects split by a watershed when ticked) into a ``"<query> objects"``
Labels layer, and measures them (``objects.measure_objects``: class, area or volume, mean
intensity of the query, centroid, box). The table shows in its own dock (``ObjectsTable``, a
``QTableWidget``) with *Save CSV…* (``objects.write_measurements``). Splitting again updates
both. The output layer itself is never changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..labels import CLASSES_KEY
from ..objects import DEFAULT_MIN_DISTANCE
from .layer_conversion import spatial_shape
from .output_layers import find_output_layer, write_objects


def _cell(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class ObjectsTable(QWidget):
    """A measurements table (``objects.measure_objects``) with *Save CSV…*, for a napari dock."""

    def __init__(self) -> None:
        super().__init__()
        self.table: dict[str, np.ndarray] = {}
        self.query_name = ""
        layout = QVBoxLayout(self)
        self.title = QLabel("")
        self.grid = QTableWidget()
        self.grid.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.grid.setSortingEnabled(False)
        self.grid.setToolTip("One row per object of the objects layer (its label value in the first column)")
        self.save_button = QPushButton("Save CSV…")
        self.save_button.setToolTip("Save this table as a CSV file (one row per object), e.g. for a spreadsheet")
        self.save_button.clicked.connect(self._save_dialog)
        layout.addWidget(self.title)
        layout.addWidget(self.grid)
        layout.addWidget(self.save_button)

    def set_table(self, table: dict[str, np.ndarray], query_name: str) -> None:
        """Show ``table`` (columns of equal length) for the objects of ``query_name``."""
        self.table, self.query_name = table, query_name
        columns = list(table)
        rows = len(next(iter(table.values()))) if table else 0
        self.grid.clear()
        self.grid.setColumnCount(len(columns))
        self.grid.setRowCount(rows)
        self.grid.setHorizontalHeaderLabels(columns)
        for c, name in enumerate(columns):
            for r, value in enumerate(np.asarray(table[name]).tolist()):
                self.grid.setItem(r, c, QTableWidgetItem(_cell(value)))
        self.grid.resizeColumnsToContents()
        self.title.setText(f"{rows} object(s) of {query_name!r}")

    def save_csv(self, path: str | Path) -> Path:
        """Write the table shown as CSV (``objects.write_measurements``, atomic)."""
        from ..objects import write_measurements

        if not self.table:
            raise ValueError("no objects measured yet: press 'Split into objects' first")
        return write_measurements(self.table, path)

    def _save_dialog(self) -> None:
        from .reporting import notify

        default = f"{self.query_name or 'objects'}_objects.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Save measurements", default, "CSV (*.csv)")
        if path:
            try:
                self.save_csv(path)
            except Exception as err:  # noqa: BLE001 - the UI boundary: one notification
                notify("error", f"cannot save the table: {err}")


class ObjectsHost(Protocol):
    """What ``ObjectsPanel`` uses of the dock."""

    viewer: Any
    classes: Any
    status: Any  # the status line (a QLabel)

    def guard(self, action: Callable[[], Any], what: str) -> Any: ...

    def chosen_query(self) -> Any: ...


class ObjectsPanel:
    """The Objects panel of the dock."""

    def __init__(self, host: ObjectsHost) -> None:
        self.host = host

    def build(self) -> QGroupBox:
        self.objects_table: ObjectsTable | None = None
        self._objects_dock = None
        box = QGroupBox("Objects")
        layout = QVBoxLayout(box)
        self.watershed_check = QCheckBox("split touching objects")
        self.watershed_check.setChecked(True)
        self.watershed_check.setToolTip(
            "Cut objects of one class that touch apart where they narrow (a watershed of the distance\n"
            "to their edge); unticked, each connected patch of a class is one object"
        )
        self.min_distance_spin = QSpinBox()
        self.min_distance_spin.setRange(1, 1000)
        self.min_distance_spin.setValue(DEFAULT_MIN_DISTANCE)
        self.min_distance_spin.setSuffix(" px")
        self.min_distance_spin.setToolTip(
            "The least distance between the centres of two touching objects that are cut apart:\n"
            "raise it when single objects are cut in pieces, lower it when touching ones stay joined"
        )
        row = QHBoxLayout()
        row.addWidget(self.watershed_check)
        row.addWidget(QLabel("min distance"))
        row.addWidget(self.min_distance_spin)
        layout.addLayout(row)
        buttons = QHBoxLayout()
        self.objects_button = QPushButton("Split into objects")
        self.objects_button.setToolTip(
            "Number every object of the query's result ('<image> labels') in a new '<image> objects'\n"
            "layer and measure each one (class, size, mean intensity, centroid, box) in a table"
        )
        self.objects_button.clicked.connect(lambda: self.host.guard(self.split_objects, "cannot split into objects"))
        self.objects_save_button = QPushButton("Save CSV…")
        self.objects_save_button.setToolTip("Save the objects table as a CSV file")
        self.objects_save_button.setEnabled(False)
        self.objects_save_button.clicked.connect(lambda: self.objects_table and self.objects_table._save_dialog())
        buttons.addWidget(self.objects_button)
        buttons.addWidget(self.objects_save_button)
        layout.addLayout(buttons)
        return box

    def split_objects(self, query_layer=None, watershed: bool | None = None, min_distance: int | None = None):
        """Split the output of ``query_layer`` (default: the chosen query) into ``"<query> objects"``
        and show its measurements; returns (the objects layer, the table).

        ``watershed`` and ``min_distance`` default to the panel's choices (``objects.split_objects``).
        Raises ValueError before any run of that query.
        """
        from ..objects import measure_objects
        from ..objects import split_objects as split

        query_layer = query_layer or self.host.chosen_query()
        output = find_output_layer(self.host.viewer, query_layer)
        if output is None or tuple(output.data.shape) != spatial_shape(query_layer):
            raise ValueError(f"run {query_layer.name!r} first: it has no output labels to split")
        labels = np.asarray(output.data)
        watershed = self.watershed_check.isChecked() if watershed is None else bool(watershed)
        min_distance = self.min_distance_spin.value() if min_distance is None else int(min_distance)
        spacing = tuple(float(s) for s in query_layer.scale[-labels.ndim :]) if labels.ndim in (2, 3) else None
        instances = split(labels, watershed=watershed, min_distance=min_distance, spacing=spacing)
        names = output.metadata.get(CLASSES_KEY) or dict(enumerate(self.host.classes.names, start=1))
        intensity = np.asarray(query_layer.data[0] if query_layer.multiscale else query_layer.data)
        table = measure_objects(instances, labels, intensity, {int(k): v for k, v in names.items()})
        layer = write_objects(self.host.viewer, query_layer, instances)
        self._show_objects_table(table, query_layer.name)
        self.host.status.setText(f"{len(table['label'])} object(s) in {layer.name!r}; the table is in its own panel")
        return layer, table

    def save_objects_csv(self, path: str | Path) -> Path:
        """Save the objects table shown as CSV; returns the path."""
        if self.objects_table is None:
            raise ValueError("no objects measured yet: press 'Split into objects' first")
        path = self.objects_table.save_csv(path)
        self.host.status.setText(f"saved the objects table to {path}")
        return path

    def _show_objects_table(self, table: dict[str, np.ndarray], query_name: str) -> None:
        if self.objects_table is None or self._objects_dock is None or not _alive(self._objects_dock):
            self.objects_table = ObjectsTable()
            self._objects_dock = self.host.viewer.window.add_dock_widget(
                self.objects_table, name="Objects table", area="right", tabify=False
            )
        self.objects_table.set_table(table, query_name)
        self._objects_dock.show()
        self.objects_save_button.setEnabled(True)


def _alive(dock) -> bool:
    """Whether a dock widget still exists (napari deletes a dock closed with its ×)."""
    try:
        dock.objectName()
        return dock.parent() is not None
    except RuntimeError:  # wrapped C/C++ object has been deleted
        return False
