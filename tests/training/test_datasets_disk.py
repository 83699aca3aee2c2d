"""Training datasets read from disk: folders of label images, .episode files, COCO annotations."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import check_sample
from napari_label_anything.episode import Episode
from napari_label_anything.training.datasets import (
    CocoDataset,
    EpisodeFilesDataset,
    SegmentationDataset,
    SyntheticDataset,
)


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        from PIL import Image

        Image.fromarray(array).save(path)
    else:
        import tifffile

        tifffile.imwrite(path, array, photometric="minisblack")
    return path


def _toy_pair(seed: int, shape=(24, 32)):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[2:8, 3:12] = 1
    labels[12:20, 15:30] = 2
    image = (rng.random(shape) * 200).astype(np.uint8)
    return image, labels


def test_folder_images_and_labels_subfolders(tmp_path):
    from napari_label_anything.training.datasets import FolderDataset

    for k, name in enumerate(["a", "b", "c"]):
        image, labels = _toy_pair(k)
        if name == "c":
            labels[labels == 1] = 0  # c holds class 2 only
        _write(tmp_path / "images" / f"{name}.png", image)
        _write(tmp_path / "labels" / (f"{name}.tif" if name != "b" else f"{name}_labels.png"), labels)
    data = FolderDataset(tmp_path)
    assert isinstance(data, SegmentationDataset)
    assert data.augment is True and len(data) == 3
    assert data.classes == {1: "class 1", 2: "class 2"}
    assert data.index == {1: [0, 1], 2: [0, 1, 2]}
    sample = data[0]
    check_sample(sample, data.classes)
    assert sample.image.dtype == np.uint8 and sample.image.shape == (24, 32)
    assert np.array_equal(sample.image, _toy_pair(0)[0])
    assert sorted(i.class_id for i in sample.instances) == [1, 2]
    assert sample.name == "a.png"
    # min_area drops the small objects (54 px of class 1, 120 px of class 2) from the index only
    filtered = FolderDataset(tmp_path, min_area=100, augment=False)
    assert filtered.index == {2: [0, 1, 2]} and filtered.augment is False
    assert [i.class_id for i in filtered[0].instances] == [2]
    assert (filtered[0].labels == 1).sum() == 54


def test_folder_plugin_exports_with_class_names_merged_by_name(tmp_path):
    from napari_label_anything.io.label_files import write_labels
    from napari_label_anything.training.datasets import FolderDataset

    image, labels = _toy_pair(1)
    _write(tmp_path / "x.tif", image)
    write_labels(tmp_path / "x_labels.tif", labels, ["nucleus", "membrane"])
    # another export whose class list is ordered differently and has a new class
    image2, labels2 = _toy_pair(2)
    labels2[labels2 == 1] = 3
    _write(tmp_path / "y.png", image2)
    write_labels(tmp_path / "y_labels.tif", labels2, ["membrane", "debris", "nucleus", "junk"])
    _write(tmp_path / "y_overlay.png", np.zeros((4, 4, 3), np.uint8))  # the demo's picture is ignored
    (tmp_path / "notes.txt").write_text("not an image")
    data = FolderDataset(tmp_path)
    assert data.classes == {1: "nucleus", 2: "membrane", 3: "debris"}  # "junk" has no pixels
    assert data.index == {1: [0, 1], 2: [0], 3: [1]}
    y = data[1]
    assert y.name == "y.png"
    assert np.array_equal(y.labels == 1, labels2 == 3)  # y's "nucleus" (3) is global 1
    assert np.array_equal(y.labels == 3, labels2 == 2)  # y's "debris" (2) is new: global 3
    named = FolderDataset(tmp_path, classes={1: "a", 2: "b", 3: "c"})
    assert named.classes == {1: "a", 2: "b", 3: "c"}
    assert np.array_equal(named[1].labels, labels2.astype(np.int64))
    assert FolderDataset(tmp_path, classes=["p", "q", "r"]).classes == {1: "p", 2: "q", 3: "r"}
    with pytest.raises(ValueError, match=r"\[3\]"):
        FolderDataset(tmp_path, classes=["only", "two"])
    # a single file finds its labels beside it
    single = FolderDataset(tmp_path / "x.tif")
    assert len(single) == 1 and single.classes == {1: "nucleus", 2: "membrane"}


def test_folder_label_values_follow_names(tmp_path):
    """Each file's values are translated through its own class list."""
    from napari_label_anything.io.label_files import write_labels
    from napari_label_anything.training.datasets import FolderDataset

    image, labels = _toy_pair(3)
    _write(tmp_path / "a.tif", image)
    write_labels(tmp_path / "a_labels.tif", labels, ["cell", "nucleus"])
    _write(tmp_path / "b.tif", image)
    write_labels(tmp_path / "b_labels.tif", labels, ["nucleus", "cell"])
    data = FolderDataset(tmp_path)
    assert data.classes == {1: "cell", 2: "nucleus"}
    assert np.array_equal(data[0].labels, labels)
    swapped = np.choose(labels, [0, 2, 1])
    assert np.array_equal(data[1].labels, swapped)


