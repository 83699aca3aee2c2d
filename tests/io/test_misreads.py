"""Read what is there: files whose pixels are easy to misread are read as they mean, or refused
by name (docs/files.md, "Colour models and bit depths", "OME-Zarr axes", "Missing zarr chunks").

Every file is built here, small: 16-bit PNGs, CMYK / YCCK JPEGs, palette PNGs, planar, CMYK and
1/3/12-bit TIFFs, OME-Zarr images with channel, time and depth axes, a zarr with a lost chunk."""

from __future__ import annotations

import io
import json
import shutil
import warnings

import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

import napari_label_anything as nla
from conftest import blob_image, predict_classic
from napari_label_anything.io import ome_zarr
from napari_label_anything.io.image_reader import probe_image, read_image, read_image_with_axes
from napari_label_anything.io.ome_zarr import MissingChunksWarning

SHAPE = (96, 128)


pytestmark = pytest.mark.usefixtures("offline_settings")  # conftest: no user config, no network


def assert_probe_matches(path, array: np.ndarray) -> None:
    """What ``predict`` checks before the model loads says what the reader returns."""
    for decode in (True, False):
        info = probe_image(path, decode=decode)
        assert (info.shape, info.dtype) == (array.shape, array.dtype), (path, decode)


def colour_blocks(side: int = 64) -> np.ndarray:
    """An RGB image of flat 16-pixel blocks in saturated colours (JPEG keeps flat blocks well)."""
    colours = np.array([[200, 20, 20], [20, 180, 40], [30, 40, 230], [230, 220, 30], [240, 240, 240], [10, 10, 10]])
    blocks = np.arange((side // 16) ** 2).reshape(side // 16, side // 16) % len(colours)
    return colours[np.kron(blocks, np.ones((16, 16), int))].astype(np.uint8)


# --- PNG and JPEG ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", [1, 2, 3, 4])  # grey, grey + alpha, RGB, RGBA
def test_a_16_bit_png_keeps_its_full_depth(tmp_path, samples):
    """Pillow reads 16-bit colour PNGs as 8-bit (the high byte): every byte must survive."""
    rng = np.random.default_rng(samples)
    data = rng.integers(0, 65536, size=(*SHAPE, samples) if samples > 1 else SHAPE).astype(np.uint16)
    data.reshape(-1)[:2] = (0x1234, 0x12FF)  # same high byte: told apart only by the low one
    path = tmp_path / f"deep{samples}.png"
    path.write_bytes(imagecodecs.png_encode(data))
    array = read_image(path)
    assert array.dtype == np.uint16 and array.dtype.isnative
    expected = data[..., 0] if samples == 2 else data  # grey + alpha: the grey
    assert array.shape == expected.shape
    np.testing.assert_array_equal(array, expected)
    assert_probe_matches(path, array)


def test_cmyk_and_ycck_jpegs_read_as_their_rgb_colours(tmp_path):
    """CMYK JPEGs store inverted inks (Adobe's convention, YCCK too): read as RGB, not as RGBA."""
    rgb = colour_blocks()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cmyk = np.asarray(Image.fromarray(rgb).convert("CMYK"))
    ycck = imagecodecs.jpeg8_encode(255 - cmyk, 95, colorspace="CMYK", outcolorspace="YCCK")  # as Photoshop writes
    (tmp_path / "ycck.jpg").write_bytes(ycck)
    with Image.open(io.BytesIO(ycck)) as image:
        assert (image.mode, image.info.get("adobe_transform")) == ("CMYK", 2)
    for name in ("cmyk.jpg", "ycck.jpg"):
        array, axes = read_image_with_axes(tmp_path / name)
        assert (array.shape, array.dtype, axes) == ((*rgb.shape[:2], 3), np.uint8, "YXC"), name
        error = np.abs(array.astype(int) - rgb)
        assert error.mean() < 6 and np.median(error) <= 3, name  # JPEG's loss; inverted would be ~150
        assert_probe_matches(tmp_path / name, array)


def test_palette_pngs_read_as_their_colours(tmp_path):
    rgb = colour_blocks()
    Image.fromarray(rgb).quantize(colors=8, dither=Image.Dither.NONE).save(tmp_path / "palette.png")
    with Image.open(tmp_path / "palette.png") as image:
        assert image.mode == "P"
    array, axes = read_image_with_axes(tmp_path / "palette.png")
    assert axes == "YXC"
    np.testing.assert_array_equal(array, rgb)  # six colours fit the palette exactly
    assert_probe_matches(tmp_path / "palette.png", array)
    grey = rgb[..., 0]
    Image.fromarray(grey).convert("P").save(tmp_path / "grey_palette.png")  # a palette of greys: a grey image
    array, axes = read_image_with_axes(tmp_path / "grey_palette.png")
    assert axes == "YX"
    np.testing.assert_array_equal(array, grey)
    assert_probe_matches(tmp_path / "grey_palette.png", array)


# --- TIFF ------------------------------------------------------------------------------------------------------


def test_a_planar_rgb_stack_is_colour_planes_at_full_depth(tmp_path):
    """A multi-page 16-bit RGB TIFF stored plane by plane (all R, then G, then B)."""
    data = np.random.default_rng(0).integers(0, 65536, (2, 3, 24, 32)).astype(np.uint16)  # (Z, S, Y, X)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, data, photometric="rgb", planarconfig="separate")
    array, axes = read_image_with_axes(path)
    assert axes == "QYXC"  # two colour planes, not six grey ones
    np.testing.assert_array_equal(array, data.transpose(0, 2, 3, 1))
    assert_probe_matches(path, array)


@pytest.mark.parametrize(
    ("bits", "dtype", "scale"),
    [(1, bool, None), (2, np.uint8, 255 / 3), (3, np.uint8, 255 / 7), (4, np.uint8, 17), (12, np.uint16, 1)],
)
def test_unusual_bit_depths_read_as_documented(tmp_path, bits, dtype, scale):
    """1 bit: bool; 2 to 7 bits: scaled to 0..255 (uint8 is read as 0..255); 12 bits: 0..4095."""
    values = np.arange(np.prod(SHAPE)).reshape(SHAPE) % (2**bits)
    path = tmp_path / f"bits{bits}.tif"
    if bits == 1:
        tifffile.imwrite(path, values.astype(bool))
    else:
        tifffile.imwrite(path, values.astype(np.uint8 if bits < 8 else np.uint16), bitspersample=bits)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].bitspersample == bits
    array = read_image(path)
    assert array.dtype == dtype
    if scale is None:
        np.testing.assert_array_equal(array, values.astype(bool))
    else:
        np.testing.assert_array_equal(array, np.rint(values * scale).astype(dtype))
        assert array.max() == (255 if bits < 8 else 4095)
    assert_probe_matches(path, array)


def test_a_cmyk_tiff_reads_as_rgb(tmp_path):
    rgb = colour_blocks()
    cmyk = np.asarray(Image.fromarray(rgb).convert("CMYK"))
    tifffile.imwrite(tmp_path / "cmyk.tif", cmyk, photometric="separated")
    tifffile.imwrite(tmp_path / "cmyk_planar.tif", cmyk.transpose(2, 0, 1), photometric="separated",
                     planarconfig="separate")  # fmt: skip
    for name in ("cmyk.tif", "cmyk_planar.tif"):
        array, axes = read_image_with_axes(tmp_path / name)
        assert axes == "YXC"
        np.testing.assert_allclose(array, rgb, atol=1)  # Pillow's CMYK of these colours has no black ink
        assert_probe_matches(tmp_path / name, array)


# --- OME-Zarr axes ---------------------------------------------------------------------------------------------


def ome_zarr_image(path, data: np.ndarray, axes: str, scale=None, chunks=None) -> None:
    """An NGFF 0.4 image group as other tools write it: axes named, one level ``0``."""
    group = zarr.open_group(str(path), mode="w", **ome_zarr._zarr_format_2())
    dataset = {"path": "0"}
    if scale is not None:
        dataset["coordinateTransformations"] = [{"type": "scale", "scale": scale}]
    units = {"t": {"unit": "second"}, "c": {}, "z": {"unit": "micrometer"}, "y": {"unit": "micrometer"}}
    named = [{"name": a, "type": ome_zarr.AXIS_TYPES[a], **units.get(a, {"unit": "micrometer"})} for a in axes]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": named, "datasets": [dataset]}]
    array = zarr.open_array(str(path / "0"), mode="w", shape=data.shape, dtype=data.dtype,
                            chunks=chunks or data.shape, **ome_zarr._zarr_format_2())  # fmt: skip
    array[...] = data


def labels_axes(path) -> tuple[list[str], list[float]]:
    multiscale = json.loads((path / ".zattrs").read_text())["multiscales"][0]
    return [a["name"] for a in multiscale["axes"]], multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]


