"""Fetch and install datasets: ``pointcalip download {modelnet40,scanobjectnn}``.

* ModelNet40 (``modelnet40_ply_hdf5_2048.zip``, ~435 MB): the original Stanford host
  (``shapenet.cs.stanford.edu``) is dead, so the mirrors in :data:`MODELNET40_MIRRORS` are
  tried in order. The archive streams to ``<root>/.partial/<archive>.part`` with a progress
  bar, resumes with an HTTP ``Range`` request when a partial file exists and the server
  answers ``206`` (otherwise it restarts cleanly), is checked (size / SHA-256 when known, zip
  CRCs, then the extracted content structurally) and is extracted atomically: into a temporary
  folder inside ``root``, validated, then moved into place with ``os.replace``.
* ScanObjectNN is behind a terms-of-use form: the command explains this and installs the
  official ``h5_files.zip`` given with ``--from-file`` (or a link given with ``--mirror``).

Only the standard library does HTTP (``urllib``), so tests can point it at a local server.
Connections time out after a few seconds and a mirror is not retried, except to resume a
transfer that broke off after making progress (at most ``max_resumes`` times).
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import re
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

from pointcalip.data import (
    DEFAULT_ROOT,
    MODELNET40_DIR,
    SCANOBJECTNN_DIR,
    scan_modelnet40,
    scan_scanobjectnn,
)
from pointcalip.errors import ConfigError, DatasetError, DownloadError

PathLike = Union[str, Path]
Log = Callable[[str], None]

CONNECT_TIMEOUT = 5.0  # seconds to connect (offline fails within seconds)
READ_TIMEOUT = 60.0  # seconds without a byte before a transfer counts as broken
CHUNK = 1 << 20

MODELNET40_ARCHIVE = "modelnet40_ply_hdf5_2048.zip"
SCANOBJECTNN_ARCHIVE = "h5_files.zip"
SCANOBJECTNN_FORM_URL = "https://hkust-vgd.github.io/scanobjectnn/"

# Mirrors of the PointNet release (the Stanford original is dead). The GitHub release is
# the one pointMLP's loader uses; its maintainer notes it is a copy of the Hugging Face
# file from Msun/modelnet40 (uploaded 2023-08-21). zhangtao-whu's dataset repo holds a
# second copy under pcm/.
MODELNET40_MIRRORS = (
    "https://github.com/ma-xu/pointMLP-pytorch/releases/download/Modenet40_dataset/modelnet40_ply_hdf5_2048.zip",
    "https://huggingface.co/datasets/Msun/modelnet40/resolve/main/modelnet40_ply_hdf5_2048.zip",
    "https://huggingface.co/datasets/zhangtao-whu/point_cloud_datasets/resolve/main/pcm/modelnet40_ply_hdf5_2048.zip",
)

# No trustworthy SHA-256 or exact byte size of modelnet40_ply_hdf5_2048.zip is published
# (the Hugging Face pages only show "435 MB"), so none is pinned here; the archive is verified
# by its zip CRCs and then structurally: the seven h5 shards listed in train_files.txt /
# test_files.txt, 40 classes in shape_names.txt, 9,843 train and 2,468 test clouds of
# [2048, 3] with labels 0..39. Users can pin a hash with --sha256.
MODELNET40_SPLIT_SIZES = {"train": 9843, "test": 2468}

# MD5s of the extracted shards as several third-party loaders (torchvision-style ModelNet40
# classes) record them for the original Stanford archive. Not authoritative, so a mismatch
# only prints a note; it never fails the install.
MODELNET40_REFERENCE_MD5 = {
    "ply_data_train0.h5": "3176385ffc31a7b6b5af22191fd920d1",
    "ply_data_train1.h5": "e3f613fb500559403b34925112754dc4",
    "ply_data_train2.h5": "0c56e233a090ff87c3049d4ce08e7d8b",
    "ply_data_train3.h5": "9d2af465adfa33a3285c369f3ca66c45",
    "ply_data_train4.h5": "dff38de489b2c41bfaeded86c2208984",
    "ply_data_test0.h5": "e9732e6d83b09e79e9a7617df058adee",
    "ply_data_test1.h5": "aba4b12a67c34391cc3c015a6f08ed4b",
}

# Clouds per variant in the official ScanObjectNN h5 release (2,309 / 581 objects; the
# PB_T50_RS augmentation has 5 perturbed copies of each).
SCANOBJECTNN_SPLIT_SIZES = {
    "obj_bg": {"train": 2309, "test": 581},
    "obj_only": {"train": 2309, "test": 581},
    "pb_t50_rs": {"train": 11416, "test": 2882},
}


class TransferInterrupted(DownloadError):
    """A transfer broke off repeatedly; the partial file is kept for the next run."""


@dataclass(frozen=True)
class ArchiveSpec:
    """What one dataset archive is and how to check it.

    ``split_sizes`` (expected clouds per split, or per variant and split for ScanObjectNN)
    and ``reference_md5`` may be None to skip those checks (tests use tiny archives).
    """

    dataset: str
    archive: str
    folder: str
    mirrors: tuple[str, ...] = ()
    sha256: Optional[str] = None
    size: Optional[int] = None
    split_sizes: Optional[Mapping] = None
    reference_md5: Optional[Mapping[str, str]] = field(default=None)


MODELNET40 = ArchiveSpec(
    "modelnet40", MODELNET40_ARCHIVE, MODELNET40_DIR, MODELNET40_MIRRORS,
    split_sizes=MODELNET40_SPLIT_SIZES, reference_md5=MODELNET40_REFERENCE_MD5,
)  # fmt: skip
SCANOBJECTNN = ArchiveSpec(
    "scanobjectnn", SCANOBJECTNN_ARCHIVE, SCANOBJECTNN_DIR, split_sizes=SCANOBJECTNN_SPLIT_SIZES
)
DOWNLOADABLE = ("modelnet40", "scanobjectnn")


def archive_spec(dataset: str) -> ArchiveSpec:
    """The :class:`ArchiveSpec` of ``dataset`` (``modelnet40``/``modelnet10`` or ``scanobjectnn``).

    Looked up at call time, so tests can replace the module-level specs.
    """
    key = str(dataset).strip().lower()
    if key in ("modelnet40", "modelnet10"):
        return MODELNET40
    if key == "scanobjectnn":
        return SCANOBJECTNN
    raise ConfigError(f"unknown dataset {dataset!r}; valid: modelnet40 (also gives modelnet10), scanobjectnn")


# --------------------------------------------------------------------------- HTTP


class _ReadTimeoutMixin:
    """Connects within ``timeout`` seconds, then allows ``read_timeout`` between bytes."""

    def __init__(self, *args, read_timeout: float = READ_TIMEOUT, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self._read_timeout)


class _HTTPConnection(_ReadTimeoutMixin, http.client.HTTPConnection):
    """HTTP connection with separate connect and read timeouts."""


class _HTTPSConnection(_ReadTimeoutMixin, http.client.HTTPSConnection):
    """HTTPS connection with separate connect and read timeouts."""


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self._read_timeout = read_timeout

    def http_open(self, req):
        return self.do_open(functools.partial(_HTTPConnection, read_timeout=self._read_timeout), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self._read_timeout = read_timeout

    def https_open(self, req):
        conn = functools.partial(_HTTPSConnection, read_timeout=self._read_timeout)
        return self.do_open(conn, req, context=self._context)


def _open(url: str, start: int, connect_timeout: float, read_timeout: float) -> http.client.HTTPResponse:
    """Open ``url`` (asking for bytes ``start..`` when ``start > 0``); returns the response."""
    headers = {"User-Agent": "pointcalip-download", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    opener = urllib.request.build_opener(_HTTPHandler(read_timeout), _HTTPSHandler(read_timeout))
    return opener.open(urllib.request.Request(url, headers=headers), timeout=connect_timeout)


def _reason(exc: BaseException) -> str:
    """A short human reason for a network error."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc.strerror or exc})"
    text = str(exc) or type(exc).__name__
    return text if len(text) < 120 else text[:117] + "..."


