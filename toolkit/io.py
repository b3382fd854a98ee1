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

from .errors import OutOfSpaceError, RunLockedError, UserError


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
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a full disk as "file write failed"
            if "write" not in str(exc).lower():
                raise
            free = shutil.disk_usage(tmp.parent).free
            raise OutOfSpaceError(f"no space left on device writing {path} ({free // (1 << 20)} MiB free); free "
                                  "space or choose another --out") from None
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
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: merged keys may be overridden
                continue
            key = loader.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool | type(None)):  # a list or mapping as a key
                raise _KeyProblem(f"the key at line {line} is a {type(key).__name__}, not a name")
            if str(key) in seen:  # 1 and "1" are two YAML keys but one name once read as text
                raise _KeyProblem(f"{str(key)!r} is defined twice (line {line})")
            seen.add(str(key))
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def yaml_problem(exc: Exception) -> str:
    """What PyYAML found and where, in one line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"{problem} at line {mark.line + 1}" if mark is not None else problem


#: Bounds on a YAML config (groups, profile, pipeline, data files): its size, and its size once every alias is
#: expanded. A "billion laughs" file is a few hundred bytes that expand to 10^9 nodes; it is refused while still a
#: graph of a few dozen nodes, before anything walks, validates or prints it.
MAX_YAML_BYTES = 4 << 20
MAX_YAML_NODES = 200_000


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded_nodes(root: Any) -> int:
    """How many nodes the document has with its aliases expanded (iterative: no recursion on deep nesting); a
    recursive alias (a list that contains itself) is a _KeyProblem."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, closing = stack.pop()
        key = id(node)
        if closing:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > MAX_YAML_NODES:
                raise _KeyProblem(f"aliases expand it to more than {MAX_YAML_NODES} values (line "
                                  f"{node.start_mark.line + 1})")
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise _KeyProblem(f"an alias at line {node.start_mark.line + 1} refers to a value that contains it")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))
    return sizes[id(root)]


def parse_yaml(text: str, what: str, fix: str = "fix the file") -> Any:
    """YAML text as plain Python objects (safe loader, duplicate keys refused, size and alias expansion bounded);
    every problem is one UserError line naming `what` and ending with `fix`."""
    import yaml

    if len(text) > MAX_YAML_BYTES:
        raise UserError(f"{what} is {len(text)} characters, more than a config may be ({MAX_YAML_BYTES}); {fix}")
    loader = None
    try:
        loader = _strict_loader()(text)  # its reader refuses non-printable characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_nodes(node)
        return loader.construct_document(node)
    except _KeyProblem as exc:
        raise UserError(f"{what}: {exc}; {fix}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # bad !!tags raise ValueError, deep nesting recursion
        raise UserError(f"{what} is not valid YAML: {yaml_problem(exc)}; {fix}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: str | os.PathLike, what: str, missing: str, fix: str = "fix the file") -> Any:
    """The YAML file at `path` (see parse_yaml); a missing or non-UTF-8 file is a UserError too. `missing` says
    what to pass instead of a missing file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}; {missing}")
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"{what} {path} is {path.stat().st_size} bytes, more than a config may be "
                            f"({MAX_YAML_BYTES}); {fix}")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text; save it as a YAML file") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}; check its permissions") from None
    return parse_yaml(text, f"{what} {path}", fix)
