"""Running on several processes (GPUs, machines) with ``torch.distributed`` (docs/method.md §10).

``torchrun --nproc-per-node N -m pointcalip eval ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. The commands
call :func:`setup` (or use :func:`session`): when ``WORLD_SIZE > 1`` it starts the process
group — ``gloo`` when the processes run on the CPU, ``cpu:gloo,cuda:nccl`` on GPUs (CUDA
tensors travel over NCCL, CPU tensors over gloo) — and puts each rank on ``cuda:LOCAL_RANK``.
Without ``torchrun`` every helper here is a no-op that behaves like a world of one process,
so single-process code paths stay exactly as they were.

Helpers move CPU tensors of different row counts between ranks in rank order
(:func:`gather_rows`, :func:`all_gather_rows`) in chunks of at most :data:`CHUNK_BYTES`,
so no single message grows with the dataset.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

logger = logging.getLogger("pointcalip")

CHUNK_BYTES = 256 * 2**20  # largest single tensor message between two ranks


@dataclass(frozen=True)
class DistContext:
    """One process of a distributed run.

    Attributes:
        rank, world_size, local_rank: from the ``torchrun`` environment.
        backend: the process-group backend string (``gloo`` or ``cpu:gloo,cuda:nccl``).
        device: the device this rank computes on (``cpu`` or ``cuda:LOCAL_RANK``).
        owns_group: whether :func:`setup` started the process group (and :func:`teardown` ends it).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str
    owns_group: bool


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher) with ``WORLD_SIZE > 1``."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def is_distributed() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this is rank 0, the process that searches, scores and writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def rank_device(device: str, local_rank: int) -> str:
    """The device of a rank: ``cuda:LOCAL_RANK`` when ``device`` asks for CUDA (or ``auto``) and
    GPUs exist, else ``device`` unchanged (``auto`` without GPUs is the CPU)."""
    wants_cuda = device == "auto" or device.startswith("cuda")
    if wants_cuda and torch.cuda.is_available():
        return f"cuda:{local_rank}"
    return "cpu" if device == "auto" else device


def setup(device: str) -> Optional[DistContext]:
    """Start the process group of a ``torchrun`` launch; ``None`` in a plain single process.

    Args:
        device: the configured device (``auto``, ``cpu``, ``cuda``, ``cuda:N``); on GPUs each
            rank is moved to ``cuda:LOCAL_RANK`` whatever ``N`` says.

    A process group that is already running (started by the caller) is used as it is.
    """
    if not launched() and not is_distributed():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = rank_device(device, local_rank)
    _exit_with_launcher()
    if is_distributed():
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, str(dist.get_backend()), dev, False)
    if dev.startswith("cuda"):
        torch.cuda.set_device(torch.device(dev))
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend, dev, True)
    logger.info("distributed: rank %d of %d on %s (%s)", ctx.rank, ctx.world_size, ctx.device, backend)
    return ctx


def on_ranks(cfg: Any, run: Any) -> Any:
    """``run(cfg)`` inside the process group of a ``torchrun`` launch (each rank with its own
    ``cfg.device``), or plainly in a single process; the group is torn down afterwards."""
    import dataclasses

    ctx = setup(cfg.device)
    try:
        return run(dataclasses.replace(cfg, device=ctx.device) if ctx is not None else cfg)
    finally:
        teardown(ctx)


