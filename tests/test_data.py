"""Datasets (docs/method.md §7) read from generated files in the exact on-disk layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pointcalip.datasets import build_dataset, class_names, dataset_names
from pointcalip.datasets.modelnet import (
    MODELNET10_CLASSES,
    MODELNET40_CLASSES,
    ModelNet10,
    ModelNet40,
    scan_modelnet40,
)
from pointcalip.datasets.scanobjectnn import (
    SCANOBJECTNN_CLASSES,
    SCANOBJECTNN_VARIANTS,
    ScanObjectNN,
    scan_scanobjectnn,
)
from pointcalip.testing.datasets import write_modelnet40, write_scanobjectnn
from pointcalip.errors import ConfigError, DatasetError, PointcalipError

MN_DIR = "modelnet40_ply_hdf5_2048"


@pytest.fixture(scope="module")
def mn_root(tmp_path_factory) -> Path:
    """Data root holding a generated ModelNet40 (80 train in 2 shards, 40 test in 1)."""
    root = tmp_path_factory.mktemp("data")
    write_modelnet40(root)
    return root


@pytest.fixture(scope="module")
def so_root(tmp_path_factory) -> Path:
    """Data root holding a generated ScanObjectNN with all three variants."""
    root = tmp_path_factory.mktemp("sodata")
    write_scanobjectnn(root, train_per_class=2, test_per_class=1, num_points=128)
    return root


@pytest.fixture
def mn_copy(mn_root, tmp_path) -> Path:
    """A private, modifiable copy of the generated ModelNet40 data root."""
    shutil.copytree(mn_root / MN_DIR, tmp_path / MN_DIR)
    return tmp_path


def _raw(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The stored arrays of a ModelNet40 split, in file-list order, read with h5py."""
    names = [ln.rsplit("/", 1)[-1] for ln in (folder / f"{split}_files.txt").read_text().split()]
    data, labels = [], []
    for name in names:
        with h5py.File(folder / name, "r") as f:
            data.append(f["data"][()])
            labels.append(f["label"][()].reshape(-1))
    return np.concatenate(data), np.concatenate(labels)


# ----------------------------------------------------------------------------- constants


def test_class_constants():
    assert len(MODELNET40_CLASSES) == 40 and MODELNET40_CLASSES[0] == "airplane" and MODELNET40_CLASSES[-1] == "xbox"
    assert list(MODELNET10_CLASSES) == "bathtub bed chair desk dresser monitor night_stand sofa table toilet".split()
    assert list(SCANOBJECTNN_CLASSES) == (
        "bag bin box cabinet chair desk display door shelf table bed pillow sink sofa toilet".split()
    )
    assert set(MODELNET10_CLASSES) <= set(MODELNET40_CLASSES)
    assert dataset_names()[:4] == ("modelnet40", "modelnet10", "scanobjectnn", "objaverse_lvis")
    assert class_names("modelnet40") == list(MODELNET40_CLASSES)
    assert class_names("ModelNet10") == list(MODELNET10_CLASSES)
    assert class_names("scanobjectnn") == list(SCANOBJECTNN_CLASSES)
    assert SCANOBJECTNN_VARIANTS["obj_only"].folder == "main_split_nobg"
    assert SCANOBJECTNN_VARIANTS["pb_t50_rs"].train_file == "training_objectdataset_augmentedrot_scale75.h5"


def test_class_names_unknown_lists_choices():
    with pytest.raises(ConfigError, match="modelnet40, modelnet10, scanobjectnn"):
        class_names("shapenet")


# ----------------------------------------------------------------------------- generator


def test_generated_modelnet40_layout(mn_root):
    folder = mn_root / MN_DIR
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        ["ply_data_train0.h5", "ply_data_train1.h5", "ply_data_test0.h5",
         "train_files.txt", "test_files.txt", "shape_names.txt"]
    )  # fmt: skip
    assert (folder / "train_files.txt").read_text().split() == [
        "data/modelnet40_ply_hdf5_2048/ply_data_train0.h5",
        "data/modelnet40_ply_hdf5_2048/ply_data_train1.h5",
    ]
    assert (folder / "shape_names.txt").read_text().split() == list(MODELNET40_CLASSES)
    with h5py.File(folder / "ply_data_train0.h5", "r") as f:
        assert f["data"].dtype == np.float32 and f["data"].shape == (40, 2048, 3)
        assert f["label"].dtype == np.uint8 and f["label"].shape == (40, 1)


