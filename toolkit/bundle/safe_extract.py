"""Unpack a bundle without letting it write outside the destination.

Standard library only, so the same checks run on a device that has no edgespec: `remote.py` copies this file
next to the bundle and runs `python3 safe_extract.py BUNDLE.tar.gz DEST` there.

Every member is checked before anything is written: no absolute paths, no `..`, no links whose target leaves
the bundle, nothing but regular files, directories and links (no devices, fifos). Python's `data` extraction
filter (3.12+, backported to 3.8.17/3.9.17/3.10.12/3.11.4) is applied on top where it exists.
"""

from __future__ import annotations

import os
import posixpath
import sys
import tarfile

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


def check_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Members in archive order, after checking each; raises UnsafeArchiveError naming the first bad one."""
    members = tar.getmembers()
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
        members = check_members(tar)
        if hasattr(tarfile, "data_filter"):
            try:
                tar.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as exc:
                raise UnsafeArchiveError(f"refusing to unpack {archive}: {exc}") from None
        else:  # pragma: no cover - old Python on a device: the checks above are all there is
            for m in members:
                tar.extract(m, dest, set_attrs=False)
    return [posixpath.normpath(m.name) for m in members if m.isfile()]


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
