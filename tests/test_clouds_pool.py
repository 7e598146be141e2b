"""ReaderPool: per-item isolation of crashes and hangs, input order, lazy input (CPU, worker processes)."""

from __future__ import annotations

import functools
import multiprocessing
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from pointcalip.clouds import PreparedCloud, load_prepared
from pointcalip.clouds.pool import CRASH_HOOK, HANG_HOOK, ReaderPool, ReadOutcome

TASK = functools.partial(load_prepared, num_points=64, up_axis="y", robust=False, limits=None)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pool")
    paths = []
    for i in range(6):  # 40 points each: no sampling, so no open3d import in the workers
        path = folder / f"c{i}.npy"
        np.save(path, np.random.default_rng(i).normal(size=(40, 3)).astype(np.float32))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def pool() -> Iterator[ReaderPool]:
    """Two workers with both test hooks armed and a 3 s timeout (shared: workers start once)."""
    mp = pytest.MonkeyPatch()
    mp.setenv(CRASH_HOOK, "CRASHME")
    mp.setenv(HANG_HOOK, "HANGME")
    with ReaderPool(2, 3.0, TASK) as p:
        mp.undo()
        yield p


def test_crash_costs_one_file(pool: ReaderPool, files: list[Path], tmp_path: Path) -> None:
    crash = tmp_path / "CRASHME.npy"
    np.save(crash, np.ones((5, 3)))
    items = [files[0], crash, tmp_path / "missing.ply", files[1], 12345, files[2]]
    out = list(pool.imap(iter(items)))
    assert [o.index for o in out] == list(range(len(items)))
    assert all(isinstance(o, ReadOutcome) for o in out)
    assert out[1] == ReadOutcome(1, None, "reader crashed (signal 11)")
    assert out[2].value is None and "missing.ply: no such file" in out[2].error
    assert out[4].error.startswith("unexpected error: TypeError: ")
    for i in (0, 3, 5):
        assert out[i].error is None and isinstance(out[i].value, PreparedCloud)
        np.testing.assert_array_equal(out[i].value.points, TASK(items[i]).points)


def test_hang_times_out_and_the_pool_goes_on(pool: ReaderPool, files: list[Path], tmp_path: Path) -> None:
    hang = tmp_path / "HANGME.npy"
    out = list(pool.imap([files[3], hang, files[4]]))
    assert out[1] == ReadOutcome(1, None, "read timed out after 3 s")
    assert out[0].error is None and out[2].error is None
    assert len(pool._pool) == 2 and all(w.process.is_alive() for w in pool._pool)


def test_order_and_lazy_bounded_input(pool: ReaderPool, files: list[Path]) -> None:
    taken = []

    def source() -> Iterator[Path]:
        for i in range(40):
            taken.append(i)
            yield files[i % len(files)]

    seen = 0
    for outcome in pool.imap(source()):
        assert outcome.index == seen and outcome.error is None
        assert len(taken) <= seen + 1 + 2 * pool.workers  # at most 2 x workers ahead
        seen += 1
    assert seen == 40


def test_stopping_early_and_close_leave_no_processes(files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    spawned = []
    spawn = ReaderPool._spawn

    def recording_spawn(self: ReaderPool):
        worker = spawn(self)
        spawned.append(worker.process)
        return worker

    monkeypatch.setattr(ReaderPool, "_spawn", recording_spawn)
    with ReaderPool(2, None, TASK) as p:
        for outcome in p.imap(files * 3):
            assert outcome.error is None
            busy = [w.process for w in p._pool if w.index is not None]
            break
        # the worker that read item 0 was handed the next item before the yield, so at least one
        # worker was abandoned mid-item; whether its sibling had started by then is a race.
        assert busy and all(not proc.is_alive() for proc in busy)  # abandoned workers are killed
        assert not any(w.process in busy for w in p._pool)
        assert list(p.imap(files[:2]))[1].index == 1  # usable again after an abandoned imap
        assert len(p._pool) == 2 and len(spawned) >= 3  # the abandoned ones were replaced
    assert p._pool == []
    assert all(not proc.is_alive() and proc.exitcode is not None for proc in spawned)  # reaped
    pids = {c.pid for c in multiprocessing.active_children()}
    assert not pids & {proc.pid for proc in spawned}


def test_in_process_mode(files: list[Path], tmp_path: Path) -> None:
    with ReaderPool(0, None, TASK) as p:
        out = list(p.imap([files[0], tmp_path / "nope.xyz", None]))
    assert out[0].error is None and out[0].value.points.shape == (40, 3)
    assert "nope.xyz: no such file" in out[1].error
    assert out[2].error.startswith("unexpected error: TypeError")


@pytest.mark.parametrize("workers, timeout", [(-1, None), (1.5, None), (1, 0), (1, -2.0)])
def test_bad_arguments(workers: object, timeout: object) -> None:
    with pytest.raises(ValueError):
        ReaderPool(workers, timeout, TASK)