def test_folder_stacks_planes_are_samples(tmp_path):
    from napari_label_anything.io.label_files import write_labels
    from napari_label_anything.training.datasets import FolderDataset

    synthetic = SyntheticDataset(1, n_classes=5, size=48, depth=4, seed=2)
    stack, stack_labels = synthetic.stack(0)
    stack_labels[2] = 0  # an unlabelled plane is not a sample
    _write(tmp_path / "imgs" / "s.tif", stack)
    write_labels(tmp_path / "out" / "s_labels.tif", stack_labels, [f"class {k}" for k in range(1, 6)])
    data = FolderDataset(tmp_path / "imgs", labels=tmp_path / "out")
    assert len(data) == 3
    assert [data[i].name for i in range(3)] == ["s.tif plane 0", "s.tif plane 1", "s.tif plane 3"]
    for i, z in enumerate([0, 1, 3]):
        assert np.array_equal(data[i].image, stack[z])
        assert np.array_equal(data[i].labels, stack_labels[z])
        check_sample(data[i], data.classes)
    for class_id, samples in data.index.items():
        assert all((data[i].labels == class_id).any() for i in samples)
    rgb = np.repeat(stack[..., None], 3, axis=-1)
    _write(tmp_path / "rgb" / "s.tif", rgb)
    assert FolderDataset(tmp_path / "rgb" / "s.tif", labels=tmp_path / "out" / "s_labels.tif")[0].image.shape == (
        48,
        48,
        3,
    )


def test_folder_errors_name_the_problem(tmp_path):
    from napari_label_anything.training.datasets import FolderDataset

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        FolderDataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        FolderDataset(tmp_path / "missing")

    image, labels = _toy_pair(0)
    lonely = tmp_path / "lonely"
    _write(lonely / "a.tif", image)
    _write(lonely / "a_labels.tif", labels)
    _write(lonely / "b.tif", image)
    _write(lonely / "c_labels.tif", labels)
    with pytest.raises(
        ValueError, match=r"unpaired.*images without labels: b\.tif.*labels without an image: c_labels\.tif"
    ):
        FolderDataset(lonely)

    bad_shape = tmp_path / "shape"
    _write(bad_shape / "a.tif", image[:, :20])
    _write(bad_shape / "a_labels.tif", labels)
    with pytest.raises(ValueError, match=r"shape mismatch.*a\.tif.*\(24, 20\).*\(24, 32\)"):
        FolderDataset(bad_shape)

    for name, values in {"float": labels.astype(np.float32) + 0.5, "negative": labels.astype(np.int16) - 1}.items():
        folder = tmp_path / name
        _write(folder / "a.tif", image)
        _write(folder / "a_labels.tif", values)
        with pytest.raises(ValueError, match="integer" if name == "float" else ">= 0"):
            FolderDataset(folder)
    integral = tmp_path / "integral"
    _write(integral / "a.tif", image)
    _write(integral / "a_labels.tif", labels.astype(np.float32))
    assert FolderDataset(integral).index == {1: [0], 2: [0]}

    unlabelled = tmp_path / "unlabelled"
    _write(unlabelled / "a.tif", image)
    _write(unlabelled / "a_labels.tif", np.zeros_like(labels))
    with pytest.raises(ValueError, match="no labelled pixels"):
        FolderDataset(unlabelled)
    with pytest.raises(ValueError, match="no labels for"):
        FolderDataset(lonely / "b.tif")
    with pytest.raises(ValueError, match="min_area"):
        FolderDataset(lonely, min_area=-1)
    with pytest.raises(TypeError):
        FolderDataset(integral, classes="abc")


