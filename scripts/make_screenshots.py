"""Take the user guide's screenshots of the real widget (run under a display, e.g. Xvfb).

    xvfb-run -a .venv/bin/python scripts/make_screenshots.py [--model classic] [--out docs/images]

Opens napari with the textures sample, opens the Label Anything widget (which adopts the
sample's support and prompts), adds a box and a point prompt, runs on the query and saves
full-window screenshots before and after.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def wait(viewer, widget, seconds: float = 300) -> None:
    from qtpy.QtWidgets import QApplication

    deadline = time.time() + seconds
    while (widget.runs.busy or widget.preview_busy or widget.encoding_busy) and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        QApplication.processEvents()


def settle(seconds: float = 1.0) -> None:
    """Let Qt lay out and paint the window before it is grabbed."""
    from qtpy.QtWidgets import QApplication

    deadline = time.time() + seconds
    while time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="classic")
    parser.add_argument("--out", default="docs/images")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari
    from PIL import Image
    from scipy import ndimage

    from napari_label_anything.demo_episodes import load_sample

    viewer = napari.Viewer(title="napari-label-anything")
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open_sample("napari-label-anything", "textures")
    _, widget = viewer.window.add_plugin_dock_widget("napari-label-anything", "Label Anything")
    widget.set_model(args.model, "cpu")
    support = widget.supports[0]
    truth = load_sample("textures").support_answer
    objects, _ = ndimage.label(truth == 3)  # a box around one gravel patch
    rows, cols = ndimage.find_objects(objects)[0]
    widget.classes.set_active(3)
    support.shapes.add_rectangles(np.array([[rows.start, cols.start], [rows.stop, cols.stop]], dtype=float))
    widget.classes.set_active(2)  # a click in the middle of a grass patch
    grass = ndimage.binary_erosion(truth == 2, iterations=8)
    ys, xs = np.nonzero(grass)
    support.points.add(np.array([[ys[len(ys) // 2], xs[len(xs) // 2]]], dtype=float))
    widget.query_combo.setCurrentText("textures query")
    viewer.layers["textures query"].visible = False
    viewer.layers.selection.active = support.labels
    viewer.reset_view()
    settle()
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(out / "widget_prompts.png")

    wait(viewer, widget)  # a live preview or background encoding may still be running
    widget.run()
    wait(viewer, widget)
    for layer in viewer.layers:
        layer.visible = layer.name in ("textures query", "textures query labels")
    viewer.layers.selection.active = viewer.layers["textures query labels"]
    viewer.reset_view()
    settle()
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(out / "widget_result.png")
    print(f"status: {widget.status.text()}; screenshots in {out}")
    wait(viewer, widget)
    viewer.close()


if __name__ == "__main__":
    main()
