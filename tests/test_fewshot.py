"""Few-shot heads, training, resume and `pointcalip fewshot` on tiny models and generated data."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pointcalip.aggregation import logits_from_components
from pointcalip.cli import main
from pointcalip.testing.datasets import write_modelnet40
from pointcalip.engine import ZeroShotEngine
from pointcalip.fewshot.config import FewShotConfig, validate
from pointcalip.fewshot.evaluate import load_head, save_head
from pointcalip.fewshot.heads import CALIPFewShot, FewShotHead, InterViewAdapter, repeated_text
from pointcalip.fewshot.train import (
    augment_points, batch_order, learning_rate, run_fewshot, smooth_cross_entropy,
)
from pointcalip.projection import get_preset
from pointcalip.datasets.splits import kshot_indices, short_classes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mn40-fs")
    write_modelnet40(root, train_per_class=4, test_per_class=1, seed=5)
    return root


@pytest.fixture(scope="module")
def two_class(resnet_encoder, data_root):
    """Features ``(8 clouds, 10 views)`` of 2 ModelNet10 classes (4 each) and their text."""
    from pointcalip.datasets import build_dataset

    ds = build_dataset("modelnet10", data_root, "train", num_points=256)
    idx = np.concatenate([np.flatnonzero(ds.labels == c)[:4] for c in (2, 8)])  # chair, table
    engine = ZeroShotEngine(resnet_encoder, get_preset("pointclip10"))
    feats = engine.forward_features(torch.from_numpy(ds.points[idx]))
    text = resnet_encoder.encode_text([ds.classes[2], ds.classes[8]], ["point cloud of a big {}."])
    labels = torch.tensor([0] * 4 + [1] * 4)
    return engine, feats, text, labels


def _cfg(root: Path, model, out: Path, **kw) -> FewShotConfig:
    base = dict(dataset="modelnet10", data_root=str(root), backbone=str(model[0]), pretrained=str(model[1]),
                shots=2, epochs=4, head="both", output=str(out), device="cpu", cache_features=True,
                val_per_class=1, num_points=256, progress=False, batch_size=8)
    base.update(kw)
    return validate(FewShotConfig(**base))


# --------------------------------------------------------------------------- sampling


def test_kshot_sampling_is_deterministic_and_balanced() -> None:
    labels = np.repeat(np.arange(5), [10, 10, 3, 10, 10])
    a, b = kshot_indices(labels, 4, seed=1), kshot_indices(labels, 4, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, kshot_indices(labels, 4, seed=2))
    assert np.bincount(labels[a]).tolist() == [4, 4, 3, 4, 4]  # class 2 has only 3
    assert short_classes(labels, a, 4, 5) == {2: 3}
    val = kshot_indices(labels, 2, seed=1, exclude=a)
    assert not set(val) & set(a) and np.bincount(labels[val], minlength=5).tolist() == [2, 2, 0, 2, 2]
    # a larger K keeps the draw's order: the 1-shot set is inside the 2-shot set of the same seed
    one, two = kshot_indices(labels, 1, 3), kshot_indices(labels, 2, 3)
    assert set(one) <= set(two)


# --------------------------------------------------------------------------- heads


def test_identity_calip_fs_reproduces_zero_shot_calip(resnet_encoder, two_class) -> None:
    engine, feats, text, _ = two_class
    head = CALIPFewShot(10, text.shape[1], alpha=2.0, beta2=1.12, beta3=0.02)
    got = head(feats.global_, feats.spatial, text, torch.tensor(resnet_encoder.logit_scale))
    want = logits_from_components(engine.forward_head(feats, text), [1.0] * 10, 1.12, 0.02)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_adapter_at_init_is_well_defined(two_class) -> None:
    _, feats, text, _ = two_class
    adapter = InterViewAdapter(10, text.shape[1])
    assert torch.equal(adapter.fusion_ratio.detach(), torch.full((10,), 0.5))
    for mode in (adapter.train, adapter.eval):
        mode()
        emb = adapter.embed(feats.global_raw)
        assert emb.shape == (8, 10 * text.shape[1]) and torch.isfinite(emb).all()
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(8))
        logits = adapter(feats.global_raw, text, torch.tensor(10.0))
        assert logits.shape == (8, 2) and logits.abs().max() <= 10.0 + 1e-4  # cosine x s
    rep = repeated_text(text, 10)
    torch.testing.assert_close(rep, text.repeat(1, 10) / math.sqrt(10))


def test_gradients_reach_only_head_parameters(resnet_encoder, two_class) -> None:
    engine, _, text, labels = two_class
    head = FewShotHead("both", text, resnet_encoder.logit_scale, 10)
    pts = torch.randn(2, 256, 3) * 0.5
    loss = smooth_cross_entropy(head(engine.forward_features(pts)), labels[[0, 5]])
    loss.backward()
    assert all(p.grad is None for p in resnet_encoder.model.parameters())
    assert not any(p.requires_grad for p in resnet_encoder.model.parameters())
    assert all(p.grad is not None for p in head.parameters())
    assert {n for n, _ in head.named_buffers()} >= {"text", "logit_scale"}  # frozen, not parameters


@pytest.mark.parametrize("kind", ["adapter", "calip_fs"])
def test_head_overfits_two_classes(resnet_encoder, two_class, kind) -> None:
    """Default heads (dropout on) reach 100 % on 8 clouds of 2 classes.

    The tiny random CLIP gives almost the same features for every cloud (they differ by
    ~0.03 %), so the clouds' features here are distinct random draws of the same shapes."""
    _, real, text, labels = two_class
    g = torch.Generator().manual_seed(0)
    raw = real.global_raw + torch.randn(real.global_raw.shape, generator=g)
    spatial = torch.nn.functional.normalize(real.spatial + 0.3 * torch.randn(real.spatial.shape, generator=g), dim=-1)
    feats = type(real)(torch.nn.functional.normalize(raw, dim=-1), spatial, raw)
    torch.manual_seed(0)
    head = FewShotHead(kind, text, resnet_encoder.logit_scale, 10)
    opt = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
    for _ in range(150):
        opt.zero_grad()
        smooth_cross_entropy(head.train()(feats), labels, 0.2).backward()
        opt.step()
    with torch.no_grad():
        assert (head.train()(feats).argmax(-1) == labels).all()
        assert (head.eval()(feats).argmax(-1) == labels).all()


