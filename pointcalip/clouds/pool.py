"""Reading many untrusted files where a crash costs one file, not the run (docs/method.md §1).

:class:`ReaderPool` runs a picklable task (e.g. ``functools.partial(load_prepared, ...)``)
on each item in separate worker processes and yields a :class:`ReadOutcome` per item, in
input order. A worker that dies (segfault, OOM kill) or runs past ``timeout`` seconds is
killed and replaced and only its item becomes an error row.

Design:

* one duplex pipe per worker; a worker holds one item at a time, so a death or a timeout
  is always charged to the right item;
* at most ``2 × workers`` items are between "taken from the input" and "yielded" (in
  flight or finished out of order), so the input iterable is consumed lazily and memory
  stays flat for millions of items;
* start method ``forkserver`` where available (else ``spawn``): workers are forked from a
  small server process, never from the caller (which may hold torch threads, CUDA state
  or open files); the server imports the caller's ``__main__`` once, later workers and
  replacements start in milliseconds;
* workers ignore ``SIGINT``: on Ctrl-C the caller gets ``KeyboardInterrupt`` and
  :meth:`ReaderPool.close` (also run by ``with``) kills and reaps every worker;
* ``workers=0`` runs the task in the calling process: errors become rows the same way,
  but there is no isolation (a crash ends the caller) and ``timeout`` is not enforced.

Test hooks (read when the pool is created, used only in worker processes): when
``POINTCALIP_TEST_READER_CRASH`` is a non-empty string, a worker given an item whose text
contains it kills itself with ``SIGSEGV``; ``POINTCALIP_TEST_READER_HANG`` likewise makes
the worker sleep forever.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Dict, Generic, Iterable, Iterator, List, NamedTuple, Optional, Tuple, TypeVar

from pointcalip.errors import PointcalipError

__all__ = ["ReaderPool", "ReadOutcome", "CRASH_HOOK", "HANG_HOOK", "default_start_method"]

T = TypeVar("T")
CRASH_HOOK = "POINTCALIP_TEST_READER_CRASH"
HANG_HOOK = "POINTCALIP_TEST_READER_HANG"
_log = logging.getLogger("pointcalip")
_READY = (-1, None, None)  # a worker's first message: started, task unpickled
_START_FAILURES = 3  # workers in a row that die before they are ready -> give up


class ReadOutcome(NamedTuple):
    """What happened to one input item.

    Attributes:
        index: position of the item in the input (0-based).
        value: the task's result, or ``None`` when it failed.
        error: a one-line message, or ``None`` when it succeeded.
    """

    index: int
    value: Any
    error: Optional[str]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_message(exc: BaseException) -> str:
    """The one-line error row for an exception raised by a task."""
    if isinstance(exc, PointcalipError):
        return _one_line(str(exc))
    return _one_line(f"unexpected error: {type(exc).__name__}: {exc}")


def _item_text(item: Any) -> str:
    try:
        return os.fspath(item)
    except TypeError:
        return repr(item)


def default_start_method() -> str:
    """``forkserver`` where the platform has it, else ``spawn`` (never plain ``fork``)."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _worker_main(conn: Connection, task: Callable[[Any], Any], crash: str, hang: str) -> None:
    """Worker loop: receive ``(index, item)``, send ``(index, value, error)``; ``None`` ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        conn.send(_READY)
    except (EOFError, OSError):
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, item = message
        text = _item_text(item)
        if crash and crash in text:
            os.kill(os.getpid(), signal.SIGSEGV)
        if hang and hang in text:
            while True:
                time.sleep(3600)
        try:
            reply: Tuple[int, Any, Optional[str]] = (index, task(item), None)
        except Exception as exc:  # every failure becomes this item's error row
            reply = (index, None, error_message(exc))
        try:
            conn.send(reply)
        except (EOFError, OSError, BrokenPipeError):
            return
        except Exception as exc:  # the result could not be pickled
            conn.send((index, None, error_message(exc)))


class _Worker:
    """A worker process, the parent's end of its pipe, and the item it holds."""

    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.index: Optional[int] = None  # item being worked on
        self.deadline = float("inf")
        self.ready = False  # sent its first message

    def kill(self) -> None:
        """Kill (SIGKILL), reap and close; safe to call twice."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


class ReaderPool(Generic[T]):
    """Run ``task`` on items in isolated worker processes; see the module docstring.

    Args:
        workers: number of worker processes; 0 runs in the calling process (no isolation).
        timeout: seconds one item may take before its worker is killed (``None``: no limit).
        task: a picklable top-level function (or ``functools.partial`` of one) of one item.
        start_method: multiprocessing start method (default :func:`default_start_method`).
    """

    def __init__(self, workers: int, timeout: float | None, task: Callable[[Any], T],
                 start_method: str | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        self.workers = workers
        self.timeout = None if timeout is None else float(timeout)
        self.task = task
        self.start_method = start_method or default_start_method()
        self._ctx = multiprocessing.get_context(self.start_method)
        self._hooks = (os.environ.get(CRASH_HOOK, ""), os.environ.get(HANG_HOOK, ""))
        self._pool: List[_Worker] = []
        self._closed = False
        self._running = False
        self._start_failures = 0

    # ----------------------------------------------------------------- life cycle

    def __enter__(self) -> "ReaderPool[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=_worker_main, args=(child, self.task, *self._hooks),
                                    name="pointcalip-reader", daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def close(self) -> None:
        """Stop every worker (idle ones politely, busy ones by SIGKILL) and reap them all."""
        if self._closed:
            return
        self._closed = True
        for worker in self._pool:
            if worker.index is None and worker.process.is_alive():
                try:
                    worker.conn.send(None)
                except (OSError, ValueError):
                    pass
        end = time.monotonic() + 2.0
        for worker in self._pool:
            if worker.index is None:
                worker.process.join(max(0.0, end - time.monotonic()))
            worker.kill()
        self._pool = []

    # --------------------------------------------------------------------- running

    def imap(self, items: Iterable[Any]) -> Iterator[ReadOutcome]:
        """Yield a :class:`ReadOutcome` per item, in input order, consuming ``items`` lazily."""
        if self._closed:
            raise ValueError("this ReaderPool is closed")
        if self._running:
            raise ValueError("this ReaderPool is already running an imap")
        if self.workers == 0:
            return self._imap_inline(items)
        return self._imap_workers(items)

    def _imap_inline(self, items: Iterable[Any]) -> Iterator[ReadOutcome]:
        for index, item in enumerate(items):
            try:
                yield ReadOutcome(index, self.task(item), None)
            except Exception as exc:
                yield ReadOutcome(index, None, error_message(exc))

    def _imap_workers(self, items: Iterable[Any]) -> Iterator[ReadOutcome]:
        self._running = True
        while len(self._pool) < self.workers:
            self._pool.append(self._spawn())
        source = enumerate(items)
        window = 2 * self.workers
        done: Dict[int, ReadOutcome] = {}
        taken, next_out, exhausted = 0, 0, False
        try:
            while True:
                for worker in self._pool:  # hand out work
                    if exhausted or not worker.ready or worker.index is not None or taken - next_out >= window:
                        continue
                    try:
                        index, item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    taken += 1
                    self._dispatch(worker, index, item, done)
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
                busy = [w for w in self._pool if w.index is not None]
                if not busy and exhausted and next_out == taken:
                    return
                starting = [w for w in self._pool if not w.ready]
                if busy or starting:
                    self._collect(busy, starting, done)
        finally:
            self._running = False
            for worker in list(self._pool):
                if worker.index is not None:  # abandoned (consumer stopped or Ctrl-C)
                    self._replace(worker, restart=False)

    def _dispatch(self, worker: _Worker, index: int, item: Any, done: Dict[int, ReadOutcome]) -> None:
        worker.index = index
        worker.deadline = time.monotonic() + self.timeout if self.timeout is not None else float("inf")
        try:
            worker.conn.send((index, item))
        except (OSError, ValueError):  # died while idle (e.g. killed from outside)
            done[index] = ReadOutcome(index, None, self._death_message(worker))
            self._replace(worker)
        except Exception as exc:  # the item cannot be pickled
            worker.index = None
            done[index] = ReadOutcome(index, None, error_message(exc))

    def _collect(self, busy: List[_Worker], starting: List[_Worker], done: Dict[int, ReadOutcome]) -> None:
        """Wait for results, deaths, start-ups or the earliest deadline, and record what happened."""
        now = time.monotonic()
        first = min([w.deadline for w in busy], default=float("inf"))
        wait_s = None if first == float("inf") else max(0.0, first - now)
        watched = busy + starting
        handles: List[Any] = [w.conn for w in watched] + [w.process.sentinel for w in watched]
        ready = set(wait(handles, timeout=wait_s))
        now = time.monotonic()
        for worker in starting:
            self._start_up(worker, ready)
        for worker in busy:
            index = worker.index
            assert index is not None
            if worker.conn in ready or worker.process.sentinel in ready:
                try:
                    if worker.conn.poll():
                        got, value, err = worker.conn.recv()
                        done[got] = ReadOutcome(got, value, err)
                        worker.index = None
                        continue
                except (EOFError, OSError):
                    pass
                if not worker.process.is_alive() or worker.process.sentinel in ready:
                    done[index] = ReadOutcome(index, None, self._death_message(worker))
                    self._replace(worker)
                    continue
            if now >= worker.deadline:
                _log.warning("reader timed out after %g s on item %d; restarting the worker", self.timeout, index)
                done[index] = ReadOutcome(index, None, f"read timed out after {self.timeout:g} s")
                self._replace(worker)

    def _start_up(self, worker: _Worker, ready: set) -> None:
        """Mark a starting worker ready, or replace it when it died on the way."""
        if worker.conn not in ready and worker.process.sentinel not in ready:
            return
        try:
            if worker.conn.poll() and worker.conn.recv() == _READY:
                worker.ready = True
                self._start_failures = 0
                return
        except (EOFError, OSError):
            pass
        self._start_failures += 1
        message = self._death_message(worker)
        if self._start_failures >= _START_FAILURES:
            raise RuntimeError(f"reader workers die before they start ({message}); is the task picklable "
                               "and importable in a fresh process?")
        self._replace(worker)

    def _death_message(self, worker: _Worker) -> str:
        worker.process.join(5.0)
        code = worker.process.exitcode
        if code is not None and code < 0:
            return f"reader crashed (signal {-code})"
        return f"reader crashed (exit status {code})"

    def _replace(self, worker: _Worker, restart: bool = True) -> None:
        """Kill ``worker`` and put a fresh one in its place (or just drop it)."""
        worker.kill()
        position = self._pool.index(worker)
        if restart and not self._closed:
            self._pool[position] = self._spawn()
        else:
            del self._pool[position]
