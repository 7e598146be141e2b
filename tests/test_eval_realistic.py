"""``pointcalip eval --projection realistic``: the whole pipeline against an independent computation.

The expected logits are built from the slow loop reference of the realistic projection
(:func:`realistic_maps_naive`), a plain bilinear resize, open_clip's own ``encode_image`` for
PointCLIP V2's global-feature logits and the CALIP loop reference for ``--method calip``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointcalip.attention import calip_logits_naive
from pointcalip.cli import main
from pointcalip.datasets import build_dataset
from pointcalip.projection.realistic import realistic_maps_naive
from pointcalip.testing.datasets import write_modelnet40

TEMPLATE = "point cloud depth map of a {}."


@pytest.fixture(scope="module")
def small_modelnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mn40r")
    write_modelnet40(root, train_per_class=1, test_per_class=1, seed=3)
    return root


def _images(points: np.ndarray) -> torch.Tensor:
    """``(B*V, 3, 224, 224)`` encoder inputs from the loop reference, cloud-major."""
    maps = torch.from_numpy(realistic_maps_naive(points)).float()  # (B, V, 110, 110)
    b, v, h, w = maps.shape
    x = F.interpolate(maps.reshape(b * v, 1, h, w), size=(224, 224), mode="bilinear", align_corners=True)
    return x.expand(-1, 3, -1, -1)


@pytest.mark.parametrize("method", ["pointclip", "calip"])
def test_realistic_eval_matches_reference(method, small_modelnet, tiny_resnet, tmp_path) -> None:
    out = tmp_path / method
    code = main(["eval", "--dataset", "modelnet40", "--data-root", str(small_modelnet), "--backbone",
                 str(tiny_resnet[0]), "--pretrained", str(tiny_resnet[1]), "--projection", "realistic",
                 "--method", method, "--view-weights", ",".join(["1"] * 10), "--templates", TEMPLATE,
                 "--search", "none", "--device", "cpu", "--runtime", "torch", "--output", str(out),
                 "--no-cache", "--no-progress", "--batch-size", "8"])
    assert code == 0
    pred = np.load(out / "predictions.npz")
    test = build_dataset("modelnet40", small_modelnet, "test")
    b, k = len(test), len(test.classes)
    assert pred["view_components"].shape == (b, 10, 3, k)

    points = test.points_of(np.arange(b))[:8]  # the first clouds are enough for the reference loops
    from pointcalip.encoders import load_encoder

    enc = load_encoder(str(tiny_resnet[0]), str(tiny_resnet[1]), "cpu", runtime="torch")  # eager reference
    text = enc.encode_text(list(test.classes), [TEMPLATE]).double()
    with torch.no_grad():
        imgs = _images(points)
        g = F.normalize(enc.model.encode_image(imgs).double(), dim=-1)  # open_clip's own global feature
        if method == "pointclip":
            per_view = enc.logit_scale * g @ text.T
        else:
            dense = enc.encode_image_dense(imgs)
            torch.testing.assert_close(dense.global_.double(), g, rtol=1e-5, atol=1e-6)
            per_view = calip_logits_naive(g, dense.spatial.double(), text, enc.logit_scale, 2.0, 1.12, 0.02)
    expected = per_view.view(len(points), 10, k).sum(dim=1) / 10 ** 0.5
    np.testing.assert_allclose(pred["logits"][: len(points)], expected.numpy(), rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_eval_report_is_self_contained(small_modelnet, tiny_resnet, tmp_path) -> None:
    import re

    report = tmp_path / "report.html"
    code = main(["eval", "--config", "pointclip_modelnet40", "--dataset", "modelnet40", "--data-root",
                 str(small_modelnet), "--backbone", str(tiny_resnet[0]), "--pretrained", str(tiny_resnet[1]),
                 "--device", "cpu", "--runtime", "torch", "--output", str(tmp_path / "o"), "--no-cache",
                 "--no-progress", "--report", str(report)])
    assert code == 0
    html = report.read_text(encoding="utf-8")
    srcs = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    markup = re.sub(r"<script\b.*?</script>", "", html, flags=re.S)  # the embedded plotly.js has URL strings
    assert not re.search(r'(?:src|href)="https?://', markup) and "<script src" not in html
    assert "top-1" in html and "airplane" in html  # summary and per-class accuracy


def test_fewshot_head_on_realistic_views(tmp_path, tiny_resnet) -> None:
    """Few-shot heads train on PointCLIP V2's views (never released by V2) and their file rebuilds them."""
    import json

    from pointcalip.fewshot.config import FewShotConfig, validate
    from pointcalip.fewshot.evaluate import load_head, projection_of
    from pointcalip.fewshot.train import run_fewshot
    from pointcalip.projection import get_projection

    root = tmp_path / "mn"
    write_modelnet40(root, train_per_class=3, test_per_class=1, seed=4)
    cfg = validate(FewShotConfig(dataset="modelnet10", data_root=str(root), backbone=str(tiny_resnet[0]),
                                 pretrained=str(tiny_resnet[1]), shots=1, epochs=2, warmup_epochs=0,
                                 head="both", projection="realistic", output=str(tmp_path / "fs"), device="cpu",
                                 runtime="torch", cache_features=True, val_per_class=1, progress=False))
    results = run_fewshot(cfg)
    head, meta = load_head(str(tmp_path / "fs" / "best.safetensors"))
    assert meta["num_views"] == 10 and projection_of(meta) == get_projection("realistic")
    pred = np.load(tmp_path / "fs" / "predictions.npz")
    assert pred["view_components"].shape[1:3] == (10, 3)
    assert json.loads((tmp_path / "fs" / "results.json").read_text())["metrics"]["top1"] == results["metrics"]["top1"]
