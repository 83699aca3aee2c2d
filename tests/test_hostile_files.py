"""Hostile files: each is built here, small on disk, and must get a clear refusal or be ignored.

The trust model is in docs/robustness.md: the embeddings folder is untrusted and authenticated
with a key outside it, ``.episode`` files are parsed without pickle within budgets, checkpoints
give weights only and are validated, sizes a file declares are checked before any work.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import napari_label_anything as nla
from conftest import blob_image
from napari_label_anything import limits
from napari_label_anything.inference.embedding_store import EmbeddingStore, _mac, key_path, store_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A config folder of the test's own (the embeddings key lives there)."""
    monkeypatch.setenv("NAPARI_LABEL_ANYTHING_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NLA_MAX_PIXELS", raising=False)
    monkeypatch.delenv("NLA_MAX_PLANES", raising=False)
    return tmp_path / "home"


def one_line(err: BaseException, most: int = 600) -> str:
    text = str(err)
    assert "\n" not in text and len(text) < most, text
    return text


def run_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, cwd=ROOT)  # fmt: skip


# -- the embeddings folder: untrusted contents, authenticated ------------------------------------

SHAPE = (1, 4, 6, 6)


def signature(image: str = "img") -> dict:
    return EmbeddingStore.signature(image, None, "weights", {"image_size": 96}, (SHAPE, np.float32))