def test_generated_scanobjectnn_layout(so_root):
    for spec in SCANOBJECTNN_VARIANTS.values():
        with h5py.File(so_root / "h5_files" / spec.folder / spec.test_file, "r") as f:
            assert set(f.keys()) == {"data", "label", "mask"}
            assert f["data"].dtype == np.float32 and f["data"].shape == (15, 128, 3)
            assert f["label"].shape == (15,) and f["mask"].shape == (15, 128)


# ----------------------------------------------------------------------------- ModelNet40


@pytest.mark.parametrize("split,n", [("train", 80), ("test", 40)])
def test_modelnet40_shapes_and_labels(mn_root, split, n):
    ds = ModelNet40(mn_root, split)
    assert len(ds) == n and ds.split == split and ds.num_points == 1024
    assert ds.classes == list(MODELNET40_CLASSES)
    assert ds.points.dtype == np.float32 and ds.points.shape == (n, 1024, 3)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
    assert np.bincount(ds.labels, minlength=40).tolist() == [n // 40] * 40
    points, label = ds[3]
    assert isinstance(points, torch.Tensor) and points.dtype == torch.float32 and points.shape == (1024, 3)
    assert type(label) is int and label == ds.labels[3]


def test_modelnet40_first_points_in_stored_order(mn_root):
    data, labels = _raw(mn_root / MN_DIR, "train")
    ds = ModelNet40(mn_root, "train", num_points=100)
    assert np.array_equal(ds.points, data[:, :100, :])
    assert np.array_equal(ds.labels, labels.astype(np.int64))
    full = ModelNet40(mn_root, "train", num_points=2048)
    assert np.array_equal(full.points, data)


def test_modelnet40_item_is_a_copy(mn_root):
    ds = ModelNet40(mn_root, "test", num_points=16)
    before = ds.points[0].copy()
    ds[0][0].add_(1.0)
    assert np.array_equal(ds.points[0], before)


def test_dataloader_batches(mn_root):
    ds = ModelNet40(mn_root, "test")
    points, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert points.shape == (8, 1024, 3) and points.dtype == torch.float32 and labels.shape == (8,)


def test_root_may_be_the_dataset_folder(mn_root):
    a = ModelNet40(mn_root, "test")
    b = ModelNet40(mn_root / MN_DIR, "test")
    assert np.array_equal(a.points, b.points) and a.fingerprint() == b.fingerprint()


def test_file_list_resolved_by_file_name_in_list_order(mn_copy):
    folder = mn_copy / MN_DIR
    (folder / "train_files.txt").write_text(
        "/somewhere/else/entirely/ply_data_train1.h5\r\nC:\\old\\root\\ply_data_train0.h5\n\n"
    )
    ds = ModelNet40(mn_copy, "train", num_points=8)
    with h5py.File(folder / "ply_data_train1.h5", "r") as f1, h5py.File(folder / "ply_data_train0.h5", "r") as f0:
        expected = np.concatenate([f1["data"][:, :8], f0["data"][:, :8]])
    assert np.array_equal(ds.points, expected)


def test_missing_list_falls_back_to_shards(mn_copy):
    (mn_copy / MN_DIR / "train_files.txt").unlink()
    assert len(ModelNet40(mn_copy, "train", num_points=8)) == 80


# ----------------------------------------------------------------------------- ModelNet10


@pytest.mark.parametrize("split", ["train", "test"])
def test_modelnet10_is_the_modelnet40_subset(mn_root, split):
    mn40 = ModelNet40(mn_root, split, num_points=64)
    mn10 = ModelNet10(mn_root, split, num_points=64)
    assert mn10.classes == list(MODELNET10_CLASSES)
    keep = np.array([MODELNET40_CLASSES[k] in MODELNET10_CLASSES for k in mn40.labels])
    assert len(mn10) == keep.sum() == (20 if split == "train" else 10)
    assert np.array_equal(mn10.points, mn40.points[keep])
    for l10, l40 in zip(mn10.labels, mn40.labels[keep]):
        assert MODELNET10_CLASSES[l10] == MODELNET40_CLASSES[l40]
    assert set(mn10.labels.tolist()) == set(range(10))
    assert mn10.labels.dtype == np.int64


# ----------------------------------------------------------------------------- ScanObjectNN


@pytest.mark.parametrize("variant", list(SCANOBJECTNN_VARIANTS))
@pytest.mark.parametrize("split,n", [("train", 30), ("test", 15)])
def test_scanobjectnn_variants(so_root, variant, split, n):
    ds = ScanObjectNN(so_root, split, num_points=100, variant=variant)
    spec = SCANOBJECTNN_VARIANTS[variant]
    with h5py.File(so_root / "h5_files" / spec.folder / spec.file(split), "r") as f:
        data, labels = f["data"][()], f["label"][()]
    assert ds.variant == variant and ds.split == split and ds.classes == list(SCANOBJECTNN_CLASSES)
    assert ds.points.shape == (n, 100, 3) and ds.points.dtype == np.float32
    assert np.array_equal(ds.points, data[:, :100])
    assert np.array_equal(ds.labels, labels) and ds.labels.dtype == np.int64
    assert ds.labels.min() >= 0 and ds.labels.max() < 15


def test_scanobjectnn_default_variant_and_leniency(so_root):
    ds = build_dataset("scanobjectnn", so_root, "test", num_points=64)
    assert ds.variant == "obj_only"
    same = ScanObjectNN(so_root / "h5_files", "test", num_points=64, variant="OBJ-ONLY")
    assert same.variant == "obj_only" and same.fingerprint() == ds.fingerprint()


def test_variants_differ(so_root):
    prints = {v: ScanObjectNN(so_root, "test", 64, v).fingerprint() for v in SCANOBJECTNN_VARIANTS}
    assert len(set(prints.values())) == 3


# ----------------------------------------------------------------------------- build_dataset


def test_build_dataset_dispatch(mn_root, so_root):
    assert isinstance(build_dataset("modelnet40", mn_root, "test"), ModelNet40)
    assert isinstance(build_dataset("modelnet10", mn_root, "train", 32), ModelNet10)
    assert isinstance(build_dataset("scanobjectnn", so_root, "train", 32, "pb_t50_rs"), ScanObjectNN)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "modelnet"}, "valid: modelnet40, modelnet10, scanobjectnn"),
        ({"split": "val"}, "valid: train, test"),
        ({"name": "scanobjectnn", "variant": "hardest"}, "valid: obj_bg, obj_only, pb_t50_rs"),
        ({"variant": "obj_bg"}, "scanobjectnn only"),
        ({"num_points": 0}, "positive integer"),
        ({"num_points": 4096}, "stores 2048 points"),
    ],
)
def test_build_dataset_bad_arguments(mn_root, so_root, kwargs, match):
    args = {"name": "modelnet40", "split": "test", "num_points": 1024, "variant": None, **kwargs}
    root = so_root if args["name"] == "scanobjectnn" else mn_root
    with pytest.raises(PointcalipError, match=match):
        build_dataset(args["name"], root, args["split"], args["num_points"], args["variant"])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("cls", [ModelNet40, ModelNet10])
