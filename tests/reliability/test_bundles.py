"""Bundles: a truncated archive, a symbolic link loop, a full disk and an oversized archive are one-line refusals
that leave nothing half-unpacked; the device runner checks its arguments before it measures anything."""

from __future__ import annotations

import errno
import importlib
import io
import tarfile
from pathlib import Path

import pytest

se = importlib.import_module("toolkit.bundle.safe_extract")  # the package re-exports the function under this name


def _tar(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def _refused(archive: Path, dest: Path, says: str, capsys) -> None:
    before = _files(dest)
    with pytest.raises(se.UnsafeArchiveError, match=says):
        se.safe_extract(archive, dest)
    assert _files(dest) == before, "a refused or failed extraction left files behind"
    assert se.main([str(archive), str(dest)]) == 2  # the script a device runs: one line, exit 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


BIG = {f"artifacts/m{i}.onnx": bytes([i]) * 200_000 for i in range(4)}  # incompressible enough to truncate


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.95])
def test_truncated_archive(tmp_path, capsys, keep):
    import os

    archive = _tar(tmp_path / "b.tar.gz", {**BIG, "bundle.json": b"{}"})
    data = archive.read_bytes()
    archive.write_bytes(data[: int(len(data) * keep)])
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "mine.txt").write_text("the user's")
    _refused(archive, tmp_path / "dest", "truncated or corrupt|not a readable", capsys)
    assert (tmp_path / "dest" / "mine.txt").read_text() == "the user's"
    assert os.listdir(tmp_path / "dest") == ["mine.txt"]


def test_symlink_loop(tmp_path, capsys):
    archive = _tar(tmp_path / "b.tar.gz", {"bundle.json": b"{}"}, {"l1": "l2", "l2": "l1"})
    dest = tmp_path / "dest"
    try:
        se.safe_extract(archive, dest)
    except se.UnsafeArchiveError as exc:
        assert "loop" in str(exc) or "link" in str(exc)
        assert _files(dest) == []
    else:  # the links themselves are harmless once refused nowhere: reading through them must fail cleanly
        assert (dest / "l1").is_symlink()


def test_file_through_a_symlink_loop(tmp_path, capsys):
    with tarfile.open(tmp_path / "c.tar", "w") as tar:
        for name, target in {"l1": "l2", "l2": "l1"}.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        info = tarfile.TarInfo("l1/payload")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    _refused(tmp_path / "c.tar", tmp_path / "dest", "loop|link|refusing", capsys)


def test_oversized_archive_is_refused_before_extraction(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(se, "MAX_BYTES", 100_000)
    archive = _tar(tmp_path / "b.tar.gz", BIG)
    _refused(archive, tmp_path / "dest", "more than a bundle may", capsys)


def test_full_disk_while_unpacking(tmp_path, capsys, monkeypatch):
    archive = _tar(tmp_path / "b.tar.gz", BIG)
    real, calls = tarfile.TarFile.makefile, []

    def full(self, tarinfo, targetpath):
        calls.append(targetpath)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", targetpath)
        return real(self, tarinfo, targetpath)

    monkeypatch.setattr(tarfile.TarFile, "makefile", full)
    dest = tmp_path / "dest"
    with pytest.raises(se.UnsafeArchiveError, match="no space left on device"):
        se.safe_extract(archive, dest)
    assert [p for p in dest.rglob("*") if p.is_file()] == [], "the files of a failed extraction stay behind"


def test_runner_checks_out_before_measuring(tmp_path, capsys):
    from toolkit.bundle.runner import run

    for argv, says in ((["--out", str(tmp_path / "missing" / "results.json")], "does not exist"),
                       (["--out", str(tmp_path)], "is a directory"),
                       (["--runs", "0"], "--runs"),
                       (["--time-limit", "inf"], "--time-limit")):
        assert run.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and "measuring" not in err, err