# --- .episode files --------------------------------------------------------------------------


def test_episode_files_painted_supports_become_samples(tmp_path):
    from napari_label_anything.episode import Episode
    from napari_label_anything.training.datasets import EpisodeFilesDataset

    image, labels = _toy_pair(0)
    first = Episode(["cell", "nucleus", "unused"])
    first.add_support(image, labels=labels, name="plane 3")
    first.add_support(image, points=[(5, 5, 1)], boxes=[(1, 1, 9, 9, "nucleus")])  # not dense: skipped
    first.add_support(np.repeat(image[..., None], 4, axis=-1), labels=np.where(labels == 2, 2, 0))
    first.save(tmp_path / "a.episode")
    second = Episode(["debris", "nucleus"])
    second.add_support(image, labels=np.where(labels == 1, 2, np.where(labels == 2, 1, 0)))
    second.add_support(image, points=[(3, 3, 2)])
    second.save(tmp_path / "b.episode")

    data = EpisodeFilesDataset([tmp_path / "a.episode", str(tmp_path / "b.episode")])
    assert isinstance(data, SegmentationDataset)
    assert data.augment is True and data.skipped == 2 and len(data) == 3
    assert data.classes == {1: "cell", 2: "nucleus", 3: "debris"}
    assert data.index == {1: [0], 2: [0, 1, 2], 3: [2]}
    assert np.array_equal(data[0].labels, labels.astype(np.int64))
    assert data[0].name == "a.episode support 1 (plane 3)"
    assert data[1].image.shape == (24, 32, 3)
    # b painted 1 -> 2 ("nucleus", global 2) and 2 -> 1 ("debris", global 3)
    assert np.array_equal(data[2].labels, np.choose(labels, [0, 2, 3]))
    for i in range(len(data)):
        check_sample(data[i], data.classes)
    assert EpisodeFilesDataset(tmp_path / "b.episode", augment=False).augment is False
    assert EpisodeFilesDataset(tmp_path / "a.episode", min_area=100).index == {2: [0, 1]}

    points_only = Episode(["x"])
    points_only.add_support(image, points=[(1, 1, 1)])
    points_only.save(tmp_path / "c.episode")
    with pytest.raises(ValueError, match="no usable support in c.episode.*1 support"):
        EpisodeFilesDataset([tmp_path / "c.episode"])
    with pytest.raises(ValueError, match="at least one"):
        EpisodeFilesDataset([])
    with pytest.raises(FileNotFoundError):
        EpisodeFilesDataset(tmp_path / "missing.episode")


# --- COCO ------------------------------------------------------------------------------------