def test_an_ome_zarr_with_a_channel_axis_is_one_colour_plane(tmp_path, episode_file, episode):
    """(c, y, x) is one RGB image: one label plane named (y, x), not three planes named (z, y, x)."""
    image = blob_image(SHAPE, seed=3)[0]
    ome_zarr_image(tmp_path / "cyx.ome.zarr", image.transpose(2, 0, 1), "cyx", scale=[1.0, 0.5, 0.25])
    assert predict_classic("--episode", episode_file, tmp_path / "cyx.ome.zarr", "--out", tmp_path / "z", "--format",
                   "ome-zarr") == 0  # fmt: skip
    out = tmp_path / "z" / "cyx_labels.ome.zarr"
    labels = zarr.open_array(str(out / "0"), mode="r")[...]
    expected = nla.load_segmenter("classic").predict(episode, image)
    np.testing.assert_array_equal(labels, expected)
    assert labels_axes(out) == (["y", "x"], [0.5, 0.25])
    assert json.loads((out / ".zattrs").read_text())["multiscales"][0]["axes"][0]["unit"] == "micrometer"
    assert predict_classic("--episode", episode_file, tmp_path / "cyx.ome.zarr", "--out", tmp_path / "t") == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "t" / "cyx_labels.tif"), expected)


def test_time_and_depth_keep_their_names_and_channels_move_last(tmp_path, episode_file, episode):
    images = np.stack([np.stack([blob_image(SHAPE, seed=t * 2 + z)[0] for z in range(2)]) for t in range(2)])
    tczyx = images.transpose(0, 4, 1, 2, 3)  # (T, C, Z, Y, X) as NGFF orders them
    ome_zarr_image(tmp_path / "tczyx.ome.zarr", tczyx, "tczyx", scale=[60.0, 1.0, 2.0, 0.5, 0.5])
    ome_zarr_image(tmp_path / "tcyx.ome.zarr", tczyx[:, :, 0], "tcyx")  # a time series without depth
    image = ome_zarr.open_image(tmp_path / "tczyx.ome.zarr")
    assert (image.axes, image.shape) == ("TZYXC", (2, 2, *SHAPE, 3))
    np.testing.assert_array_equal(image[1, 0], images[1, 0])
    inputs = [tmp_path / "tczyx.ome.zarr", tmp_path / "tcyx.ome.zarr"]
    assert predict_classic("--episode", episode_file, *inputs, "--out", tmp_path / "z", "--format", "ome-zarr") == 0
    out = tmp_path / "z" / "tczyx_labels.ome.zarr"
    assert zarr.open_array(str(out / "0"), mode="r").shape == (2, 2, *SHAPE)
    assert labels_axes(out) == (["t", "z", "y", "x"], [60.0, 2.0, 0.5, 0.5])
    out = tmp_path / "z" / "tcyx_labels.ome.zarr"
    assert labels_axes(out)[0] == ["t", "y", "x"]  # named by their number, t would be z
    labels = zarr.open_array(str(out / "0"), mode="r")[...]
    np.testing.assert_array_equal(labels, nla.load_segmenter("classic").predict_stack(episode, images[:, 0]))


