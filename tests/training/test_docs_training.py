"""docs/training.md stays true: its options table is the one TrainConfig documents, its example configs load."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_label_anything.training.config import TrainConfig, options_table

ROOT = Path(__file__).resolve().parents[2]


def test_the_options_table_is_current():
    text = (ROOT / "docs" / "training.md").read_text()
    start = text.index("<!-- options-table")
    table = text[text.index("\n", start) + 1 : text.index("<!-- /options-table -->")].strip()
    assert table == options_table().strip(), "regenerate the table in docs/training.md from options_table()"


@pytest.mark.parametrize("name", ["train_tiny.yaml", "coco20i_fold0_sam.yaml"])
def test_example_configs_are_valid(name):
    config = TrainConfig.from_file(ROOT / "examples" / name)
    config.validate(require_data=False)


def test_the_documented_folder_spec_builds_a_dataset(tmp_path):
    """The spec form the docs show ({kind: folder, path: DIR}) is what dataset_from_spec accepts."""
    import numpy as np
    import tifffile

    from napari_label_anything.training.dataset_specs import dataset_from_spec

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint8))
    labels = np.zeros((32, 32), np.uint8)
    labels[8:16, 8:16] = 1
    tifffile.imwrite(tmp_path / "a_labels.tif", labels)
    dataset = dataset_from_spec({"kind": "folder", "path": str(tmp_path)})
    assert len(dataset) == 1 and dataset.index == {1: [0]}
