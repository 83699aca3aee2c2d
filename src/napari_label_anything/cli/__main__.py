"""``python -m napari_label_anything.cli``: the console script."""

import sys

from . import main

sys.exit(main())
