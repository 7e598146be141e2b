"""Adding a dataset is one new module: a toy dataset registered from this test only (docs/method.md §11)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import pytest
import torch

from pointcalip.cli import main
from pointcalip.datasets import (
    DatasetInfo,
    InMemoryDataset,
    SubsetDataset,
    build_dataset,
    class_names,
    dataset_names,
    get_dataset_info,
    register_dataset,
    unregister_dataset,
)
from pointcalip.errors import ConfigError, DatasetError

# ----------------------------------------------------------------------------- the toy dataset module

TOY_DIR = "toy_clouds"
TOY_CLASSES = ("cube", "ball", "stick")
TOY_STORED = 40  # points stored per cloud


def _is_toy_dir(folder: Path) -> bool:
    return (folder / "classes.txt").is_file()


def _read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    path = folder / f"{split}.npz"
    if not path.is_file():
        raise DatasetError(f"toy: missing {path}")
    with np.load(path) as z:
        return z["points"].astype(np.float32), z["labels"].astype(np.int64)


def _validate_toy(folder: Path, expected: Optional[Mapping], full: bool) -> str:
    names = (folder / "classes.txt").read_text().split()
    if tuple(names) != TOY_CLASSES:
        raise DatasetError(f"toy: {folder / 'classes.txt'} lists {names}")
    counts = {s: len(_read_split(folder, s)[1]) for s in ("train", "test")}
    return f"{counts['train']} train / {counts['test']} test clouds"


def _build_toy(root: Path, split: str, num_points: int, variant: Optional[str]) -> InMemoryDataset:
    folder = root / TOY_DIR if _is_toy_dir(root / TOY_DIR) else root
    if not _is_toy_dir(folder):
        raise DatasetError(f"toy: not found in {root}")
    points, labels = _read_split(folder, split)
    return InMemoryDataset(points[:, :num_points], labels, TOY_CLASSES, split, num_points,
                           files=[folder / f"{split}.npz"], name="toy")  # fmt: skip


TOY = DatasetInfo(
    name="toy", build=_build_toy, folder=TOY_DIR, classes=TOY_CLASSES, is_dataset_dir=_is_toy_dir,
    validate=_validate_toy, manual="the toy set is made by tests; put it in {target} or use --from-dir DIR",
    description="a test-only toy dataset",
)  # fmt: skip


def write_toy(root: Path, seed: int = 0) -> Path:
    folder = root / TOY_DIR
    folder.mkdir(parents=True)
    (folder / "classes.txt").write_text("\n".join(TOY_CLASSES))
    rng = np.random.default_rng(seed)
    for split, n in (("train", 6), ("test", 3)):
        labels = np.arange(n) % 3
        np.savez(folder / f"{split}.npz", points=rng.normal(size=(n, TOY_STORED, 3)), labels=labels)
    return folder


@pytest.fixture
def toy():
    register_dataset(TOY)
    yield TOY
    unregister_dataset("toy")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    return err


# ----------------------------------------------------------------------------- registry


def test_toy_is_registered_and_built(toy, tmp_path):
    write_toy(tmp_path)
    assert "toy" in dataset_names() and dataset_names()[-1] == "toy"
    assert get_dataset_info("TOY") is toy and class_names("toy") == list(TOY_CLASSES)
    ds = build_dataset("toy", tmp_path, "train", 16)
    with np.load(tmp_path / TOY_DIR / "train.npz") as z:
        assert np.array_equal(ds.points, z["points"][:, :16].astype(np.float32))
        assert np.array_equal(ds.labels, z["labels"])
    assert ds.name == "toy" and ds.classes == list(TOY_CLASSES) and len(ds) == 6
    pts, label = ds[4]
    assert pts.shape == (16, 3) and pts.dtype == torch.float32 and label == 1


def test_toy_arguments_are_checked_by_the_registry(toy, tmp_path):
    write_toy(tmp_path)
    with pytest.raises(ConfigError, match="valid: train, test"):
        build_dataset("toy", tmp_path, "val")
    with pytest.raises(ConfigError, match="variants apply to scanobjectnn only"):
        build_dataset("toy", tmp_path, "test", 8, "obj_bg")
    with pytest.raises(ConfigError, match="positive integer"):
        build_dataset("toy", tmp_path, "test", 0)


def test_unregistered_after_the_test():
    assert "toy" not in dataset_names()
    with pytest.raises(ConfigError, match="unknown dataset 'toy'; valid: modelnet40, modelnet10"):
        build_dataset("toy", "data")


def test_register_rules(toy):
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(TOY)
    with pytest.raises(ValueError, match="lower-case"):
        DatasetInfo(name="Toy Set", build=_build_toy, folder="x", classes=("a",))
    with pytest.raises(ValueError, match="classes or read_classes"):
        DatasetInfo(name="noclasses", build=_build_toy, folder="x")
    with pytest.raises(ValueError, match="default_variant"):
        DatasetInfo(name="v", build=_build_toy, folder="x", classes=("a",), variants=("a", "b"))


# ----------------------------------------------------------------------------- download command


def test_cli_from_dir_validates_and_installs(toy, tmp_path, capsys):
    write_toy(tmp_path / "src")
    code = main(["download", "toy", "--root", str(tmp_path / "data"), "--from-dir", str(tmp_path / "src")])
    assert code == 0 and "6 train / 3 test clouds" in capsys.readouterr().out
    installed = tmp_path / "data" / TOY_DIR
    assert installed.is_dir() and not installed.is_symlink()  # copied: link_local_copy is False
    assert len(build_dataset("toy", tmp_path / "data", "test", 8)) == 3


def test_cli_from_dir_rejects_a_broken_copy(toy, tmp_path, capsys):
    (write_toy(tmp_path / "src") / "test.npz").unlink()
    assert main(["download", "toy", "--root", str(tmp_path / "data"), "--from-dir", str(tmp_path / "src")]) == 2
    assert "toy: missing" in _one_line_error(capsys)
    assert not (tmp_path / "data" / TOY_DIR).exists()


def test_cli_without_source_prints_the_manual_text(toy, tmp_path, capsys):
    assert main(["download", "toy", "--root", str(tmp_path)]) == 2
    assert f"put it in {tmp_path / TOY_DIR} or use --from-dir DIR" in _one_line_error(capsys)


# ----------------------------------------------------------------------------- the dataset contract


def test_in_memory_subset_and_points_of(toy, tmp_path):
    write_toy(tmp_path)
    ds = build_dataset("toy", tmp_path, "train", 16)
    idx = np.array([5, 0, -1])
    assert np.array_equal(ds.points_of(idx), ds.points[[5, 0, 5]])
    sub = ds.subset(np.array([4, 1]))
    assert isinstance(sub, InMemoryDataset) and np.array_equal(sub.points, ds.points[[4, 1]])
    assert np.array_equal(sub.labels, ds.labels[[4, 1]])
    assert sub.fingerprint() == ds.subset(np.array([4, 1])).fingerprint()
    assert sub.fingerprint() not in (ds.fingerprint(), ds.subset(np.array([1, 4])).fingerprint())
    with pytest.raises(IndexError):
        ds.points_of(np.array([6]))


def test_lazy_subset_matches_the_parent(toy, tmp_path):
    write_toy(tmp_path)
    ds = build_dataset("toy", tmp_path, "train", 16)
    view = SubsetDataset(ds, np.array([3, 3, 0]))
    assert np.array_equal(view.points_of(np.array([2, 0])), ds.points[[0, 3]])
    points, label = view[1]
    assert np.array_equal(points.numpy(), ds.points[3]) and label == ds.labels[3]
    assert view.fingerprint() != ds.fingerprint()
