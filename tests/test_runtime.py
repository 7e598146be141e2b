"""Image-tower runtimes (docs/method.md §3): every runtime reproduces eager torch fp32,
converted models are cached and survive damage, fallbacks and refusals are clear."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from pointcalip.attention import calip_components
from pointcalip.encoders import CLIPEncoder, load_encoder
from pointcalip.errors import ConfigError, WeightsError
from pointcalip.runtime import PRECISIONS, RUNTIMES, OpenVINORunner

openvino = pytest.importorskip("openvino")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|``."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.fixture(scope="module")
def encoders(resnet_encoder, vit_encoder):
    """(eager torch, openvino) encoders of each tiny family; the shared fixtures load with
    ``runtime="auto"``, which is OpenVINO on the CPU; the eager twin reuses their model."""
    out = {}
    for fam, ov in (("resnet", resnet_encoder), ("vit", vit_encoder)):
        eager = CLIPEncoder(ov.model, ov.tokenizer, ov.info, ov.device, runtime="torch")
        out[fam] = (eager, ov)
    return out


def test_runtime_names() -> None:
    assert RUNTIMES == ("auto", "torch", "compile", "openvino") and PRECISIONS == ("fp32", "bf16", "fp16")


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_openvino_matches_eager_torch_for_any_batch(family: str, encoders) -> None:
    eager, ov = encoders[family]
    assert ov.runtime == "openvino" and eager.runtime == "torch"
    for b in (3, 1, 5):  # dynamic batch: the engine's last batch is smaller
        x = torch.rand(b, 3, 224, 224, generator=torch.Generator().manual_seed(b)) * 2.5
        want, got = eager.encode_image_dense(x), ov.encode_image_dense(x)
        assert got.spatial.shape == want.spatial.shape == (b, 49, 32)
        if family == "vit":
            for g, w in zip(got, want):
                assert rel(g, w) <= 1e-5
        else:
            # The tiny ResNet's attention pool is sharpened (q, k x8, positions x20), which
            # amplifies fp32 rounding: eager torch itself is ~1e-5 from float64 there. Each
            # runtime must be as close to float64 as eager torch is, up to a small factor for
            # its other summation order (over 30 random batches the worst ratio was 2.1;
            # full-size RN50: ~1e-6 of eager torch, tests/test_full_size.py).
            truth = copy.deepcopy(eager.tower).double()
            with torch.no_grad():
                t64 = truth(x.double())
            err_eager = rel(eager._runner(x), t64)
            assert rel(ov._runner(x), t64) <= max(1e-5, 3 * err_eager)
            assert rel(got.global_raw, want.global_raw) <= 5e-5


def test_openvino_conversion_is_cached_and_damage_is_rebuilt(tiny_vit, tmp_path, monkeypatch, caplog) -> None:
    cfg, ckpt = map(str, tiny_vit)
    first = load_encoder(cfg, ckpt, device="cpu", runtime="auto", runtime_cache_dir=tmp_path)
    assert first.runtime == "openvino"
    entries = list((tmp_path / "runtimes").iterdir())
    assert len(entries) == 1 and (entries[0] / "model.bin").stat().st_size > 100_000
    x = torch.rand(2, 3, 224, 224)
    want = first.encode_image_dense(x).spatial

    def no_convert(*args, **kwargs):
        raise AssertionError("converted again despite a cached model")

    with monkeypatch.context() as m:
        m.setattr(OpenVINORunner, "_convert", no_convert)
        again = load_encoder(cfg, ckpt, device="cpu", runtime="openvino", runtime_cache_dir=tmp_path)
    torch.testing.assert_close(again.encode_image_dense(x).spatial, want, rtol=0, atol=0)

    # garble the weights: the load-time check catches it, the entry is deleted and rebuilt
    blob = entries[0] / "model.bin"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = b"\x7f" * 4096
    blob.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="pointcalip"):
        rebuilt = load_encoder(cfg, ckpt, device="cpu", runtime="openvino", runtime_cache_dir=tmp_path)
    assert "damaged" in caplog.text
    assert rel(rebuilt.encode_image_dense(x).spatial, want) <= 1e-5
    assert [p.name for p in (tmp_path / "runtimes").iterdir()] == [entries[0].name]  # no temp leftovers
    with monkeypatch.context() as m:  # an unreadable model file is a miss too
        m.setattr(OpenVINORunner, "_convert", no_convert)
        (entries[0] / "model.xml").write_text("<not xml")
        with pytest.raises(AssertionError, match="converted again"):
            load_encoder(cfg, ckpt, device="cpu", runtime="openvino", runtime_cache_dir=tmp_path)
    assert not entries[0].exists()


def test_missing_openvino_auto_falls_back_explicit_fails(tiny_vit, tmp_path, monkeypatch) -> None:
    cfg, ckpt = map(str, tiny_vit)
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)  # import openvino -> ImportError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = load_encoder(cfg, ckpt, device="cpu", runtime="auto", runtime_cache_dir=tmp_path)
    assert enc.runtime == "torch"
    assert len([w for w in caught if "openvino" in str(w.message)]) == 1
    with pytest.raises(WeightsError, match="openvino.*--runtime torch"):
        load_encoder(cfg, ckpt, device="cpu", runtime="openvino", runtime_cache_dir=tmp_path)


def test_failed_conversion_auto_falls_back(tiny_vit, tmp_path, monkeypatch) -> None:
    import pointcalip.runtime as rt

    def broken(self, tower, image_size):
        raise rt._RuntimeUnavailable("OpenVINO conversion failed: unsupported op")

    monkeypatch.setattr(OpenVINORunner, "_convert", broken)
    cfg, ckpt = map(str, tiny_vit)
    with pytest.warns(UserWarning, match="unsupported op"):
        assert load_encoder(cfg, ckpt, device="cpu", runtime_cache_dir=tmp_path).runtime == "torch"
    with pytest.raises(WeightsError, match="unsupported op"):
        load_encoder(cfg, ckpt, device="cpu", runtime="openvino", runtime_cache_dir=tmp_path)


def test_bad_choices_are_config_errors(tiny_vit) -> None:
    cfg, ckpt = map(str, tiny_vit)
    with pytest.raises(ConfigError, match="valid: auto, torch, compile, openvino"):
        load_encoder(cfg, ckpt, device="cpu", runtime="tensorrt")
    with pytest.raises(ConfigError, match="valid: fp32, bf16, fp16"):
        load_encoder(cfg, ckpt, device="cpu", precision="fp64")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
        load_encoder(cfg, ckpt, device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="openvino runs in fp32"):
        load_encoder(cfg, ckpt, device="cpu", runtime="openvino", precision="bf16")


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_bf16_on_cpu_components_close_to_fp32(family: str, encoders, tiny_resnet, tiny_vit) -> None:
    """bf16 autocast on the tower, CALIP components vs fp32 (max |diff| / max |fp32|):
    observed ~5e-3 on the tiny ViT and ~4.4e-2 on the tiny ResNet, whose sharpened attention
    pool amplifies rounding; bf16 keeps 8 mantissa bits."""
    eager, _ = encoders[family]
    cfg, ckpt = map(str, tiny_resnet if family == "resnet" else tiny_vit)
    half = load_encoder(cfg, ckpt, device="cpu", precision="bf16")
    assert half.runtime == "torch" and half.precision == "bf16"  # auto -> torch autocast
    x = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(4)) * 2.5
    text = torch.nn.functional.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(0)), dim=-1)

    def comps(enc: CLIPEncoder) -> torch.Tensor:
        f = enc.encode_image_dense(x)
        assert f.spatial.dtype == torch.float32
        return calip_components(f.global_, f.spatial, text, enc.logit_scale, 1.0)

    c32, c16 = comps(eager), comps(half)
    err = rel(c16, c32)
    assert 0 < err <= (8e-2 if family == "resnet" else 1.5e-2)  # it really ran in bf16, and stayed close


_TWO_RUNNERS = """
import gc, os, signal, subprocess, sys
from pointcalip.encoders import load_encoder
cfg, ckpt, cache = sys.argv[1:4]
a = load_encoder(cfg, ckpt, device="cpu", runtime="openvino", runtime_cache_dir=cache)
b = load_encoder(cfg, ckpt, device="cpu", runtime="openvino", runtime_cache_dir=cache)
assert a.runtime == b.runtime == "openvino"
del a  # released in the order they were made, not the reverse
gc.collect()
del b
gc.collect()
subprocess.run([sys.executable, "-c", "pass"], check=True)  # SIGCHLD
signal.signal(signal.SIGUSR1, lambda *_: None)
os.kill(os.getpid(), signal.SIGUSR1)
print("survived")
"""


def test_openvino_runners_released_in_any_order_leave_signals_working(tiny_vit, tmp_path) -> None:
    """OpenVINO's CPU plugin swaps the thread's alternate signal stack and puts back, when
    destroyed, the one it found: released in creation order, two of them used to leave freed
    memory there, and the next signal (a child exiting) killed the process with SIGSEGV."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _TWO_RUNNERS, *map(str, tiny_vit), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("survived"), (proc.returncode, proc.stderr[-2000:])


