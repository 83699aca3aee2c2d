"""The image files people have: compressed and big-endian TIFFs, OME-TIFF and ImageJ hyperstack
axes, planar RGB, vendor formats (bioio) read through one reader (``image_reader``), by
``read_image``, the training datasets and ``predict``; damaged inputs refused before a model loads."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_label_anything as nla
from conftest import blob_image, predict_classic
from napari_label_anything.io import image_reader
from napari_label_anything.io import label_files as files
from napari_label_anything.io.image_reader import canonical_order, probe_image, read_image, read_image_with_axes

SHAPE = (96, 128)


pytestmark = pytest.mark.usefixtures("offline_settings")  # conftest: no user config, no network


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a model is loaded; the inputs must be refused before that."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model must not load for a bad input")

    monkeypatch.setattr("napari_label_anything.inference.load_segmenter", refuse)


def colour_planes(t: int, z: int) -> np.ndarray:
    """(T, Z, Y, X, 3) uint8 blob images, each plane its own seed, and their labels (T, Z, Y, X)."""
    pairs = [[blob_image(SHAPE, seed=1 + ti * z + zi) for zi in range(z)] for ti in range(t)]
    images = np.stack([np.stack([p[0] for p in row]) for row in pairs])
    labels = np.stack([np.stack([p[1] for p in row]) for row in pairs])
    return images, labels


def grey_stack(n: int, dtype="u2") -> np.ndarray:
    rng = np.random.default_rng(n)
    return rng.integers(0, 4000, size=(n, 40, 50)).astype(dtype)


# --- compressions and byte order -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compression", "code"),
    [
        ("lzw", tifffile.COMPRESSION.LZW),
        ("zlib", tifffile.COMPRESSION.ADOBE_DEFLATE),
        ("zstd", tifffile.COMPRESSION.ZSTD),
    ],
)
def test_lossless_compressions_read_exactly(tmp_path, compression, code):
    data = grey_stack(3)
    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, data, compression=compression, photometric="minisblack", predictor=True)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == code  # the file really is compressed so
    array, axes = read_image_with_axes(path)
    np.testing.assert_array_equal(array, data)
    assert array.dtype == np.uint16 and axes == "QYX"
    info = probe_image(path)
    assert (info.shape, info.dtype, info.axes) == (data.shape, np.dtype("u2"), "QYX")


def test_jpeg_compressed_tiff_reads_within_jpeg_loss(tmp_path):
    image = blob_image(SHAPE)[0]
    path = tmp_path / "jpeg.tif"
    tifffile.imwrite(path, image, compression="jpeg", photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG
    array, axes = read_image_with_axes(path)
    assert array.shape == image.shape and array.dtype == np.uint8 and axes == "YXC"
    difference = np.abs(array.astype(int) - image.astype(int))
    assert difference.mean() < 8 and np.percentile(difference, 99) < 60  # lossy, but the same picture


@pytest.mark.parametrize("dtype", [">u2", ">f4"])
def test_big_endian_tiffs_read_in_native_byte_order(tmp_path, dtype):
    data = grey_stack(2).astype(dtype)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, byteorder=">", photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        assert tif.byteorder == ">"
    array = read_image(path)
    assert array.dtype.isnative and array.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(array, data)
    assert probe_image(path).dtype == array.dtype


def test_a_16_bit_png_reads_in_native_byte_order(tmp_path):
    from PIL import Image

    data = grey_stack(1)[0]
    Image.fromarray(data).save(tmp_path / "a.png")
    array = read_image(tmp_path / "a.png")
    assert array.dtype == np.uint16 and array.dtype.isnative
    np.testing.assert_array_equal(array, data)
    info = probe_image(tmp_path / "a.png", decode=False)  # from the header
    assert (info.shape, info.dtype, info.axes) == (data.shape, array.dtype, "YX")


# --- axes -------------------------------------------------------------------------------------------------------


def test_the_canonical_order():
    assert canonical_order("YX") == ((0, 1), "YX")
    assert canonical_order("YXS") == ((0, 1, 2), "YXC")
    assert canonical_order("SYX") == ((1, 2, 0), "YXC")
    assert canonical_order("TZCYX") == ((0, 1, 3, 4, 2), "TZYXC")
    assert canonical_order("CTZYX") == ((1, 2, 3, 4, 0), "TZYXC")
    assert canonical_order("ZTYX") == ((1, 0, 2, 3), "TZYX")  # Z next to (Y, X): the classic depth axis
    assert canonical_order("QZCYX") == ((0, 1, 3, 4, 2), "QZYXC")
    with pytest.raises(ValueError, match="two channel axes"):
        canonical_order("CYXS")


@pytest.mark.parametrize(
    ("file_axes", "expected_axes"),
    [("ZCYX", "ZYXC"), ("TZYX", "TZYX"), ("TCZYX", "TZYXC"), ("ZTYX", "TZYX"), ("CYX", "YXC")],
)
def test_ome_tiff_axes_come_from_its_metadata(tmp_path, file_axes, expected_axes):
    sizes = {"T": 2, "Z": 3, "C": 3, "Y": 20, "X": 24}
    data = np.random.default_rng(0).integers(0, 4000, [sizes[a] for a in file_axes]).astype("u2")
    path = tmp_path / "image.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": file_axes}, photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
    array, axes = read_image_with_axes(path)
    assert axes == expected_axes
    order, _ = canonical_order(file_axes)
    np.testing.assert_array_equal(array, data.transpose(order))
    info = probe_image(path)
    assert (info.shape, info.axes, info.file_axes) == (array.shape, axes, file_axes)
    assert info.channels == (3 if "C" in file_axes else 0)


def test_imagej_hyperstack_channels_are_channels_not_planes(tmp_path):
    images, _ = colour_planes(2, 3)  # (T, Z, Y, X, C)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, images.transpose(0, 1, 4, 2, 3), imagej=True, metadata={"axes": "TZCYX"})
    array, axes = read_image_with_axes(path)
    assert axes == "TZYXC" and array.shape == (2, 3, *SHAPE, 3)
    np.testing.assert_array_equal(array, images)
    assert probe_image(path).file_axes == "TZCYX"


def test_planar_rgb_is_colour_not_three_grey_planes(tmp_path):
    image = blob_image(SHAPE)[0]
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, image.transpose(2, 0, 1), photometric="rgb", planarconfig="separate")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].planarconfig == tifffile.PLANARCONFIG.SEPARATE
    array, axes = read_image_with_axes(path)
    assert axes == "YXC"
    np.testing.assert_array_equal(array, image)


def test_grey_stacks_stay_planes(tmp_path):
    data = grey_stack(3, "u1")  # three planes, saved as the grey stack they are
    tifffile.imwrite(tmp_path / "z.tif", data, photometric="minisblack")
    array, axes = read_image_with_axes(tmp_path / "z.tif")
    assert axes == "QYX"
    np.testing.assert_array_equal(array, data)


# --- one reader -------------------------------------------------------------------------------------------------


def test_every_image_is_read_through_image_reader():
    """No module but image_reader decodes image files (tifffile, Pillow, bioio); label_files.py opens
    label TIFFs for their metadata only (read_label_metadata / read_label_classes)."""
    assert files.read_image is image_reader.read_image
    package = Path(image_reader.__file__).parents[1]  # the whole package, not io/ alone
    allowed = {("label_files.py", "read_label_metadata"), ("label_files.py", "read_label_classes")}
    decoders = {("tifffile", "imread"), ("tifffile", "TiffFile"), ("Image", "open"), ("bioio", "BioImage")}
    offenders = []
    for path in package.rglob("*.py"):
        if path.name == "image_reader.py":
            continue
        tree = ast.parse(path.read_text())
        where = {}  # call node -> the innermost function around it (ast.walk goes outside in)
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where.update({id(n): function.name for n in ast.walk(function)})
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                owner = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
                name = where.get(id(node), "<module>")
                if (owner, node.func.attr) in decoders and (path.name, name) not in allowed:
                    offenders.append(f"{path.relative_to(package)}:{node.lineno} ({name})")
    assert offenders == []


# --- damaged and undecodable files ------------------------------------------------------------------------------


def corrupt_first_strip(path: Path) -> None:
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(bytes(range(256)) * (count // 256) + bytes(count % 256))


def damaged_files(folder: Path) -> dict[str, Path]:
    """A zstd TIFF whose data is garbage, one with an unknown compression, one cut short."""
    data = grey_stack(4)
    made = {}
    for name in ("garbage", "unknown", "truncated"):
        made[name] = folder / f"{name}.tif"
        tifffile.imwrite(made[name], data, compression="zstd", photometric="minisblack")
    corrupt_first_strip(made["garbage"])
    with tifffile.TiffFile(made["unknown"], mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(34999)
    with open(made["truncated"], "r+b") as handle:
        handle.truncate(made["truncated"].stat().st_size - 300)
    return made


def test_damaged_tiffs_fail_when_probed_not_later(tmp_path):
    for name, path in damaged_files(tmp_path).items():
        with tifffile.TiffFile(path) as tif:
            assert tif.series[0].shape == (4, 40, 50)  # the header alone reads: only decoding finds the damage
        for read in (probe_image, read_image):
            with pytest.raises(ValueError, match=f"{path.name} is not a readable image") as caught:
                read(path)
            assert "\n" not in str(caught.value), (name, caught.value)


def test_predict_refuses_a_damaged_input_before_the_model_loads(tmp_path, episode_file, no_model, capsys):
    tifffile.imwrite(tmp_path / "good.tif", blob_image()[0], compression="lzw")
    for name, path in damaged_files(tmp_path).items():
        code = predict_classic("--episode", episode_file, tmp_path / "good.tif", path, "--out", tmp_path / "out")
        err = capsys.readouterr().err
        assert code == 2, name
        assert err.startswith("error: ") and f"{path.name} is not a readable image" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# --- predict: shapes, channels --------------------------------------------------------------------------------


def test_predict_reads_lzw_hyperstacks_and_ome_tiffs_with_channels_as_colour(tmp_path, episode_file, episode):
    plain = blob_image(SHAPE, seed=7)[0]
    tifffile.imwrite(tmp_path / "lzw.tif", plain, compression="lzw", photometric="rgb")
    hyper, truth = colour_planes(2, 2)
    tifffile.imwrite(tmp_path / "hyper.tif", hyper.transpose(0, 1, 4, 2, 3), imagej=True, metadata={"axes": "TZCYX"})
    ome = colour_planes(1, 3)[0][0]  # (Z, Y, X, C)
    tifffile.imwrite(
        tmp_path / "stack.ome.tif", ome.transpose(0, 3, 1, 2), metadata={"axes": "ZCYX"}, photometric="minisblack"
    )
    planar = blob_image(SHAPE, seed=9)[0]
    tifffile.imwrite(tmp_path / "planar.tif", planar.transpose(2, 0, 1), photometric="rgb", planarconfig="separate")
    rgba = np.concatenate([blob_image(SHAPE, seed=8)[0], np.full((*SHAPE, 1), 255, np.uint8)], axis=-1)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    inputs = [tmp_path / n for n in ("lzw.tif", "hyper.tif", "stack.ome.tif", "planar.tif", "rgba.tif")]
    assert predict_classic("--episode", episode_file, *inputs, "--out", tmp_path / "out") == 0

    out = {p.name: tifffile.imread(tmp_path / "out" / f"{files.image_base_name(p)}_labels.tif") for p in inputs}
    assert out["lzw.tif"].shape == SHAPE
    assert out["hyper.tif"].shape == (2, 2, *SHAPE)  # T, Z: the three channels are not planes
    assert out["stack.ome.tif"].shape == (3, *SHAPE)
    assert out["planar.tif"].shape == out["rgba.tif"].shape == SHAPE  # RGBA samples: colour with alpha
    segmenter = nla.load_segmenter("classic")
    np.testing.assert_array_equal(out["hyper.tif"], segmenter.predict_stack(episode, hyper))
    np.testing.assert_array_equal(out["stack.ome.tif"], segmenter.predict_stack(episode, ome))
    np.testing.assert_array_equal(out["planar.tif"], segmenter.predict(episode, planar))
    np.testing.assert_array_equal(out["rgba.tif"], segmenter.predict(episode, rgba))
    for k in (1, 2):  # the colours were read as the colours they are: the discs are found
        found, wanted = out["hyper.tif"] == k, truth == k
        assert (found & wanted).sum() / (found | wanted).sum() > 0.8


def test_channels_other_than_colour_need_a_choice(tmp_path, episode_file, episode, no_model, capsys):
    hyper, _ = colour_planes(2, 2)
    two = hyper[..., :2]  # (T, Z, Y, X, 2): a two-channel hyperstack
    tifffile.imwrite(tmp_path / "two.tif", two.transpose(0, 1, 4, 2, 3), imagej=True, metadata={"axes": "TZCYX"})
    tifffile.imwrite(tmp_path / "grey.tif", grey_stack(2), photometric="minisblack")
    four = np.concatenate([hyper[0], hyper[0, ..., :1]], axis=-1).transpose(0, 3, 1, 2)  # (Z, C=4, Y, X)
    tifffile.imwrite(tmp_path / "four.ome.tif", four, metadata={"axes": "ZCYX"}, photometric="minisblack")
    code = predict_classic("--episode", episode_file, tmp_path / "four.ome.tif", "--out", tmp_path / "o")
    err = capsys.readouterr().err
    assert code == 2 and "four.ome.tif has 4 channels (axes ZCYX)" in err  # a fourth channel is not alpha
    cases = {
        (): "two.tif has 2 channels (axes TZCYX)",
        ("--channels", "2"): "channel 2 does not exist",
        ("--channels", "a"): "--channels must be comma-separated",
    }
    for extra, message in cases.items():
        assert predict_classic("--episode", episode_file, tmp_path / "two.tif", *extra, "--out", tmp_path / "o") == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    code = predict_classic("--episode", episode_file, tmp_path / "grey.tif", "--channels", "0", "--out", tmp_path / "o")
    assert code == 2 and "grey.tif has no channel axis" in capsys.readouterr().err


def test_a_chosen_channel_is_read_as_grey(tmp_path, episode_file, episode):
    hyper, _ = colour_planes(2, 2)
    two = hyper[..., :2]
    tifffile.imwrite(tmp_path / "two.tif", two.transpose(0, 1, 4, 2, 3), imagej=True, metadata={"axes": "TZCYX"})
    assert (
        predict_classic("--episode", episode_file, tmp_path / "two.tif", "--channels", "1", "--out", tmp_path / "o")
        == 0
    )
    labels = tifffile.imread(tmp_path / "o" / "two_labels.tif")
    assert labels.shape == (2, 2, *SHAPE)
    np.testing.assert_array_equal(labels, nla.load_segmenter("classic").predict_stack(episode, two[..., 1]))


# --- training datasets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lzw", "zstd", "big-endian", "planar", "ome", "imagej"])
def test_folder_datasets_read_the_same_files(tmp_path, kind):
    from napari_label_anything.training.datasets import FolderDataset

    images, labels = colour_planes(1, 2)
    image, label = images[0], labels[0]  # (Z, Y, X, 3), (Z, Y, X)
    name = "x.ome.tif" if kind == "ome" else "x.tif"
    if kind in ("lzw", "zstd"):
        tifffile.imwrite(tmp_path / name, image, compression=kind, photometric="rgb")
    elif kind == "big-endian":
        image = image.astype(">u2") * 100
        tifffile.imwrite(tmp_path / name, image, byteorder=">", photometric="rgb")
    elif kind == "planar":
        image, label = image[0], label[0]
        tifffile.imwrite(tmp_path / name, image.transpose(2, 0, 1), photometric="rgb", planarconfig="separate")
    elif kind == "ome":
        channels_first = image.transpose(0, 3, 1, 2)
        tifffile.imwrite(tmp_path / name, channels_first, metadata={"axes": "ZCYX"}, photometric="minisblack")
    else:
        tifffile.imwrite(tmp_path / name, image.transpose(0, 3, 1, 2), imagej=True, metadata={"axes": "ZCYX"})
    tifffile.imwrite(tmp_path / "x_labels.tif", label, compression="lzw", photometric="minisblack")
    data = FolderDataset(tmp_path)
    planes = [image] if image.ndim == 3 else list(image)
    assert len(data) == len(planes)
    for sample, plane in zip((data[i] for i in range(len(data))), planes, strict=True):
        assert sample.image.shape == (*SHAPE, 3)
        np.testing.assert_array_equal(sample.image, plane)


# --- vendor formats (bioio) -------------------------------------------------------------------------------------


def test_vendor_formats_without_bioio_name_the_extra(tmp_path, episode_file, no_model, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bioio", None)  # as if not installed
    path = tmp_path / "scan.czi"
    path.write_bytes(b"ZISRAWFILE")
    for read in (read_image, probe_image):
        with pytest.raises(ValueError, match=r"scan\.czi: reading \.czi files needs bioio: .*\[bioio\]"):
            read(path)
    assert (
        predict_classic("--episode", episode_file, tmp_path, "--out", tmp_path / "o") == 2
    )  # the folder's .czi is an input
    err = capsys.readouterr().err
    assert "napari-label-anything[bioio]" in err and err.count("\n") == 1


def test_vendor_formats_go_through_bioio_in_the_same_order(tmp_path, monkeypatch):
    data = np.random.default_rng(0).integers(0, 4000, (1, 2, 3, 20, 24)).astype(">u2")  # T C Z Y X, as bioio gives
    reads = []

    class BioImage:  # the part of bioio.BioImage that image_reader uses
        def __init__(self, path):
            self.dims = types.SimpleNamespace(order="TCZYX")
            self.shape, self.dtype = data.shape, data.dtype

        @property
        def data(self):
            reads.append("all")
            return data

        def get_image_data(self, order, **where):
            reads.append((order, where))
            return data[where["T"], where["C"], where["Z"]]

    monkeypatch.setitem(sys.modules, "bioio", types.SimpleNamespace(BioImage=BioImage))
    path = tmp_path / "scan.nd2"
    path.write_bytes(b"nd2")
    info = probe_image(path)
    assert (info.shape, info.axes, info.file_axes) == ((3, 20, 24, 2), "ZYXC", "CZYX")
    assert info.dtype == np.dtype("u2") and info.dtype.isnative
    assert reads == [("YX", {"T": 0, "C": 0, "Z": 0})]  # one plane decoded, not the file
    array, axes = read_image_with_axes(path)
    assert axes == "ZYXC" and array.dtype.isnative  # big-endian pixels in the machine's order
    np.testing.assert_array_equal(array, data[0].transpose(1, 2, 3, 0))
