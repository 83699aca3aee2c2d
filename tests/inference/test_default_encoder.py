"""encoder="auto", the default: ONNX Runtime on a CPU (the same logits as PyTorch), PyTorch where
ONNX Runtime is missing or off the CPU, and a PyTorch fallback with one note when the export fails."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from conftest import blob_image
from napari_label_anything.hub.model_files import load_model
from napari_label_anything.inference import LabelAnythingSegmenter, encoder_backends, load_segmenter
from napari_label_anything.inference.encoder_backends import (
    MISSING_NOTE,
    PREPARING_TEXT,
    TorchEncoder,
    make_encoder,
    resolve_encoder,
)

LOGGER = encoder_backends.__name__


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def test_auto_is_onnx_on_a_cpu_when_onnxruntime_imports(reference, cache_dir, caplog):
    assert resolve_encoder("auto", "cpu") == "onnx"
    messages = []
    with caplog.at_level(logging.INFO, logger=LOGGER):
        segmenter = load_segmenter(str(reference / "mae_like"), device="cpu", on_status=messages.append)
    assert (segmenter.encoder_backend, segmenter.encoder_note) == ("onnx", None)
    assert "backend=onnx" in repr(segmenter) and segmenter.model.image_encoder is None  # released, as for onnx
    assert messages[0] == PREPARING_TEXT and messages[1].startswith("fast encoder prepared in")
    assert [p.suffix for p in cache_dir.iterdir()] == [".onnx"] and warnings_of(caplog) == []
    messages.clear()
    again = load_segmenter(str(reference / "mae_like"), device="cpu", on_status=messages.append)
    assert again.encoder_backend == "onnx" and not again.encoder.exported_now and messages == []  # cached


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_auto_is_torch_when_onnxruntime_does_not_import(reference, monkeypatch, caplog, cache_dir, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError
    assert resolve_encoder("auto", "cpu") == "torch"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        segmenter = load_segmenter(str(reference / "sam_like"), device="cpu")
    assert segmenter.encoder_backend == "torch" and segmenter.model.image_encoder is not None
    assert segmenter.encoder_note == MISSING_NOTE and warnings_of(caplog) == [MISSING_NOTE]
    assert "napari-label-anything[onnx]" in MISSING_NOTE and not cache_dir.exists()


@pytest.mark.parametrize("device_type", ["cuda", "mps"])
def test_auto_is_torch_off_the_cpu_and_with_autocast(reference, monkeypatch, caplog, device_type):
    def no_export(*_):
        raise AssertionError("auto must not export off the CPU")

    monkeypatch.setattr(encoder_backends, "export_encoder", no_export)
    assert resolve_encoder("auto", device_type) == "torch"
    assert resolve_encoder("auto", "cpu", precision="bfloat16") == "torch"  # the ONNX encoder runs float32
    assert resolve_encoder("onnx", device_type) == "onnx"  # explicit names stand for themselves
    model = load_model(reference / "mae_like")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        encoder = make_encoder("auto", model, "digest", device_type=device_type)
    assert isinstance(encoder, TorchEncoder) and encoder.note is None and warnings_of(caplog) == []
    half = LabelAnythingSegmenter(model, device="cpu", precision="bfloat16")  # auto, with autocast
    assert half.encoder_backend == "torch" and half.encoder_note is None


@pytest.mark.parametrize("name", ["sam_like", "mae_like"])
def test_auto_gives_the_torch_logits(reference, episode, name):
    model = load_model(reference / name)
    auto = LabelAnythingSegmenter(model, device="cpu")
    eager = LabelAnythingSegmenter(model, device="cpu", encoder="torch")
    assert (auto.encoder_backend, eager.encoder_backend) == ("onnx", "torch")
    query = blob_image((80, 100), seed=4)[0]
    difference = (auto.logits(episode, query) - eager.logits(episode, query)).abs().max().item()
    assert difference <= 1e-5
    assert auto.stats["encoded_images"] == 2  # the support and the query went through ONNX Runtime


@pytest.mark.parametrize("error", [RuntimeError("exporter broke\non two lines"), MemoryError()])
def test_a_failing_export_falls_back_to_torch_with_one_note(reference, episode, monkeypatch, caplog, cache_dir, error):
    def failing_export(model, path):
        raise error

    monkeypatch.setattr(encoder_backends, "export_encoder", failing_export)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        segmenter = load_segmenter(str(reference / "sam_like"), device="cpu")
    note = segmenter.encoder_note
    assert segmenter.encoder_backend == "torch" and "backend=torch" in repr(segmenter)
    assert warnings_of(caplog) == [note] and "\n" not in note and type(error).__name__ in note
    assert "could not be prepared" in note and "runs in PyTorch" in note
    assert segmenter.model.image_encoder is not None  # kept: the fallback runs it
    eager = load_segmenter(str(reference / "sam_like"), device="cpu", encoder="torch")
    query = blob_image(seed=3)[0]
    torch.testing.assert_close(segmenter.logits(episode, query), eager.logits(episode, query), rtol=0, atol=0)
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []  # nothing half-written
    caplog.clear()
    messages = []  # a caller that shows messages (CLI, widget) gets the note instead of the log
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        again = load_segmenter(str(reference / "sam_like"), device="cpu", on_status=messages.append)
    assert messages == [PREPARING_TEXT, again.encoder_note] and warnings_of(caplog) == []
    with pytest.raises(type(error)):  # asked for by name, ONNX never falls back silently
        load_segmenter(str(reference / "sam_like"), device="cpu", encoder="onnx")


def test_a_session_that_fails_after_the_export_still_falls_back(reference, monkeypatch, caplog, cache_dir):
    import onnxruntime

    def no_session(*_args, **_kwargs):
        raise onnxruntime.capi.onnxruntime_pybind11_state.Fail("cannot allocate the session")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_session)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        segmenter = load_segmenter(str(reference / "mae_like"), device="cpu")
    assert segmenter.encoder_backend == "torch" and "cannot allocate the session" in segmenter.encoder_note
    assert segmenter.model.image_encoder is not None and len(warnings_of(caplog)) == 1  # released only on success
    assert segmenter.predict_stack(nla_episode(), np.stack([blob_image(seed=s)[0] for s in (1, 2)])).shape[0] == 2


def nla_episode():
    import napari_label_anything as nla

    image, labels = blob_image()
    episode = nla.Episode(["red", "green"])
    episode.add_support(image, labels=labels)
    return episode


def test_the_cli_names_the_encoder_that_ran_and_says_when_it_falls_back(reference, tmp_path, capsys, monkeypatch):
    import tifffile

    from napari_label_anything.cli import main
    from napari_label_anything.io.label_files import read_label_metadata

    tifffile.imwrite(tmp_path / "query.tif", blob_image(seed=2)[0])
    nla_episode().save(tmp_path / "run.episode")
    args = ["predict", "--model", str(reference / "mae_like"), "--episode", str(tmp_path / "run.episode"),
            "--device", "cpu", "--quiet", str(tmp_path / "query.tif")]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "fast")]) == 0  # --encoder auto, the default
    out, err = capsys.readouterr()
    assert "image encoder: ONNX Runtime" in out and PREPARING_TEXT in err
    assert read_label_metadata(tmp_path / "fast" / "query_labels.tif")["encoder"] == "onnx"

    def failing_export(model, path):
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(encoder_backends, "export_encoder", failing_export)
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "empty"))
    assert main([*args, "--out", str(tmp_path / "slow")]) == 0
    out, err = capsys.readouterr()
    assert "image encoder: PyTorch" in out
    notes = [line for line in err.splitlines() if "could not be prepared" in line]
    assert len(notes) == 1 and "no exporter here" in notes[0]