def test_the_key_lives_in_the_config_folder_made_once_private(home, tmp_path):
    store = EmbeddingStore(tmp_path / "store")
    path = key_path()
    assert path.parent == home and not path.is_relative_to(store.folder)
    assert path.stat().st_mode & 0o777 == 0o600
    path.unlink()
    keys, threads = [], [threading.Thread(target=lambda: keys.append(store_key())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and keys[0] == store_key() and len(keys[0]) == 32  # one key, whoever made it
    assert not [p for p in home.iterdir() if p.name != path.name]  # no temporary file left
    path.write_text("not hex")
    with pytest.raises(ValueError, match="embeddings key .* is damaged; delete it") as err:
        EmbeddingStore(tmp_path / "store")
    one_line(err.value)


def test_a_tampered_and_rechecksummed_entry_is_recomputed(reference, tmp_path, caplog):
    import hashlib

    import torch

    from napari_label_anything.hub.model_files import load_model
    from napari_label_anything.inference import LabelAnythingSegmenter

    model = load_model(reference / "mae_like")
    image = blob_image()[0]
    computed = LabelAnythingSegmenter(model, device="cpu", store=tmp_path).features(image)
    (entry,) = tmp_path.glob("*.zarr")
    array = zarr.open_array(str(entry), mode="r+")
    forged = np.asarray(array[...]) + 1.0
    array[...] = forged
    # What a forger can compute without the user's key: the old checksum, an HMAC under their key.
    array.attrs["checksum"] = hashlib.blake2b(forged.tobytes(), digest_size=16).hexdigest()
    array.attrs["hmac"] = _mac(b"k" * 32, dict(array.attrs)["signature"], forged)
    again = LabelAnythingSegmenter(model, device="cpu", store=tmp_path)
    with caplog.at_level(logging.WARNING, logger="napari_label_anything.inference.embedding_store"):
        used = again.features(image)
    torch.testing.assert_close(used, computed, rtol=0, atol=0)  # never the forged values
    assert again.store.rejected == 1 and again.stats["encoded_images"] == 1
    assert "fail authentication" in caplog.text and "recomputed" in caplog.text
    third = LabelAnythingSegmenter(model, device="cpu", store=tmp_path)
    third.features(image)
    assert third.stats["store_hits"] == 1  # the replaced entry is valid again


def test_a_forged_huge_entry_is_refused_without_reading_it(tmp_path, monkeypatch, caplog):
    store = EmbeddingStore(tmp_path, key=b"s" * 32)
    path = store.put(signature(), np.ones(SHAPE, np.float32))
    metadata = json.loads((path / "zarr.json").read_text())
    metadata["shape"] = metadata["chunk_grid"]["configuration"]["chunk_shape"] = [1, 4, 10**6, 10**6]
    (path / "zarr.json").write_text(json.dumps(metadata))
    reads = []
    original = zarr.Array.__getitem__
    monkeypatch.setattr(zarr.Array, "__getitem__", lambda self, key: reads.append(key) or original(self, key))
    with caplog.at_level(logging.WARNING):
        assert store.get(signature()) is None
    assert reads == [] and store.rejected == 1 and "declares shape (1, 4, 1000000, 1000000)" in caplog.text
    # a right shape but another dtype, or compressed values, are refused unread too
    codecs = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd", "configuration": {"level": 0}}]
    for change in ({"data_type": "float64"}, {"codecs": codecs}):
        store.put(signature(), np.ones(SHAPE, np.float32))
        (path / "zarr.json").write_text(json.dumps({**json.loads((path / "zarr.json").read_text()), **change}))
        assert store.get(signature()) is None and reads == []
    store.put(signature(), np.ones(SHAPE, np.float32))
    assert store.get(signature()) is not None and len(reads) == 1  # a sound entry is read


def test_an_entry_made_with_another_key_is_a_miss(tmp_path):
    EmbeddingStore(tmp_path, key=b"a" * 32).put(signature(), np.ones(SHAPE, np.float32))
    assert EmbeddingStore(tmp_path, key=b"a" * 32).get(signature()) is not None
    assert EmbeddingStore(tmp_path, key=b"b" * 32).get(signature()) is None


# -- checkpoints: weights only, validated -------------------------------------------------------


def test_integer_or_boolean_weights_are_refused(reference, tmp_path):
    from safetensors.torch import load_file, save_file

    shutil.copy(reference / "mae_like" / "config.json", tmp_path / "config.json")
    tensors = load_file(reference / "mae_like" / "model.safetensors")
    first, second = sorted(tensors)[2:4]
    tensors[first] = tensors[first].round().int()
    tensors[second] = tensors[second] > 0
    save_file(tensors, str(tmp_path / "model.safetensors"))
    match = f"not floating-point numbers in 2 tensor.*{first} .int32.*{second} .bool"
    with pytest.raises(ValueError, match=match) as e:
        nla.load_segmenter(str(tmp_path), device="cpu")
    one_line(e.value)


def test_integer_weights_in_a_sam_file_are_refused(reference, tmp_path):
    import torch

    from napari_label_anything.hub.model_files import load_model, load_sam_image_encoder

    model = load_model(reference / "sam_like")
    weights = {f"image_encoder.{k}": v.clone() for k, v in model.image_encoder.state_dict().items()}
    name = sorted(weights)[0]
    weights[name] = torch.ones_like(weights[name], dtype=torch.int64)
    torch.save(weights, tmp_path / "sam.pth")
    with pytest.raises(ValueError, match=f"not floating-point numbers in 1 tensor.*{name.split('.', 1)[1]}"):
        load_sam_image_encoder(model, tmp_path / "sam.pth")


# -- .episode files: untrusted, parsed without pickle, bounded ---------------------------------


def saved_episode(path: Path, shape=(96, 128)) -> nla.Episode:
    image, labels = blob_image(shape)
    episode = nla.Episode(["red", "green"])
    episode.add_support(image, labels=labels)
    episode.save(path)
    return episode


def central_entry(raw: bytes, name: str) -> int:
    """Offset of ``name``'s central-directory record in a zip's bytes."""
    at = raw.find(b"PK\x01\x02")
    while at >= 0:
        length = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46 : at + 46 + length].decode() == name:
            return at
        at = raw.find(b"PK\x01\x02", at + 46)
    raise KeyError(name)


def patch_member(path: Path, name: str, method: int | None = None, crc: int | None = None,
                 size: int | None = None) -> None:  # fmt: skip
    """Rewrite what the zip's local and central headers say of member ``name``."""
    raw = bytearray(path.read_bytes())
    central = central_entry(bytes(raw), name)
    local = struct.unpack_from("<I", raw, central + 42)[0]
    for base, fields in ((local, (8, 14, 22)), (central, (10, 16, 24))):
        for offset, value, fmt in zip(fields, (method, crc, size), ("<H", "<I", "<I"), strict=True):
            if value is not None:
                struct.pack_into(fmt, raw, base + offset, value)
    path.write_bytes(bytes(raw))


def add_bomb(path: Path, name: str, n_bytes: int) -> None:
    """Append member ``name`` whose deflate data expands to ``n_bytes`` zeros (from ~n_bytes / 1000)."""
    block = 1 << 22
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)  # no history: repeatable
    stream = piece * (n_bytes // block) + compressor.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(n_bytes // block):
        crc = zlib.crc32(bytes(block), crc)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(zipfile.ZipInfo(name), stream, compress_type=zipfile.ZIP_STORED)
    patch_member(path, name, method=zipfile.ZIP_DEFLATED, crc=crc, size=n_bytes)


def test_members_the_loader_does_not_need_are_never_read(tmp_path, monkeypatch):
    path = tmp_path / "run.episode"
    episode = saved_episode(path)
    add_bomb(path, "junk.npy", 1 << 30)
    assert path.stat().st_size < 2 << 20
    with zipfile.ZipFile(path) as archive:  # a real bomb: 1 GiB of zeros
        assert archive.getinfo("junk.npy").file_size == 1 << 30
        with archive.open("junk.npy") as member:
            assert member.read(1 << 20) == bytes(1 << 20)
    opened = []
    original = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(
        getattr(name, "filename", name)) or original(self, name, *a, **k))  # fmt: skip
    loaded = nla.Episode.load(path)
    assert loaded.signature() == episode.signature()
    assert opened and "junk.npy" not in opened


