"""``predict`` on a dask.distributed LocalCluster of 2 worker processes equals the single-process run."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from conftest import blob_image
from napari_label_anything.batch import cluster
from napari_label_anything.cli import main
from napari_label_anything.io.label_files import read_label_classes, read_label_metadata

pytestmark = pytest.mark.usefixtures("offline_settings")  # conftest: no user config, no network


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    ) as local, Client(local) as connected:  # fmt: skip
        yield connected


@pytest.fixture
def inputs(tmp_path, episode):
    episode.save(tmp_path / "run.episode")
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", np.stack([blob_image(seed=s)[0] for s in range(5)]))
    tifffile.imwrite(folder / "b.tif", blob_image(seed=9)[0])
    z = zarr.open_array(str(folder / "c.zarr"), mode="w", shape=(3, 96, 128, 3), chunks=(1, 96, 128, 3), dtype="u1")
    z[...] = np.stack([blob_image(seed=20 + s)[0] for s in range(3)])
    return tmp_path / "run.episode", folder


def run(model, episode_file, folder, out, *extra) -> int:
    return main(["predict", "--model", str(model), "--episode", str(episode_file), str(folder), "--out", str(out),
                 "--quiet", *extra])  # fmt: skip


def read(path):
    return tifffile.imread(path) if path.suffix == ".tif" else zarr.open_array(str(path / "0"), mode="r")[...]


def assert_same_outputs(expected, actual):
    names = sorted(p.name for p in expected.iterdir())
    assert names == sorted(p.name for p in actual.iterdir()) and len(names) == 3
    for name in names:
        np.testing.assert_array_equal(read(actual / name), read(expected / name), err_msg=name)
        if name.endswith(".tif"):  # the metadata too (class names, model, the query as given)
            assert read_label_classes(actual / name) == read_label_classes(expected / name)
            assert read_label_metadata(actual / name) == read_label_metadata(expected / name)
        else:
            assert (
                zarr.open_group(str(actual / name)).attrs.asdict()
                == zarr.open_group(str(expected / name)).attrs.asdict()
            )


@pytest.mark.parametrize("fmt", ["tiff", "ome-zarr"])
def test_two_workers_write_what_one_process_writes(client, inputs, tmp_path, fmt):
    episode_file, folder = inputs
    assert run("classic", episode_file, folder, tmp_path / "one", "--format", fmt) == 0
    address = client.scheduler.address
    code = run("classic", episode_file, folder, tmp_path / "two", "--format", fmt, "--scheduler", address,
               "--planes-per-task", "2")  # fmt: skip
    assert code == 0
    assert_same_outputs(tmp_path / "one", tmp_path / "two")
    assert not list((tmp_path / "two").glob(".*")), "no temporary left behind"
    # Each worker process loaded the model at most once, however many tasks it ran.
    stats = list(client.run(cluster.worker_stats).values())
    assert len(stats) == 2
    assert all(s["loads"].get(("classic", "auto", None, "torch"), 0) <= 1 for s in stats)
    assert sum(s["tasks"] for s in stats) > sum(len(s["loads"]) for s in stats)  # models were reused


def test_label_anything_checkpoint_on_two_workers(client, inputs, tmp_path, reference):
    episode_file, folder = inputs
    import torch

    model = reference / "mae_like"
    # Float results depend on torch's thread count (this random tiny model has near-ties);
    # workers run one thread each (threads_per_worker=1), so the reference run does too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run(model, episode_file, folder, tmp_path / "one", "--format", "ome-zarr", "--device", "cpu") == 0
    finally:
        torch.set_num_threads(threads)
    code = run(model, episode_file, folder, tmp_path / "two", "--format", "ome-zarr", "--device", "cpu",
               "--scheduler", client.scheduler.address, "--planes-per-task", "1")  # fmt: skip
    assert code == 0
    assert_same_outputs(tmp_path / "one", tmp_path / "two")


def test_workers_option_starts_and_stops_a_local_cluster(inputs, tmp_path, capsys):
    episode_file, folder = inputs
    assert run("classic", episode_file, folder, tmp_path / "one") == 0
    assert run("classic", episode_file, folder, tmp_path / "two", "--workers", "2") == 0
    assert "a local cluster of 2 worker process(es)" in capsys.readouterr().out
    assert_same_outputs(tmp_path / "one", tmp_path / "two")


def test_a_worker_error_is_one_line(client, inputs, tmp_path, capsys):
    """A TIFF whose header reads but whose pixels are cut off fails on the worker: one line, exit 2."""
    episode_file, folder = inputs
    broken = folder / "d.tif"
    tifffile.imwrite(broken, np.stack([blob_image(seed=s)[0] for s in range(3)]))
    with open(broken, "r+b") as handle:
        handle.truncate(broken.stat().st_size - 20000)
    code = run("classic", episode_file, folder, tmp_path / "o", "--scheduler", client.scheduler.address,
               "--format", "ome-zarr")  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "d.tif is not a readable image" in err and err.count("\n") == 1
    assert not list((tmp_path / "o").glob(".*.part")), "temporary outputs are removed"


def test_only_cluster_imports_distributed():
    import ast
    from pathlib import Path

    import napari_label_anything

    package = Path(napari_label_anything.__file__).parent
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n.split(".")[0] == "distributed" or n.startswith("dask.distributed") for n in names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {"batch/cluster.py"}
