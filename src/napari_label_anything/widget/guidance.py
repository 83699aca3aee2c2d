"""Guidance in place: a tooltip on every control of the dock, and the first-run hint.

The texts are written for someone who knows their images, not the model. ``apply_tooltips``
sets them on the dock's controls by attribute name (the model picker and the feedback box set
their own); ``FirstRunHint`` says how to scribble and stays until the first successful run or
until dismissed.
"""

from __future__ import annotations

from qtpy.QtWidgets import QFrame, QLabel, QPushButton, QVBoxLayout

FIRST_RUN_HINT = (
    "<b>How to scribble</b><ul style='margin-left:-20px'>"
    "<li>Paint <b>inside</b> a few objects of each class <b>and along their borders</b>: the model "
    "learns edges only from edges.</li>"
    "<li>Select the <i>background</i> row (label 0) and paint it <b>close to the objects</b> (the gaps "
    "between touching cells, a rim around each object), not only far away.</li>"
    "<li>One or two supports per kind of object are enough; add more where it fails.</li>"
    "<li>After a run, <b>Suggest next plane</b> shows the plane most worth correcting.</li></ul>"
)

TOOLTIPS = {
    "class_list": "Row k is label value k of the result: row 0 is the built-in background, then your classes.\n"
    "The selected row is the one you paint, click points and draw boxes with (Alt-N / Alt-P switch).\n"
    "Double-click a class to rename it.",
    "class_buttons.add": "Add a class (e.g. 'nucleus', 'membrane'); to mark what is NOT an object, paint the\n"
    "built-in background row",
    "class_buttons.rename": "Rename the selected class",
    "class_buttons.colour": "Change the colour of the selected class in the prompt and output layers",
    "class_buttons.remove": "Remove the selected class and its scribbles (asks first); the classes above it\n"
    "are renumbered",
    "class_buttons.undo": "Bring back the last removed class and its scribbles",
    "go_to_plane_button": "Show the plane of the selected support (double-click a row does the same)",
    "support_image_combo": "The example image you will annotate (a support). It can be a single image or a stack.",
    "support_labels_combo": "Where the scribbles go: '(new layer)' makes a '<image> mask prompts' layer to paint;\n"
    "or choose a Labels layer you already annotated (it is only read, never changed).",
    "add_support_button": "Make the chosen image an example (support): adds paint, point and box layers\n"
    "to scribble on. "
    "On a stack, every plane you scribble on is one example.",
    "remove_support_button": "A plane of a stack: erase the scribbles of that plane. An image: stop using it as\n"
    "an example; its prompt layers are removed (your own Labels layer is kept)",
    "support_list": "One row per example (every prompted plane of a stack is one) and how much you marked per\n"
    "class: painted pixels, points, boxes. Every class needs some marks in at least one example.",
    "query_combo": "The image to segment (it can be the support image itself, e.g. the other planes of a stack)",
    "scope_combo": "Which planes of the image to segment: the plane shown, a range along the first axis, or all",
    "range_start": "First plane of the range (first axis), used with 'plane range'",
    "range_stop": "Last plane of the range (included), used with 'plane range'",
    "run_button": "Segment the image from your examples (Alt-R). napari stays usable; the result is\n"
    "'<image> labels', where each plane appears as soon as it is done.\n"
    "If the run is cancelled or fails, those planes are taken back: no layer is changed.",
    "cancel_button": "Stop the run after the current plane; the planes already shown are taken back,\n"
    "so no layer is changed",
    "save_button": "Save classes, examples, scribbles and the model choice to one .episode file,\n"
    "to reuse later or in scripts",
    "load_button": "Open an .episode file: recreates its images, scribble layers and classes",
    "export_button": "Save the result ('<image> labels') as a TIFF file with the class names inside",
    "probabilities_button": "Compute the query's class probabilities with the current examples and save them:\n"
    "one channel per class, background first, float32 (0..1) or uint8 (0..255), as TIFF or OME-Zarr",
    "progress": "Planes done in the current run",
}


def apply_tooltips(widget) -> None:
    """Set ``TOOLTIPS`` on the widget's controls (``name`` or ``dict_attribute.key``)."""
    for name, text in TOOLTIPS.items():
        owner, _, key = name.partition(".")
        control = getattr(widget, owner)
        (control[key] if key else control).setToolTip(text)


class FirstRunHint(QFrame):
    """A short, dismissible note on how to scribble, shown until the first successful run."""

    def __init__(self) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        self.label = QLabel(FIRST_RUN_HINT)
        self.label.setWordWrap(True)
        self.dismiss_button = QPushButton("got it")
        self.dismiss_button.setToolTip("Hide this hint (it also goes away after the first successful run)")
        self.dismiss_button.clicked.connect(self.dismiss)
        layout.addWidget(self.label)
        layout.addWidget(self.dismiss_button)
        self.dismissed = False

    def dismiss(self) -> None:
        self.dismissed = True
        self.hide()
