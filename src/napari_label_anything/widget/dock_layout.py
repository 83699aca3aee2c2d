"""Where the dock's controls go: fits a laptop screen, Run and the classes always in reach.

Three parts, top to bottom. The class box (the class list and its buttons) stays at the top and
the run bar (Run / Cancel, the progress bar and the status line) at the bottom: neither ever
scrolls away. Between them a scroll area holds the rest: the first-run hint, the Model section,
the supports, the query, and the less-used sections Correct and feed back, Objects, Fine-tune,
Batch and Files. The Model section and those fold away (``sections.py``); they start folded,
and the Model header names the chosen model and device. Each part (``class_controls.py``, ...)
builds its own box; the controls keep their attribute names on the widget (``widget.run_button``,
``widget.class_list``, ``widget.batch_button``, ...: ``EXPOSED``); ``widget.sections`` holds the
foldable sections by key.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QAbstractScrollArea,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .guidance import FirstRunHint, apply_tooltips
from .model_picker import ModelPicker
from .reporting import make_status_label
from .sections import CollapsibleSection, VerticalScrollArea

KEY_RUN = "Alt-R"
SCOPES = ("current plane", "plane range", "all planes")
CLASS_ROWS = 10  # rows the class list shows before it scrolls
SUPPORT_ROWS = 8  # rows the support list shows before it scrolls
# The parts' controls and counters, also reachable as attributes of the widget (tests, console).
EXPOSED = {
    "class_controls": ("class_list", "class_buttons"),
    "support_actions": ("support_image_combo", "support_labels_combo", "add_support_button",
                        "remove_support_button", "support_list", "go_to_plane_button"),
    "encoding": ("encoding_label", "encode_timer", "encoding_stats"),
    "channel_controls": ("channel_combo",),
    "preview": ("preview_check", "preview_timer", "preview_stats", "plane_seconds"),
    "fast_encoder": ("prepare_timer", "preparation_stats", "preparation_messages"),
    "feedback": ("uncertainty_check", "suggest_button", "feedback_button"),
    "finetune_panel": ("finetune_steps", "finetune_name", "finetune_button", "finetune_cancel_button",
                       "finetune_status"),
    "objects": ("watershed_check", "min_distance_spin", "objects_button", "objects_save_button"),
    "batch": ("batch_input", "batch_recursive", "batch_output", "batch_format", "batch_overwrite", "batch_objects",
              "batch_form", "batch_button", "batch_stop_button", "batch_progress", "batch_status"),
}  # fmt: skip
SECTION_TOOLTIPS = {
    "model": "Show or hide the model choice: model, device, encoder, where image features are kept",
    "feedback": "Show or hide the correction loop: the uncertainty layer, 'Suggest next plane' and\n"
    "'Use this plane as support'",
    "finetune": "Show or hide fine-tuning: train the chosen model on the planes you painted or corrected",
    "objects": "Show or hide objects: the result split into one label per object, measured in a table",
    "batch": "Show or hide batch runs: the current examples and model over a folder of files",
    "files": "Show or hide saving and loading episodes, exporting the result as TIFF and the class probabilities",
}


def build_ui(widget) -> None:
    """Build the dock's controls on ``widget`` (a ``LabelAnythingWidget``) and lay them out."""
    widget.model_picker = ModelPicker()
    class_box = widget.class_controls.build()  # class_controls.py
    widget.hint = FirstRunHint()  # how to scribble, until the first successful run
    support_box = widget.support_actions.build(widget.encoding.build())  # support_list.py, encoding.py
    _expose(widget, "class_controls", "support_actions", "encoding")
    for rows, listing in ((CLASS_ROWS, widget.class_list), (SUPPORT_ROWS, widget.support_list)):
        _fit_rows(listing, rows)
    query_box = _build_query_box(widget)
    run_bar = _build_run_bar(widget)
    widget.sections = {
        "model": CollapsibleSection("Model", widget.model_picker, False, SECTION_TOOLTIPS["model"]),
        "feedback": CollapsibleSection(
            "Correct and feed back", widget.feedback.build(), False, SECTION_TOOLTIPS["feedback"]
        ),  # feedback.py: uncertainty, suggest, correct
        "finetune": CollapsibleSection(
            "Fine-tune", widget.finetune_panel.build(), False, SECTION_TOOLTIPS["finetune"]
        ),  # finetune.py: learn from painted planes
        "objects": CollapsibleSection(
            "Objects", widget.objects.build(), False, SECTION_TOOLTIPS["objects"]
        ),  # object_table.py: split, measure, table
        "batch": CollapsibleSection(
            "Batch", widget.batch.build(), False, SECTION_TOOLTIPS["batch"]
        ),  # batch.py: a folder of files, as predict
        "files": CollapsibleSection("Files", _build_file_row(widget), False, SECTION_TOOLTIPS["files"]),
    }
    _expose(widget, "feedback", "finetune_panel", "objects", "batch", "fast_encoder")
    picker = widget.model_picker
    for combo in (picker.model_combo, picker.device_combo):
        combo.currentIndexChanged.connect(lambda *_: _summarise_model(widget))
    _summarise_model(widget)

    column = QWidget()
    column_layout = QVBoxLayout(column)
    column_layout.setContentsMargins(0, 0, 0, 0)
    for part in (widget.hint, widget.sections["model"], support_box, query_box, widget.sections["feedback"],
                 widget.sections["objects"], widget.sections["finetune"], widget.sections["batch"],
                 widget.sections["files"]):  # fmt: skip
        column_layout.addWidget(part)
    column_layout.addStretch()
    widget.scroll_area = VerticalScrollArea(column)

    layout = QVBoxLayout(widget)
    layout.addWidget(class_box)
    layout.addWidget(widget.scroll_area, stretch=1)
    layout.addWidget(run_bar)
    apply_tooltips(widget)


