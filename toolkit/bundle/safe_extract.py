"""Unpack a bundle without letting it write outside the destination.

Standard library only, so the same checks run on a device that has no edgespec: `remote.py` copies this file
next to the bundle and runs `python3 safe_extract.py BUNDLE.tar.gz DEST` there.

Every member is checked before anything is written: no absolute paths, no `..`, no links whose target leaves
the bundle, nothing but regular files, directories and links (no devices, fifos). Python's `data` extraction
filter (3.12+, backported to 3.8.17/3.9.17/3.10.12/3.11.4) is applied on top where it exists.
"""

from __future__ import annotations

import errno
import os
import posixpath
import sys
import tarfile
import zlib

try:  # inside edgespec: an unsafe archive is bad input (exit 2, one line)
    from ..errors import UserError as _Base
except ImportError:  # run as a plain script on a device
    _Base = ValueError  # type: ignore[misc,assignment]


class UnsafeArchiveError(_Base):  # type: ignore[misc,valid-type]
    """The archive holds a member that would land outside the destination or is not a plain file."""


def _clean(name: str) -> str | None:
    """The member's path relative to the destination, or None when it points outside."""
    if not name or "\0" in name or "\\" in name:
        return None
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or norm.startswith("/"):
        return None
    if ".." in name.split("/"):  # refuse even a `..` that normalises away: nothing we write contains one
        return None
    return "" if norm == "." else norm


#: Extraction caps: what a bundle may unpack to (its artifacts and test images are megabytes, a TensorRT engine
#: at most a few hundred) and how many members it may have. EDGESPEC_MAX_BUNDLE_MB raises the size cap.
MAX_BYTES = int(os.environ.get("EDGESPEC_MAX_BUNDLE_MB", "8192")) << 20
MAX_MEMBERS = 100_000


def check_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Members in archive order, after checking each; raises UnsafeArchiveError naming the first bad one."""
    members = tar.getmembers()
    if len(members) > MAX_MEMBERS:
        raise UnsafeArchiveError(f"the archive holds {len(members)} members, more than a bundle may "
                                 f"({MAX_MEMBERS}); refusing to unpack it: rebuild the bundle with `edgespec bundle`")
    total = sum(m.size for m in members if m.isfile())
    if total > MAX_BYTES:
        raise UnsafeArchiveError(f"the archive unpacks to {total >> 20} MiB, more than a bundle may "
                                 f"({MAX_BYTES >> 20} MiB; EDGESPEC_MAX_BUNDLE_MB raises it); refusing to unpack it")
    seen: set[str] = set()
    for m in members:
        rel = _clean(m.name)
        if rel is None:
            raise UnsafeArchiveError(f"unsafe path {m.name!r} in the archive (absolute or with '..'); "
                                     "refusing to unpack it: rebuild the bundle with `edgespec bundle`")
        if m.issym():
            # A relative target without `..` can only descend, through any chain of such links: it stays inside.
            if _clean(m.linkname) is None:
                raise UnsafeArchiveError(f"symbolic link {m.name!r} -> {m.linkname!r} leaves the bundle; refusing "
                                         "to unpack it: rebuild the bundle with `edgespec bundle`")
        elif m.islnk():
            target = _clean(m.linkname)
            if target is None or target not in seen:
                raise UnsafeArchiveError(f"hard link {m.name!r} -> {m.linkname!r} points outside the bundle; "
                                         "refusing to unpack it: rebuild the bundle with `edgespec bundle`")
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"{m.name!r} is a device, fifo or other special file; bundles hold only "
                                     "files and folders: rebuild the bundle with `edgespec bundle`")
        seen.add(rel)
    return members


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Unpack `archive` (a .tar or .tar.gz) into `dest`; returns the relative paths of the files written."""
    dest = os.fspath(dest)
    os.makedirs(dest, exist_ok=True)
    try:
        tar = tarfile.open(os.fspath(archive), "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise UnsafeArchiveError(f"{archive} is not a readable tar archive ({exc}); pass a file written by "
                                 "`edgespec bundle`") from None
    with tar:
        try:
            members = check_members(tar)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:  # a truncated or corrupt archive
            raise UnsafeArchiveError(f"{archive} is truncated or corrupt ({type(exc).__name__}: {exc}); copy it "
                                     "again or rebuild it with `edgespec bundle`") from None
        existed = {m.name for m in members if os.path.lexists(os.path.join(dest, m.name))}
        try:
            _extract(tar, members, dest)
        except BaseException as exc:
            _remove_written(dest, members, existed)  # half an unpacked bundle must not pass for a whole one
            if isinstance(exc, UnsafeArchiveError):
                raise
            if isinstance(exc, tarfile.FilterError):
                raise UnsafeArchiveError(f"refusing to unpack {archive}: {exc}") from None
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise UnsafeArchiveError(f"no space left on device unpacking {archive} into {dest}; free space or "
                                         "unpack it elsewhere") from None
            if isinstance(exc, OSError) and exc.errno == errno.ELOOP or isinstance(exc, RuntimeError):
                raise UnsafeArchiveError(f"{archive} holds a symbolic link loop ({exc}); refusing to unpack it: "
                                         "rebuild the bundle with `edgespec bundle`") from None
            if isinstance(exc, (tarfile.TarError, EOFError, zlib.error)):
                raise UnsafeArchiveError(f"{archive} is truncated or corrupt ({type(exc).__name__}: {exc}); copy "
                                         "it again or rebuild it with `edgespec bundle`") from None
            if isinstance(exc, OSError):
                raise UnsafeArchiveError(f"cannot unpack {archive} into {dest}: {exc.strerror or exc}; check the "
                                         "destination") from None
            raise
    return [posixpath.normpath(m.name) for m in members if m.isfile()]


def _extract(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: str) -> None:
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter="data")
    else:  # pragma: no cover - old Python on a device: the checks above are all there is
        for m in members:
            tar.extract(m, dest, set_attrs=False)


def _remove_written(dest: str, members: list[tarfile.TarInfo], existed: set[str]) -> None:
    """Remove what a failed extraction wrote: only members' paths, only those that were not there before."""
    for m in reversed(members):
        if m.name in existed:
            continue
        path = os.path.join(dest, posixpath.normpath(m.name))
        try:
            if os.path.islink(path) or not os.path.isdir(path):
                os.unlink(path)
            else:
                os.rmdir(path)  # empty ones only: anything else in it is not this bundle's
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python3 safe_extract.py BUNDLE.tar.gz DEST", file=sys.stderr)
        return 2
    try:
        files = safe_extract(args[0], args[1])
    except UnsafeArchiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"unpacked {len(files)} files into {args[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
