"""Objaverse-LVIS (OpenShape layout) read lazily from generated files (docs/method.md §7)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import pointcalip.datasets.objaverse_lvis as olvis
from pointcalip.cli import main
from pointcalip.datasets import build_dataset, class_names, download_dataset
from pointcalip.datasets.npy_safe import load_npy
from pointcalip.errors import ConfigError, DatasetError, DownloadError
from pointcalip.clouds import prepare_cloud
from pointcalip.testing.datasets import LVIS_TEST_CATEGORIES, write_objaverse_lvis, write_openshape_npy

NPTS = 300  # points per generated object
SPLIT = Path("meta_data/split/lvis.json")


@pytest.fixture(scope="module")
def lvis_src(tmp_path_factory) -> Path:
    """A generated copy: 5 categories x 2 objects of 300 points, in 3 part folders."""
    return write_objaverse_lvis(tmp_path_factory.mktemp("lvis"), per_category=2, num_points=NPTS)


@pytest.fixture
def lvis_copy(lvis_src, tmp_path) -> Path:
    """A private, modifiable data root holding ``objaverse_lvis/``."""
    shutil.copytree(lvis_src, tmp_path / "objaverse_lvis")
    return tmp_path


def _entries(folder: Path) -> list[dict]:
    return json.loads((folder / SPLIT).read_text())


def _raw_xyz(folder: Path, entry: dict) -> np.ndarray:
    """The stored xyz of one object, read with numpy's own (trusting) loader."""
    path = olvis.resolve_data_path(folder, entry["data_path"])
    return np.load(path, allow_pickle=True).item()["xyz"]


# ----------------------------------------------------------------------------- layout


def test_generated_layout_is_openshapes(lvis_src):
    entries = _entries(lvis_src)
    assert len(entries) == 10 and all(set(e) == {"uid", "category", "data_path"} for e in entries)
    assert all(e["data_path"].startswith("/mnt/data/objaverse-processed/merged_for_training_final/Objaverse/000-")
               for e in entries)  # fmt: skip
    path = olvis.resolve_data_path(lvis_src, entries[0]["data_path"])
    assert path == lvis_src.joinpath("objaverse-processed", *Path(entries[0]["data_path"]).parts[4:])
    record = np.load(path, allow_pickle=True).item()
    assert record["xyz"].shape == (NPTS, 3) and record["xyz"].dtype == np.float32 and "rgb" in record
    assert np.abs(record["xyz"]).max() <= 1.0


def test_resolve_data_path_rules(tmp_path):
    assert olvis.resolve_data_path(tmp_path, "/x/y/objaverse-processed/a/b.npy") == tmp_path / "objaverse-processed/a/b.npy"
    assert olvis.resolve_data_path(tmp_path, "Objaverse/000-001/u.npy") == tmp_path / "Objaverse/000-001/u.npy"
    assert olvis.resolve_data_path(tmp_path, "/abs/elsewhere/u.npy") == Path("/abs/elsewhere/u.npy")


# ----------------------------------------------------------------------------- classes and labels


def test_classes_are_sorted_like_openshape(lvis_copy):
    cats = [e["category"] for e in _entries(lvis_copy / "objaverse_lvis")]
    expected = [str(c) for c in sorted(np.unique(cats))]  # OpenShape's rule
    assert class_names("objaverse_lvis", lvis_copy) == expected == sorted(LVIS_TEST_CATEGORIES)
    assert expected[0] == "Band_Aid"  # code-point order: capitals first


def test_build_labels_and_items(lvis_copy):
    ds = build_dataset("objaverse_lvis", lvis_copy, "test", num_points=64)
    entries = _entries(lvis_copy / "objaverse_lvis")
    assert len(ds) == 10 and ds.split == "test" and ds.variant is None and ds.num_points == 64
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (10,)
    assert [ds.classes[k] for k in ds.labels] == [e["category"] for e in entries]
    assert ds.uids == [e["uid"] for e in entries]
    points, label = ds[7]
    assert isinstance(points, torch.Tensor) and points.dtype == torch.float32 and points.shape == (64, 3)
    assert label == ds.labels[7] and type(label) is int


def test_points_are_the_prepared_stored_xyz(lvis_copy):
    ds = build_dataset("objaverse_lvis", lvis_copy, "test", num_points=64)
    entries = _entries(lvis_copy / "objaverse_lvis")
    batch = ds.points_of(np.array([4, 0, 4]))
    assert batch.shape == (3, 64, 3) and batch.dtype == np.float32
    for row, i in zip(batch, (4, 0, 4)):
        raw = _raw_xyz(lvis_copy / "objaverse_lvis", entries[i])
        assert np.array_equal(row, prepare_cloud(raw, 64, True, "x"))
        # unit ball of the whole object, then an FPS subset of its points
        centred = raw.astype(np.float64) - raw.astype(np.float64).mean(0)
        unit = centred / np.linalg.norm(centred, axis=1).max()
        dist = np.linalg.norm(row[:, None, :] - unit[None, :, :], axis=2).min(axis=1)
        assert dist.max() < 1e-5 and len(np.unique(row, axis=0)) == 64
    assert np.array_equal(batch[0], batch[2])