def _expose(widget, *parts: str) -> None:
    """The controls of ``parts`` (``EXPOSED``) as attributes of the widget too."""
    for part in parts:
        for name in EXPOSED[part]:
            setattr(widget, name, getattr(getattr(widget, part), name))


def _fit_rows(listing, rows: int) -> None:
    """A list as tall as its rows: three at least, ``rows`` at most (then it scrolls)."""
    row = listing.fontMetrics().height() + 4
    listing.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
    listing.setMinimumHeight(3 * row + 2 * listing.frameWidth())
    listing.setMaximumHeight(rows * row + 2 * listing.frameWidth())


NORMALISE_CHOICES = (
    ("auto", "auto"),
    ("one range for the stack", "stack"),
    ("each plane its own", "plane"),
)


def _summarise_model(widget) -> None:
    picker = widget.model_picker
    widget.sections["model"].set_summary(f"{picker.model_combo.currentText()}, {picker.device_combo.currentText()}")


def _build_query_box(widget) -> QGroupBox:
    query_box = QGroupBox("Query")
    form = QFormLayout(query_box)
    widget.query_combo = QComboBox()
    widget.scope_combo = QComboBox()
    widget.scope_combo.addItems(SCOPES)
    widget.scope_combo.setCurrentText("all planes")
    widget.range_start, widget.range_stop = QSpinBox(), QSpinBox()
    range_row = QHBoxLayout()
    range_row.addWidget(widget.range_start)
    range_row.addWidget(QLabel("to"))
    range_row.addWidget(widget.range_stop)
    form.addRow("image", widget.query_combo)
    form.addRow("planes", widget.scope_combo)
    form.addRow("range (axis 0)", range_row)
    form.addRow("channels", widget.channel_controls.build())  # channels.py
    widget.normalise_combo = QComboBox()
    for label, mode in NORMALISE_CHOICES:
        widget.normalise_combo.addItem(label, mode)
    widget.normalise_combo.setToolTip(
        "How the brightness of a query's planes is read.\n"
        "auto: each plane on its own scale where the planes differ in brightness (bleaching,\n"
        "section thickness, illumination), or a single image from its supports (another exposure\n"
        "or stain), else one scale for the whole stack ('classic' model);\n"
        "one range for the stack: equal values look alike on every plane;\n"
        "each plane its own: every plane and support stretched by its own percentiles."
    )
    form.addRow("brightness", widget.normalise_combo)
    form.addRow(widget.preview.build())  # preview.py
    _expose(widget, "channel_controls", "preview")
    widget.query_combo.currentTextChanged.connect(widget.bound_plane_range)
    widget.query_combo.currentTextChanged.connect(widget.channel_controls.update_choices)
    widget.query_combo.currentTextChanged.connect(widget.query_chosen)  # by a script too
    widget.query_combo.activated.connect(widget.query_chosen)  # the user, even the same image
    return query_box


def _build_run_bar(widget) -> QWidget:
    """Run / Cancel, the progress bar and the status line: outside the scroll area."""
    bar = QWidget()
    layout = QVBoxLayout(bar)
    layout.setContentsMargins(0, 0, 0, 0)
    run_row = QHBoxLayout()
    widget.run_button = QPushButton(f"Run ({KEY_RUN})")
    widget.run_button.clicked.connect(lambda: widget.run())
    widget.cancel_button = QPushButton("Cancel")
    widget.cancel_button.setEnabled(False)
    widget.cancel_button.clicked.connect(lambda: widget.cancel())
    run_row.addWidget(widget.run_button)
    run_row.addWidget(widget.cancel_button)
    layout.addLayout(run_row)
    widget.progress = QProgressBar()
    widget.status = make_status_label("ready")  # selectable; a long message whole in its tooltip
    layout.addWidget(widget.progress)
    layout.addWidget(widget.status)
    return bar


def _build_file_row(widget) -> QWidget:
    files = QWidget()
    rows = QVBoxLayout(files)
    rows.setContentsMargins(0, 0, 0, 0)
    widget.save_button = QPushButton("save episode…")
    widget.load_button = QPushButton("load episode…")
    widget.export_button = QPushButton("export TIFF…")
    widget.probabilities_button = QPushButton("export probabilities…")  # probability_export.py
    actions = widget.files  # file_actions.py
    for pair in (((widget.save_button, actions.save_dialog), (widget.load_button, actions.load_dialog)),
                 ((widget.export_button, actions.export_dialog),
                  (widget.probabilities_button, widget.probability_export.export_dialog))):  # fmt: skip
        row = QHBoxLayout()
        for button, slot in pair:
            button.clicked.connect(slot)
            row.addWidget(button)
        rows.addLayout(row)
    return files
