"""Orientation in `classify` and the API: fixed up axes, `auto`/`auto3`, robust normalisation."""

from __future__ import annotations

import json
from typing import List

import numpy as np
import pytest
import torch

from pointcalip.api import (
    AUTO_UP_AXES,
    ZeroShotClassifier,
    choose_orientation,
    choose_orientation_naive,
    up_axis_candidates,
)
from pointcalip.cli import main
from pointcalip.clouds import UP_AXES, rotate_up, up_axis_matrix
from pointcalip.config import EvalConfig
from pointcalip.errors import ConfigError
from pointcalip.projection import get_projection
from pointcalip.testing import write_tiny_clip

STUB_CLASSES = ["upright", "lying", "box", "ball"]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("micro-up"), "micro")


@pytest.fixture(scope="module")
def clf(micro) -> ZeroShotClassifier:
    return ZeroShotClassifier(backbone=str(micro[0]), pretrained=str(micro[1]), device="cpu",
                              classes=["chair", "table", "lamp", "mug", "car"])


@pytest.fixture(scope="module")
def rn_clf(resnet_encoder) -> ZeroShotClassifier:
    """The tiny ResNet CLIP: slower, but it tells clouds apart by far more than 1e-5."""
    return ZeroShotClassifier(classes=["chair", "table", "lamp", "mug", "car"], encoder=resnet_encoder)


