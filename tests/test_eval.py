"""End-to-end `pointcalip eval` on generated ModelNet40 files with a tiny local CLIP."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pointcalip.aggregation import ORACLE_LABEL, logits_from_components
from pointcalip.attention import calip_components
from pointcalip.cli import main
from pointcalip.testing.datasets import write_modelnet40
from pointcalip.engine import ZeroShotEngine
from pointcalip.projection import get_preset, project_images
from pointcalip.datasets.splits import stratified_holdout


@pytest.fixture(scope="module")
def modelnet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mn40")
    write_modelnet40(root, train_per_class=3, test_per_class=1, seed=1)
    return root


def _eval(root: Path, model, out: Path, cache: Path, *extra: str) -> int:
    # PointCLIP's 6 scatter views with CALIP on top (the first release's default configuration)
    return main(["eval", "--config", "pointclip_modelnet40", "--method", "calip", "--dataset", "modelnet40", "--data-root", str(root), "--backbone", str(model[0]),
                 "--pretrained", str(model[1]), "--output", str(out), "--cache-dir", str(cache),
                 "--device", "cpu", "--no-progress", "--batch-size", "16", *extra])


def test_eval_writes_three_files(modelnet_root, tiny_resnet, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert _eval(modelnet_root, tiny_resnet, out, tmp_path / "cache", "--method", "calip") == 0
    res = json.loads((out / "results.json").read_text())
    pred = np.load(out / "predictions.npz")
    assert pred["labels"].shape == (40,) and pred["logits"].shape == (40, 40)
    assert pred["view_components"].shape == (40, 6, 3, 40) and pred["view_components"].dtype == np.float32
    assert pred["betas"].tolist() == pytest.approx([1.12, 0.02])
    np.testing.assert_allclose(pred["view_weights"], np.ones(6))
    # logits are exactly what the aggregation of docs/method.md §5 gives from the stored components
    again = logits_from_components(torch.from_numpy(pred["view_components"]), [1.0] * 6, 1.12, 0.02)
    np.testing.assert_allclose(pred["logits"], again.numpy(), rtol=1e-5, atol=1e-5)
    from pointcalip.datasets import build_dataset

    np.testing.assert_array_equal(pred["labels"], build_dataset("modelnet40", modelnet_root, "test").labels)
    assert sorted(pred["labels"].tolist()) == list(range(40))  # dataset order, one test cloud per class
    m = res["metrics"]
    assert m["top1"] == pytest.approx(100 * float((pred["logits"].argmax(1) == pred["labels"]).mean()))
    assert set(m["per_class_accuracy"]) == set(res["dataset"]["classes"]) and len(m["per_class_accuracy"]) == 40
    assert res["config"]["method"] == "calip" and res["selection"]["selected_by"] == "config"
    assert res["versions"]["torch"] and res["timings"]["components_from_cache"] is False
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "top-1" in capsys.readouterr().out


def test_pipeline_matches_per_view_loop(resnet_encoder, modelnet_root) -> None:
    """Engine components == project each cloud, encode each view alone, loop docs/method.md §4."""
    from pointcalip.datasets import build_dataset

    ds = build_dataset("modelnet40", modelnet_root, "test", num_points=1024)
    cfg = get_preset("pointclip")
    engine = ZeroShotEngine(resnet_encoder, cfg)
    text = resnet_encoder.encode_text(ds.classes[:5], ["point cloud depth map of a {}."])
    pts = torch.from_numpy(ds.points[:3])
    fast = engine.components(pts, text)
    for b in range(3):
        imgs = project_images(pts[b : b + 1], cfg)[0]
        for v in range(cfg.num_views):
            d = resnet_encoder.encode_image_dense(imgs[v : v + 1])
            ref = calip_components(d.global_, d.spatial, text, resnet_encoder.logit_scale, 2.0)[0]
            torch.testing.assert_close(fast[b, v], ref, rtol=1e-4, atol=1e-4)


def test_point_permutation_does_not_change_predictions(vit_encoder, modelnet_root) -> None:
    from pointcalip.datasets import build_dataset

    ds = build_dataset("modelnet40", modelnet_root, "test", num_points=1024)
    engine = ZeroShotEngine(vit_encoder, get_preset("pointclip"))
    text = vit_encoder.encode_text(ds.classes, ["{}"])
    pts = torch.from_numpy(ds.points[:4])
    perm = torch.from_numpy(np.random.default_rng(0).permutation(1024))
    a, b = engine.components(pts, text), engine.components(pts[:, perm], text)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    la = logits_from_components(a, [1.0] * 6, 1.12, 0.02)
    assert torch.equal(la.argmax(1), logits_from_components(b, [1.0] * 6, 1.12, 0.02).argmax(1))


def test_cache_reuse_and_invalidation(modelnet_root, tiny_resnet, tmp_path) -> None:
    cache = tmp_path / "cache"
    assert _eval(modelnet_root, tiny_resnet, tmp_path / "a", cache) == 0
    assert len(list(cache.glob("*.npz"))) == 1
    # other betas / view weights / method: served from cache, components identical
    assert _eval(modelnet_root, tiny_resnet, tmp_path / "b", cache, "--beta2", "0.5", "--method", "pointclip",
                 "--view-weights", "1,1,0,1,1,1") == 0
    rb = json.loads((tmp_path / "b" / "results.json").read_text())
    assert rb["timings"]["components_from_cache"] is True
    pa, pb = np.load(tmp_path / "a" / "predictions.npz"), np.load(tmp_path / "b" / "predictions.npz")
    np.testing.assert_array_equal(pa["view_components"], pb["view_components"])
    # pointclip = global term only; the zero-weighted view 2 is gone from the logits
    keep = [0, 1, 3, 4, 5]
    expect = pa["view_components"][:, keep, 0].sum(axis=1) / math.sqrt(6)
    np.testing.assert_allclose(pb["logits"], expect, rtol=1e-5, atol=1e-5)
    # any change of a key part invalidates: templates, projection, number of points, weights
    for i, extra in enumerate([("--templates", "a {}."), ("--projection", "pointclip10"), ("--num-points", "512")]):
        assert _eval(modelnet_root, tiny_resnet, tmp_path / f"c{i}", cache, *extra) == 0
        assert json.loads((tmp_path / f"c{i}" / "results.json").read_text())["timings"]["components_from_cache"] is False
    from pointcalip.testing import write_tiny_clip

    other = write_tiny_clip(tmp_path / "w2", "resnet", seed=7)
    assert _eval(modelnet_root, other, tmp_path / "d", cache) == 0
    assert json.loads((tmp_path / "d" / "results.json").read_text())["timings"]["components_from_cache"] is False
    assert len(list(cache.glob("*.npz"))) == 5


def test_search_val_selects_on_heldout_train(modelnet_root, tiny_resnet, tmp_path) -> None:
    out = tmp_path / "val"
    assert _eval(modelnet_root, tiny_resnet, out, tmp_path / "cache", "--search", "val") == 0
    res = json.loads((out / "results.json").read_text())
    sel = res["selection"]
    from pointcalip.datasets import build_dataset

    train = build_dataset("modelnet40", modelnet_root, "train", num_points=1024)
    n_val = len(stratified_holdout(train.labels, 0.2, 0))
    assert sel["search"]["split"] == "val" and sel["search"]["num_samples"] == n_val == 40
    assert "held-out" in sel["selected_by"] and res["oracle"] is False
    # the reported test numbers use the selected values
    pred = np.load(out / "predictions.npz")
    np.testing.assert_allclose(pred["view_weights"], sel["view_weights"])
    np.testing.assert_allclose(pred["betas"], [sel["beta2"], sel["beta3"]])


def test_search_test_is_labelled_oracle(modelnet_root, tiny_resnet, tmp_path, capsys) -> None:
    out = tmp_path / "oracle"
    assert _eval(modelnet_root, tiny_resnet, out, tmp_path / "cache", "--search", "test") == 0
    res = json.loads((out / "results.json").read_text())
    assert res["oracle"] is True and res["selection"]["selected_by"] == ORACLE_LABEL
    assert res["selection"]["search"]["split"] == "test" and res["selection"]["search"]["num_samples"] == 40
    assert ORACLE_LABEL in capsys.readouterr().out
    # the oracle is at least as good on test as the defaults
    default = tmp_path / "default"
    assert _eval(modelnet_root, tiny_resnet, default, tmp_path / "cache") == 0
    assert res["metrics"]["top1"] >= json.loads((default / "results.json").read_text())["metrics"]["top1"]


def test_defaults_offline_fail_fast(modelnet_root, tmp_path, capsys, monkeypatch) -> None:
    """Default ViT-B-16/openai weights, not cached, no network: exit 2 within seconds."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    import pointcalip.weights as weights

    monkeypatch.setattr(weights, "_reachable", lambda host, port=443, timeout=5.0: False)
    t0 = time.monotonic()
    code = main(["eval", "--data-root", str(modelnet_root), "--output", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 2 and time.monotonic() - t0 < 15
    err = capsys.readouterr().err.strip()
    assert "--pretrained" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "results.json").exists()


def test_bad_options_are_one_line_errors(modelnet_root, tiny_resnet, tmp_path, capsys) -> None:
    assert _eval(modelnet_root, tiny_resnet, tmp_path / "x", tmp_path / "c", "--view-weights", "1,1") == 2
    assert "6 views" in capsys.readouterr().err
    assert main(["eval", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasett: modelnet40\n")
    assert main(["eval", "--config", str(bad)]) == 2
    assert "unknown key" in capsys.readouterr().err