def crafted_episode(path: Path, dtype: str, payload: int) -> int:
    """An episode whose support image member declares 46000 x 46000 ``dtype`` in its .npy header
    but holds ``payload`` random bytes; returns the header's length."""
    saved_episode(path)
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files if name != "support0.image"}
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": dtype, "fortran_order": False, "shape": (46000, 46000)})
    header = member.tell()
    member.write(os.urandom(payload))  # incompressible: the file is about ``payload`` bytes
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as out:
                np.lib.format.write_array(out, array)
        archive.writestr("support0.image.npy", member.getvalue())
    return header


def test_a_small_file_declaring_a_huge_support_is_refused_before_decompressing(tmp_path):
    """46000 x 46000 declared in a 1-2 MB file: one line naming the file and the size, never a
    MemoryError, under an address-space limit that allocating the declared array would break."""
    honest, forged, possible = (tmp_path / f"{name}.episode" for name in ("honest", "forged", "possible"))
    crafted_episode(honest, "<f4", 2 << 20)  # the zip says what the member really holds
    for path, payload in ((forged, 1 << 20), (possible, 2_200_000)):  # the zip's sizes forged to match
        header = crafted_episode(path, "|u1", payload)
        patch_member(path, "support0.image.npy", size=header + 46000 * 46000)
    code = (
        "import resource, sys\n"
        "from napari_label_anything.limits import _status\n"
        "import napari_label_anything as nla\n"
        "resource.setrlimit(resource.RLIMIT_AS, (_status('VmSize') + (1 << 30), resource.RLIM_INFINITY))\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        nla.Episode.load(path)\n"
        "    except Exception as err:\n"
        "        print(type(err).__name__, err)\n"
    )
    paths = (honest, forged, possible)
    done = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)  # fmt: skip
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 3, done.stdout + done.stderr
    for line, path in zip(lines, paths, strict=True):
        assert line.startswith(("ValueError", "NpzError")) and str(path) in line, line
    assert "46000 x 46000 float32 array (7.9 GiB) but the archive says it holds 2.0 MiB" in lines[0]
    assert "46000 x 46000 uint8 array (2.0 GiB) in 1.0 MiB of compressed data, which cannot hold it" in lines[1]
    assert "needs 2.0 GiB of memory to load, more than the" in lines[2]  # deflate could hold it: memory says no


def test_the_pixel_budget_has_an_override(tmp_path, monkeypatch):
    path = tmp_path / "run.episode"
    saved_episode(path)
    monkeypatch.setenv("NLA_MAX_PIXELS", "1000")
    with pytest.raises(ValueError, match=r"support0\.image declares a 96 x 128 x 3 uint8 array of 12288 pixels, "
                                         "more than the limit of 1000 .*NLA_MAX_PIXELS") as err:  # fmt: skip
        nla.Episode.load(path)
    assert str(path) in one_line(err.value)
    assert nla.Episode.load(path, max_pixels=20_000).n_classes == 2
    monkeypatch.setenv("NLA_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="NLA_MAX_PIXELS must be a positive integer, got 'lots'"):
        nla.Episode.load(path)


def test_a_byte_flipped_episode_is_one_line(tmp_path):
    """The flip that leaked tokenize.TokenError: one byte of a member's .npy header."""
    path = tmp_path / "run.episode"
    saved_episode(path)
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    with open(path, "wb") as out:
        np.savez(out, **arrays)  # stored members: the header's bytes lie in the file as they are
    raw = bytearray(path.read_bytes())
    at = raw.index(b"'shape': (96, 128, 3), }")
    raw[raw.index(b")", at)] = ord(" ")
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="is not a readable episode file .*support0.image") as err:
        nla.Episode.load(path)
    one_line(err.value)
    for position in range(0, len(raw), 97):  # and flips anywhere else
        flipped = bytearray(raw)
        flipped[position] ^= 0xFF
        path.write_bytes(bytes(flipped))
        try:
            nla.Episode.load(path)
        except (ValueError, OSError) as error:
            one_line(error)


