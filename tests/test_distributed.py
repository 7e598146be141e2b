"""Sharded evaluation under torchrun (gloo, CPU), the collectives, cached blocks and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pointcalip import distributed
from pointcalip.cli import main
from pointcalip.components import BLOCK_BATCHES, block_bounds, encode_blocks
from pointcalip.testing.datasets import write_modelnet40

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def modelnet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mn40-dist")
    write_modelnet40(root, train_per_class=2, test_per_class=1, seed=3)
    return root


# --------------------------------------------------------------------------- work split


def test_shard_bounds_cover_contiguously_and_evenly() -> None:
    for n in (0, 1, 5, 17, 64):
        for world in (1, 2, 3, 8):
            parts = [distributed.shard_bounds(n, world, r) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(parts[r][1] == parts[r + 1][0] for r in range(world - 1))
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError, match="part index"):
        distributed.shard_bounds(4, 2, 2)


def test_batch_aligned_shards_are_whole_single_process_batches() -> None:
    for n, bs, world in [(40, 4, 2), (41, 4, 3), (7, 16, 2), (100, 32, 8)]:
        parts = [distributed.batch_aligned_shard(n, bs, world, r) for r in range(world)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        single = {(s, min(n, s + bs)) for s in range(0, n, bs)}
        for a, b in parts:  # each part is a union of single-process batches
            assert {(s, min(b, s + bs)) for s in range(a, b, bs)} <= single


def test_block_bounds() -> None:
    for n, bs in [(40, 4), (2468, 32), (46_000, 32), (1, 8), (0, 8), (10, 3)]:
        blocks = block_bounds(n, bs)
        assert sum(b - a for a, b in blocks) == n and all(b > a for a, b in blocks)
        assert all(blocks[i][1] == blocks[i + 1][0] for i in range(len(blocks) - 1))
        assert all((b - a) % bs == 0 for a, b in blocks[:-1])  # only the last block may end inside a batch
        assert all(b - a <= BLOCK_BATCHES * bs for a, b in blocks)
    assert len(block_bounds(2468, 32)) == 16  # small sets: ~16 blocks, so ranks share the work evenly
    assert block_bounds(46_000, 32)[0] == (0, BLOCK_BATCHES * 32)
    with pytest.raises(ValueError, match="batch_size"):
        block_bounds(10, 0)


class _Rows:
    """A dataset whose cloud ``i`` is filled with ``i`` (picklable, for DataLoader workers)."""

    def points_of(self, idx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(idx, np.float32)[:, None, None], (len(idx), 4, 3)).copy()


def test_encode_blocks_reads_the_same_batches_with_workers_and_skips_stored_blocks() -> None:
    rows = np.random.default_rng(0).permutation(50)
    blocks = block_bounds(len(rows), 4)
    seen: list = []

    def enc(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch[:, 0, 0].long().tolist())
        return batch[:, 0, :1] * 2

    plain = encode_blocks(enc, _Rows(), rows, blocks, 4)
    batches_plain, seen[:] = list(seen), []
    threaded = encode_blocks(enc, _Rows(), rows, blocks, 4, workers=2)
    assert seen == batches_plain == [rows[s : s + 4].tolist() for s in range(0, 50, 4)]
    assert all(torch.equal(a, b) for a, b in zip(plain, threaded))
    np.testing.assert_array_equal(torch.cat(plain)[:, 0].numpy(), 2 * rows)
    # stored blocks are not encoded; every new block is saved as soon as it is done
    stored = {blocks[1]: plain[1], blocks[3]: plain[3]}
    saved: list = []
    seen[:] = []
    again = encode_blocks(enc, _Rows(), rows, blocks, 4, workers=1,
                          store=(stored.get, lambda blk, t: saved.append(blk)))
    assert saved == [b for b in blocks if b not in stored]
    assert sum(len(x) for x in seen) == 50 - sum(b - a for a, b in stored)
    assert all(torch.equal(a, b) for a, b in zip(plain, again))


def test_collectives_in_one_process_are_identities() -> None:
    t = torch.arange(6.0).view(3, 2)
    assert distributed.gather_rows(t) is t and distributed.all_gather_rows(t) is t
    assert distributed.all_reduce_sum([1, 2.5]) == [1.0, 2.5] and distributed.all_true(True)
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.setup("cpu") is None  # no torchrun environment: nothing starts


# --------------------------------------------------------------------------- two gloo processes


def _worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from pointcalip.fewshot.heads import SyncedBatchNorm1d

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    distributed.CHUNK_BYTES = 40  # force several chunks per rank
    res = {}
    rows = [5, 0][rank], [3, 4][rank]
    for i, n in enumerate(rows):
        t = torch.arange(n * 6, dtype=torch.float32).view(n, 2, 3) + 1000 * rank
        g = distributed.gather_rows(t)
        res[f"gather{i}"] = None if g is None else g.tolist()
        res[f"all{i}"] = distributed.all_gather_rows(t).tolist()
    res["sum"] = distributed.all_reduce_sum([rank + 1, 0.5])
    res["true"] = distributed.all_true(rank == 0)
    res["obj"] = distributed.broadcast_object({"from": rank})
    # synced batch norm on this rank's rows of one batch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=gen) * 3 + 1
    w = torch.randn(7, 5, generator=gen)
    part = x.tensor_split(world)[rank].clone().requires_grad_(True)
    bn = SyncedBatchNorm1d(5)
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2, 5))
        bn.bias.copy_(torch.linspace(-1, 1, 5))
    y = bn(part)
    (y * w.tensor_split(world)[rank]).sum().backward()
    res.update(bn_out=y.tolist(), bn_grad_x=part.grad.tolist(), bn_grad_w=bn.weight.grad.tolist(),
               bn_running=[bn.running_mean.tolist(), bn.running_var.tolist()])
    Path(out, f"rank{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def test_collectives_and_synced_batchnorm_on_two_gloo_processes(tmp_path) -> None:
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'store'}"
    mp.spawn(_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for i, rows in enumerate([(5, 0), (3, 4)]):
        want = torch.cat([torch.arange(n * 6, dtype=torch.float32).view(n, 2, 3) + 1000 * r
                          for r, n in enumerate(rows)]).tolist()
        assert r0[f"gather{i}"] == want and r1[f"gather{i}"] is None
        assert r0[f"all{i}"] == want == r1[f"all{i}"]
    assert r0["sum"] == r1["sum"] == [3.0, 1.0]
    assert r0["true"] is False and r1["true"] is False
    assert r0["obj"] == r1["obj"] == {"from": 0}
    # reference: one plain BatchNorm1d over the whole batch
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(7, 5, generator=gen) * 3 + 1).requires_grad_(True)
    w = torch.randn(7, 5, generator=gen)
    bn = torch.nn.BatchNorm1d(5)
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2, 5))
        bn.bias.copy_(torch.linspace(-1, 1, 5))
    y = bn(x)
    (y * w).sum().backward()
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(r0["bn_out"] + r1["bn_out"]), y.detach(), **tol)
    torch.testing.assert_close(torch.tensor(r0["bn_grad_x"] + r1["bn_grad_x"]), x.grad, **tol)
    # each rank's weight gradient is its share; DDP's average times 2 ranks = the whole batch's gradient
    torch.testing.assert_close(torch.tensor(r0["bn_grad_w"]) + torch.tensor(r1["bn_grad_w"]), bn.weight.grad, **tol)
    for r in (r0, r1):
        torch.testing.assert_close(torch.tensor(r["bn_running"][0]), bn.running_mean, **tol)
        torch.testing.assert_close(torch.tensor(r["bn_running"][1]), bn.running_var, **tol)


# --------------------------------------------------------------------------- eval


def _eval_args(root: Path, model, out: Path, cache: Path, *extra: str, dataset: str = "modelnet40") -> list:
    return ["eval", "--dataset", dataset, "--data-root", str(root), "--backbone", str(model[0]),
            "--pretrained", str(model[1]), "--method", "calip", "--search", "none", "--device", "cpu",
            "--output", str(out), "--cache-dir", str(cache), "--no-progress", "--batch-size", "4", *extra]


def _torchrun_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def test_torchrun_two_processes_bit_identical_to_one(modelnet_root, tiny_resnet, tmp_path) -> None:
    """2 gloo ranks write the same predictions.npz, bit for bit, as one process (1 thread each)."""
    a = tmp_path / "A"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "pointcalip", *_eval_args(modelnet_root, tiny_resnet, a, tmp_path / "cache-a")]
    proc = subprocess.run(cmd, env=_torchrun_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("top-1") == 1  # rank 0 alone prints the summary
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what torchrun gives each worker (OMP_NUM_THREADS=1)
    try:
        assert main(_eval_args(modelnet_root, tiny_resnet, tmp_path / "B", tmp_path / "cache-b")) == 0
    finally:
        torch.set_num_threads(threads)
    pa, pb = np.load(a / "predictions.npz"), np.load(tmp_path / "B" / "predictions.npz")
    assert sorted(pa.files) == sorted(pb.files)
    for k in pa.files:
        assert np.array_equal(pa[k], pb[k]), k
    assert pa["view_components"].shape[0] == 40
    # the full entry replaced the per-block entries of both ranks
    assert len(list((tmp_path / "cache-a").glob("*.npz"))) == 1
    ra = json.loads((a / "results.json").read_text())
    assert ra["config"]["device"] == "cpu" and ra["metrics"]["num_samples"] == 40


def test_killed_eval_resumes_from_finished_blocks(modelnet_root, tiny_resnet, tmp_path, monkeypatch) -> None:
    """A run killed after 3 of 10 blocks re-encodes only the other 7; DataLoader workers change nothing.

    ModelNet10 (read from the same folder): 10 test clouds, batch 1 = 10 blocks of one batch.
    """
    from pointcalip.engine import ZeroShotEngine

    full = tmp_path / "full"
    args = dict(dataset="modelnet10")
    assert main(_eval_args(modelnet_root, tiny_resnet, full, tmp_path / "c0", "--batch-size", "1", **args)) == 0
    original = ZeroShotEngine.components
    calls = {"n": 0, "limit": 3}

    class Killed(Exception):
        pass

    def counting(self, points, text):
        if calls["n"] == calls["limit"]:
            raise Killed
        calls["n"] += 1
        return original(self, points, text)

    monkeypatch.setattr(ZeroShotEngine, "components", counting)
    cache = tmp_path / "c1"
    with pytest.raises(Killed):
        main(_eval_args(modelnet_root, tiny_resnet, tmp_path / "cut", cache, "--batch-size", "1", **args))
    assert calls["n"] == 3 and len(list(cache.glob("blk-*.npz"))) == 3
    calls.update(n=0, limit=99)
    assert main(_eval_args(modelnet_root, tiny_resnet, tmp_path / "cut", cache, "--batch-size", "1", "--workers", "2",
                           **args)) == 0
    assert calls["n"] == 7
    assert [p.name.startswith("blk-") for p in cache.glob("*.npz")] == [False]
    pa, pb = np.load(full / "predictions.npz"), np.load(tmp_path / "cut" / "predictions.npz")
    for k in pa.files:
        assert np.array_equal(pa[k], pb[k]), k
