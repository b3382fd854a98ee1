"""Atomic writes, hashes and a directory lock: nothing half-written is ever visible under its final name."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import RunLockedError, UserError


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Names of edgespec's own temporaries: `.NAME.XXXXXXXX.edgespec.tmp` files (atomic writes) and
#: `.edgespec-work-XXXXXXXX` directories (exports). Only these are ever cleaned up as leftovers of a killed writer:
#: a user's `.draft.tmp` or `.export-settings/` beside them is not edgespec's and stays.
TMP_SUFFIX = ".edgespec.tmp"
WORK_PREFIX = ".edgespec-work-"


def is_own_temporary(path: Path) -> bool:
    return path.name.startswith(".") and (path.name.endswith(TMP_SUFFIX) or path.name.startswith(WORK_PREFIX))


def remove_own_temporaries(directory: Path, recursive: bool = False) -> None:
    """Delete what killed edgespec writers left in `directory` (call under its lock): its temporaries only."""
    for stale in list(directory.rglob(".*") if recursive else directory.glob(".*")):
        if not is_own_temporary(stale):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json_text(obj))


def publish_together(files: dict[Path, str | bytes]) -> None:
    """Write a set of files all or nothing: every one to a temporary beside it first (a full disk fails here, with
    the old set untouched and the temporaries removed), then each renamed into place."""
    staged: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
            staged[path] = Path(tmp)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
        for path, tmp in staged.items():
            os.replace(tmp, path)
        for parent in {p.parent for p in staged}:
            _fsync_dir(parent)
    finally:
        for tmp in staged.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]], fieldnames: list[str] | None = None) -> Path:
    buf = io.StringIO()
    fieldnames = fieldnames or (list(rows[0].keys()) if rows else [])
    writer = csv.DictWriter(buf, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}; check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path} is not valid JSON ({exc}); regenerate it") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DirLock:
    """An exclusive, non-blocking lock on a directory, released when the process dies (flock)."""

    def __init__(self, directory: str | os.PathLike, what: str = "run directory"):
        self.directory = Path(directory)
        self.what = what
        self._fh = None

    def __enter__(self) -> DirLock:
        if self.directory.exists() and not self.directory.is_dir():
            raise UserError(f"{self.directory} exists and is not a directory; choose another output directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        fh = open(self.directory / ".lock", "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RunLockedError(
                f"another edgespec process is writing to {self.what} {self.directory}; "
                "wait for it to finish or choose another output directory"
            ) from None
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class _KeyProblem(Exception):
    """A mapping key YAML accepts but a config must not have (given twice, or not a plain name)."""


def _strict_loader():
    """A SafeLoader that refuses a key given twice in one mapping (plain safe_load silently keeps the last)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool | type(None)):  # a list or mapping as a key
                raise _KeyProblem(f"the key at line {line} is a {type(key).__name__}, not a name")
            if key in seen:
                raise _KeyProblem(f"{key!r} is defined twice (line {line})")
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def yaml_problem(exc: Exception) -> str:
    """What PyYAML found and where, in one line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"{problem} at line {mark.line + 1}" if mark is not None else problem


def parse_yaml(text: str, what: str, fix: str = "fix the file") -> Any:
    """YAML text as plain Python objects (safe loader, duplicate keys refused); every problem is one UserError line
    naming `what` and ending with `fix`."""
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except _KeyProblem as exc:
        raise UserError(f"{what}: {exc}; {fix}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # bad !!tags raise ValueError, deep nesting recursion
        raise UserError(f"{what} is not valid YAML: {yaml_problem(exc)}; {fix}") from None


def read_yaml(path: str | os.PathLike, what: str, missing: str, fix: str = "fix the file") -> Any:
    """The YAML file at `path` (see parse_yaml); a missing or non-UTF-8 file is a UserError too. `missing` says
    what to pass instead of a missing file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}; {missing}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text; save it as a YAML file") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}; check its permissions") from None
    return parse_yaml(text, f"{what} {path}", fix)