def rewrite_header(path: Path, change) -> None:
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    change(meta, arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as out:
        np.savez_compressed(out, **arrays)


def test_an_episode_with_100000_classes_gives_a_short_message(tmp_path):
    path = tmp_path / "many.episode"
    saved_episode(path)
    names = [f"class number {i}" for i in range(100_000)]
    rewrite_header(path, lambda meta, arrays: meta.update(classes=[*names, names[0]]))
    with pytest.raises(ValueError, match="bad classes.*must be unique.*100001 in all") as err:
        nla.Episode.load(path)
    one_line(err.value)

    def unknown_class(meta, arrays):
        meta["classes"] = names
        arrays["support0.points"] = np.array([[5.0, 5.0, 100_001.0]])

    rewrite_header(path, unknown_class)
    with pytest.raises(ValueError, match="unknown class 100001; valid classes are 1..100000") as err:
        nla.Episode.load(path)
    one_line(err.value)


# -- declared sizes: planes, configs, memory -----------------------------------------------------


def test_a_zarr_declaring_a_million_planes_is_refused_before_the_run(tmp_path, monkeypatch, capsys):
    from napari_label_anything.batch.jobs import BatchJob, check_job
    from napari_label_anything.cli import main

    path = tmp_path / "planes.zarr"
    zarr.create_array(str(path), shape=(10**6, 64, 64), dtype="u1", chunks=(1, 64, 64))
    assert sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) < 12_000
    with pytest.raises(ValueError, match="declares 1000000 planes, more than the limit of 100000.*NLA_MAX_PLANES"):
        check_job(BatchJob(str(path), str(tmp_path / "out.tif")))
    image, labels = blob_image()
    tifffile.imwrite(tmp_path / "s.tif", image)
    tifffile.imwrite(tmp_path / "p.tif", labels)
    support = f"{tmp_path / 's.tif'}:{tmp_path / 'p.tif'}"
    args = ["predict", "--model", "classic", "--classes", "a,b", "--support", support, str(path),
            "--out", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1000000 planes" in err and not (tmp_path / "out" / "planes_labels.tif").exists()
    monkeypatch.setenv("NLA_MAX_PLANES", str(10**6))
    check_job(BatchJob(str(path), str(tmp_path / "out.tif")))  # the override


def test_an_image_size_of_8000_is_refused_with_the_allowed_range():
    from napari_label_anything.model.config import LabelAnythingConfig
    from napari_label_anything.training.config import TrainConfig

    with pytest.raises(ValueError, match=r"config.json: image_size must lie in 1..2048, got 8000"):
        LabelAnythingConfig.from_dict({"image_size": 8000})
    data = [{"kind": "synthetic", "n_samples": 4}]
    with pytest.raises(ValueError, match=r"^model_config: image_size must lie in 1..2048, got 8000$"):
        TrainConfig.from_dict({"model_config": {"preset": "tiny", "image_size": 8000}, "data": data})
    with pytest.raises(ValueError, match=r"class_encoder.bank_size must be an integer in 2..65536"):
        LabelAnythingConfig.from_dict({"class_encoder": {"name": "RandomMatrixEncoder", "bank_size": 10**9,
                                                         "embed_dim": 8}})  # fmt: skip


def test_available_memory_honours_rlimit_as():
    code = (
        "import resource\n"
        "from napari_label_anything import limits\n"
        "free = limits.available_memory()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (limits._status('VmSize') + (256 << 20), resource.RLIM_INFINITY))\n"
        "print(free, limits.available_memory())\n"
    )
    done = run_python(code)
    free, limited = map(int, done.stdout.split())
    assert limited <= 256 << 20 < free, done.stdout + done.stderr


def test_available_memory_honours_rlimit_data():
    code = (
        "import resource\n"
        "from napari_label_anything import limits\n"
        "resource.setrlimit(resource.RLIMIT_DATA, (limits._status('VmData') + (128 << 20), resource.RLIM_INFINITY))\n"
        "print(limits.available_memory())\n"
    )
    done = run_python(code)
    assert int(done.stdout) <= 128 << 20, done.stdout + done.stderr


@pytest.mark.parametrize("version", [2, 1])
def test_available_memory_honours_the_cgroup_limit(tmp_path, monkeypatch, version):
    proc = tmp_path / "proc"
    proc.mkdir()
    if version == 2:
        (proc / "cgroup").write_text("0::/user.slice/job\n")
        folder = tmp_path / "cgroup" / "user.slice"  # the limit of an ancestor applies
        folder.mkdir(parents=True)
        (folder / "memory.max").write_text(f"{1 << 30}\n")
        (folder / "memory.current").write_text(f"{768 << 20}\n")
        (folder / "memory.stat").write_text(f"anon 1\ninactive_file {256 << 20}\n")
        (folder / "job").mkdir()
        (folder / "job" / "memory.max").write_text("max\n")
    else:
        (proc / "cgroup").write_text("4:memory:/job\n1:cpu:/\n")
        folder = tmp_path / "cgroup" / "memory" / "job"
        folder.mkdir(parents=True)
        (folder / "memory.limit_in_bytes").write_text(f"{1 << 30}\n")
        (folder / "memory.usage_in_bytes").write_text(f"{512 << 20}\n")
        (folder.parent / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    monkeypatch.setattr(limits, "CGROUP_ROOT", tmp_path / "cgroup")
    monkeypatch.setattr(limits, "PROC_SELF", proc)
    assert limits.available_memory() <= 512 << 20


def test_a_classic_query_is_checked_before_it_is_normalised(monkeypatch, episode):
    from napari_label_anything.inference.classic import features as classic_features
    from napari_label_anything.inference.classic import segmenter as classic

    normalised = []
    original = classic.normalise_image
    monkeypatch.setattr(classic, "normalise_image", lambda *a, **k: normalised.append(1) or original(*a, **k))
    monkeypatch.setattr(classic_features, "available_memory", lambda: 64 << 20)
    with pytest.raises(classic_features.FeatureMemoryError, match="predicting the classes of a 3000 x 3000 plane"):
        nla.load_segmenter("classic").predict(episode, np.zeros((3000, 3000), np.uint16))
    assert normalised == []  # refused before the supports were fitted and the query normalised


def test_a_huge_zarr_query_with_classic_is_refused_before_reading_it(tmp_path):
    """30000 x 30000 uint16 (12 KB on disk) with 3 GiB of address space left: one line, and the
    plane (1.7 GiB) never read."""
    query = tmp_path / "huge.zarr"
    zarr.create_array(str(query), shape=(30000, 30000), dtype="u2", chunks=(2048, 2048))
    image, labels = blob_image()
    tifffile.imwrite(tmp_path / "s.tif", image[..., 0])
    tifffile.imwrite(tmp_path / "p.tif", labels)
    support = f"{tmp_path / 's.tif'}:{tmp_path / 'p.tif'}"
    args = ["predict", "--model", "classic", "--classes", "a,b", "--support", support, str(query),
            "--out", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    code = (
        "import resource, sys\n"
        "from napari_label_anything.cli import main\n"
        "from napari_label_anything.hub.device import import_torch\n"
        "from napari_label_anything.inference import classic\n"
        "from napari_label_anything.limits import _status\n"
        "import_torch()  # what a run imports, before the limit\n"
        "resource.setrlimit(resource.RLIMIT_AS, (_status('VmSize') + (3 << 30), resource.RLIM_INFINITY))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"code = main({args!r})\n"
        "print('grew', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
        "sys.exit(code)\n"
    )
    done = run_python(code)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert "predicting the classes of a 30000 x 30000 plane needs about" in errors[0] and "available" in errors[0]
    grew = int(done.stdout.split("grew")[-1])  # peak RSS in KiB
    assert grew < 256 << 10  # under 256 MiB more: the plane (1.7 GiB) was never read
