"""`pointcalip download` against a local HTTP server on 127.0.0.1 (never the real network)."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pointcalip.cli import main
from pointcalip.datasets import download_dataset, get_dataset_info, register_dataset
from pointcalip.datasets.fetch import ArchiveSpec, TransferInterrupted, fetch
from pointcalip.datasets.modelnet import MODELNET40, MODELNET40_SPLIT_SIZES, ModelNet40
from pointcalip.datasets.scanobjectnn import (
    SCANOBJECTNN,
    SCANOBJECTNN_FORM_URL,
    SCANOBJECTNN_VARIANTS,
    ScanObjectNN,
)
from pointcalip.errors import ConfigError, DownloadError
from pointcalip.testing.datasets import make_modelnet40_zip, make_scanobjectnn_zip, write_modelnet40

ARCHIVE = "modelnet40_ply_hdf5_2048.zip"
NPTS = 256  # points per generated cloud: keeps the archive around 350 KB


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return make_modelnet40_zip(tmp_path_factory.mktemp("zip") / ARCHIVE, num_points=NPTS)


@pytest.fixture(scope="module")
def payload(archive) -> bytes:
    return archive.read_bytes()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        body = srv.files.get(self.path)
        if body is None:
            srv.log.append((self.path, rng, 404))
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and srv.support_range:
            start = int(match.group(1))
            status = 206
        else:
            status = 200
        srv.log.append((self.path, rng, status))
        part = body[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if srv.support_range:
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Connection", "close")
        self.end_headers()
        if srv.drops > 0:  # send half, then drop the connection
            srv.drops -= 1
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(part)


class Server:
    """A local HTTP server serving ``files`` (path -> bytes) with optional Range support and drops."""

    def __init__(self, files: dict, support_range: bool = True, drops: int = 0) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.files, self.httpd.support_range, self.httpd.drops = files, support_range, drops
        self.httpd.log = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/" + ARCHIVE) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    @property
    def log(self) -> list:
        return self.httpd.log

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(payload):
    servers = []

    def start(support_range: bool = True, drops: int = 0, body: bytes | None = None) -> Server:
        s = Server({"/" + ARCHIVE: payload if body is None else body}, support_range, drops)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def unused_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{ARCHIVE}"


def spec_for(*urls: str, **changes) -> ArchiveSpec:
    """The ModelNet40 spec pointed at test mirrors, without the real-release size checks."""
    return replace(MODELNET40, mirrors=tuple(urls), expected=None, reference_md5=None, **changes)


def get(root: Path, spec: ArchiveSpec, **kwargs) -> Path:
    logs = kwargs.pop("logs", [])
    return download_dataset("modelnet40", root, spec=spec, progress=False, log=logs.append, **kwargs)


@pytest.fixture
def registered_archive():
    """Replace a registered dataset's archive spec for one test (the CLI reads the registry)."""
    saved = []

    def patch(name: str, spec: ArchiveSpec) -> None:
        info = get_dataset_info(name)
        saved.append(info)
        register_dataset(replace(info, archive=spec), overwrite=True)

    yield patch
    for info in reversed(saved):
        register_dataset(info, overwrite=True)


def assert_clean(root: Path) -> None:
    """Nothing but the installed dataset (if any) is left in ``root``."""
    leftovers = [p.name for p in root.iterdir() if p.name != "modelnet40_ply_hdf5_2048"] if root.exists() else []
    assert leftovers == []


def assert_nothing_installed(root: Path) -> None:
    assert not (root / "modelnet40_ply_hdf5_2048").exists()
    assert_clean(root)


# ----------------------------------------------------------------------------- success


def test_download_installs_and_loads(serve, payload, tmp_path):
    server = serve()
    sha = hashlib.sha256(payload).hexdigest()
    folder = get(tmp_path, spec_for(server.url(), sha256=sha, size=len(payload)))
    assert folder == tmp_path / "modelnet40_ply_hdf5_2048"
    ds = ModelNet40(tmp_path, "test", num_points=NPTS)
    assert len(ds) == 40 and ds.points.shape == (40, NPTS, 3)
    assert len(ModelNet40(tmp_path, "train", num_points=64)) == 80
    assert_clean(tmp_path)
    assert server.log == [(f"/{ARCHIVE}", None, 200)]


def test_already_installed_needs_no_network(serve, tmp_path):
    get(tmp_path, spec_for(serve().url()))
    logs = []
    assert get(tmp_path, spec_for(unused_port_url()), logs=logs) == tmp_path / "modelnet40_ply_hdf5_2048"
    assert any("already" in line for line in logs)


def test_root_given_as_dataset_folder(serve, tmp_path):
    folder = get(tmp_path / "modelnet40_ply_hdf5_2048", spec_for(serve().url()))
    assert folder == tmp_path / "modelnet40_ply_hdf5_2048" and folder.is_dir()


