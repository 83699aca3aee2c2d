"""Episode files and label exports are written atomically: a killed or failed write keeps the old file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tifffile

import napari_label_anything as nla
from napari_label_anything.io.label_files import atomic_write, read_label_classes, write_labels

# A child process that rewrites the same file with big, slowly compressed content for ever.
WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import napari_label_anything as nla
    from napari_label_anything.io.label_files import write_labels

    kind, path = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(1)
    big = rng.integers(0, 65535, (1500, 1500), dtype=np.uint16)
    print("writing", flush=True)
    while True:
        if kind == "episode":
            episode = nla.Episode(["new"])
            episode.add_support(big, points=[(5, 5, 1)])
            episode.save(path)
        else:
            write_labels(path, (big % 3).astype(np.uint8), ["x", "y"])
    """
)


def small_episode() -> nla.Episode:
    episode = nla.Episode(["old"])
    episode.add_support(np.arange(400, dtype=np.uint16).reshape(20, 20), points=[(3, 4, 1)])
    return episode


def kill_while_writing(tmp_path, kind: str, target) -> None:
    """Start the writer, let it be in the middle of a write, then SIGKILL it."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    child = subprocess.Popen([sys.executable, str(script), kind, str(target)], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"writing"
        partials = []
        deadline = time.monotonic() + 60
        while not partials and time.monotonic() < deadline:  # kill only once a write is under way
            partials = list(tmp_path.glob(f".{target.name}.*.part"))
            time.sleep(0.005)
        assert partials, "the writer never started a write"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_killed_episode_save_keeps_the_previous_file(tmp_path):
    target = tmp_path / "run.episode"
    small_episode().save(target)
    kill_while_writing(tmp_path, "episode", target)
    loaded = nla.Episode.load(target)  # the previous file, or a complete new one: never a broken one
    assert loaded.classes in (["old"], ["new"])
    if loaded.classes == ["old"]:
        assert loaded.signature() == small_episode().signature()


@pytest.mark.slow
def test_killed_label_export_keeps_the_previous_file(tmp_path):
    target = tmp_path / "labels.tif"
    write_labels(target, np.ones((20, 20), np.uint8), ["old"])
    kill_while_writing(tmp_path, "labels", target)
    classes = read_label_classes(target)
    assert classes in ({0: "background", 1: "old"}, {0: "background", 1: "x", 2: "y"})
    assert tifffile.imread(target).shape in ((20, 20), (1500, 1500))


def test_failed_write_keeps_the_previous_file_and_leaves_no_debris(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("previous")
    with pytest.raises(RuntimeError), atomic_write(target) as partial:
        partial.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_episode_save_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "run.episode"
    small_episode().save(target)
    before = target.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    episode = nla.Episode(["new"])
    episode.add_support(np.zeros((10, 10)), points=[(1, 1, 1)])
    with pytest.raises(OSError, match="No space"):
        episode.save(target)
    assert target.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_written_files_get_normal_permissions(tmp_path):
    path = small_episode().save(tmp_path / "perm.episode")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