def _range_start(content_range: Optional[str]) -> Optional[int]:
    m = re.match(r"\s*bytes\s+(\d+)-", content_range or "")
    return int(m.group(1)) if m else None


def _file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _progress_bar(total: Optional[int], initial: int, desc: str, progress: Optional[bool]):
    from tqdm import tqdm

    disable = None if progress is None else not progress  # None: only on a terminal
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=disable)


def _transfer(
    url: str,
    dest: Path,
    size: Optional[int],
    connect_timeout: float,
    read_timeout: float,
    progress: Optional[bool],
    log: Log,
) -> bool:
    """One HTTP request appending to (or restarting) ``dest``. True when the file is complete.

    Raises the network error when nothing at all could be transferred.
    """
    start = _file_size(dest)
    if size is not None and start >= size:
        if start == size:
            return True
        dest.unlink()
        start = 0
    try:
        resp = _open(url, start, connect_timeout, read_timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # our partial file does not fit the server's: restart
            log(f"  server refused to resume at byte {start}; restarting")
            dest.unlink()
            return _transfer(url, dest, size, connect_timeout, read_timeout, progress, log)
        raise
    with resp:
        status = getattr(resp, "status", None) or resp.getcode()
        if status == 206 and _range_start(resp.headers.get("Content-Range")) == start:
            mode = "ab"
            if start:
                log(f"  resuming at byte {start}")
        elif status == 206:  # a range we did not ask for: start over
            dest.unlink(missing_ok=True)
            return False
        else:
            if start:
                log("  server does not support resuming; restarting from the beginning")
            mode, start = "wb", 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else size
        written = 0
        with open(dest, mode) as out, _progress_bar(total, start, dest.name.removesuffix(".part"), progress) as bar:
            try:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                if not written:
                    raise
                log(f"  transfer interrupted after {start + written} bytes ({_reason(exc)})")
                return False
    if total is not None and start + written < total:
        log(f"  connection closed after {start + written} of {total} bytes")
        return False
    return True


def sha256_of(path: PathLike) -> str:
    """Hex SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, sha256: Optional[str], size: Optional[int]) -> None:
    """Check ``path`` against the known size / SHA-256; a bad file is deleted."""
    problem = None
    actual_size = _file_size(path)
    if size is not None and actual_size != size:
        problem = f"size {actual_size} bytes, expected {size}"
    elif sha256 is not None:
        digest = sha256_of(path)
        if digest.lower() != sha256.lower():
            problem = f"SHA-256 mismatch: got {digest[:16]}..., expected {sha256.lower()[:16]}..."
    if problem:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{path.name.removesuffix('.part')}: {problem}; the file was deleted")


def fetch(
    url: str,
    dest: PathLike,
    *,
    sha256: Optional[str] = None,
    size: Optional[int] = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    max_resumes: int = 3,
    progress: Optional[bool] = None,
    log: Log = print,
) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest`` from the same URL when possible.

    Verifies ``size``/``sha256`` when given (a mismatch deletes ``dest`` and raises
    :class:`DownloadError`). Network errors (``OSError``, ``http.client.HTTPException``)
    propagate when the server cannot be reached; a partial file stays for the next try.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    origin = dest.with_name(dest.name + ".url")
    if dest.exists() and (not origin.is_file() or origin.read_text(encoding="utf-8").strip() != url):
        dest.unlink()  # a partial file from another source cannot be resumed safely
    origin.write_text(url + "\n", encoding="utf-8")
    try:
        attempts = 0
        while not _transfer(url, dest, size, connect_timeout, read_timeout, progress, log):
            attempts += 1
            if attempts > max_resumes:
                raise TransferInterrupted(
                    f"the transfer from {url} kept breaking off; run the same command again to resume"
                )
        _verify(dest, sha256, size)
    finally:
        if not dest.exists():  # nothing to resume: leave no trace
            _discard(dest)
    return dest


# --------------------------------------------------------------------------- install


def _find_dataset_dir(spec: ArchiveSpec, top: Path) -> Optional[Path]:
    """The extracted dataset folder under ``top`` (breadth-first, ``top`` included), or None."""
    if spec.dataset == "modelnet40":
        def is_dataset(d: Path) -> bool:
            return (d / "train_files.txt").is_file() or (d / "shape_names.txt").is_file()
    else:
        def is_dataset(d: Path) -> bool:
            return (d / "main_split").is_dir() or (d / "main_split_nobg").is_dir()
    level = [top]
    for _ in range(4):
        for d in level:
            if is_dataset(d):
                return d
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir() and c.name != "__MACOSX")
    return None


def _extract(archive: Path, into: Path) -> None:
    """Extract ``archive`` into ``into`` (zipfile keeps every member inside; CRCs are checked)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.filename.startswith("__MACOSX/")]
            zf.extractall(into, members=members)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise DownloadError(f"{archive} is damaged ({exc}); fetch it again") from exc


