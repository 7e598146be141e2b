"""Outputs survive interruption and company: SIGTERM / Ctrl-C, two runs sharing a cache, a full disk."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest

import pointcalip.cli as pointcalip_cli
from pointcalip.testing.datasets import write_modelnet40

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mn40(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mn40i")
    write_modelnet40(root, train_per_class=1, test_per_class=4, seed=7)
    return root


def _argv(mn40: Path, model, out: Path, cache: Path, *extra: str) -> List[str]:
    return [sys.executable, "-m", "pointcalip", "eval", "--config", "pointclip_modelnet40", "--data-root", str(mn40),
            "--backbone", str(model[0]), "--pretrained", str(model[1]), "--device", "cpu", "--runtime", "torch",
            "--batch-size", "4", "--output", str(out), "--cache-dir", str(cache), *extra]


def _leftovers(*folders: Path) -> List[str]:
    return [str(p) for f in folders if f.exists() for p in f.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signal_mid_encoding_leaves_nothing_half_written(sig, code, word, mn40, tiny_resnet, tmp_path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_argv(mn40, tiny_resnet, out, cache), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env=env, cwd=ROOT)
    seen = b""
    deadline = time.monotonic() + 120
    while b"encoding" not in seen and time.monotonic() < deadline:  # the progress bar is on stderr
        chunk = proc.stderr.read1(4096) if hasattr(proc.stderr, "read1") else proc.stderr.read(1)
        if not chunk:
            break
        seen += chunk
    assert b"encoding" in seen, seen.decode(errors="replace")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in (seen + err).decode(errors="replace").replace("\r", "\n").splitlines()
             if ln.startswith("pointcalip")]
    assert proc.returncode == code, (seen + err).decode(errors="replace")[-2000:]
    assert len(lines) == 1 and word in lines[0], (seen + err).decode(errors="replace")[-2000:]
    assert not (out / "results.json").exists() and not (out / "predictions.npz").exists()
    assert _leftovers(out, cache) == []


@pytest.mark.parametrize("raised, code", [(KeyboardInterrupt, 130), (pointcalip_cli.Terminated, 143)])
def test_signal_while_a_bar_is_drawn_but_not_yet_entered_gets_its_own_line(raised, code, monkeypatch, capsys) -> None:
    """The race behind a flaky CI run: the signal lands after ``tqdm(...)`` drew itself, before its ``with``."""
    from tqdm.auto import tqdm

    def run(args) -> int:
        bar = tqdm(total=10, desc="encoding test", file=sys.stderr)  # drawn, never closed by its owner
        bar.update(3)
        raise raised()

    monkeypatch.setattr("pointcalip.cli.eval.run", run)
    assert pointcalip_cli.main(["eval"]) == code
    text = capsys.readouterr().err.replace("\r", "\n")
    assert "encoding test" in text
    lines = [ln for ln in text.splitlines() if "pointcalip eval:" in ln]
    assert len(lines) == 1 and lines[0].startswith("pointcalip eval:"), text


def test_two_evaluations_sharing_a_cache_both_finish(mn40, tiny_resnet, tmp_path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on a small machine
    procs = [subprocess.Popen(_argv(mn40, tiny_resnet, tmp_path / f"o{i}", cache, "--no-progress"), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    ref = tmp_path / "ref"
    subprocess.run(_argv(mn40, tiny_resnet, ref, tmp_path / "own-cache", "--no-progress"), cwd=ROOT, check=True,
                   capture_output=True, env=env)
    want = np.load(ref / "predictions.npz")
    for i in range(2):
        got = np.load(tmp_path / f"o{i}" / "predictions.npz")
        for key in want.files:
            np.testing.assert_array_equal(got[key], want[key])
    assert _leftovers(cache, tmp_path / "o0", tmp_path / "o1") == []


def test_full_disk_is_one_line_and_no_partial_file(mn40, tiny_resnet, tmp_path) -> None:
    out = tmp_path / "out"

    def limit() -> None:  # a "disk" that takes at most 64 KiB per file: predictions.npz needs more
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    proc = subprocess.run(_argv(mn40, tiny_resnet, out, tmp_path / "cache", "--no-progress"), cwd=ROOT,
                          preexec_fn=limit, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("pointcalip eval: error:") and "File too large" in lines[0]
    assert not (out / "predictions.npz").exists() and not (out / "results.json").exists()
    assert _leftovers(out, tmp_path / "cache") == []


def test_make_without_libusb_as_non_root_prints_the_command(tmp_path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ldconfig").write_text("#!/bin/sh\nexit 0\n")  # finds no library
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")  # not root
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    t0 = time.monotonic()
    proc = subprocess.run(["make", "-s", "system-deps"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and time.monotonic() - t0 < 10
    assert "apt-get install -y libusb-1.0-0" in proc.stderr
