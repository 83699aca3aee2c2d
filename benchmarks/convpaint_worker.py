"""Runs napari-convpaint for ``bench_baselines.py`` in its own environment (never imported by it).

Usage (done by bench_baselines.py): ENV/bin/python benchmarks/convpaint_worker.py IN.npz OUT.npz

IN.npz holds, for each case i: ``s{i}`` the support image, ``l{i}`` its prompt labels (0 =
unpainted, classes 1..K), ``q{i}_{j}`` the query images, ``n{i}`` the number of queries; an
image with a trailing axis of 3 is RGB. Plus ``scalings`` (convpaint's ``fe_scalings``).
OUT.npz holds ``p{i}_{j}`` the predicted labels (1..K) of each query and ``t{i}`` the CPU seconds
(``time.process_time`` of this process: all its threads) of the fit and the predictions of case i.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np


def main() -> None:
    warnings.filterwarnings("ignore")
    from napari_convpaint.convpaint_model import ConvpaintModel

    data = np.load(sys.argv[1])
    scalings = [int(s) for s in data["scalings"]]
    warm = ConvpaintModel(fe_name="gaussian_features", fe_scalings=scalings)  # lazy imports, untimed
    warm.train(np.zeros((32, 32), np.float32) + np.eye(32, dtype=np.float32), np.eye(32, dtype=np.uint8) + 1)
    warm.segment(np.eye(32, dtype=np.float32))
    out = {}
    i = 0
    while f"s{i}" in data:
        support = data[f"s{i}"]
        rgb = support.ndim == 3 and support.shape[-1] == 3

        def prep(image: np.ndarray, rgb: bool = rgb) -> np.ndarray:
            return np.moveaxis(image, -1, 0) if rgb else image  # convpaint wants channels first

        start = time.process_time()
        model = ConvpaintModel(fe_name="gaussian_features", fe_scalings=scalings)
        model.set_params(channel_mode="rgb" if rgb else "single", ignore_warnings=True)
        model.train(prep(support), data[f"l{i}"])
        for j in range(int(data[f"n{i}"])):
            out[f"p{i}_{j}"] = np.asarray(model.segment(prep(data[f"q{i}_{j}"]))).astype(np.uint8)
        out[f"t{i}"] = np.float64(time.process_time() - start)
        i += 1
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