def test_more_channels_than_colour_ask_for_a_choice(tmp_path, episode_file, capsys):
    data = np.random.default_rng(0).integers(0, 4000, (4, *SHAPE)).astype(np.uint16)
    ome_zarr_image(tmp_path / "four.ome.zarr", data, "cyx")
    assert predict_classic("--episode", episode_file, tmp_path / "four.ome.zarr", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "four.ome.zarr has 4 channels" in err and "--channels" in err
    assert predict_classic("--episode", episode_file, tmp_path / "four.ome.zarr", "--out", tmp_path / "o",
                   "--channels", "2") == 0  # fmt: skip
    assert tifffile.imread(tmp_path / "o" / "four_labels.tif").shape == SHAPE


# --- missing zarr chunks ---------------------------------------------------------------------------------------


def test_a_missing_zarr_chunk_is_named_not_read_as_background(tmp_path, episode_file, episode, capsys):
    images = np.stack([blob_image(SHAPE, seed=z)[0] for z in range(3)])
    path = tmp_path / "stack.ome.zarr"
    ome_zarr_image(path, images.transpose(3, 0, 1, 2), "czyx", chunks=(3, 1, *SHAPE))
    (path / "0" / "0.1.0.0").unlink()  # plane z=1 lost (an interrupted copy)
    with pytest.warns(MissingChunksWarning, match=r"stack\.ome\.zarr: chunks of plane z=1 are missing"):
        labels = nla.load_segmenter("classic").predict_stack(episode, ome_zarr.open_image(path))
    assert labels.shape == (3, *SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingChunksWarning)
        ome_zarr.open_image(path)[2]  # the planes that are there read without a word
    assert predict_classic("--episode", episode_file, path, "--out", tmp_path / "o") == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "plane z=1" in lines[0] and str(path) in lines[0]


def test_missing_chunks_of_zarr_v3_arrays_name_their_planes(tmp_path):
    """A zarr (format 3) array without axes metadata: the plane is named by its index."""
    array = zarr.open_array(str(tmp_path / "v3.zarr"), mode="w", shape=(4, 32, 40), chunks=(1, 16, 20), dtype="u2")
    array[...] = 7
    shutil.rmtree(tmp_path / "v3.zarr" / "c" / "2" / "1")  # two of plane 2's four chunks
    image = ome_zarr.open_image(tmp_path / "v3.zarr")
    assert image.axes == "" and image.shape == (4, 32, 40)
    with pytest.warns(MissingChunksWarning, match=r"chunks of plane 2 are missing") as record:
        np.testing.assert_array_equal(image[2][:16], 7)
        np.asarray(image)  # plane 2 again: said once
    assert len(record) == 1