def _exit_with_launcher() -> None:
    """Linux: get SIGTERM when the launcher (``torchrun``) dies, even by SIGKILL.

    A pre-empted or killed launcher cannot forward signals; without this its ranks would go
    on as orphans. SIGTERM stops a rank cleanly (exit 143, nothing half-written).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl: keep the default
        return
    if os.getppid() == 1:  # the launcher died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def teardown(ctx: Optional[DistContext]) -> None:
    """End the process group that :func:`setup` started (nothing otherwise)."""
    if ctx is not None and ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: str) -> Iterator[Optional[DistContext]]:
    """:func:`setup` on entry, :func:`teardown` on exit (also when the body raises)."""
    ctx = setup(device)
    try:
        yield ctx
    finally:
        teardown(ctx)


# --------------------------------------------------------------------------- work split


def shard_bounds(n: int, world: int, index: int) -> Tuple[int, int]:
    """``[start, stop)`` of part ``index`` when ``n`` items are cut into ``world`` contiguous parts
    whose sizes differ by at most one (earlier parts are the larger ones)."""
    if world < 1 or not 0 <= index < world:
        raise ValueError(f"part index must be in [0, world) with world >= 1; got index {index}, world {world}")
    base, extra = divmod(int(n), world)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def batch_aligned_shard(n: int, batch_size: int, world: int, index: int) -> Tuple[int, int]:
    """``[start, stop)`` rows of part ``index``: whole batches of ``batch_size`` rows, cut into
    ``world`` contiguous runs of batches (so every batch is one of the single-process batches)."""
    nb = -(-int(n) // int(batch_size))
    b0, b1 = shard_bounds(nb, world, index)
    return min(n, b0 * batch_size), min(n, b1 * batch_size)


# --------------------------------------------------------------------------- collectives


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects; returned as is in one process)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(values: Sequence[float]) -> List[float]:
    """Element-wise sum of ``values`` over the ranks, in float64 (the values themselves in one process)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _all_shapes(t: torch.Tensor) -> List[Tuple[int, ...]]:
    """The shape of ``t`` on every rank (all ranks must pass tensors of the same ``ndim``)."""
    mine = torch.tensor(list(t.shape), dtype=torch.int64)
    shapes = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(shapes, mine)
    return [tuple(int(x) for x in s.tolist()) for s in shapes]


def _row_chunks(rows: int, row_bytes: int) -> List[Tuple[int, int]]:
    """``[start, stop)`` row ranges of at most :data:`CHUNK_BYTES` each (one row at least)."""
    step = max(1, CHUNK_BYTES // max(1, row_bytes))
    return [(s, min(rows, s + step)) for s in range(0, rows, step)]


def _gathered_layout(t: torch.Tensor) -> Tuple[List[int], Tuple[int, ...]]:
    """Row counts of every rank and the common trailing shape; ``ValueError`` when they differ."""
    if t.device.type != "cpu":
        raise ValueError(f"gathered tensors must be on the CPU; got one of shape {tuple(t.shape)} on {t.device}")
    shapes = _all_shapes(t)
    tails = {s[1:] for s in shapes if s[0] > 0} or {shapes[0][1:]}
    if len(tails) > 1:
        raise ValueError(f"ranks hold tensors of different trailing shapes: {sorted(tails)}")
    return [s[0] for s in shapes], tails.pop()


def gather_rows(t: torch.Tensor, dst: int = 0) -> Optional[torch.Tensor]:
    """Concatenation of every rank's ``t: (n_r, ...)`` along dim 0 in rank order, on rank ``dst``.

    Every rank calls it; the row counts ``n_r`` may differ (zero too), the trailing shape
    and dtype must not. Returns the ``(sum n_r, ...)`` CPU tensor on ``dst`` and ``None`` on
    the other ranks; in a single process returns ``t``. Rank ``dst`` receives each rank's rows
    straight into its place in the result, in chunks of at most :data:`CHUNK_BYTES`.
    """
    if not is_distributed():
        return t
    counts, tail = _gathered_layout(t)
    me = rank()
    row_bytes = t.element_size() * int(torch.Size(tail).numel())
    if me != dst:
        src = t.contiguous()
        for a, b in _row_chunks(counts[me], row_bytes):
            dist.send(src[a:b], dst=dst)
        return None
    out = torch.empty((sum(counts), *tail), dtype=t.dtype)
    offset = 0
    for r, n in enumerate(counts):
        part = out[offset : offset + n]
        if r == me:
            if n:
                part.copy_(t)
        else:
            for a, b in _row_chunks(n, row_bytes):
                dist.recv(part[a:b], src=r)
        offset += n
    return out


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather_rows`, but every rank gets the ``(sum n_r, ...)`` concatenation."""
    if not is_distributed():
        return t
    counts, tail = _gathered_layout(t)
    me = rank()
    row_bytes = t.element_size() * int(torch.Size(tail).numel())
    out = torch.empty((sum(counts), *tail), dtype=t.dtype)
    offset = 0
    for r, n in enumerate(counts):
        part = out[offset : offset + n]
        if r == me and n:
            part.copy_(t)
        for a, b in _row_chunks(n, row_bytes):
            dist.broadcast(part[a:b], src=r)
        offset += n
    return out
