"""``pointcalip classify``: zero-shot top-k classes of your own point-cloud files, at any scale.

Inputs are files, folders (their supported files, sorted), glob patterns (expanded here too,
for shells that do not) and ``--manifest`` files (one path per line, read lazily). Each input
gets one row; a file that cannot be used gets an error row and does not stop the others. Exit
status 0 when every input was classified, 2 when any failed (docs/method.md §10).

How a run streams (memory does not grow with the number of inputs):

* the inputs are a generator; files are read, checked and prepared in
  :class:`~pointcalip.clouds.ReaderPool` worker processes (``--workers``), so a reader that
  crashes, hangs past ``--read-timeout`` or is killed for memory costs one error row;
* prepared clouds are grouped into batches of ``--batch-size`` and encoded while the workers
  read ahead; a batch that fails is retried cloud by cloud, so only the offending cloud gets
  an error row;
* every finished batch's rows are written at once, in input order: appended and flushed to
  ``--output OUT.jsonl``, printed as array elements (``--json``) or table lines; ``--resume``
  skips the rows already in OUT.jsonl (a last line cut short by a kill is dropped and redone);
* under ``torchrun`` row ``i`` goes to rank ``i % WORLD``; each rank writes
  ``OUT.jsonl.part-RANK-of-WORLD`` (rows carry their input index) and rank 0 merges the parts
  into OUT.jsonl in input order, atomically.

Modules: this one (arguments, vocabulary, the batching :class:`Runner`), ``classify_inputs``
(input stream and the reader task; light at import time, reader workers unpickle it),
``classify_rows`` (rows, sinks, resume, merge), ``classify_report`` (what ``--report`` keeps).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from pointcalip.cli.classify_inputs import Item, count_manifest, expand_inputs, iter_inputs, open_manifest, read_candidates
from pointcalip.cli.classify_report import REPORT_MAX_ITEMS, ReportRows, small_views
from pointcalip.cli.classify_rows import (
    JsonArraySink, JsonlSink, Row, Sink, TableSink, done_rows, merge_parts, part_path, seed_part_from_output, skip_done,
    truncate_to_complete_lines)
from pointcalip.cli.options import add_config_argument, add_model_arguments, dataset_choices, overrides_from_args
from pointcalip.errors import ConfigError

HELP = "classify point-cloud files zero-shot over any class names (top-k with probabilities)"

MODEL_OVERRIDES = ("backbone", "pretrained", "method", "beta2", "beta3", "alpha", "view_weights", "projection",
                   "normalize_images", "templates", "prompts", "num_points", "batch_size", "device", "runtime",
                   "precision")
UP_AXIS_CHOICES = ("y", "z", "x", "-y", "-z", "-x", "auto", "auto3")  # = pointcalip.api.UP_AXIS_CHOICES
DEFAULT_READ_TIMEOUT = 30.0
_PENDING_FACTOR = 4  # a batch is encoded early when this many batch sizes of rows wait behind it
_log = logging.getLogger("pointcalip")


def default_workers() -> int:
    """Reader processes by default: ``min(4, CPU count)``."""
    return max(1, min(4, os.cpu_count() or 1))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="files, folders or glob patterns ('clouds/*.ply')")
    p.add_argument("--manifest", action="append", metavar="FILE",
                   help="a text file with one path per line (blank lines and '#' comments skipped), read lazily; "
                        "may be repeated and combined with PATHs")
    p.add_argument("--recursive", "-r", action="store_true", help="also classify files in sub-folders of folders")
    vocab = p.add_mutually_exclusive_group()
    vocab.add_argument("--classes", metavar="A,B,...", help="comma-separated class names (any words)")
    vocab.add_argument("--classes-file", metavar="FILE", help="a text file with one class name per line")
    vocab.add_argument("--dataset-classes", choices=dataset_choices(),
                       help="the vocabulary of a dataset (default modelnet40)")
    add_config_argument(p, "modelnet40_zeroshot")
    add_model_arguments(p)
    p.add_argument("--topk", type=int, default=5, help="classes shown per input (default 5, at most K)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON array, one object per input (streamed: each element as soon as it is done)")
    g = p.add_argument_group("orientation")
    g.add_argument("--up-axis", choices=UP_AXIS_CHOICES, default=None,
                   help="the axis that points up in the files (default y). 'auto' tries all six axes, 'auto3' "
                        "y, z and x, and keeps per file the most confident prediction (largest top-1 probability; "
                        "ties: the earlier in y z x -y -z -x); it costs one encoder pass per candidate "
                        "(6x or 3x the encoding time), the file is read once")
    g.add_argument("--robust-normalize", action="store_true",
                   help="drop far outliers (beyond 3x the 95th-percentile distance to the median) before "
                        "normalising; the row says how many ('outliers')")
    g = p.add_argument_group("scale and safety")
    g.add_argument("--output", metavar="OUT.jsonl",
                   help="append one JSON line per input to this file as soon as its batch is done")
    g.add_argument("--resume", action="store_true",
                   help="with --output: skip the inputs already in OUT.jsonl (a cut-short last line is redone)")
    g.add_argument("--workers", type=int, default=None,
                   help=f"reader processes (default min(4, CPUs) = {default_workers()}); 0 reads in this process "
                        "(no crash isolation, no timeout)")
    g.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT, metavar="SECONDS",
                   help=f"a file whose reading takes longer gets an error row (default {DEFAULT_READ_TIMEOUT:g})")
    g.add_argument("--max-points", type=int, default=None,
                   help="refuse files that declare or hold more points than this (default 50,000,000)")
    g.add_argument("--max-bytes", type=int, default=None,
                   help="refuse files, and compressed payloads, larger than this many bytes (default 2 GiB)")
    g.add_argument("--report", metavar="REPORT.html",
                   help=f"write a self-contained HTML page: per input the views the encoder saw, top-k bars, the "
                        f"up axis, errors (pictures for the first {REPORT_MAX_ITEMS:,} inputs)")
    prog = g.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_const", const=True, default=None,
                      help="show a progress bar on stderr (default: with --output or on a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_const", const=False)


# ----------------------------------------------------------------------- vocabulary


def parse_class_list(text: str) -> List[str]:
    """``"chair, table,lamp"`` -> ``["chair", "table", "lamp"]`` (empty items dropped)."""
    return [c.strip() for c in text.split(",") if c.strip()]


def read_classes_file(path: str) -> List[str]:
    """Class names of a text file: one per line; blank lines and ``#`` comments are ignored."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{path}: classes file not found; give a text file with one class name per line")
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the classes file ({exc}); save it as UTF-8 text") from None
    names = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not names:
        raise ConfigError(f"{path}: the classes file has no class names; write one name per line")
    return names