def _tiny_coco(tmp_path):
    """3 PNG images, 5 categories (ids out of order), polygons, RLE, a crowd and a small annotation."""
    import json

    from PIL import Image
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    sizes = {1: (40, 50), 2: (30, 30), 3: (32, 48)}
    images = []
    for image_id, (h, w) in sizes.items():
        name = f"img{image_id}.png"
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / name)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
    categories = [{"id": k, "name": f"cat{k}"} for k in (3, 7, 1, 10, 12)]  # fold (of 4) = index % 4: 0 1 2 3 0

    def polygon(y0, x0, y1, x1):  # a rectangle as a polygon (x, y pairs)
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]

    rle_mask = np.zeros((30, 30), dtype=np.uint8, order="F")
    rle_mask[5:25, 5:15] = 1
    compressed = mask_utils.encode(rle_mask)
    compressed["counts"] = compressed["counts"].decode()
    uncompressed_mask = np.zeros((30, 30), dtype=np.uint8)
    uncompressed_mask[10:20, 12:28] = 1
    runs = []  # column-major run lengths starting with zeros
    flat, value, count = uncompressed_mask.ravel(order="F"), 0, 0
    for pixel in flat:
        if pixel == value:
            count += 1
        else:
            runs.append(count)
            value, count = pixel, 1
    runs.append(count)
    annotations = [
        # image 1: cat3 and cat7 overlapping (cat7 later), a small cat1, a crowd cat10
        {"id": 1, "image_id": 1, "category_id": 3, "segmentation": polygon(2, 2, 22, 30), "area": 560.0, "iscrowd": 0},
        {
            "id": 2,
            "image_id": 1,
            "category_id": 7,
            "segmentation": polygon(12, 20, 36, 46),
            "area": 624.0,
            "iscrowd": 0,
        },
        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": polygon(30, 2, 34, 6), "area": 16.0, "iscrowd": 0},
        {
            "id": 4,
            "image_id": 1,
            "category_id": 10,
            "segmentation": polygon(0, 40, 10, 50),
            "area": 100.0,
            "iscrowd": 1,
        },
        # image 2: RLE annotations (compressed cat12, uncompressed cat1 without an area field)
        {"id": 5, "image_id": 2, "category_id": 12, "segmentation": compressed, "area": 200.0, "iscrowd": 0},
        {"id": 6, "image_id": 2, "category_id": 1, "segmentation": {"size": [30, 30], "counts": runs}, "iscrowd": 0},
        # image 3: only a small cat3
        {"id": 7, "image_id": 3, "category_id": 3, "segmentation": polygon(1, 1, 5, 5), "area": 16.0, "iscrowd": 0},
    ]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "categories": categories, "annotations": annotations}))
    return path, folder, rle_mask.astype(bool), uncompressed_mask.astype(bool)


def test_coco_folds_filter_labels_and_instances(tmp_path, capsys):
    from napari_label_anything.training.datasets import CocoDataset

    path, folder, rle_mask, uncompressed_mask = _tiny_coco(tmp_path)
    everything = CocoDataset(path, folder, min_area=50)
    assert capsys.readouterr().out == ""  # pycocotools' chatter is silenced
    assert isinstance(everything, SegmentationDataset) and everything.augment is False
    assert list(everything.classes) == [3, 7, 1, 10, 12]
    assert everything.classes[7] == "cat7"
    # image 3 only has a small annotation; the small cat1 of image 1 and the crowd cat10 are gone
    assert everything.image_ids == [1, 2]
    assert everything.index == {3: [0], 7: [0], 12: [1], 1: [1]}

    first = everything[0]
    assert first.image.shape == (40, 50, 3) and first.image.dtype == np.uint8
    assert first.labels.dtype == np.int64 and first.labels.shape == (40, 50)
    assert [i.class_id for i in first.instances] == [3, 7]
    assert set(np.unique(first.labels)) == {0, 3, 7}
    assert first.labels[15, 25] == 7  # the overlap goes to the later annotation
    assert first.instances[0].mask[15, 25]  # while the earlier instance keeps its full mask
    assert first.labels[32, 4] == 0 and first.labels[5, 45] == 0  # small and crowd are background
    assert "img1.png" in first.name

    second = everything[1]
    assert np.array_equal(second.instances[0].mask, rle_mask)
    assert np.array_equal(second.instances[1].mask, uncompressed_mask)
    assert second.instances[1].area == 160
    expected = np.zeros((30, 30), dtype=np.int64)
    expected[rle_mask] = 12
    expected[uncompressed_mask] = 1
    assert np.array_equal(second.labels, expected)

    # folds: index % 4 -> cat3: 0, cat7: 1, cat1: 2, cat10: 3, cat12: 0
    val0 = CocoDataset(path, folder, fold=0, split="val", min_area=50)
    assert list(val0.classes) == [3, 12] and val0.index == {3: [0], 12: [1]}
    assert [i.class_id for i in val0[0].instances] == [3]
    assert set(np.unique(val0[0].labels)) == {0, 3}  # cat7 is not in the fold: background
    train0 = CocoDataset(path, folder, fold=0, split="train", min_area=50)
    assert list(train0.classes) == [7, 1, 10] and train0.index == {7: [0], 1: [1]}
    assert set(np.unique(train0[1].labels)) == {0, 1}
    # the official filter (2048 px) leaves nothing in this tiny file; 0 keeps the small ones
    with pytest.raises(ValueError, match="no image"):
        CocoDataset(path, folder)
    keep_all = CocoDataset(path, folder, min_area=0)
    assert keep_all.image_ids == [1, 2, 3] and keep_all.index[1] == [0, 1]


