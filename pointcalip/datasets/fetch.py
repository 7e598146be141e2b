"""Generic verified downloads and atomic installs (docs/method.md §7); no dataset names here.

* :func:`fetch` streams one URL to ``<dest>`` with a progress bar, resumes a partial file with
  an HTTP ``Range`` request when the server answers ``206`` (otherwise restarts cleanly), and
  checks size / SHA-256 when known.
* :func:`download_archive` tries a list of mirrors in order into ``<root>/.partial/``, then
  :func:`install_archive` extracts into a temporary folder inside ``root``, finds the dataset
  folder, validates it with the dataset's own check and only then moves it into place
  (``os.replace``), so a half-extracted dataset never appears.
* :func:`install_dir` validates a local folder and copies or links it into ``root``.

Each dataset module describes its archive with an :class:`ArchiveSpec` and its content
check with :class:`Checks`; :mod:`pointcalip.datasets.registry` ties them together.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from pointcalip.errors import DatasetError, DownloadError
from pointcalip._types import PathLike

Log = Callable[[str], None]

CONNECT_TIMEOUT = 5.0  # seconds to connect (offline fails within seconds)
READ_TIMEOUT = 60.0  # seconds without a byte before a transfer counts as broken
CHUNK = 1 << 20


class TransferInterrupted(DownloadError):
    """A transfer broke off repeatedly; the partial file is kept for the next run."""


@dataclass(frozen=True)
class ArchiveSpec:
    """One downloadable dataset archive.

    ``archive`` is the file name, ``folder`` the dataset folder it unpacks to (installed as
    ``<root>/<folder>``), ``mirrors`` the URLs tried in order. ``expected`` (e.g. clouds per
    split) is handed to the dataset's validator and ``reference_md5`` maps extracted file
    names to MD5s that are only reported when they differ; both may be None to skip them.
    """

    archive: str
    folder: str
    mirrors: tuple[str, ...] = ()
    sha256: Optional[str] = None
    size: Optional[int] = None
    expected: Optional[Mapping] = None
    reference_md5: Optional[Mapping[str, str]] = None


@dataclass(frozen=True)
class Checks:
    """How to recognise and validate one dataset's folder.

    ``is_dataset_dir(folder)`` says whether a folder looks like the dataset (used to find it
    inside an extracted archive); ``validate(folder, expected)`` checks it and returns a
    one-line summary, raising :class:`DatasetError` (or :class:`DownloadError`) on a problem.
    """

    dataset: str
    is_dataset_dir: Callable[[Path], bool]
    validate: Callable[[Path, Optional[Mapping]], str]


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


def find_dataset_dir(checks: Checks, top: Path, depth: int = 4) -> Optional[Path]:
    """The dataset folder under ``top`` (breadth-first, ``top`` included, ``depth`` levels), or None."""
    level = [top]
    for _ in range(depth):
        for d in level:
            if checks.is_dataset_dir(d):
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


def validate_folder(checks: Checks, folder: Path, expected: Optional[Mapping], name: str) -> str:
    """Run the dataset's check on ``folder``; a :class:`DatasetError` becomes a one-line :class:`DownloadError`."""
    try:
        return checks.validate(folder, expected)
    except DatasetError as exc:
        raise DownloadError(f"{name} does not hold a usable {checks.dataset}: {str(exc).splitlines()[0]}") from exc


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


def install_archive(spec: ArchiveSpec, checks: Checks, archive: PathLike, root: PathLike, *, log: Log = print) -> Path:
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
        found = find_dataset_dir(checks, tmp)
        if found is None:
            raise DownloadError(f"{shown} does not contain a {spec.folder}/ dataset folder")
        summary = validate_folder(checks, found, spec.expected, shown)
        differ = _md5_notes(spec, found)
        if differ:
            log(f"note: {', '.join(differ)} differ from the MD5s recorded for the original release; "
                "the content is structurally valid, continuing")  # fmt: skip
        if target.exists():
            raise DownloadError(f"{target} appeared while extracting; remove one of them and run again")
        os.replace(found, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"installed {checks.dataset} in {target} ({summary})")
    return target


def install_dir(
    checks: Checks, source: PathLike, target: PathLike, *, link: bool, expected: Optional[Mapping] = None,
    log: Log = print,
) -> Path:
    """Validate the local folder ``source`` and make it available as ``target``.

    ``source`` may be the dataset folder or a folder above it (searched like an archive).
    With ``link`` a symbolic link to it is created (nothing is copied: for very large
    datasets); otherwise it is copied into a temporary folder next to ``target`` and moved
    into place. When ``source`` already is ``target`` it is only validated. Returns ``target``.
    """
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise DownloadError(f"no such folder: {source}")
    found = find_dataset_dir(checks, source)
    if found is None:
        raise DownloadError(f"{source} does not contain a {checks.dataset} dataset folder (expected {target.name}/ or its content)")
    summary = validate_folder(checks, found, expected, str(found))
    if target.exists() and found.resolve() == target.resolve():
        log(f"{checks.dataset} is in place in {target} ({summary})")
        return target
    if target.exists() or target.is_symlink():
        raise DownloadError(f"{target} already exists; move it away and run again")
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        os.symlink(found.resolve(), target, target_is_directory=True)
        log(f"linked {target} -> {found.resolve()} ({summary})")
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.copy-", dir=target.parent))
    try:
        shutil.copytree(found, tmp / target.name)
        os.replace(tmp / target.name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"installed {checks.dataset} in {target} ({summary})")
    return target


# --------------------------------------------------------------------------- mirrors


def _host(url: str) -> str:
    return urllib.request.urlparse(url).netloc or url


def download_archive(
    spec: ArchiveSpec,
    checks: Checks,
    root: PathLike,
    mirrors: Sequence[str],
    *,
    manual: str,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    progress: Optional[bool] = None,
    log: Log = print,
) -> Path:
    """Download ``spec.archive`` from the first working mirror and install it under ``root``.

    The file goes to ``root/.partial/<archive>.part``; a partial file from an earlier run is
    resumed from its own mirror first. A mirror that cannot be reached or serves wrong
    bytes is skipped (wrong bytes are deleted). When every mirror fails, raises
    :class:`DownloadError` naming each failure followed by ``manual`` (what to do by hand).
    """
    root = Path(root)
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
            folder = install_archive(spec, checks, part, root, log=log)
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
    raise DownloadError(f"could not download {spec.archive} ({'; '.join(failures)}); " + manual)


def _discard(part: Path) -> None:
    """Delete a downloaded archive, its origin note and ``.partial/`` when empty."""
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".url").unlink(missing_ok=True)
    try:
        part.parent.rmdir()
    except OSError:
        pass