def test_falls_back_to_the_next_mirror(serve, tmp_path, payload):
    good = serve()
    missing = good.url("/nothing-here.zip")
    get(tmp_path, spec_for(unused_port_url(), missing, good.url()))
    assert len(ModelNet40(tmp_path, "test", num_points=16)) == 40
    assert ("/nothing-here.zip", None, 404) in good.log


# ----------------------------------------------------------------------------- verification


def test_checksum_mismatch_deletes_everything(serve, tmp_path):
    server = serve()
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        get(tmp_path, spec_for(server.url(), sha256="0" * 64))
    assert_nothing_installed(tmp_path)


def test_size_mismatch_deletes_everything(serve, tmp_path, payload):
    with pytest.raises(DownloadError, match="size"):
        get(tmp_path, spec_for(serve().url(), size=len(payload) + 10))
    assert_nothing_installed(tmp_path)


def test_wrong_release_is_rejected_by_counts(serve, tmp_path):
    spec = replace(spec_for(serve().url()), expected=MODELNET40_SPLIT_SIZES)
    with pytest.raises(DownloadError, match="expected 9843 / 2468"):
        get(tmp_path, spec)
    assert_nothing_installed(tmp_path)


def test_damaged_archive_is_rejected(serve, tmp_path, payload):
    damaged = bytearray(payload)
    damaged[len(damaged) // 3] ^= 0xFF  # inside a compressed member: CRC or inflate error
    with pytest.raises(DownloadError):
        get(tmp_path, spec_for(serve(body=bytes(damaged)).url()))
    assert_nothing_installed(tmp_path)


def test_not_a_zip_is_rejected(serve, tmp_path):
    with pytest.raises(DownloadError, match="not a zip"):
        get(tmp_path, spec_for(serve(body=b"<html>rate limited</html>").url()))
    assert_nothing_installed(tmp_path)


def test_reference_md5_mismatch_is_only_a_note(serve, tmp_path):
    logs = []
    spec = replace(spec_for(serve().url()), reference_md5={"ply_data_test0.h5": "0" * 32})
    get(tmp_path, spec, logs=logs)
    assert any("note:" in line and "ply_data_test0.h5" in line for line in logs)
    assert len(ModelNet40(tmp_path, "test", num_points=16)) == 40


# ----------------------------------------------------------------------------- resume


def test_interrupted_transfer_resumes_with_range(serve, tmp_path, payload):
    server = serve(support_range=True, drops=1)
    get(tmp_path, spec_for(server.url(), sha256=hashlib.sha256(payload).hexdigest()))
    assert [status for _, _, status in server.log] == [200, 206]
    assert server.log[1][1] == f"bytes={len(payload) // 2}-"
    assert len(ModelNet40(tmp_path, "test", num_points=16)) == 40
    assert_clean(tmp_path)


def test_partial_file_from_an_earlier_run_is_resumed(serve, tmp_path, payload):
    server = serve(support_range=True)
    part = tmp_path / ".partial" / f"{ARCHIVE}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(payload[:1000])
    part.with_name(part.name + ".url").write_text(server.url())
    get(tmp_path, spec_for(unused_port_url(), server.url()))  # the mirror of the partial file goes first
    assert server.log == [(f"/{ARCHIVE}", "bytes=1000-", 206)]
    assert_clean(tmp_path)


def test_partial_file_from_another_source_is_not_resumed(serve, tmp_path, payload):
    server = serve(support_range=True)
    part = tmp_path / ".partial" / f"{ARCHIVE}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)  # no note of where it came from
    get(tmp_path, spec_for(server.url()))
    assert server.log == [(f"/{ARCHIVE}", None, 200)]


def test_server_without_range_restarts_cleanly(serve, tmp_path, payload):
    server = serve(support_range=False)
    part = tmp_path / ".partial" / f"{ARCHIVE}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that must not stay in front" * 10)
    part.with_name(part.name + ".url").write_text(server.url())
    get(tmp_path, spec_for(server.url(), sha256=hashlib.sha256(payload).hexdigest()))
    assert server.log == [(f"/{ARCHIVE}", "bytes=350-", 200)]
    assert len(ModelNet40(tmp_path, "test", num_points=16)) == 40


def test_drop_without_range_support_restarts(serve, tmp_path, payload):
    server = serve(support_range=False, drops=1)
    get(tmp_path, spec_for(server.url(), sha256=hashlib.sha256(payload).hexdigest()))
    assert [status for _, _, status in server.log] == [200, 200]