def test_label_smoothing_loss_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    labels = torch.tensor([0, 2])
    eps, k = 0.2, 4
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        logz = math.log(sum(math.exp(v) for v in row))
        total += -sum(((1 - eps) if j == y else eps / (k - 1)) * (v - logz) for j, v in enumerate(row))
    assert smooth_cross_entropy(logits, labels, eps).item() == pytest.approx(total / 2, rel=1e-6)
    torch_ls = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=eps).item()
    assert smooth_cross_entropy(logits, labels, eps).item() != pytest.approx(torch_ls)  # spreads over K-1


def test_recipe_pieces() -> None:
    cfg = FewShotConfig(epochs=10, warmup_epochs=1)
    assert learning_rate(0, cfg) == 1e-5 and learning_rate(1, cfg) == pytest.approx(0.01)
    assert learning_rate(9, cfg) < learning_rate(5, cfg) < learning_rate(2, cfg)
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(3, 50, 3)
    aug = augment_points(pts, g, shuffle=False)
    ratio = (aug[:, 1:] - aug[:, :1]) / (pts[:, 1:] - pts[:, :1])  # per-axis scale, shift cancels
    assert ((ratio > 2 / 3 - 1e-4) & (ratio < 1.5 + 1e-4)).all()
    shuffled = augment_points(pts, torch.Generator().manual_seed(0))
    assert shuffled.shape == pts.shape and not torch.equal(shuffled, aug)
    assert sorted(len(b) for b in batch_order(9, 4, torch.Generator().manual_seed(0))) == [4, 5]


def test_save_load_gives_identical_logits(resnet_encoder, two_class, tmp_path) -> None:
    _, feats, text, labels = two_class
    head = FewShotHead("both", text, resnet_encoder.logit_scale, 10)
    head.train()(feats)  # move the BatchNorm running statistics away from their init
    with torch.no_grad():
        head.calip_fs.beta2.add_(0.3)
    meta = {"head": "both", "num_views": 10, "alpha": 2.0, "beta2_init": 1.12, "beta3_init": 0.02,
            "dropout": 0.075, "fusion_init": 0.5, "view_ratio": 0.6, "dim": text.shape[1]}
    save_head(tmp_path / "h.safetensors", head, meta)
    loaded, got_meta = load_head(str(tmp_path / "h.safetensors"))
    assert got_meta["head"] == "both" and json.loads((tmp_path / "h.json").read_text())["dim"] == text.shape[1]
    with torch.no_grad():
        assert torch.equal(head.eval()(feats), loaded(feats))


