"""Outputs are never lost silently, and every CLI error is one short line (docs/robustness.md, L rows).

Two runs into the same outputs, a training run into a folder holding another, registrations at
once, outputs read back as inputs, a full disk while saving, lost dask workers, huge messages.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tifffile

from conftest import REFERENCE, blob_image, wait_for
from napari_label_anything.batch import jobs as batch
from napari_label_anything.cli import MAX_ERROR_CHARS, main
from napari_label_anything.io import claims
from napari_label_anything.io.label_files import read_label_metadata

MAE_LIKE = REFERENCE / "mae_like"


pytestmark = pytest.mark.usefixtures("offline_settings")  # conftest: no user config, no network


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def predict_args(tmp_path: Path, *queries) -> list[str]:
    image, labels = blob_image()
    tifffile.imwrite(tmp_path / "support.tif", image)
    tifffile.imwrite(tmp_path / "prompts.tif", labels)
    support = f"{tmp_path / 'support.tif'}:{tmp_path / 'prompts.tif'}"
    return ["predict", "--model", "classic", "--classes", "a,b", "--support", support, *map(str, queries), "--quiet"]


def hold_claim(target: Path) -> subprocess.Popen:
    """A process that claims ``target`` as a predict run does and holds it until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from napari_label_anything.io.claims import claim
        held = claim({str(target)!r})
        print("held", flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


# -- two predict runs into the same outputs --------------------------------------------------


def test_a_second_predict_into_claimed_outputs_stops_and_the_first_keeps_its_outputs(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "q.tif", blob_image(seed=1)[0])
    out = tmp_path / "out"
    args = [*predict_args(tmp_path, tmp_path / "q.tif"), "--out", str(out)]
    assert main(args) == 0
    first = (out / "q_labels.tif").read_bytes()
    holder = hold_claim(out / "q_labels.tif")  # the first run, still writing
    try:
        assert main([*args, "--overwrite"]) == 2
        line = one_line(capsys)
        assert "q_labels.tif is being written by another run" in line and f"process {holder.pid}" in line
        assert "q_labels.tif.claim" in line
        assert (out / "q_labels.tif").read_bytes() == first
        assert (out / "q_labels.tif.claim").exists()  # the other run's claim is left alone
    finally:
        holder.kill()
        holder.wait()


def test_the_widget_batch_stops_when_another_run_holds_its_outputs(qtbot, ready, tmp_path):
    viewer, widget = ready
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", blob_image(seed=1)[0])
    holder = hold_claim(out / "a_labels.tif")
    try:
        with pytest.raises(claims.OutputClaimed, match="a_labels.tif is being written by another run"):
            widget.run_batch(folder, out)
        assert not widget.batching and not (out / "a_labels.tif").exists()
    finally:
        holder.kill()
        holder.wait()
    (out / "a_labels.tif.claim").unlink()
    wait_for(qtbot, widget.run_batch(folder, out))
    assert widget.batch_outcome == "done" and sorted(p.name for p in out.iterdir()) == ["a_labels.tif"]


def test_the_claim_of_a_run_that_died_is_taken_over_with_a_note(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "q.tif", blob_image(seed=1)[0])
    out = tmp_path / "out"
    holder = hold_claim(out / "q_labels.tif")
    os.kill(holder.pid, signal.SIGKILL)  # no clean-up runs: the claim file stays
    holder.wait()
    assert (out / "q_labels.tif.claim").exists()
    assert main([*predict_args(tmp_path, tmp_path / "q.tif"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"note: took over the claim of {out / 'q_labels.tif'} left by process {holder.pid}" in err
    assert (out / "q_labels.tif").is_file() and not (out / "q_labels.tif.claim").exists()


def test_claims_are_all_or_nothing_and_released(tmp_path):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    with claims.claimed([b]):
        with pytest.raises(claims.OutputClaimed, match="b.tif is being written by another run"):
            with claims.claimed([a, b]):
                pass
        assert not claims.claim_path(a).exists()  # a's claim was given back when b's failed
    assert not claims.claim_path(b).exists()
    with claims.claimed([a, b]) as held:
        assert [json.loads(c.path.read_text())["pid"] for c in held] == [os.getpid()] * 2


# -- training into a folder that holds a run ---------------------------------------------------


def finetune_args(out: Path, *more: str) -> list[str]:
    return ["finetune", "--model", str(MAE_LIKE), "--synthetic", "8", "--steps", "1", "--out", str(out),
            "--device", "cpu", *more]  # fmt: skip


@pytest.mark.slow
def test_finetune_into_an_existing_run_is_refused_unless_overwrite_or_resume(tmp_path, capsys):
    out = tmp_path / "R"
    assert main(finetune_args(out, "--register", "mine")) == 0
    weights = (out / "final" / "model.safetensors").read_bytes()
    log = (out / "log.csv").read_text()
    capsys.readouterr()
    assert main(finetune_args(out, "--register", "other")) == 2
    line = one_line(capsys)
    assert f"{out} holds a training run already" in line and "--overwrite" in line and "--resume" in line
    assert (out / "final" / "model.safetensors").read_bytes() == weights and (out / "log.csv").read_text() == log
    assert not (out.parent / "R.claim").exists()
    from napari_label_anything.hub.registry import local_models

    assert set(local_models()) == {"mine"}
    assert main(finetune_args(out, "--overwrite", "--resume", "latest")) == 2
    assert "exclude each other" in one_line(capsys)
    assert main(finetune_args(out, "--overwrite")) == 0
    assert (out / "final" / "model.safetensors").is_file()


def test_train_into_an_existing_run_is_refused_and_overwrite_removes_the_old_one(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoint-7").mkdir(parents=True)  # what an earlier (other) run left
    (out / "final").mkdir()
    (out / "log.csv").write_text("step,loss\n1,0.5\n2,0.4\n")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        textwrap.dedent(f"""
        model_config: {{preset: tiny, image_size: 64}}
        data: [{{kind: synthetic, n_samples: 8, size: 64}}]
        configurations: [[1, 1, 1]]
        steps: 1
        checkpoint_every: 0
        device: cpu
        out: {out}
    """)
    )
    assert main(["train", "--config", str(config)]) == 2
    assert f"{out} holds a training run already (final, log.csv, checkpoint-7)" in one_line(capsys)
    assert (out / "checkpoint-7").is_dir() and (out / "log.csv").read_text().count("\n") == 3
    assert main(["train", "--config", str(config), "--overwrite"]) == 0
    assert not (out / "checkpoint-7").exists(), "a resume must never find the other run's checkpoints"
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and [r.split(",")[0] for r in rows[1:]] == ["1"]
    assert (out / "final" / "model.safetensors").is_file()


# -- the model registry ---------------------------------------------------------------------------


def _register(index: int, start) -> None:
    start.wait()
    code = main(["models", "--add", f"model{index}", str(MAE_LIKE)])
    sys.exit(code)


def test_twelve_registrations_at_once_keep_twelve_entries(tmp_path):
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [context.Process(target=_register, args=(i, start)) for i in range(12)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * 12
    from napari_label_anything.hub.registry import local_models

    assert sorted(local_models()) == sorted(f"model{i}" for i in range(12))


# -- outputs are never inputs ---------------------------------------------------------------------


def test_recursive_predict_twice_into_its_own_folder_never_reads_its_outputs(tmp_path, capsys):
    data = tmp_path / "DIR"
    (data / "sub").mkdir(parents=True)
    for i, name in enumerate(("a.tif", "b.tif", "sub/c.tif")):
        tifffile.imwrite(data / name, blob_image(seed=i)[0])
    args = [*predict_args(tmp_path, data), "--recursive", "--out", str(data / "pred")]
    assert main(args) == 0
    expected = ["a_labels.tif", "b_labels.tif", "c_labels.tif"]
    assert sorted(p.name for p in (data / "pred").iterdir()) == expected
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in (data / "pred").iterdir()) == expected
    queries = sorted(Path(read_label_metadata(p)["query"]).name for p in (data / "pred").iterdir())
    assert queries == ["a.tif", "b.tif", "c.tif"]
    tifffile.imwrite(data / "pred" / "plain.tif", blob_image(seed=5)[0])  # not ours, but in the output folder
    found = batch.expand_inputs([data], recursive=True, skip=[data / "pred"])
    assert [p.relative_to(data).as_posix() for p in found] == ["a.tif", "b.tif", "sub/c.tif"]
    (data / "pred" / "plain.tif").unlink()
    # outputs beside the inputs (no separate folder): their metadata marks them as outputs
    beside = [*predict_args(tmp_path, data), "--out", str(data)]
    assert main(beside) == 0 and main([*beside, "--overwrite"]) == 0
    assert sorted(p.name for p in data.glob("*_labels.tif")) == ["a_labels.tif", "b_labels.tif"]
    capsys.readouterr()
    assert main([*predict_args(tmp_path, data / "a_labels.tif"), "--out", str(tmp_path / "x")]) == 2
    assert "a_labels.tif is an output of napari-label-anything" in one_line(capsys)


# -- full disks, lost workers, long messages -----------------------------------------------------


@pytest.mark.slow
def test_a_full_disk_while_saving_a_checkpoint_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "R"
    assert main(finetune_args(out)) == 2
    line = one_line(capsys)
    assert str(out / "final" / "model.safetensors") in line and "no space left on the disk" in line
    assert not (out / "final").exists() and not list(out.glob(".*.partial"))


def test_a_safetensors_error_while_saving_names_the_file(tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    from napari_label_anything.hub.model_files import load_model
    from napari_label_anything.training.run_state import write_checkpoint

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No s" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError, match=r"checkpoint-3/model.safetensors .*no space left on the disk") as caught:
        write_checkpoint(tmp_path / "checkpoint-3", load_model(MAE_LIKE))
    assert caught.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())


def test_a_full_cache_disk_names_the_cache_folder(tmp_path, capsys, monkeypatch):
    from napari_label_anything.inference.embedding_store import EmbeddingStore

    def full(self, signature, values):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.folder / ".writing-x" / "entry.zarr"))

    monkeypatch.setattr(EmbeddingStore, "put", full)
    tifffile.imwrite(tmp_path / "q.tif", blob_image(seed=1)[0])
    args = predict_args(tmp_path, tmp_path / "q.tif")
    args[args.index("classic")] = str(MAE_LIKE)
    assert main([*args, "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--device", "cpu"]) == 2
    line = one_line(capsys)
    assert f"the cache folder {tmp_path / 'cache'}: no space left on the disk" in line


def test_lost_dask_workers_are_one_line(tmp_path, capsys, monkeypatch):
    import distributed
    from distributed.client import FutureCancelledError

    from napari_label_anything.batch import cluster

    class Future:
        key = "_run_job_task-1"

        def result(self):
            raise FutureCancelledError(self.key, "lost-workers", "all workers left\nthe cluster")

    class Client:
        cancelled = closed = False

        def scatter(self, value, broadcast=False):
            return value

        def submit(self, *args, **kwargs):
            return Future()

        def cancel(self, futures):
            self.cancelled = True

        def close(self):
            self.closed = True

    class Event:
        def __init__(self, name, client=None):
            self.name = name

        def set(self):
            pass

    client = Client()
    monkeypatch.setattr(cluster, "connect", lambda workers=None, scheduler=None: client)
    monkeypatch.setattr(distributed, "Event", Event)
    monkeypatch.setattr(distributed, "as_completed", lambda futures: iter(futures))
    monkeypatch.setattr(distributed, "wait", lambda futures, timeout=None: None)
    tifffile.imwrite(tmp_path / "q.tif", blob_image(seed=1)[0])
    out = tmp_path / "out"
    assert main([*predict_args(tmp_path, tmp_path / "q.tif"), "--out", str(out), "--workers", "2"]) == 2
    line = one_line(capsys)
    assert line.startswith("error: the dask workers were lost: lost-workers all workers left the cluster")
    assert client.cancelled and client.closed and not (out / "q_labels.tif.claim").exists()


def test_an_episode_of_100000_classes_gives_a_short_error_line(tmp_path, capsys):
    import napari_label_anything as nla

    image, labels = blob_image()
    episode = nla.Episode([f"class{k}" for k in range(100_000)])
    episode.add_support(image, labels=labels)
    episode.save(tmp_path / "big.episode")
    tifffile.imwrite(tmp_path / "q.tif", image)
    args = ["predict", "--model", "classic", "--episode", str(tmp_path / "big.episode"), str(tmp_path / "q.tif")]
    assert main([*args, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    line = one_line(capsys)
    assert len(line) <= len("error: ") + MAX_ERROR_CHARS
    assert line.startswith("error: class(es) ['class2', ") and " … " in line
    assert line.endswith("prompt them or remove them from the episode")  # what to do survives


def test_an_unexpected_error_is_one_line_too(capsys, monkeypatch):
    import argparse

    import napari_label_anything.cli as cli

    def broken(args):
        raise KeyError("a bug")

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=broken)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.delenv(cli.TRACEBACK_VARIABLE, raising=False)
    assert main([]) == 2
    line = one_line(capsys)
    assert line.startswith("error: KeyError: 'a bug' (unexpected;") and cli.TRACEBACK_VARIABLE in line
    monkeypatch.setenv(cli.TRACEBACK_VARIABLE, "1")  # for developers: the traceback
    with pytest.raises(KeyError):
        main([])