def test_repeated_drops_keep_the_partial_file(serve, tmp_path, payload):
    server = serve(support_range=True, drops=10)
    dest = tmp_path / "x.zip.part"
    with pytest.raises(TransferInterrupted, match="run the same command again"):
        fetch(server.url(), dest, max_resumes=1, progress=False, log=lambda s: None)
    assert 0 < dest.stat().st_size < len(payload)
    assert len(server.log) == 2


# ----------------------------------------------------------------------------- failures


def test_unreachable_mirror_fails_fast_with_instructions(tmp_path):
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        get(tmp_path, spec_for(unused_port_url()))
    assert time.monotonic() - start < 5
    msg = str(info.value)
    assert "\n" not in msg
    assert ARCHIVE in msg and "connection refused" in msg
    assert f"pointcalip download modelnet40 --root {tmp_path} --from-file" in msg
    assert str(tmp_path / ARCHIVE) in msg  # where to put it
    assert_nothing_installed(tmp_path)


def test_silent_server_times_out(tmp_path):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/{ARCHIVE}"
        start = time.monotonic()
        with pytest.raises(DownloadError, match="timed out"):
            download_dataset("modelnet40", tmp_path, spec=spec_for(url), connect_timeout=0.5,
                                read_timeout=0.5, progress=False, log=lambda s: None)  # fmt: skip
        assert time.monotonic() - start < 5


def test_existing_incomplete_folder_is_not_overwritten(serve, tmp_path):
    (tmp_path / "modelnet40_ply_hdf5_2048").mkdir()
    (tmp_path / "modelnet40_ply_hdf5_2048" / "train_files.txt").write_text("ply_data_train0.h5\n")
    with pytest.raises(DownloadError, match="exists but is not a complete"):
        get(tmp_path, spec_for(serve().url()))
    assert (tmp_path / "modelnet40_ply_hdf5_2048" / "train_files.txt").exists()


# ----------------------------------------------------------------------------- --from-file


def test_from_file_installs_and_keeps_the_archive(archive, tmp_path):
    folder = get(tmp_path / "data", spec_for(), from_file=archive)
    assert archive.exists() and folder.is_dir()
    assert len(ModelNet40(tmp_path / "data", "train", num_points=NPTS)) == 80
    assert_clean(tmp_path / "data")


def test_from_file_with_flat_archive(tmp_path, archive):
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(flat, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename.split("/", 1)[1], src.read(info))
    get(tmp_path / "data", spec_for(), from_file=flat)
    assert len(ModelNet40(tmp_path / "data", "test", num_points=16)) == 40


def test_from_file_errors(tmp_path):
    with pytest.raises(DownloadError, match="no such file"):
        get(tmp_path / "data", spec_for(), from_file=tmp_path / "missing.zip")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="not a zip"):
        get(tmp_path / "data", spec_for(), from_file=junk)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(DownloadError, match="does not contain"):
        get(tmp_path / "data", spec_for(), from_file=other)
    assert junk.exists() and other.exists()  # a user's file is never deleted
    assert_nothing_installed(tmp_path / "data")


def test_scanobjectnn_from_file(tmp_path):
    zip_path = make_scanobjectnn_zip(tmp_path / "h5_files.zip", num_points=64)
    folder = download_dataset("scanobjectnn", tmp_path / "data", from_file=zip_path, log=lambda s: None,
                              spec=replace(SCANOBJECTNN, expected=None))  # fmt: skip
    assert folder == tmp_path / "data" / "h5_files"
    for variant in SCANOBJECTNN_VARIANTS:
        assert len(ScanObjectNN(tmp_path / "data", "test", 64, variant)) == 15


def test_scanobjectnn_counts_are_checked(tmp_path):
    zip_path = make_scanobjectnn_zip(tmp_path / "h5_files.zip", variants=("obj_bg",), num_points=32)
    with pytest.raises(DownloadError, match="obj_bg has 30 train / 15 test clouds, expected 2309 / 581"):
        download_dataset("scanobjectnn", tmp_path / "data", from_file=zip_path, log=lambda s: None)
    assert not (tmp_path / "data" / "h5_files").exists()


def test_scanobjectnn_without_file_explains_terms(tmp_path):
    with pytest.raises(DownloadError) as info:
        download_dataset("scanobjectnn", tmp_path, log=lambda s: None)
    msg = str(info.value)
    assert "terms of use" in msg and SCANOBJECTNN_FORM_URL in msg and "h5_files.zip" in msg
    assert f"pointcalip download scanobjectnn --root {tmp_path} --from-file" in msg and "\n" not in msg


# ----------------------------------------------------------------------------- CLI


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pointcalip download: error:")
    return lines[0]