def test_missing_modelnet_explains_layout_and_download(tmp_path, cls):
    with pytest.raises(DatasetError) as info:
        cls(tmp_path, "test")
    msg = str(info.value)
    assert "modelnet40_ply_hdf5_2048/" in msg and "train_files.txt" in msg and "ply_data_test0.h5" in msg
    assert f"pointcalip download modelnet40 --root {tmp_path}" in msg


def test_missing_scanobjectnn_explains_layout_terms_and_command(tmp_path):
    with pytest.raises(DatasetError) as info:
        ScanObjectNN(tmp_path, "test", variant="pb_t50_rs")
    msg = str(info.value)
    assert "h5_files/main_split_nobg/" in msg and "test_objectdataset_augmentedrot_scale75.h5" in msg
    assert "terms of use" in msg and f"pointcalip download scanobjectnn --root {tmp_path} --from-file" in msg


def test_scanobjectnn_missing_variant_is_partial(tmp_path):
    write_scanobjectnn(tmp_path, variants=("obj_bg",), num_points=32)
    assert len(ScanObjectNN(tmp_path, "test", 32, "obj_bg")) == 15
    with pytest.raises(DatasetError, match="missing main_split_nobg/test_objectdataset.h5"):
        ScanObjectNN(tmp_path, "test", 32, "obj_only")