def tower(seed: int = 0, n: int = 800) -> np.ndarray:
    """A y-up tower on a heavy base: a thin cylinder (y in [0, 2]) standing on a dense disk."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 2 * np.pi, n // 2)
    body = np.stack([0.2 * np.cos(a), rng.uniform(0, 2, n // 2), 0.2 * np.sin(a)], axis=1)
    r, b = 0.4 * np.sqrt(rng.uniform(0, 1, n - n // 2)), rng.uniform(0, 2 * np.pi, n - n // 2)
    base = np.stack([r * np.cos(b), rng.uniform(0, 0.05, n - n // 2), r * np.sin(b)], axis=1)
    return np.concatenate([body, base]).astype(np.float32)


def stored_with_up(points: np.ndarray, axis: str) -> np.ndarray:
    """The y-up ``points`` as a file whose up axis is ``axis`` (so ``rotate_up(result, axis) == points``)."""
    return (points.astype(np.float64) @ up_axis_matrix(axis)).astype(np.float32)  # R orthogonal: old = new @ R


class UprightStub:
    """A stand-in engine whose confidence is controlled: class 0 ("upright") scores how tall and
    bottom-heavy the cloud is along +y, in every view; the other classes score 0."""

    def __init__(self) -> None:
        self.projection = get_projection("pointclip")
        self.calls = 0

    def text_features(self, classes, templates, **cache_options) -> torch.Tensor:
        return torch.zeros(len(classes), 4)

    def components(self, points: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        lo, hi = points.min(dim=1).values, points.max(dim=1).values  # (B, 3)
        height = hi[:, 1] - lo[:, 1]
        width = torch.maximum(hi[:, 0] - lo[:, 0], hi[:, 2] - lo[:, 2])
        bottom_heavy = (hi[:, 1] + lo[:, 1]) / 2 - points[..., 1].mean(dim=1)
        comps = torch.zeros(points.shape[0], self.projection.num_views, 3, text.shape[0])
        comps[:, :, 0, 0] = (4.0 * (height - width) + 8.0 * bottom_heavy)[:, None]
        return comps


@pytest.fixture()
def stub_clf() -> ZeroShotClassifier:
    return ZeroShotClassifier.from_engine(UprightStub(), EvalConfig(), STUB_CLASSES)


# ----------------------------------------------------------------------------- choice rule


def test_choose_orientation_matches_loop_reference() -> None:
    rng = np.random.default_rng(0)
    for c, b in ((1, 5), (3, 17), (6, 40)):
        top1 = np.round(rng.uniform(0, 1, size=(c, b)), 1)  # coarse values: many ties
        got = choose_orientation(top1)
        np.testing.assert_array_equal(got, choose_orientation_naive(top1))
        for j in range(b):  # the first of the maxima
            assert got[j] == min(i for i in range(c) if top1[i, j] == top1[:, j].max())
    with pytest.raises(ValueError, match="top1"):
        choose_orientation(np.zeros(3))


def test_candidates_and_bad_axes(stub_clf) -> None:
    assert up_axis_candidates("auto") == ("y", "z", "x", "-y", "-z", "-x") == AUTO_UP_AXES["auto"]
    assert up_axis_candidates("auto3") == ("y", "z", "x") and up_axis_candidates("-x") == ("-x",)
    for bad in ("w", "Y", None, "+z"):
        with pytest.raises(ConfigError, match="up_axis"):
            up_axis_candidates(bad)
    with pytest.raises(ConfigError):
        ZeroShotClassifier.from_engine(UprightStub(), EvalConfig(), STUB_CLASSES, up_axis="sideways")
    with pytest.raises(ConfigError, match="fixed axis"):
        stub_clf.prepare(tower(), up_axis="auto")


# ------------------------------------------------------------------ auto with a controlled signal


def test_auto_recovers_every_axis(stub_clf) -> None:
    """Generated clouds stored with each up axis: auto finds it and returns the y-up reference prediction."""
    upright = tower(1)
    reference = stub_clf.predict(upright, up_axis="y")
    assert reference.labels == ["upright"] and reference.probs[0, 0] > 0.99
    stored = [stored_with_up(upright, a) for a in UP_AXES]
    for a, cloud in zip(UP_AXES, stored):
        np.testing.assert_array_equal(rotate_up(cloud, a), upright)
    engine = stub_clf.engine
    calls = engine.calls
    pred = stub_clf.predict(stored, up_axis="auto")
    assert engine.calls - calls == 6  # one encoder pass per candidate for the whole batch
    assert pred.up_axes == UP_AXES
    for row in pred.probs:
        np.testing.assert_array_equal(row, reference.probs[0])  # exactly the y-up reference
    pred3 = stub_clf.predict(stored[:3], up_axis="auto3")
    assert pred3.up_axes == ("y", "z", "x")
    np.testing.assert_array_equal(pred3.probs, np.repeat(reference.probs, 3, axis=0))
    # the classifier-wide default applies when predict is not told otherwise
    auto_clf = ZeroShotClassifier.from_engine(UprightStub(), EvalConfig(), STUB_CLASSES, up_axis="auto")
    assert auto_clf.predict(stored[1]).up_axes == ("z",)
    assert auto_clf.predict(stored[1], up_axis="y").up_axes == ("y",)
    depth = auto_clf.render(stored[1])  # shown in the chosen orientation
    np.testing.assert_array_equal(depth, stub_clf.render(upright))


def test_cli_auto_picks_z_for_z_up_files(tmp_path, monkeypatch, capsys) -> None:
    import pointcalip.engine

    monkeypatch.setattr(pointcalip.engine, "engine_from_config", lambda cfg, encoder=None: UprightStub())
    files = []
    for i, axis in enumerate(["z", "z", "y", "z"]):
        files.append(tmp_path / f"t{i}.npy")
        np.save(files[-1], stored_with_up(tower(10 + i), axis))
    args = ["classify", *map(str, files), "--classes", ",".join(STUB_CLASSES), "--workers", "0", "--topk", "2"]
    assert main([*args, "--up-axis", "auto", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["up_axis"] for r in rows] == ["z", "z", "y", "z"]
    assert all(r["topk"][0]["label"] == "upright" for r in rows)
    assert main([*args, "--up-axis", "auto3"]) == 0  # the table has the up axis column
    heads = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert [h.endswith(f"points, up {a})") for h, a in zip(heads, "zzyz")] == [True] * 4


# ------------------------------------------------------------------ the real pipeline


def _shapes() -> List[np.ndarray]:
    rng = np.random.default_rng(7)
    return [tower(3), (rng.normal(size=(300, 3)) * [1.5, 0.3, 0.6]).astype(np.float32),
            stored_with_up(tower(4), "-x")]


def test_auto_is_the_argmax_over_candidates_one_by_one(clf) -> None:
    clouds = _shapes()
    auto = clf.predict(clouds, up_axis="auto")
    single = [clf.predict(clouds, up_axis=a) for a in UP_AXES]
    for j in range(len(clouds)):
        top1 = [s.probs[j].max() for s in single]
        best = max(range(len(UP_AXES)), key=lambda i: (top1[i], -i))  # largest, earliest on ties
        assert auto.up_axes[j] == UP_AXES[best]
        np.testing.assert_array_equal(auto.probs[j], single[best].probs[j])  # exactly that axis's prediction
        assert auto.labels[j] == single[best].labels[j]
    auto3 = clf.predict(clouds, up_axis="auto3")
    for j in range(len(clouds)):
        best = int(np.argmax([single[i].probs[j].max() for i in range(3)]))
        assert auto3.up_axes[j] == UP_AXES[best]


def test_cli_auto_matches_api(clf, micro, tmp_path, capsys) -> None:
    files = []
    for i, c in enumerate(_shapes()):
        files.append(tmp_path / f"s{i}.npy")
        np.save(files[-1], c)
    assert main(["classify", *map(str, files), "--backbone", str(micro[0]), "--pretrained", str(micro[1]),
                 "--device", "cpu", "--classes", ",".join(clf.classes), "--up-axis", "auto", "--json",
                 "--workers", "1", "--topk", "5", "--batch-size", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    pred = clf.predict([str(f) for f in files], up_axis="auto")
    assert [r["up_axis"] for r in rows] == list(pred.up_axes)
    for r, probs in zip(rows, pred.probs):
        for t in r["topk"]:
            assert t["prob"] == pytest.approx(probs[clf.classes.index(t["label"])], abs=1e-6)


def test_fixed_up_axis_equals_rotated_file(rn_clf, tiny_resnet, tmp_path, capsys) -> None:
    """A.npy read with --up-axis z == B.npy (A mapped by (x, y, z) -> (x, z, -y)) read as y-up."""
    a = np.random.default_rng(11).normal(size=(1024, 3)).astype(np.float32) * [1.0, 0.4, 2.0]
    b = np.stack([a[:, 0], a[:, 2], -a[:, 1]], axis=1)
    np.testing.assert_array_equal(b, rotate_up(a, "z"))
    pa, pb = tmp_path / "A.npy", tmp_path / "B.npy"
    np.save(pa, a)
    np.save(pb, b)
    base = ["classify", "--backbone", str(tiny_resnet[0]), "--pretrained", str(tiny_resnet[1]), "--device", "cpu",
            "--classes", ",".join(rn_clf.classes), "--json", "--workers", "0", "--topk", "5"]
    assert main([*base, str(pa), "--up-axis", "z"]) == 0
    row_a = json.loads(capsys.readouterr().out)[0]
    assert main([*base, str(pb)]) == 0
    row_b = json.loads(capsys.readouterr().out)[0]
    assert row_a["up_axis"] == "z" and "up_axis" not in row_b  # the key appears when --up-axis is given
    assert [t["label"] for t in row_a["topk"]] == [t["label"] for t in row_b["topk"]]
    np.testing.assert_allclose([t["prob"] for t in row_a["topk"]], [t["prob"] for t in row_b["topk"]], atol=1e-5)
    # API: per call, and as the classifier's default
    np.testing.assert_allclose(rn_clf.predict(str(pa), up_axis="z").probs, rn_clf.predict(str(pb)).probs, atol=1e-5)
    z_clf = ZeroShotClassifier.from_engine(rn_clf.engine, rn_clf.config, rn_clf.classes, up_axis="z")
    np.testing.assert_allclose(z_clf.predict(a).probs, rn_clf.predict(b).probs, atol=1e-5)
    assert not np.allclose(rn_clf.predict(a).probs, rn_clf.predict(b).probs, atol=1e-5)  # the axis matters


def test_robust_normalize_counts_outliers(rn_clf, tiny_resnet, tmp_path, capsys) -> None:
    rng = np.random.default_rng(12)
    inliers = rng.normal(size=(500, 3)).astype(np.float32)
    spikes = np.array([[90, 0, 0], [0, -70, 0], [0, 0, 80], [60, 60, 60]], np.float32)
    noisy = np.concatenate([inliers[:250], spikes, inliers[250:]])
    path = tmp_path / "noisy.npy"
    np.save(path, noisy)
    assert main(["classify", str(path), "--backbone", str(tiny_resnet[0]), "--pretrained", str(tiny_resnet[1]),
                 "--device", "cpu",
                 "--classes", ",".join(rn_clf.classes), "--json", "--workers", "0", "--robust-normalize"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["outliers"] == 4 and row["n_points"] == 504
    robust = ZeroShotClassifier.from_engine(rn_clf.engine, rn_clf.config, rn_clf.classes, robust=True)
    pred = robust.predict([noisy, inliers])
    assert pred.outliers == (4, 0)
    np.testing.assert_allclose(pred.probs[0], pred.probs[1], rtol=0, atol=1e-9)  # the spikes are gone, nothing else changed
    assert rn_clf.predict(noisy).outliers == (0,)
    assert not np.allclose(rn_clf.predict(noisy).probs, pred.probs[0], atol=1e-4)