def test_cli_success_with_mirror(serve, tmp_path, registered_archive, capsys):
    registered_archive("modelnet40", spec_for())
    assert main(["download", "modelnet40", "--root", str(tmp_path), "--mirror", serve().url(), "--no-progress"]) == 0
    assert "installed modelnet40" in capsys.readouterr().out
    assert len(ModelNet40(tmp_path, "test", num_points=16)) == 40


def test_cli_unreachable_is_exit_2_one_line(tmp_path, capsys):
    code = main(["download", "modelnet40", "--root", str(tmp_path), "--mirror", unused_port_url(), "--timeout", "2"])
    assert code == 2
    line = _one_line_error(capsys)
    assert ARCHIVE in line and "--from-file" in line


def test_cli_checksum_mismatch(serve, tmp_path, registered_archive, capsys):
    registered_archive("modelnet40", spec_for())
    code = main(["download", "modelnet40", "--root", str(tmp_path), "--mirror", serve().url(), "--sha256", "ab" * 32])
    assert code == 2 and "SHA-256 mismatch" in _one_line_error(capsys)
    assert_nothing_installed(tmp_path)


def test_cli_from_file(archive, tmp_path, registered_archive, capsys):
    registered_archive("modelnet40", spec_for())
    assert main(["download", "modelnet40", "--root", str(tmp_path), "--from-file", str(archive)]) == 0
    assert len(ModelNet40(tmp_path, "test", num_points=16)) == 40


def test_cli_from_file_real_release_check(archive, tmp_path, capsys):
    assert main(["download", "modelnet40", "--root", str(tmp_path), "--from-file", str(archive)]) == 2
    assert "expected 9843 / 2468" in _one_line_error(capsys)


@pytest.mark.parametrize(
    "argv,match",
    [
        (["download", "scanobjectnn"], "terms of use"),
        (["download", "modelnet40", "--sha256", "xyz"], "64 hex digits"),
        (["download", "modelnet40", "--timeout", "0"], "--timeout"),
        (["download", "modelnet40", "--from-file", "nope.zip"], "no such file"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv, match):
    assert main(argv + ["--root", str(tmp_path)]) == 2
    assert match in _one_line_error(capsys)


# ----------------------------------------------------------------------------- --from-dir


def test_from_dir_copies_a_validated_folder(tmp_path):
    src = write_modelnet40(tmp_path / "elsewhere", num_points=32)
    logs = []
    folder = download_dataset("modelnet40", tmp_path / "data", from_dir=tmp_path / "elsewhere", log=logs.append,
                              spec=spec_for())  # fmt: skip
    assert folder == tmp_path / "data" / "modelnet40_ply_hdf5_2048" and not folder.is_symlink()
    assert src.is_dir()  # the source stays
    assert len(ModelNet40(tmp_path / "data", "test", num_points=16)) == 40
    assert_clean(tmp_path / "data")
    assert any("installed modelnet40" in line for line in logs)


def test_from_dir_real_release_counts_and_wrong_folder(tmp_path):
    write_modelnet40(tmp_path / "src", num_points=32)
    with pytest.raises(DownloadError, match="expected 9843 / 2468"):
        download_dataset("modelnet40", tmp_path / "data", from_dir=tmp_path / "src", log=lambda s: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DownloadError, match="does not contain"):
        download_dataset("modelnet40", tmp_path / "data", from_dir=tmp_path / "empty", log=lambda s: None)
    with pytest.raises(DownloadError, match="no such folder"):
        download_dataset("modelnet40", tmp_path / "data", from_dir=tmp_path / "missing", log=lambda s: None)
    assert not (tmp_path / "data" / "modelnet40_ply_hdf5_2048").exists()


def test_modelnet10_installs_the_modelnet40_files(archive, tmp_path):
    logs = []
    folder = download_dataset("modelnet10", tmp_path, from_file=archive, spec=spec_for(), log=logs.append)
    assert folder == tmp_path / "modelnet40_ply_hdf5_2048"
    assert "installing modelnet40" in logs[0]


def test_both_sources_is_a_config_error(archive, tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        download_dataset("modelnet40", tmp_path, from_file=archive, from_dir=tmp_path, log=lambda s: None)


def test_cli_from_file_and_from_dir_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["download", "modelnet40", "--from-file", "a.zip", "--from-dir", str(tmp_path)])
    assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_cli_check_all_needs_from_dir(tmp_path, capsys):
    assert main(["download", "modelnet40", "--root", str(tmp_path), "--check-all"]) == 2
    assert "--check-all applies to --from-dir only" in _one_line_error(capsys)


def test_cli_choices_come_from_the_registry(capsys):
    with pytest.raises(SystemExit):
        main(["download", "shapenet"])
    err = capsys.readouterr().err
    assert "modelnet40" in err and "objaverse_lvis" in err and "scanobjectnn" in err
