"""Unpacking a bundle never writes outside the destination: absolute paths, `..`, escaping links, special files."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from toolkit.bundle.safe_extract import UnsafeArchiveError, safe_extract
from toolkit.errors import UserError


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    data = data or {}
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            payload = data.get(m.name)
            if payload is not None:
                m.size = len(payload)
            tar.addfile(m, io.BytesIO(payload) if payload is not None else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_a_plain_bundle_unpacks(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", [_file("run.py"), _file("artifacts/m.onnx"),
                                            _link("artifacts/alias.onnx", "m.onnx", tarfile.SYMTYPE)],
                   {"run.py": b"print(1)\n", "artifacts/m.onnx": b"onnx"})
    files = safe_extract(archive, tmp_path / "out")
    assert sorted(files) == ["artifacts/m.onnx", "run.py"]
    assert (tmp_path / "out" / "run.py").read_bytes() == b"print(1)\n"
    assert (tmp_path / "out" / "artifacts" / "alias.onnx").read_bytes() == b"onnx"  # an inside link is fine


@pytest.mark.parametrize("name", ["/tmp/evil.txt", "../evil.txt", "a/../../evil.txt", "a/../b.txt"])
def test_absolute_and_dotdot_paths_are_refused(tmp_path, name):
    archive = _tar(tmp_path / "bad.tar.gz", [_file(name)], {name: b"x"})
    with pytest.raises(UnsafeArchiveError, match="unsafe path"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    assert not list((tmp_path / "out").iterdir())  # nothing written, not even the safe members before it


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside", "a/../../outside", "sub/../.."])
def test_symlinks_leaving_the_bundle_are_refused(tmp_path, target):
    archive = _tar(tmp_path / "bad.tar.gz", [_link("escape", target, tarfile.SYMTYPE), _file("escape/x")],
                   {"escape/x": b"x"})
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "escape").exists()


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside.txt", "not-in-archive.txt"])
def test_hardlinks_outside_the_bundle_are_refused(tmp_path, target):
    (tmp_path / "outside.txt").write_text("secret")
    archive = _tar(tmp_path / "bad.tar.gz", [_link("copy.txt", target, tarfile.LNKTYPE)])
    with pytest.raises(UnsafeArchiveError, match="hard link"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "copy.txt").exists()


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_devices_and_fifos_are_refused(tmp_path, kind):
    info = tarfile.TarInfo("dev")
    info.type = kind
    archive = _tar(tmp_path / "bad.tar.gz", [info])
    with pytest.raises(UnsafeArchiveError, match="special file"):
        safe_extract(archive, tmp_path / "out")


def test_unsafe_archive_is_a_user_error_and_not_a_tar_is_refused(tmp_path):
    assert issubclass(UnsafeArchiveError, UserError)  # the CLI prints one line and exits 2
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar")
    with pytest.raises(UnsafeArchiveError, match="not a readable tar"):
        safe_extract(junk, tmp_path / "out")


def test_the_script_runs_standalone_with_the_same_checks(tmp_path):
    """remote.py runs this file with a bare python3 on the device: no edgespec import, exit 2 on a bad archive."""
    script = Path(__import__("toolkit.bundle.safe_extract", fromlist=["x"]).__file__)
    bad = _tar(tmp_path / "bad.tar.gz", [_file("../evil")], {"../evil": b"x"})
    proc = subprocess.run([sys.executable, "-I", str(script), str(bad), str(tmp_path / "out")], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "unsafe path" in proc.stderr
    good = _tar(tmp_path / "good.tar.gz", [_file("run.py")], {"run.py": b"ok"})
    proc = subprocess.run([sys.executable, "-I", str(script), str(good), str(tmp_path / "out2")], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out2" / "run.py").read_bytes() == b"ok"