# --------------------------------------------------------------------------- training runs


def _log_rows(path: Path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_resumed_training_equals_uninterrupted(tiny_resnet, data_root, tmp_path) -> None:
    from safetensors.torch import load_file

    full = run_fewshot(_cfg(data_root, tiny_resnet, tmp_path / "full", cache_features=False, head="both"))

    class Stop(Exception):
        pass

    def stop_at_2(epoch, row):
        if epoch == 2:
            raise Stop

    cut = _cfg(data_root, tiny_resnet, tmp_path / "cut", cache_features=False, head="both")
    with pytest.raises(Stop):
        run_fewshot(cut, on_epoch_end=stop_at_2)
    assert len(_log_rows(tmp_path / "cut" / "log.csv")) == 2
    resumed = run_fewshot(cut)
    assert resumed["training"]["resumed_at_epoch"] == 2
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(tmp_path / "full" / name), load_file(tmp_path / "cut" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _log_rows(tmp_path / "full" / "log.csv") == _log_rows(tmp_path / "cut" / "log.csv")
    assert full["metrics"]["top1"] == resumed["metrics"]["top1"]
    # a changed setting in the same folder is refused
    from pointcalip.errors import ConfigError

    with pytest.raises(ConfigError, match="other settings"):
        run_fewshot(dataclasses.replace(cut, lr=0.1))


def test_cli_fewshot_then_eval_head(tiny_resnet, tiny_vit, data_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    common = ["--dataset", "modelnet10", "--data-root", str(data_root), "--backbone", str(tiny_resnet[0]),
              "--pretrained", str(tiny_resnet[1]), "--device", "cpu", "--num-points", "256", "--no-progress"]
    assert main(["fewshot", *common, "--shots", "1", "--epochs", "2", "--head", "both", "--output", str(out),
                 "--cache-features", "--batch-size", "8"]) == 0
    for name in ("kshot_indices.json", "log.csv", "best.safetensors", "best.json", "last.safetensors", "last.json",
                 "state.pt", "results.json", "predictions.npz", "confusion.png"):
        assert (out / name).is_file(), name
    ks = json.loads((out / "kshot_indices.json").read_text())
    assert ks["shots"] == 1 and ks["per_class"] == [1] * 10 and len(ks["indices"]) == 10 and ks["fingerprint"]
    assert len(ks["val_indices"]) == 30 and not set(ks["val_indices"]) & set(ks["indices"])
    assert [r["epoch"] for r in _log_rows(out / "log.csv")] == ["1", "2"]
    meta = json.loads((out / "best.json").read_text())
    assert meta["head"] == "both" and meta["num_views"] == 10 and meta["classes"][0] == "bathtub"
    assert meta["templates"] == ["point cloud of a big {}."] and meta["projection"] == "pointclip10"
    res = json.loads((out / "results.json").read_text())
    pred = np.load(out / "predictions.npz")
    assert pred["logits"].shape == (10, 10) and pred["view_components"].shape == (10, 10, 3, 10)
    assert "top-1" in capsys.readouterr().out

    ev = tmp_path / "eval"
    assert main(["eval", "--head", str(out / "best.safetensors"), *common, "--output", str(ev)]) == 0
    res2 = json.loads((ev / "results.json").read_text())
    assert res2["metrics"]["top1"] == res["metrics"]["top1"]
    np.testing.assert_array_equal(np.load(ev / "predictions.npz")["logits"], pred["logits"])

    # other weights than the head's: a clear one-line error, exit 2
    bad = [a if a not in (str(tiny_resnet[0]), str(tiny_resnet[1])) else
           (str(tiny_vit[0]) if a == str(tiny_resnet[0]) else str(tiny_vit[1])) for a in common]
    assert main(["eval", "--head", str(out / "best.safetensors"), *bad, "--output", str(ev)]) == 2
    assert "fingerprint" in capsys.readouterr().err
    # a head trained on ModelNet10 evaluated on ModelNet40: a clear error
    wrong = [a if a != "modelnet10" else "modelnet40" for a in common]
    assert main(["eval", "--head", str(out / "best.safetensors"), *wrong, "--output", str(ev)]) == 2
    assert "--dataset modelnet10" in capsys.readouterr().err


def test_presets_load() -> None:
    from pointcalip.fewshot.config import build_fewshot_config

    for name in ("modelnet40", "modelnet10", "scanobjectnn"):
        cfg = build_fewshot_config(f"{name}_fewshot", {"shots": 4})
        assert cfg.dataset == name and cfg.shots == 4 and cfg.projection == "pointclip10"
        assert cfg.templates == ("point cloud of a big {}.",) and cfg.epochs == 250 and cfg.lr == 0.01


def test_sweep_script_smoke(tiny_resnet, data_root, tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("fewshot_sweep", ROOT / "scripts" / "fewshot_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    out = tmp_path / "sweep"
    assert sweep.main(["--dataset", "modelnet10", "--data-root", str(data_root), "--backbone", str(tiny_resnet[0]),
                       "--pretrained", str(tiny_resnet[1]), "--device", "cpu", "--shots", "1,2", "--seeds", "0,1",
                       "--epochs", "2", "--cache-features", "--num-points", "256", "--output", str(out),
                       "--no-progress"]) == 0
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [(r["shots"], r["seed"]) for r in rows] == [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1")]
    summary = list(csv.DictReader(open(out / "sweep_summary.csv")))
    assert [r["shots"] for r in summary] == ["1", "2"] and summary[0]["zero_shot_top1"] != ""
    assert (out / "accuracy_vs_shots.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- several processes (torchrun, gloo)

_LAUNCH = """
import json, sys
from pointcalip.fewshot.config import FewShotConfig, validate
from pointcalip.fewshot.train import run_fewshot
res = run_fewshot(validate(FewShotConfig(**json.loads(sys.argv[1]))))
print("RESULT", json.dumps(None if res is None else res["metrics"]["top1"]), flush=True)
"""


def test_fewshot_under_torchrun_matches_one_process(tiny_resnet, data_root, tmp_path) -> None:
    """2 gloo ranks (DDP, synced BatchNorm, each half of every batch) train the same head as one
    process up to float rounding of the split reductions; rank 0 alone writes the files."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    kw = dict(dataset="modelnet10", data_root=str(data_root), backbone=str(tiny_resnet[0]),
              pretrained=str(tiny_resnet[1]), shots=2, epochs=3, head="both", device="cpu", cache_features=True,
              val_per_class=1, num_points=256, progress=False, batch_size=8, dropout=0.0)
    script = tmp_path / "launch.py"
    script.write_text(_LAUNCH)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    ddp = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), json.dumps({**kw, "output": str(ddp)})],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted((line for line in proc.stdout.splitlines() if line.startswith("RESULT")), key=len)
    assert len(results) == 2 and "RESULT null" in results  # rank 1 returns None
    results.remove("RESULT null")
    for name in ("kshot_indices.json", "log.csv", "best.safetensors", "last.safetensors", "state.pt",
                 "results.json", "predictions.npz", "confusion.png"):
        assert (ddp / name).is_file(), name
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run_fewshot(_cfg(data_root, tiny_resnet, tmp_path / "one", dropout=0.0, epochs=3))
    finally:
        torch.set_num_threads(threads)
    assert results[0] == f"RESULT {json.dumps(single['metrics']['top1'])}"
    a, b = load_file(ddp / "last.safetensors"), load_file(tmp_path / "one" / "last.safetensors")
    assert a.keys() == b.keys()  # synced BatchNorm keeps plain BatchNorm's state-dict keys
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=k)  # float rounding of split sums
    la, lb = _log_rows(ddp / "log.csv"), _log_rows(tmp_path / "one" / "log.csv")
    assert [r["epoch"] for r in la] == ["1", "2", "3"]
    for ra, rb in zip(la, lb):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-5)
        assert ra["train_acc"] == rb["train_acc"] and ra["val_acc"] == rb["val_acc"]
    pa, pb = np.load(ddp / "predictions.npz"), np.load(tmp_path / "one" / "predictions.npz")
    np.testing.assert_allclose(pa["logits"], pb["logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(pa["view_components"], pb["view_components"])  # frozen encoder, same batches