def _counts_problem(spec: ArchiveSpec, found: Mapping) -> Optional[str]:
    """Compare scanned clouds per split with ``spec.split_sizes``; a message or None."""
    if not spec.split_sizes:
        return None
    if spec.dataset == "modelnet40":
        want = {k: spec.split_sizes[k] for k in found}
        if dict(found) != want:
            return f"{found['train']} train / {found['test']} test clouds, expected {want['train']} / {want['test']}"
        return None
    for variant, counts in found.items():
        want = spec.split_sizes.get(variant)
        if want and dict(counts) != dict(want):
            return f"{variant} has {counts['train']} train / {counts['test']} test clouds, expected {want['train']} / {want['test']}"
    return None


def _validate(spec: ArchiveSpec, folder: Path, name: str) -> str:
    """Structural check of an extracted dataset folder; returns a one-line summary."""
    try:
        found = scan_modelnet40(folder) if spec.dataset == "modelnet40" else scan_scanobjectnn(folder)
    except DatasetError as exc:
        raise DownloadError(f"{name} does not hold a usable {spec.dataset}: {str(exc).splitlines()[0]}") from exc
    problem = _counts_problem(spec, found)
    if problem:
        raise DownloadError(f"{name} is not the expected {spec.dataset} release: {problem}")
    if spec.dataset == "modelnet40":
        return f"{found['train']} train / {found['test']} test clouds"
    return ", ".join(f"{v} {c['train']}/{c['test']}" for v, c in found.items())