def test_reading_is_lazy(lvis_copy, monkeypatch):
    reads = []
    real = olvis.load_npy
    monkeypatch.setattr(olvis, "load_npy", lambda p: reads.append(Path(p).stem) or real(p))
    ds = build_dataset("objaverse_lvis", lvis_copy, "test", num_points=32)
    ds.fingerprint()
    assert reads == []  # building and fingerprinting read no object
    ds.points_of(np.array([3, 1]))
    assert reads == [ds.uids[3], ds.uids[1]]


def test_short_object_is_padded_cyclically(lvis_copy):
    ds = build_dataset("objaverse_lvis", lvis_copy, "test", num_points=64)
    few = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=np.float32)
    write_openshape_npy(ds.paths[2], few)
    row = build_dataset("objaverse_lvis", lvis_copy, "test", num_points=64).points_of(np.array([2]))[0]
    first = prepare_cloud(few, 64, True, "few")
    assert first.shape == (5, 3)
    assert np.array_equal(row, first[np.arange(64) % 5])


def test_only_a_test_split_and_no_variants(lvis_copy):
    with pytest.raises(ConfigError, match="valid: test"):
        build_dataset("objaverse_lvis", lvis_copy, "train")
    with pytest.raises(ConfigError, match="does not apply"):
        build_dataset("objaverse_lvis", lvis_copy, "test", 64, "obj_bg")


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_sensitive(lvis_copy, tmp_path_factory):
    a = build_dataset("objaverse_lvis", lvis_copy, "test", 64)
    fp = a.fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert build_dataset("objaverse_lvis", lvis_copy, "test", 64).fingerprint() == fp
    assert build_dataset("objaverse_lvis", lvis_copy, "test", 32).fingerprint() != fp
    moved = tmp_path_factory.mktemp("moved")
    shutil.copytree(lvis_copy / "objaverse_lvis", moved / "objaverse_lvis", copy_function=shutil.copy2)
    assert build_dataset("objaverse_lvis", moved, "test", 64).fingerprint() == fp  # mtimes kept
    # same size, new content: caught by the modification time
    path = a.paths[5]
    write_openshape_npy(path, _raw_xyz(lvis_copy / "objaverse_lvis", _entries(lvis_copy / "objaverse_lvis")[5])[::-1].copy())
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 10))
    fp2 = build_dataset("objaverse_lvis", lvis_copy, "test", 64).fingerprint()
    assert fp2 != fp
    # another size
    write_openshape_npy(path, np.random.default_rng(1).normal(size=(NPTS + 7, 3)))
    os.utime(path, (st.st_atime, st.st_mtime + 10))
    assert build_dataset("objaverse_lvis", lvis_copy, "test", 64).fingerprint() not in (fp, fp2)


def test_fingerprint_follows_the_split_file(lvis_copy):
    fp = build_dataset("objaverse_lvis", lvis_copy, "test", 64).fingerprint()
    split = lvis_copy / "objaverse_lvis" / SPLIT
    entries = _entries(lvis_copy / "objaverse_lvis")
    entries[0]["category"], entries[1]["category"] = entries[1]["category"], entries[0]["category"]
    split.write_text(json.dumps(entries))
    assert build_dataset("objaverse_lvis", lvis_copy, "test", 64).fingerprint() != fp


def test_subset_reads_the_parent_rows(lvis_copy):
    ds = build_dataset("objaverse_lvis", lvis_copy, "test", 32)
    sub = ds.subset(np.array([9, 2]))
    assert len(sub) == 2 and np.array_equal(sub.labels, ds.labels[[9, 2]])
    assert np.array_equal(sub.points_of(np.array([1, 0])), ds.points_of(np.array([2, 9])))
    assert sub.fingerprint() != ds.fingerprint() != ds.subset(np.array([2, 9])).fingerprint()
    assert sub.fingerprint() == ds.subset(np.array([9, 2])).fingerprint()


# ----------------------------------------------------------------------------- errors


def test_missing_dataset_explains(tmp_path):
    with pytest.raises(DatasetError) as info:
        build_dataset("objaverse_lvis", tmp_path, "test")
    msg = str(info.value)
    assert "meta_data/split/lvis.json" in msg and f"pointcalip download objaverse_lvis --root {tmp_path}" in msg


def test_missing_object_names_its_part(lvis_copy):
    ds = build_dataset("objaverse_lvis", lvis_copy, "test", 32)
    ds.paths[4].unlink()
    with pytest.raises(DatasetError) as info:
        build_dataset("objaverse_lvis", lvis_copy, "test", 32)
    msg = str(info.value)
    assert "1 of 10 object files" in msg and ds.paths[4].parent.name in msg and olvis.HF_REPO in msg


def test_bad_split_file(lvis_copy):
    (lvis_copy / "objaverse_lvis" / SPLIT).write_text('[{"uid": "a"}]')
    with pytest.raises(DatasetError, match="entry 0 has no string 'category' and 'data_path'"):
        build_dataset("objaverse_lvis", lvis_copy, "test")
    (lvis_copy / "objaverse_lvis" / SPLIT).write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        build_dataset("objaverse_lvis", lvis_copy, "test")