def test_loading_an_openvino_runner_keeps_this_threads_signal_stack(tiny_vit, tmp_path) -> None:
    import ctypes

    from pointcalip.runtime import _libc, _StackT

    libc = _libc()
    if libc is None:
        pytest.skip("alternate signal stacks are kept on Linux only")

    def current() -> tuple:
        ss = _StackT()
        assert libc.sigaltstack(None, ctypes.byref(ss)) == 0
        return ss.ss_sp, ss.ss_size, ss.ss_flags

    before = current()
    enc = load_encoder(*map(str, tiny_vit), device="cpu", runtime="openvino", runtime_cache_dir=tmp_path)
    assert enc.runtime == "openvino" and current() == before
    del enc
    assert current() == before


_COMPILE_CHECK = """
import sys, torch
from pointcalip.encoders import load_encoder
cfg, ckpt, cache = sys.argv[1:4]
eager = load_encoder(cfg, ckpt, device="cpu", runtime="torch")
comp = load_encoder(cfg, ckpt, device="cpu", runtime="compile", runtime_cache_dir=cache)
assert comp.runtime == "compile", comp.runtime
worst = 0.0
for b in (3, 1):
    x = torch.rand(b, 3, 224, 224)
    for g, w in zip(comp.encode_image_dense(x), eager.encode_image_dense(x)):
        worst = max(worst, float((g - w).abs().max() / w.abs().max()))
print(worst)
"""