def test_coco20i_fold_categories_match_the_official_split(tmp_path, manifest):
    from napari_label_anything.training.datasets import CocoDataset

    splits = manifest["loss_metrics"]["fold_splits"]
    ids = sorted(k for fold in splits.values() for k in fold["val"])
    assert len(ids) == 80
    dataset = {
        "images": [{"id": 1, "file_name": "x.png", "height": 4, "width": 4}],
        "categories": [{"id": k, "name": f"c{k}"} for k in ids],
        "annotations": [
            {
                "id": n,
                "image_id": 1,
                "category_id": k,
                "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]],
                "area": 4.0,
                "iscrowd": 0,
            }
            for n, k in enumerate(ids)
        ],
    }
    for f in range(4):
        val = CocoDataset(dataset, tmp_path, fold=f, split="val", min_area=0)
        train = CocoDataset(dataset, tmp_path, fold=f, split="train", min_area=0)
        assert list(val.classes) == splits[f"fold{f}"]["val"]
        assert len(train.classes) == 60 and not set(train.classes) & set(val.classes)
    assert len(CocoDataset(dataset, tmp_path, min_area=0).classes) == 80


def test_coco_bad_arguments(tmp_path):
    from napari_label_anything.training.datasets import CocoDataset

    path, folder, *_ = _tiny_coco(tmp_path)
    for kwargs, message in [
        ({"fold": 4}, "fold"),
        ({"fold": 0, "split": "test"}, "split"),
        ({"min_area": -1}, "min_area"),
        ({"folds": 1}, "folds"),
    ]:
        with pytest.raises(ValueError, match=message):
            CocoDataset(path, folder, **kwargs)
    with pytest.raises(ValueError, match="does not exist"):
        CocoDataset(tmp_path / "missing.json", folder)
    with pytest.raises(ValueError, match="does not exist"):
        CocoDataset(path, tmp_path / "nowhere")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        CocoDataset(tmp_path / "bad.json", folder)
    # an image whose size disagrees with its record
    from PIL import Image

    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "img2.png")
    with pytest.raises(ValueError, match=r"img2\.png.*\(30, 30\)"):
        CocoDataset(path, folder, min_area=50)[1]


def test_episode_background_scribbles_are_background_not_a_class(tmp_path):
    """The widget saves background scribbles as a last class "background": it trains as label 0."""
    image = np.zeros((16, 16), np.uint8)
    labels = np.zeros((16, 16), np.int64)
    labels[2:6, 2:6] = 1
    labels[10:14, 10:14] = 2  # the "background" class
    episode = Episode(["cell", "background"])
    episode.add_support(image, labels=labels)
    episode.save(tmp_path / "a.episode")
    data = EpisodeFilesDataset(tmp_path / "a.episode")
    assert data.classes == {1: "cell"}
    assert set(np.unique(data[0].labels)) == {0, 1}


def test_coco_2014_names_find_2017_files(tmp_path):
    """2014 annotation names (COCO_val2014_0000...) next to the merged 2017 image files (0000...)."""
    import json

    annotations, folder, _, _ = _tiny_coco(tmp_path)
    content = json.loads(annotations.read_text())
    for record in content["images"]:
        renamed = f"COCO_val2014_{record['file_name']}"
        record["file_name"] = renamed  # the files keep their 2017-style names
    annotations.write_text(json.dumps(content))
    data = CocoDataset(annotations, folder, min_area=50)
    assert data[0].image.ndim == 3
