"""docs/training.md stays true: its options table is the one TrainConfig documents, its example configs load."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_label_anything.training.config import TrainConfig, options_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_options_table_is_current():
    text = (ROOT / "docs" / "training.md").read_text()
    start = text.index("<!-- options-table")
    table = text[text.index("\n", start) + 1 : text.index("<!-- /options-table -->")].strip()
    assert table == options_table().strip(), "regenerate the table in docs/training.md from options_table()"


@pytest.mark.parametrize("name", ["train_tiny.yaml", "coco20i_fold0_mae.yaml"])
def test_example_configs_are_valid(name):
    config = TrainConfig.from_file(ROOT / "examples" / name)
    config.validate(require_data=False)
