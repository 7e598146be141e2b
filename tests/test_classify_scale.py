"""`pointcalip classify` at scale: manifests, kill + --resume (one process and torchrun),
hostile inputs in one call, batch failures, flat memory (CPU, a micro random CLIP)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest

from pointcalip.api import ZeroShotClassifier
from pointcalip.cli import main
from pointcalip.cli.classify_rows import truncate_to_complete_lines
from pointcalip.clouds.pool import CRASH_HOOK, HANG_HOOK

from pointcalip.testing import write_tiny_clip

ROOT = Path(__file__).resolve().parent.parent
CLASSES = "chair,table,lamp,mug"


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> List[str]:
    cfg, ckpt = write_tiny_clip(tmp_path_factory.mktemp("micro"), "micro")
    return ["--backbone", str(cfg), "--pretrained", str(ckpt), "--device", "cpu", "--classes", CLASSES]


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> List[Path]:
    """40 small .npy clouds (200 points: no sampling) with different shapes."""
    folder = tmp_path_factory.mktemp("clouds")
    paths = []
    for i in range(40):
        rng = np.random.default_rng(i)
        p = rng.normal(size=(200, 3)) * rng.uniform(0.2, 2.0, size=3)
        paths.append(folder / f"c{i:03d}{'_slow' if i == 21 else ''}.npy")
        np.save(paths[-1], p.astype(np.float32))
    return paths


def _manifest(path: Path, files: Sequence[Path]) -> Path:
    path.write_text("# clouds to classify\n\n" + "".join(f"{f}\n" for f in files) + "   \n")
    return path


def _rows(path: Path) -> List[Dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_same_rows(got: List[Dict], want: List[Dict], atol: float) -> None:
    assert [r["path"] for r in got] == [r["path"] for r in want]  # each path once, in input order
    for g, w in zip(got, want):
        assert set(g) == set(w) and g["error"] == w["error"] and g["n_points"] == w["n_points"]
        assert [t["label"] for t in g["topk"]] == [t["label"] for t in w["topk"]], g["path"]
        np.testing.assert_allclose([t["prob"] for t in g["topk"]], [t["prob"] for t in w["topk"]], rtol=0, atol=atol)


def _wait_for_lines(path: Path, count: int, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        assert proc.poll() is None, f"the run ended before it was killed: {proc.communicate()}"
        time.sleep(0.1)
    raise AssertionError(f"{path} did not get {count} lines in {timeout} s")


def _kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the command, its reader workers, torchrun's ranks
    proc.wait(timeout=30)


def _env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_HOOK, HANG_HOOK)}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


@pytest.fixture(scope="module")
def reference(micro, clouds, tmp_path_factory) -> List[Dict]:
    """An uninterrupted single-process run over the manifest (batch 8)."""
    tmp = tmp_path_factory.mktemp("ref")
    manifest = _manifest(tmp / "m.txt", clouds)
    assert main(["classify", "--manifest", str(manifest), "--output", str(tmp / "ref.jsonl"), "--batch-size", "8",
                 "--workers", "1", *micro]) == 0
    return _rows(tmp / "ref.jsonl")


# ---------------------------------------------------------------------- kill + resume


def test_manifest_kill_and_resume(micro, clouds, reference, tmp_path) -> None:
    """SIGKILL mid-way (a reader held by the hang hook on file 21), a line cut short, then --resume."""
    manifest = _manifest(tmp_path / "m.txt", clouds)
    out = tmp_path / "out.jsonl"
    args = ["classify", "--manifest", str(manifest), "--output", str(out), "--batch-size", "8", "--workers", "1", *micro]
    proc = subprocess.Popen([sys.executable, "-m", "pointcalip", *args, "--read-timeout", "600"],
                            env=_env(**{HANG_HOOK: "_slow"}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _wait_for_lines(out, 16, proc)  # two batches done; the third waits for the held reader
        time.sleep(0.5)
    finally:
        _kill_group(proc)
    assert out.read_bytes().count(b"\n") == 16
    with open(out, "a") as f:
        f.write('{"path": "' + str(clouds[16])[:10])  # what a kill in the middle of a write leaves
    assert main([*args, "--resume"]) == 0
    got = _rows(out)
    _assert_same_rows(got, reference, atol=1e-9)  # same batches as the uninterrupted run: equal probabilities
    assert main([*args, "--resume"]) == 0  # nothing left to do: the file is unchanged
    assert _rows(out) == got


def test_resume_refuses_another_input_list(micro, clouds, reference, tmp_path, capsys) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in reference[:3]))
    other = _manifest(tmp_path / "m.txt", clouds[1:])
    rc = main(["classify", "--manifest", str(other), "--output", str(out), "--resume", "--workers", "0", *micro])
    err = capsys.readouterr().err
    assert rc == 2 and "belongs to another input list" in err and "Traceback" not in err
    assert truncate_to_complete_lines(out) == 3  # untouched


def test_torchrun_kill_and_resume(micro, clouds, reference, tmp_path) -> None:
    """Two gloo ranks (rows i % 2), killed while rank 1 is held on file 21, then resumed under torchrun."""
    files = clouds[:28]
    manifest = _manifest(tmp_path / "m.txt", files)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "pointcalip",
           "classify", "--manifest", str(manifest), "--output", str(out), "--batch-size", "4", "--workers", "1",
           "--no-progress", *micro]
    proc = subprocess.Popen([*cmd, "--read-timeout", "600"], env=_env(OMP_NUM_THREADS="1", **{HANG_HOOK: "_slow"}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    parts = [out.with_name(f"out.jsonl.part-{r}-of-2") for r in range(2)]
    try:
        _wait_for_lines(parts[0], 14, proc)  # rank 0: all 14 of its rows
        _wait_for_lines(parts[1], 8, proc)  # rank 1: rows 1, 3, ..., 15 (file 21 is its 11th row)
        time.sleep(0.5)
    finally:
        _kill_group(proc)
    assert not out.exists()
    assert [r["index"] for r in _rows(parts[1])] == list(range(1, 17, 2))
    with open(parts[1], "a") as f:
        f.write('{"path": "cut')
    done = subprocess.run([*cmd, "--resume"], env=_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not any(p.exists() for p in parts)  # merged and removed
    _assert_same_rows(_rows(out), reference[:28], atol=1e-6)  # other batches than the reference: float noise only


# ---------------------------------------------------------------------- hostile inputs


def test_hostile_mix_in_one_call(micro, clouds, tmp_path, monkeypatch, capsys) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    crash = bad / "CRASHME.npy"
    np.save(crash, np.random.default_rng(0).normal(size=(50, 3)))
    fifo = bad / "pipe.xyz"
    os.mkfifo(fifo)
    liar = bad / "liar.ply"
    head = b"ply\nformat binary_little_endian 1.0\nelement vertex 10000000\n"
    liar.write_bytes(head + b"property float x\nproperty float y\nproperty float z\nend_header\n" + b"\0" * 600)
    bomb = bad / "bomb.npz"
    np.savez_compressed(bomb, points=np.zeros((2_000_000, 3), np.float32))  # 24 MB of zeros in a few kB
    garbage = bad / "garbage.npy"
    garbage.write_bytes(np.random.default_rng(1).bytes(5000))
    text_garbage = bad / "noise.xyz"
    text_garbage.write_bytes(np.random.default_rng(2).bytes(3000))
    hang = bad / "HANGME.pts"
    hang.write_text("0 0 0\n1 1 1\n")
    inputs = [clouds[0], crash, fifo, liar, clouds[1], bomb, garbage, text_garbage, hang, tmp_path / "nope.ply",
              clouds[2]]
    good = {0, 4, 10}
    monkeypatch.setenv(CRASH_HOOK, "CRASHME")
    monkeypatch.setenv(HANG_HOOK, "HANGME")
    rc = main(["classify", *map(str, inputs), "--json", "--workers", "2", "--read-timeout", "3", "--max-bytes",
               str(1 << 20), "--batch-size", "2", *micro])
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err and "8 of 11 input(s) failed" in err
    rows = json.loads(out)
    assert [r["path"] for r in rows] == [str(p) for p in inputs]
    for i, r in enumerate(rows):
        if i in good:
            assert r["error"] is None and len(r["topk"]) == 4
            probs = [t["prob"] for t in r["topk"]]
            assert np.isfinite(probs).all() and sum(probs) == pytest.approx(1.0, abs=1e-9)
        else:
            assert r["topk"] == [] and isinstance(r["error"], str) and "\n" not in r["error"]
    assert rows[1]["error"] == "reader crashed (signal 11)"
    assert "named pipe" in rows[2]["error"] and "liar.ply" in rows[3]["error"]
    assert "--max-bytes" in rows[5]["error"] and rows[8]["error"] == "read timed out after 3 s"


def test_batch_failure_costs_one_cloud(micro, clouds, tmp_path, monkeypatch, capsys) -> None:
    """An exception while encoding a batch: the batch is retried cloud by cloud."""
    tiny = tmp_path / "tiny.npy"
    np.save(tiny, np.random.default_rng(5).normal(size=(7, 3)))  # readable, but the encoder below refuses it
    inputs = [str(clouds[3]), str(tiny), str(clouds[4]), str(clouds[5])]
    args = ["classify", "--json", "--workers", "0", "--batch-size", "4", *micro]
    assert main([*args, *inputs[:1], *inputs[2:]]) == 0
    clean = json.loads(capsys.readouterr().out)
    original = ZeroShotClassifier.logits

    def fragile(self, clouds_):
        if any(len(c) < 10 for c in clouds_):
            raise RuntimeError("simulated encoder failure")
        return original(self, clouds_)

    monkeypatch.setattr(ZeroShotClassifier, "logits", fragile)
    assert main([*args, *inputs]) == 2
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert "tiny.npy: classification failed (RuntimeError: simulated encoder failure)" in rows[1]["error"]
    _assert_same_rows([rows[0], *rows[2:]], clean, atol=1e-6)


def test_manifest_lines_with_paths_and_comments(micro, clouds, tmp_path, capsys) -> None:
    manifest = tmp_path / "m.txt"
    manifest.write_text(f"\n# header\n  {clouds[6]}  \n\n#{clouds[7]}\n{tmp_path / 'gone.npy'}\n{clouds[8]}\n")
    rc = main(["classify", str(clouds[9]), "--manifest", str(manifest), "--workers", "0", *micro, "--topk", "2"])
    out, err = capsys.readouterr()
    assert rc == 2 and "1 of 4 input(s) failed" in err
    assert [line.split(" (")[0] for line in out.splitlines() if not line.startswith(" ")] == [
        str(clouds[9]), str(clouds[6]), f"error: {tmp_path / 'gone.npy'}: no such file; check the path",
        str(clouds[8])]
    assert main(["classify", "--manifest", str(tmp_path / "none.txt"), *micro]) == 2
    assert "none.txt: manifest not found" in capsys.readouterr().err


# ---------------------------------------------------------------------- memory


_MEMORY_SCRIPT = r"""
import json, resource, sys
import pointcalip.cli.classify as classify
from pointcalip.projection import ScatterProjection, register_projection
register_projection(ScatterProjection("one_view", ((0.0, 0.0, 0.0),), 1.6, 32))
from pointcalip.cli import main