def vocabulary(args: argparse.Namespace, default_dataset: str) -> List[str]:
    """The ``K`` class names chosen by ``--classes``, ``--classes-file`` or ``--dataset-classes``."""
    from pointcalip.datasets import class_names

    if args.classes is not None:
        names = parse_class_list(args.classes)
        if not names:
            raise ConfigError(f"--classes {args.classes!r} has no class names; e.g. --classes \"chair,table,lamp\"")
        return names
    if args.classes_file is not None:
        return read_classes_file(args.classes_file)
    return class_names(args.dataset_classes or default_dataset)


# --------------------------------------------------------------------------- run


@dataclass
class _Pending:
    """A row waiting for its batch, with its prepared candidates (``None`` when it failed)."""

    row: Row
    prepared: Optional[Tuple[Any, ...]] = None


class Runner:
    """Classifies a stream of :class:`Item` in batches and sends the rows to the sinks in input order."""

    def __init__(self, classifier: Any, axes: Tuple[str, ...], topk: int, sinks: List[Sink],
                 report: Optional[ReportRows], bar: Any) -> None:
        self.classifier, self.axes, self.topk = classifier, axes, topk
        self.sinks, self.report, self.bar = sinks, report, bar
        self.batch_size = classifier.config.batch_size
        self.pending: List[_Pending] = []
        self.goods = 0
        self.rows = self.failed = 0

    def add(self, item: Item, prepared: Optional[Tuple[Any, ...]], error: Optional[str]) -> None:
        row = Row(item.path, index=item.index, error=error)
        if prepared is not None:
            row.n_points = prepared[0].num_read
            row.outliers = prepared[0].num_outliers
        self.pending.append(_Pending(row, prepared))
        self.goods += prepared is not None
        if self.goods >= self.batch_size or len(self.pending) >= _PENDING_FACTOR * self.batch_size:
            self.flush()

    def flush(self) -> None:
        goods = [p for p in self.pending if p.prepared is not None]
        if goods:
            self._classify(goods)
        rows = [p.row for p in self.pending]
        if self.report is not None:
            self._report(self.pending)
        for sink in self.sinks:
            sink.write(rows)
        self.rows += len(rows)
        self.failed += sum(r.error is not None for r in rows)
        if self.bar is not None:
            self.bar.update(len(rows))
        self.pending, self.goods = [], 0

    def _classify(self, goods: List[_Pending]) -> None:
        try:
            self._predict(goods)
        except Exception as exc:  # noqa: BLE001 - one bad cloud must not cost the batch
            if len(goods) == 1:
                goods[0].row.error = _failure(goods[0].row.path, exc)
                goods[0].prepared = None
                return
            _log.warning("a batch of %d clouds failed (%s); retrying them one by one", len(goods), exc)
            for p in goods:
                self._classify([p])

    def _predict(self, goods: List[_Pending]) -> None:
        from pointcalip.api import CandidateClouds

        cands = CandidateClouds(self.axes, tuple(tuple(p.prepared[c].points for p in goods)
                                                 for c in range(len(self.axes))),
                                tuple(p.prepared[0].num_outliers for p in goods),
                                tuple(p.prepared[0].num_read for p in goods))
        pred = self.classifier.predict_candidates(cands)
        for p, top, axis in zip(goods, pred.topk(self.topk), pred.up_axes):
            p.row.topk, p.row.up_axis = top, axis

    def _report(self, pending: List[_Pending]) -> None:
        import torch

        projection = self.classifier.engine.projection
        for p in pending:
            views = points = None
            if self.report.wants_pictures() and p.prepared is not None and p.row.error is None:
                points = p.prepared[self.axes.index(p.row.up_axis)].points
                views = small_views(projection.preview(torch.from_numpy(points[None]))[0].cpu().numpy())
            self.report.add(p.row, views, points)


