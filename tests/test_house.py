"""The seams of the package: registries used end to end, shipped presets, no global state, cache repair."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from pointcalip.cli import main
from pointcalip.config import build_config, preset_names
from pointcalip.projection import Projection, get_projection, projection_names, register_projection, unregister_projection

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class ToyProjection(Projection):
    """Two views: a point-count histogram of x-y and of z-y (a projection defined in this test only)."""

    kind: ClassVar[str] = "toy"
    name: str = "toy"
    size: int = 16

    @property
    def num_views(self) -> int:
        return 2

    def maps(self, points: torch.Tensor) -> torch.Tensor:
        b = points.shape[0]
        ij = ((points.clamp(-1, 1) + 1) / 2 * (self.size - 1)).round().long()  # (B, N, 3)
        out = torch.zeros(b, 2, self.size * self.size)
        for v, (r, c) in enumerate(((0, 1), (2, 1))):
            flat = ij[..., r] * self.size + ij[..., c]
            out[:, v].scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
        return (out / out.amax(dim=2, keepdim=True).clamp_min(1)).view(b, 2, self.size, self.size)

    def preview(self, points: torch.Tensor) -> torch.Tensor:
        return self.maps(points)


@pytest.fixture
def toy_registered():
    from tests.test_registry_datasets import TOY  # the toy dataset module of the registry tests

    from pointcalip.datasets import register_dataset, unregister_dataset

    register_projection(ToyProjection())
    register_dataset(TOY)
    yield
    unregister_projection("toy")
    unregister_dataset("toy")


def test_toy_dataset_and_projection_run_through_eval(toy_registered, tiny_resnet, tmp_path) -> None:
    from tests.test_registry_datasets import write_toy

    write_toy(tmp_path / "data")
    assert "toy" in projection_names() and get_projection("toy").num_views == 2
    out = tmp_path / "out"
    code = main(["eval", "--config", "pointclip_modelnet40", "--dataset", "toy", "--data-root", str(tmp_path / "data"),
                 "--projection", "toy", "--num-points", "32", "--backbone", str(tiny_resnet[0]), "--pretrained",
                 str(tiny_resnet[1]), "--device", "cpu", "--runtime", "torch", "--output", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0
    pred = np.load(out / "predictions.npz")
    assert pred["view_components"].shape == (3, 2, 3, 3)
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"]["classes"] == ["cube", "ball", "stick"] and res["config"]["projection"] == "toy"


def test_global_state_is_left_alone(tiny_resnet, tmp_path) -> None:
    import matplotlib

    from pointcalip.testing.datasets import write_modelnet40

    write_modelnet40(tmp_path / "mn", train_per_class=1, test_per_class=1, seed=5)
    root = logging.getLogger()
    level, handlers, backend = root.level, list(root.handlers), matplotlib.get_backend()
    code = main(["eval", "--config", "pointclip_modelnet40", "--data-root", str(tmp_path / "mn"), "--backbone",
                 str(tiny_resnet[0]), "--pretrained", str(tiny_resnet[1]), "--device", "cpu", "--runtime", "torch",
                 "--output", str(tmp_path / "o"), "--no-cache", "--no-progress"])
    assert code == 0
    assert (root.level, list(root.handlers), matplotlib.get_backend()) == (level, handlers, backend)


def test_truncated_cache_entry_is_recomputed_with_a_warning(tiny_resnet, tmp_path, caplog) -> None:
    from pointcalip.testing.datasets import write_modelnet40

    write_modelnet40(tmp_path / "mn", train_per_class=1, test_per_class=1, seed=6)
    argv = ["eval", "--config", "pointclip_modelnet40", "--data-root", str(tmp_path / "mn"), "--backbone",
            str(tiny_resnet[0]), "--pretrained", str(tiny_resnet[1]), "--device", "cpu", "--runtime", "torch",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(argv + ["--output", str(tmp_path / "a")]) == 0
    entries = sorted((tmp_path / "cache").rglob("*.npz"))
    assert entries
    for e in entries:  # truncate every cache file to a few bytes
        e.write_bytes(e.read_bytes()[:50])
    with caplog.at_level(logging.WARNING, logger="pointcalip"):
        assert main(argv + ["--output", str(tmp_path / "b")]) == 0
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    a, b = np.load(tmp_path / "a" / "predictions.npz"), np.load(tmp_path / "b" / "predictions.npz")
    np.testing.assert_array_equal(a["logits"], b["logits"])
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert res["timings"]["components_from_cache"] is False


def test_presets_load_by_name_and_legacy_path() -> None:
    names = preset_names()
    for name in ("modelnet40_zeroshot", "pointclip_modelnet40", "pointclip_v2_modelnet40_vit_b16", "modelnet40_fewshot"):
        assert name in names
    for name in names:
        if not name.endswith("_fewshot"):
            build_config(name, {})  # every zero-shot preset validates
    assert build_config("configs/pointclip_modelnet40.yaml", {}) == build_config("pointclip_modelnet40", {})
    best = build_config("modelnet40_zeroshot", {})
    assert (best.projection, best.backbone, best.method, best.search) == ("realistic", "ViT-B-16", "calip", "val")


@pytest.mark.slow
def test_wheel_ships_presets_and_runs_from_another_directory(tmp_path) -> None:
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir)], check=True, cwd=tmp_path)
    (wheel,) = wheel_dir.glob("pointcalip-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {n for n in z.namelist() if n.startswith("pointcalip/configs/") and n.endswith(".yaml")}
    assert {f"pointcalip/configs/{n}.yaml" for n in preset_names()} == shipped
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import json, dataclasses, pointcalip.config as c; "
            "print(json.dumps(c.config_to_dict(c.build_config('modelnet40_zeroshot', {}))), c.__file__)")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    cfg_json, where = out.stdout.rsplit(" ", 1)
    assert where.strip().startswith(str(site))  # the installed wheel, not the checkout
    assert json.loads(cfg_json) == json.loads(json.dumps(dataclasses.asdict(build_config("modelnet40_zeroshot", {}))))
    help_out = subprocess.run([sys.executable, "-m", "pointcalip", "eval", "--help"], cwd=elsewhere, env=env,
                              capture_output=True, text=True, check=True).stdout
    assert "modelnet40_zeroshot" in help_out
