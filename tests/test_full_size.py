"""Full-size open_clip architectures (random weights): RN50-quickgelu from a local
checkpoint through the CLI, the global-token property on RN50 and ViT-B-16, and the
default CPU runtime (OpenVINO) reproducing eager torch on both."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pointcalip.cli import main
from pointcalip.testing.datasets import write_modelnet40
from pointcalip.encoders import CLIPEncoder, load_encoder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rn50_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    import open_clip

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("rn50") / "RN50-random.pt"
    torch.save(open_clip.create_model("RN50-quickgelu").state_dict(), path)
    return path


def test_rn50_local_checkpoint_eval_end_to_end(rn50_checkpoint, tmp_path) -> None:
    write_modelnet40(tmp_path / "data", train_per_class=1, test_per_class=1, seed=3)
    out = tmp_path / "out"
    code = main(["eval", "--dataset", "modelnet10", "--data-root", str(tmp_path / "data"),
                 "--backbone", "RN50-quickgelu", "--pretrained", str(rn50_checkpoint), "--method", "calip",
                 "--output", str(out), "--device", "cpu", "--no-progress", "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    assert res["weights"]["checkpoint"] == str(rn50_checkpoint)
    pred = np.load(out / "predictions.npz")
    comps = pred["view_components"]  # (B, V, 3, K) with the preset's V views
    assert comps.shape[0] == 10 and comps.shape[2:] == (3, 10) and comps.shape[1] == len(res["selection"]["view_weights"])
    assert np.isfinite(pred["logits"]).all()


@pytest.mark.parametrize("backbone", ["RN50-quickgelu", "ViT-B-16"])
def test_full_size_global_token_and_runtimes(backbone: str, rn50_checkpoint) -> None:
    pretrained = str(rn50_checkpoint) if backbone.startswith("RN50") else "random"
    enc = load_encoder(backbone, pretrained, device="cpu", runtime="auto")
    eager = CLIPEncoder(enc.model, enc.tokenizer, enc.info, enc.device, runtime="torch")
    imgs = torch.rand(3, 3, 224, 224) * 2.5
    dense, want = enc.encode_image_dense(imgs), eager.encode_image_dense(imgs)
    d = 1024 if backbone.startswith("RN50") else 512
    assert dense.global_.shape == (3, d) and dense.spatial.shape == (3, 49 if d == 1024 else 196, d)
    torch.testing.assert_close(want.global_, enc.encode_image(imgs), atol=1e-5, rtol=1e-4)
    assert enc.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)  # exp() of open_clip's initial log(1/0.07)
    pytest.importorskip("openvino")
    assert enc.runtime == "openvino"
    for got, ref in zip(dense, want):  # every output within 1e-5 of eager torch, relative to its largest value
        assert float((got - ref).abs().max() / ref.abs().max()) <= 1e-5