@pytest.mark.slow
def test_compile_matches_eager_torch(tiny_vit, tmp_path) -> None:
    """torch.compile (inductor) on the tiny ViT, dynamic batch; slow: inductor builds C++.

    It runs in a fresh process, as a user's ``--runtime compile`` run does: inductor's
    OpenMP-compiled kernels and OpenVINO's threading runtime (loaded by other tests of this
    session) must not share one process.
    """
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _COMPILE_CHECK, *map(str, tiny_vit), str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) <= 1e-5
    assert any(p.suffix == ".bin" for p in (tmp_path / "runtimes").iterdir())


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_runs_every_precision_from_pinned_memory(precision: str, tiny_resnet, encoders) -> None:
    eager_cpu, _ = encoders["resnet"]
    cfg, ckpt = map(str, tiny_resnet)
    enc = load_encoder(cfg, ckpt, device="cuda", precision=precision)
    assert enc.runtime == "torch" and enc._runner.channels_last
    x = (torch.rand(3, 3, 224, 224) * 2.5).pin_memory()
    got = enc.encode_image_dense(x)
    assert got.spatial.device.type == "cuda" and got.spatial.dtype == torch.float32
    want = eager_cpu.encode_image_dense(x)
    tol = 1e-3 if precision == "fp32" else 5e-2  # TF32/cuDNN vs CPU; half types
    assert rel(got.global_raw.cpu(), want.global_raw) <= tol


@cuda
def test_cuda_refuses_openvino(tiny_vit) -> None:
    with pytest.raises(ConfigError, match="CPU only"):
        load_encoder(*map(str, tiny_vit), device="cuda", runtime="openvino")


def test_openvino_conversion_sends_no_telemetry_and_exits_promptly(tiny_resnet, tmp_path) -> None:
    """OpenVINO's converter would report usage over HTTPS and, offline, hang the process at exit."""
    import os
    import subprocess
    import sys
    import time

    code = (
        "import sys; from pointcalip.encoders import load_encoder; "
        f"e = load_encoder({str(tiny_resnet[0])!r}, {str(tiny_resnet[1])!r}, 'cpu', runtime='openvino'); "
        "assert e.runtime == 'openvino'; "
        "assert sys.modules.get('openvino_telemetry') is None, 'telemetry module was imported'"
    )
    env = {**os.environ, "POINTCALIP_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.monotonic() - t0 < 120
    assert not (tmp_path / "home" / "intel").exists()  # no consent/ID files written either