def reset_peak():  # Linux: VmHWM restarts from the current RSS
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass

def peak_kib():
    try:
        return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
    except (OSError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

build = classify._build_classifier
def build_then_reset(*a, **k):  # measure the streaming part, not the model load
    out = build(*a, **k)
    reset_peak()
    return out
classify._build_classifier = build_then_reset
peaks = []
for manifest in sys.argv[2:]:
    rc = main(["classify", "--manifest", manifest, "--output", manifest + ".jsonl", "--projection", "one_view",
               "--batch-size", "50", "--workers", "1", "--no-progress", *json.loads(sys.argv[1])])
    assert rc == 0, rc
    peaks.append(peak_kib())
print(json.dumps(peaks))
"""


def test_memory_stays_flat(micro, tmp_path) -> None:
    """200 then 2,000 inputs in one process: the peak RSS while streaming (after the model is
    loaded) barely moves: nothing is kept per row."""
    files = []
    for i in range(10):  # 1,024 points each (12 kB prepared): keeping them per row would show
        files.append(tmp_path / f"f{i}.npy")
        np.save(files[-1], np.random.default_rng(100 + i).normal(size=(1024, 3)).astype(np.float32))
    small = _manifest(tmp_path / "small.txt", files * 20)
    large = _manifest(tmp_path / "large.txt", files * 200)
    done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, json.dumps(micro), str(small), str(large)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    peak_small, peak_large = json.loads(done.stdout.strip().splitlines()[-1])  # KiB
    assert sum(1 for _ in open(str(large) + ".jsonl")) == 2000
    assert peak_large - peak_small < 12 * 1024, (peak_small, peak_large)  # 1,800 more clouds would be 22 MB