def _failure(path: str, exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{path}: classification failed ({type(exc).__name__}: {text}); the other inputs were classified"


def _limits(args: argparse.Namespace) -> Any:
    from pointcalip.clouds import ReadLimits

    given = {k: v for k, v in (("max_points", args.max_points), ("max_bytes", args.max_bytes)) if v is not None}
    return ReadLimits(**given) if given else None


def _check_args(args: argparse.Namespace, world: int) -> None:
    if args.topk < 1:
        raise ConfigError(f"--topk must be at least 1, got {args.topk}")
    if not args.paths and not args.manifest:
        raise ConfigError("nothing to classify: give files, folders, patterns or --manifest FILE")
    if args.resume and not args.output:
        raise ConfigError("--resume continues an --output file: give --output OUT.jsonl")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    if not args.read_timeout > 0:
        raise ConfigError(f"--read-timeout must be a positive number of seconds, got {args.read_timeout}")
    if world > 1 and not args.output:
        raise ConfigError("under torchrun give --output OUT.jsonl: each rank writes a part and rank 0 merges them")
    if world > 1 and args.report:
        raise ConfigError("--report is not available under torchrun; run the report on one process "
                          "(e.g. on a manifest of the files you want to look at)")
    for manifest in args.manifest or ():
        open_manifest(manifest).close()


def _build_classifier(args: argparse.Namespace, device: Optional[str] = None) -> Tuple[Any, List[str]]:
    from pointcalip.api import ZeroShotClassifier
    from pointcalip.config import build_config

    overrides = overrides_from_args(args, MODEL_OVERRIDES)
    if device is not None:
        overrides["device"] = device
    cfg = build_config(args.config, overrides)
    classes = vocabulary(args, cfg.dataset)
    return ZeroShotClassifier.from_config(cfg, classes, up_axis=args.up_axis or "y",
                                          robust=args.robust_normalize, limits=_limits(args)), classes


def run(args: argparse.Namespace) -> int:
    from pointcalip import distributed

    world = int(os.environ.get("WORLD_SIZE", "1")) if distributed.launched() else 1
    _check_args(args, world)
    with distributed.session(args.device or "auto") as ctx:
        rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
        return _run(args, rank, world, ctx.device if ctx is not None else None)


def _run(args: argparse.Namespace, rank: int, world: int, device: Optional[str]) -> int:
    import functools

    from tqdm.auto import tqdm

    from pointcalip import distributed
    from pointcalip.api import up_axis_candidates
    from pointcalip.clouds import ReaderPool

    classifier, classes = _build_classifier(args, device)  # model + text features, once per run
    axes = up_axis_candidates(args.up_axis or "y")
    topk = min(args.topk, len(classes))
    keys = {"up_axis": args.up_axis is not None, "outliers": bool(args.robust_normalize)}
    manifests = list(args.manifest or ())

    items: Iterator[Item] = iter_inputs(args.paths, manifests, args.recursive)
    if world > 1:
        items = (it for it in items if it.index % world == rank)
    out = Path(args.output) if args.output else None
    target = part_path(out, rank, world) if (out is not None and world > 1) else out
    done = 0
    if args.resume and target is not None:
        if world > 1 and not target.exists() and out.exists():
            seed_part_from_output(out, target, rank, world)
        if target.exists():
            done = skip_done(items, target, truncate_to_complete_lines(target), check_index=world > 1)
            _log.info("%s: %d rows already done; resuming", target, done)

    sinks: List[Sink] = []
    if target is not None:
        sinks.append(JsonlSink(target, append=done > 0, keys={**keys, "index": world > 1}))
    elif args.json:
        sinks.append(JsonArraySink(sys.stdout, keys))
    else:
        sinks.append(TableSink(sys.stdout, max([len(c) for c in classes] + [5])))
    report = ReportRows(REPORT_MAX_ITEMS, classes) if args.report else None

    show = args.progress if args.progress is not None else (out is not None or sys.stderr.isatty())
    total = _count_inputs(args, manifests, rank, world) if show else None
    bar = tqdm(total=None if total is None else max(0, total - done), desc="classify", unit="file",
               disable=not show, file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 5.0, dynamic_ncols=True)
    runner = Runner(classifier, axes, topk, sinks, report, bar)
    task = functools.partial(read_candidates, num_points=classifier.num_points, axes=axes,
                             robust=bool(args.robust_normalize), limits=_limits(args))
    workers = default_workers() if args.workers is None else args.workers
    fed: deque = deque()

    def feed() -> Iterator[Item]:
        for it in items:
            fed.append(it)
            yield it

    try:
        with ReaderPool(workers, args.read_timeout, task) as pool:
            for outcome in pool.imap(feed()):
                runner.add(fed.popleft(), outcome.value, outcome.error)
        runner.flush()
    except BaseException:
        bar.close()  # the note below starts its own line
        if target is not None:
            print(f"pointcalip classify: the {runner.rows} finished rows are in {target}; run the same command "
                  f"with --resume to continue", file=sys.stderr)
        raise
    finally:
        bar.close()
        for sink in sinks:
            sink.close()

    rows, failed = done + runner.rows, runner.failed
    if world > 1:
        distributed.barrier()
        if rank != 0:
            distributed.barrier()
            return 0  # rank 0 reports for everyone (a non-zero rank would make torchrun stop the others)
        rows, failed = merge_parts(out, world)
        distributed.barrier()
    elif done:
        failed = sum(row.get("error") is not None for row in done_rows(target, rows))
    if report is not None:
        from pointcalip.htmlreport import write_classify_report

        write_classify_report(args.report, report, settings=_settings(classifier, args), max_items=REPORT_MAX_ITEMS)
        print(f"pointcalip classify: wrote {args.report}", file=sys.stderr)
    if failed:
        print(f"pointcalip classify: {failed} of {rows} input(s) failed", file=sys.stderr)
    return 2 if failed else 0


def _count_inputs(args: argparse.Namespace, manifests: Sequence[str], rank: int, world: int) -> Optional[int]:
    """How many inputs this rank gets (for the progress bar's ETA); one pass over the manifests."""
    total = len(expand_inputs(args.paths, args.recursive)) + sum(count_manifest(m) for m in manifests)
    return (total - rank + world - 1) // world if total > rank else 0


def _settings(classifier: Any, args: argparse.Namespace) -> Dict[str, str]:
    c = classifier.config
    classes = ", ".join(classifier.classes)
    return {"backbone": c.backbone, "pretrained": c.pretrained, "method": c.method, "projection": c.projection,
            "classes": classes if len(classes) <= 300 else classes[:297] + "...",
            "up axis": args.up_axis or "y", "robust normalisation": "on" if args.robust_normalize else "off",
            "points per cloud": str(c.num_points)}