def test_corrupt_object_names_the_file(lvis_copy):
    ds = build_dataset("objaverse_lvis", lvis_copy, "test", 32)
    ds.paths[0].write_bytes(b"garbage" * 50)
    with pytest.raises(DatasetError, match=ds.uids[0]):
        ds.points_of(np.array([0]))


# ----------------------------------------------------------------------------- safe .npy reading


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_unpickler_refuses_other_globals(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.npy"
    np.save(path, np.array({"xyz": np.zeros((4, 3)), "x": _Evil(str(target))}, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match=r"refusing to unpickle (posix|nt|os)\.mkdir"):
        load_npy(path)
    assert not target.exists()


def test_unpickler_reads_release_values(tmp_path):
    path = write_openshape_npy(tmp_path / "000-001" / "u.npy", np.ones((5, 3)), extra={"half": np.float16(2.5)})
    got, ref = load_npy(path), np.load(path, allow_pickle=True).item()
    assert set(got) == set(ref) and got["group"] == "000-001" and got["half"] == np.float16(2.5)
    assert np.array_equal(got["xyz"], ref["xyz"]) and got["xyz"].dtype == np.float32
    assert np.array_equal(got["text_feat"][0]["prompt_avg"], ref["text_feat"][0]["prompt_avg"])
    # pickle protocol 2 with numpy-1 module names ("numpy.core..."), as files written by numpy 1 name them
    body = pickle.dumps(np.array({"xyz": np.arange(6.0).reshape(2, 3)}, dtype=object), protocol=2)
    body = body.replace(b"numpy._core.", b"numpy.core.")
    assert b"cnumpy.core.multiarray\n_reconstruct" in body
    old = tmp_path / "old.npy"
    with open(old, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(body)
    assert np.array_equal(load_npy(old)["xyz"], np.arange(6.0).reshape(2, 3))


def test_plain_and_structured_arrays(tmp_path):
    np.save(tmp_path / "plain.npy", np.arange(12, dtype=np.float64).reshape(3, 4))
    assert np.array_equal(olvis.read_object_xyz(tmp_path / "plain.npy"), np.arange(12).reshape(3, 4)[:, :3])
    rec = np.zeros(3, dtype=[("xyz", "f4", (3,)), ("rgb", "f4", (3,))])
    rec["xyz"] = np.arange(9).reshape(3, 3)
    np.save(tmp_path / "rec.npy", rec)
    assert np.array_equal(olvis.read_object_xyz(tmp_path / "rec.npy"), np.arange(9).reshape(3, 3))


# ----------------------------------------------------------------------------- local copy (--from-dir)


def test_from_dir_links_and_builds(lvis_src, tmp_path, monkeypatch):
    monkeypatch.setattr(olvis, "SAMPLE_CHECKS", 3)
    logs = []
    folder = download_dataset("objaverse_lvis", tmp_path / "data", from_dir=lvis_src.parent, log=logs.append)
    assert folder == tmp_path / "data" / "objaverse_lvis" and folder.is_symlink()
    assert folder.resolve() == lvis_src.resolve()
    assert "10 objects, 5 categories" in logs[-1] and "3 files read" in logs[-1]
    ds = build_dataset("objaverse_lvis", tmp_path / "data", "test", 32)
    assert len(ds) == 10 and ds.points_of(np.array([0])).shape == (1, 32, 3)
    logs.clear()
    download_dataset("objaverse_lvis", tmp_path / "data", from_dir=folder, full_check=True, log=logs.append)
    assert "in place" in logs[-1] and "10 files read" in logs[-1]


def test_from_dir_full_check_finds_a_bad_file(lvis_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(olvis, "SAMPLE_CHECKS", 1)
    src = lvis_copy / "objaverse_lvis"
    bad = olvis.resolve_data_path(src, _entries(src)[5]["data_path"])
    bad.write_bytes(b"\x93NUMPY broken")
    download_dataset("objaverse_lvis", tmp_path / "a", from_dir=src, log=lambda s: None)  # a sample of 1 misses it
    with pytest.raises(DownloadError, match=bad.stem):
        download_dataset("objaverse_lvis", tmp_path / "b", from_dir=src, full_check=True, log=lambda s: None)
    assert not (tmp_path / "b" / "objaverse_lvis").exists()


def test_cli_without_a_copy_prints_what_to_fetch(tmp_path, capsys):
    assert main(["download", "objaverse_lvis", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for part in ("OpenShape/openshape-training-data", "meta_data.zip", "Objaverse/000-159.tar.gz",
                 "meta_data/split/lvis.json", f"--root {tmp_path} --from-dir DIR"):  # fmt: skip
        assert part in err


def test_cli_from_dir(lvis_src, tmp_path, capsys):
    assert main(["download", "objaverse_lvis", "--root", str(tmp_path), "--from-dir", str(lvis_src), "--check-all"]) == 0
    assert "10 files read" in capsys.readouterr().out
    assert len(build_dataset("objaverse_lvis", tmp_path, "test", 16)) == 10