def _md5_notes(spec: ArchiveSpec, folder: Path) -> list[str]:
    """Names of extracted files whose MD5 differs from ``spec.reference_md5`` (informational)."""
    differ = []
    for name, md5 in (spec.reference_md5 or {}).items():
        path = folder / name
        if path.is_file():
            h = hashlib.md5()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(CHUNK), b""):
                    h.update(block)
            if h.hexdigest() != md5:
                differ.append(name)
    return differ


def install_archive(spec: ArchiveSpec, archive: PathLike, root: PathLike = DEFAULT_ROOT, *, log: Log = print) -> Path:
    """Extract ``archive`` and move the validated dataset folder to ``root/<spec.folder>``.

    Extraction goes to a temporary folder inside ``root``; nothing appears at the target
    unless the whole content validated. Returns the installed folder. Raises
    :class:`DownloadError` for a damaged or wrong archive or an occupied target.
    """
    archive, root = Path(archive), Path(root)
    target = root / spec.folder
    if not archive.is_file():
        raise DownloadError(f"no such file: {archive}")
    if not zipfile.is_zipfile(archive):
        raise DownloadError(f"{archive} is not a zip archive (expected {spec.archive})")
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{spec.folder}.extract-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted earlier run
    shown = archive.name.removesuffix(".part")
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.extract-", dir=root))
    try:
        log(f"extracting {shown} ...")
        _extract(archive, tmp)
        found = _find_dataset_dir(spec, tmp)
        if found is None:
            raise DownloadError(f"{shown} does not contain a {spec.folder}/ dataset folder")
        summary = _validate(spec, found, shown)
        differ = _md5_notes(spec, found)
        if differ:
            log(f"note: {', '.join(differ)} differ from the MD5s recorded for the original release; "
                "the content is structurally valid, continuing")  # fmt: skip
        if target.exists():
            raise DownloadError(f"{target} appeared while extracting; remove one of them and run again")
        os.replace(found, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"installed {spec.dataset} in {target} ({summary})")
    return target


# --------------------------------------------------------------------------- commands


def _manual_instructions(spec: ArchiveSpec, root: Path, mirrors: Sequence[str]) -> str:
    where = f"save it as {root / spec.archive}"
    then = f"pointcalip download {spec.dataset} --root {root} --from-file {root / spec.archive}"
    if spec.dataset == "scanobjectnn":
        return (
            f"ScanObjectNN is distributed under terms of use and is not downloaded automatically: "
            f"request {spec.archive} through the form at {SCANOBJECTNN_FORM_URL}, {where}, then run: {then} "
            f"(or pass the link you were given with --mirror URL)"
        )
    source = mirrors[0] if mirrors else "a mirror listed in data/README.md"
    return (
        f"get {spec.archive} by hand from {source} (more mirrors in data/README.md), {where}, then run: {then} "
        f"(or unzip it yourself so that {root / spec.folder}/ exists)"
    )