def test_partial_modelnet40(mn_copy):
    (mn_copy / MN_DIR / "ply_data_train1.h5").unlink()
    with pytest.raises(DatasetError) as info:
        ModelNet40(mn_copy, "train")
    assert "missing ply_data_train1.h5" in str(info.value)
    assert "pointcalip download modelnet40" in str(info.value)
    assert len(ModelNet40(mn_copy, "test")) == 40  # the intact split still loads


def test_empty_dataset_folder_is_missing(tmp_path):
    (tmp_path / MN_DIR).mkdir()
    with pytest.raises(DatasetError, match="not found"):
        ModelNet40(tmp_path, "test")


def test_corrupt_h5_names_the_file(mn_copy):
    bad = mn_copy / MN_DIR / "ply_data_test0.h5"
    bad.write_bytes(b"this is not an HDF5 file" * 100)
    with pytest.raises(DatasetError, match="ply_data_test0.h5"):
        ModelNet40(mn_copy, "test")


def test_h5_missing_key_and_bad_labels(mn_copy):
    path = mn_copy / MN_DIR / "ply_data_test0.h5"
    with h5py.File(path, "r+") as f:
        f["label"][0] = 77
    with pytest.raises(DatasetError, match="labels range"):
        ModelNet40(mn_copy, "test")
    with h5py.File(path, "r+") as f:
        del f["label"]
    with pytest.raises(DatasetError, match="missing key"):
        ModelNet40(mn_copy, "test")


def test_wrong_shape_names(mn_copy):
    names = list(MODELNET40_CLASSES)
    names[0], names[1] = names[1], names[0]
    (mn_copy / MN_DIR / "shape_names.txt").write_text("\n".join(names))
    with pytest.raises(DatasetError, match="shape_names.txt"):
        ModelNet40(mn_copy, "test")


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_and_distinguishes_settings(mn_root, tmp_path):
    a = ModelNet40(mn_root, "test").fingerprint()
    assert isinstance(a, str) and 8 <= len(a) <= 64
    assert ModelNet40(mn_root, "test").fingerprint() == a
    assert ModelNet40(mn_root, "train").fingerprint() != a
    assert ModelNet40(mn_root, "test", num_points=512).fingerprint() != a
    assert ModelNet10(mn_root, "test").fingerprint() != a
    moved = tmp_path / "moved"
    shutil.copytree(mn_root / MN_DIR, moved / MN_DIR)
    assert ModelNet40(moved, "test").fingerprint() == a


def test_fingerprint_changes_with_one_coordinate_or_label(mn_copy):
    path = mn_copy / MN_DIR / "ply_data_test0.h5"
    before = ModelNet40(mn_copy, "test").fingerprint()
    with h5py.File(path, "r+") as f:
        f["data"][5, 7, 1] += np.float32(1e-3)
    after_point = ModelNet40(mn_copy, "test").fingerprint()
    assert after_point != before
    with h5py.File(path, "r+") as f:
        lab = f["label"][()]
        lab[2, 0] = (lab[2, 0] + 1) % 40
        f["label"][...] = lab
    assert ModelNet40(mn_copy, "test").fingerprint() not in (before, after_point)


def test_fingerprint_ignores_points_beyond_num_points_only_in_data(mn_copy):
    path = mn_copy / MN_DIR / "ply_data_test0.h5"
    before = ModelNet40(mn_copy, "test", num_points=16).fingerprint()
    with h5py.File(path, "r+") as f:  # a point that is not used changes the file, not the data
        f["data"][0, 2000, 0] += np.float32(0.5)
    assert ModelNet40(mn_copy, "test", num_points=16).fingerprint() == before


# ----------------------------------------------------------------------------- validation


def test_scan_counts(mn_root, so_root):
    assert scan_modelnet40(mn_root / MN_DIR) == {"train": 80, "test": 40}
    found = scan_scanobjectnn(so_root / "h5_files")
    assert found == {v: {"train": 30, "test": 15} for v in SCANOBJECTNN_VARIANTS}


def test_scan_modelnet40_requires_lists(mn_copy):
    (mn_copy / MN_DIR / "test_files.txt").unlink()
    with pytest.raises(DatasetError, match="test_files.txt"):
        scan_modelnet40(mn_copy / MN_DIR)
