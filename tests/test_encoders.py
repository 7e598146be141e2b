"""Dense features (docs/method.md §3): global token == encode_image, token layout, text features, weight loading."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from pointcalip.encoders import load_encoder
from pointcalip.errors import ConfigError, WeightsError


@pytest.mark.parametrize("name", ["resnet_encoder", "vit_encoder"])
def test_global_token_equals_encode_image(name: str, request: pytest.FixtureRequest) -> None:
    enc = request.getfixturevalue(name)
    imgs = torch.rand(3, 3, 224, 224)
    dense = enc.encode_image_dense(imgs)
    assert dense.global_.shape == (3, 32) and dense.spatial.shape == (3, 49, 32)
    torch.testing.assert_close(dense.global_, enc.encode_image(imgs), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense.spatial.norm(dim=-1), torch.ones(3, 49))
    torch.testing.assert_close(F.normalize(dense.global_raw, dim=-1), dense.global_)
    # Spatial tokens differ from each other and depend on the image content.
    assert dense.spatial.std(dim=1).mean() > 1e-3
    other = enc.encode_image_dense(torch.rand(3, 3, 224, 224))
    assert not torch.allclose(other.spatial, dense.spatial)


def test_resnet_spatial_tokens_are_attention_pool_queries(resnet_encoder) -> None:
    """Token l of S is what the attention pool returns when position l is the query."""
    visual = resnet_encoder.model.visual
    imgs = torch.rand(2, 3, 224, 224)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(imgs)))))
    pool = visual.attnpool
    seq = x.flatten(2).permute(0, 2, 1)  # (B, hw, C)
    seq = torch.cat([seq.mean(dim=1, keepdim=True), seq], dim=1) + pool.positional_embedding
    q, k, v = pool.q_proj(seq), pool.k_proj(seq), pool.v_proj(seq)
    h = pool.num_heads
    b, t, c = q.shape

    def heads(z: torch.Tensor) -> torch.Tensor:
        return z.view(b, t, h, c // h).transpose(1, 2)

    att = (heads(q) @ heads(k).transpose(-1, -2) / (c // h) ** 0.5).softmax(-1) @ heads(v)
    out = pool.c_proj(att.transpose(1, 2).reshape(b, t, c))
    dense = resnet_encoder.encode_image_dense(imgs)
    torch.testing.assert_close(dense.spatial, F.normalize(out[:, 1:], dim=-1), atol=1e-5, rtol=1e-4)


def test_vit_spatial_tokens_are_projected_patches(vit_encoder) -> None:
    visual = vit_encoder.model.visual
    imgs = torch.rand(2, 3, 224, 224)
    tokens = visual.transformer(visual._embeds(imgs))
    expect = F.normalize(visual.ln_post(tokens[:, 1:]) @ visual.proj, dim=-1)
    torch.testing.assert_close(vit_encoder.encode_image_dense(imgs).spatial, expect)


def test_text_features_average_templates(resnet_encoder) -> None:
    enc = resnet_encoder
    t1 = enc.encode_text(["night_stand", "chair"], ["a {}."])
    t2 = enc.encode_text(["night stand", "chair"], ["b {}."])
    both = enc.encode_text(["night_stand", "chair"], ["a {}.", "b {}."])
    torch.testing.assert_close(both, F.normalize(t1 + t2, dim=-1))
    torch.testing.assert_close(both.norm(dim=-1), torch.ones(2))
    with pytest.raises(ConfigError, match="template"):
        enc.encode_text(["chair"], ["no placeholder"])


def test_checkpoint_mismatch_is_a_weights_error(tiny_resnet, tiny_vit) -> None:
    with pytest.raises(WeightsError, match="cannot load"):
        load_encoder(str(tiny_resnet[0]), str(tiny_vit[1]), device="cpu")
    with pytest.raises(WeightsError, match="not found"):
        load_encoder(str(tiny_resnet[0]), "/no/such/file.pt", device="cpu")


def test_unknown_backbone_and_tag() -> None:
    with pytest.raises(ConfigError, match="RN50"):
        load_encoder("NotAModel", "openai", device="cpu")
    with pytest.raises(WeightsError, match="openai"):
        load_encoder("RN50", "no-such-tag", device="cpu")


def test_uncached_tag_offline_fails_fast(tmp_path, monkeypatch) -> None:
    """No cache and no network: a clear error within seconds, never random weights."""
    import pointcalip.weights as enc

    monkeypatch.setattr(enc, "_HF_HOST", "127.0.0.1")
    monkeypatch.setattr(enc, "_reachable", lambda host, port=443, timeout=5.0: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(WeightsError, match="--pretrained PATH"):
        load_encoder("RN50", "openai", device="cpu", cache_dir=str(tmp_path))
    assert time.monotonic() - t0 < 15


def test_reachability_probe_times_out_quickly() -> None:
    import pointcalip.weights as enc

    t0 = time.monotonic()
    assert enc._reachable("127.0.0.1", port=9, timeout=2.0) is False  # discard port: refused
    assert time.monotonic() - t0 < 5


def test_reachability_probe_gives_up_on_a_hanging_resolver(monkeypatch) -> None:
    import pointcalip.weights as enc

    def hang(*args, **kwargs):
        time.sleep(30)
        raise OSError("resolver gave up")

    monkeypatch.setattr(enc.socket, "create_connection", hang)
    t0 = time.monotonic()
    assert enc._reachable("example.invalid", timeout=0.5) is False
    assert time.monotonic() - t0 < 3


def test_sentence_features_and_encode_sentences(resnet_encoder) -> None:
    enc = resnet_encoder
    sentences = [["a chair.", "a big chair.", "chair"], ["a night stand."]]
    per = enc.sentence_features(sentences, batch_size=2)  # batches cross class boundaries
    assert [tuple(f.shape) for f in per] == [(3, 32), (1, 32)]
    torch.testing.assert_close(torch.cat(per).norm(dim=-1), torch.ones(4))
    one_by_one = [F.normalize(enc.model.encode_text(enc.tokenizer([s])).float(), dim=-1)[0] for s in sentences[0]]
    torch.testing.assert_close(per[0], torch.stack(one_by_one), atol=1e-5, rtol=1e-5)
    cls = enc.encode_sentences(sentences)
    torch.testing.assert_close(cls[0], F.normalize(torch.stack(one_by_one).mean(0), dim=0), atol=1e-5, rtol=1e-5)
    templates = ["a {}.", "a big {}.", "{}"]
    torch.testing.assert_close(enc.encode_text(["chair", "night_stand"], templates),
                               enc.encode_sentences([[t.format(c) for t in templates] for c in ["chair", "night stand"]]))
    with pytest.raises(ConfigError, match="class 1"):
        enc.encode_sentences([["a"], []])


def test_text_features_are_cached_on_disk(resnet_encoder, tmp_path, monkeypatch) -> None:
    from pointcalip.encoders import CLIPEncoder
    from pointcalip.text import cached_text_features

    classes, templates = ["chair", "sofa", "lamp"], ["a {}.", "the {}."]
    first = cached_text_features(resnet_encoder, classes, templates, cache_dir=tmp_path)
    torch.testing.assert_close(first, resnet_encoder.encode_text(classes, templates))
    files = list((tmp_path / "text").glob("*.npz"))
    assert len(files) == 1

    def boom(*args, **kwargs):
        raise AssertionError("encoded again")

    with monkeypatch.context() as m:
        m.setattr(CLIPEncoder, "encode_sentences", boom)
        torch.testing.assert_close(cached_text_features(resnet_encoder, classes, templates, cache_dir=tmp_path), first)
        with pytest.raises(AssertionError):  # other classes or prompts: another key
            cached_text_features(resnet_encoder, classes[:2], templates, cache_dir=tmp_path)
    files[0].write_bytes(b"garbage")  # a damaged entry is a miss, re-encoded
    torch.testing.assert_close(cached_text_features(resnet_encoder, classes, templates, cache_dir=tmp_path), first)


def test_loading_leaves_the_root_logger_alone(tiny_vit) -> None:
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    load_encoder(str(tiny_vit[0]), str(tiny_vit[1]), device="cpu", runtime="torch")
    assert root.level == level and root.handlers == handlers