def _already_installed(spec: ArchiveSpec, target: Path, log: Log) -> bool:
    if not target.exists():
        return False
    try:
        summary = _validate(replace(spec, split_sizes=None), target, str(target))
    except DownloadError as exc:
        raise DownloadError(
            f"{target} exists but is not a complete {spec.dataset} ({exc}); move it away and run again"
        ) from None
    log(f"{spec.dataset} is already in {target} ({summary}); nothing to do")
    return True


def download_dataset(
    dataset: str,
    root: PathLike = DEFAULT_ROOT,
    *,
    from_file: Optional[PathLike] = None,
    mirrors: Optional[Sequence[str]] = None,
    sha256: Optional[str] = None,
    spec: Optional[ArchiveSpec] = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    progress: Optional[bool] = None,
    log: Log = print,
) -> Path:
    """Install ``dataset`` under ``root`` (the data root); returns the dataset folder.

    With ``from_file``, installs that archive (never deleted). Otherwise downloads from
    ``mirrors`` (default: the spec's list) in order into ``root/.partial/``, verifying size /
    SHA-256 when known (``sha256`` overrides the spec's). When every mirror fails, raises
    :class:`DownloadError` with the manual instructions.
    """
    spec = spec or archive_spec(dataset)
    if sha256 is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise ConfigError(f"--sha256 must be 64 hex digits, got {sha256!r}")
        spec = replace(spec, sha256=sha256.lower())
    root = Path(root)
    if root.name == spec.folder:  # lenient: the dataset folder itself was given
        root = root.parent
    target = root / spec.folder
    if _already_installed(spec, target, log):
        return target
    if from_file is not None:
        return install_archive(spec, from_file, root, log=log)
    mirrors = tuple(mirrors) if mirrors else spec.mirrors
    if not mirrors:
        raise DownloadError(_manual_instructions(spec, root, mirrors))
    return _download_from_mirrors(spec, root, mirrors, connect_timeout, read_timeout, progress, log)


def _host(url: str) -> str:
    return urllib.request.urlparse(url).netloc or url


def _download_from_mirrors(
    spec: ArchiveSpec,
    root: Path,
    mirrors: Sequence[str],
    connect_timeout: float,
    read_timeout: float,
    progress: Optional[bool],
    log: Log,
) -> Path:
    part = root / ".partial" / f"{spec.archive}.part"
    origin = part.with_name(part.name + ".url")
    if part.exists() and origin.is_file():  # resume from where an earlier run stopped
        first = origin.read_text(encoding="utf-8").strip()
        mirrors = sorted(mirrors, key=lambda u: u != first)
    failures = []
    for url in mirrors:
        log(f"downloading {spec.archive} from {url}")
        try:
            fetch(url, part, sha256=spec.sha256, size=spec.size, connect_timeout=connect_timeout,
                  read_timeout=read_timeout, progress=progress, log=log)  # fmt: skip
            folder = install_archive(spec, part, root, log=log)
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{_host(url)}: {_reason(exc)}")
            log(f"  failed: {_reason(exc)}")
            continue
        except TransferInterrupted as exc:  # keep the partial file for the next run
            failures.append(f"{_host(url)}: {exc}")
            log(f"  failed: {exc}")
            continue
        except DownloadError as exc:  # wrong or damaged bytes: never keep them
            _discard(part)
            failures.append(f"{_host(url)}: {exc}")
            log(f"  failed: {exc}")
            continue
        _discard(part)
        return folder
    raise DownloadError(
        f"could not download {spec.archive} ({'; '.join(failures)}); " + _manual_instructions(spec, root, mirrors)
    )


def _discard(part: Path) -> None:
    """Delete a downloaded archive, its origin note and ``.partial/`` when empty."""
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".url").unlink(missing_ok=True)
    try:
        part.parent.rmdir()
    except OSError:
        pass
