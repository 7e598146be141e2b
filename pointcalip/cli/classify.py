"""``pointcalip classify``: zero-shot top-k classes of your own point-cloud files.

Inputs are files, folders (their supported files, sorted) and glob patterns (expanded here
too, for shells that do not). Each input gets one row; a file that cannot be used gets an
error row and does not stop the others. Exit status 0 when every input was classified, 2
when any failed. The model and the class text features are loaded once per run.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from pointcalip.cli.options import add_config_argument, add_model_arguments, dataset_choices, overrides_from_args
from pointcalip.errors import ConfigError, PointCloudError

HELP = "classify point-cloud files zero-shot over any class names (top-k with probabilities)"

MODEL_OVERRIDES = ("backbone", "pretrained", "method", "beta2", "beta3", "alpha", "view_weights", "projection",
                   "normalize_images", "templates", "prompts", "num_points", "batch_size", "device", "runtime",
                   "precision")
_GLOB_CHARS = "*?["


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="files, folders or glob patterns ('clouds/*.ply')")
    p.add_argument("--recursive", "-r", action="store_true", help="also classify files in sub-folders of folders")
    vocab = p.add_mutually_exclusive_group()
    vocab.add_argument("--classes", metavar="A,B,...", help="comma-separated class names (any words)")
    vocab.add_argument("--classes-file", metavar="FILE", help="a text file with one class name per line")
    vocab.add_argument("--dataset-classes", choices=dataset_choices(),
                       help="the vocabulary of a dataset (default modelnet40)")
    add_config_argument(p, "modelnet40_zeroshot")
    add_model_arguments(p)
    p.add_argument("--topk", type=int, default=5, help="classes shown per input (default 5, at most K)")
    p.add_argument("--json", action="store_true", help="print one JSON array, one object per input")


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


# --------------------------------------------------------------------------- inputs


@dataclass
class Row:
    """One input's result: ``topk`` ``[(label, prob)]`` or an ``error`` line."""

    path: str
    n_points: Optional[int] = None
    topk: List[Tuple[str, float]] = field(default_factory=list)
    error: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "topk": [{"label": lab, "prob": p} for lab, p in self.topk],
                "n_points": self.n_points, "error": self.error}


def _folder_files(folder: Path, recursive: bool) -> List[Path]:
    """Supported point-cloud files of ``folder``, sorted (hidden files skipped)."""
    from pointcalip.clouds import SUPPORTED_EXTENSIONS

    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(f for f in found if f.is_file() and not f.name.startswith(".")
                  and f.suffix.lower() in SUPPORTED_EXTENSIONS)


def expand_inputs(paths: Sequence[str], recursive: bool = False) -> List[Row]:
    """One :class:`Row` per file to classify; patterns or folders with nothing usable get an error row."""
    from pointcalip.clouds import SUPPORTED_EXTENSIONS

    rows: List[Row] = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            files = _folder_files(p, recursive)
            if not files:
                rows.append(Row(arg, error=f"{arg}: folder has no point-cloud files "
                                           f"({' '.join(SUPPORTED_EXTENSIONS)}){'' if recursive else '; try --recursive'}"))
            rows.extend(Row(str(f)) for f in files)
        elif not p.exists() and any(ch in arg for ch in _GLOB_CHARS):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                rows.append(Row(arg, error=f"{arg}: no file matches this pattern; check the path"))
            for m in matches:
                rows.extend(expand_inputs([m], recursive) if Path(m).is_dir() else [Row(m)])
        else:
            rows.append(Row(arg))  # missing or unsupported files are reported when loading
    return rows


def _chunks(rows: List[Row], size: int) -> Iterator[List[Row]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def classify_rows(classifier: Any, rows: List[Row], topk: int) -> None:
    """Load and classify the rows without an error yet, in batches; fills ``topk``/``error``."""
    from pointcalip.clouds import read_point_cloud

    todo = [r for r in rows if r.error is None]
    for chunk in _chunks(todo, classifier.config.batch_size):
        good, clouds = [], []
        for row in chunk:
            try:
                cloud, row.n_points = read_point_cloud(row.path, classifier.num_points)
            except PointCloudError as exc:
                row.error = str(exc)
                continue
            good.append(row)
            clouds.append(cloud)
        if clouds:
            for row, top in zip(good, classifier.predict_clouds(clouds).topk(topk)):
                row.topk = top


# --------------------------------------------------------------------------- output


def format_table(rows: Sequence[Row]) -> str:
    """Human-readable results: per input its path, point count and ranked classes."""
    width = max([len(lab) for r in rows for lab, _ in r.topk] + [5])
    lines: List[str] = []
    for r in rows:
        if r.error is not None:
            lines.append(f"error: {r.error}")  # the message names the file
            continue
        lines.append(f"{r.path} ({r.n_points} points)")
        lines.extend(f"  {i}. {lab:<{width}}  {p:7.2%}" for i, (lab, p) in enumerate(r.topk, start=1))
    return "\n".join(lines)


def _build_classifier(args: argparse.Namespace) -> Tuple[Any, List[str]]:
    from pointcalip.api import ZeroShotClassifier
    from pointcalip.config import build_config

    cfg = build_config(args.config, overrides_from_args(args, MODEL_OVERRIDES))
    classes = vocabulary(args, cfg.dataset)
    return ZeroShotClassifier.from_config(cfg, classes), classes


def run(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise ConfigError(f"--topk must be at least 1, got {args.topk}")
    classifier, classes = _build_classifier(args)  # model + text features, once per run
    rows = expand_inputs(args.paths, args.recursive)
    classify_rows(classifier, rows, min(args.topk, len(classes)))
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print(format_table(rows))
    failed = sum(r.error is not None for r in rows)
    if failed:
        print(f"pointcalip classify: {failed} of {len(rows)} input(s) failed", file=sys.stderr)
    return 2 if failed else 0
