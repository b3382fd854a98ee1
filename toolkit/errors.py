"""One exception family. The CLI turns these into one line on stderr and an exit code."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

M = TypeVar("M")


class EdgespecError(Exception):
    """A failure edgespec knows how to explain. `exit_code` 1: the work failed."""

    exit_code = 1


class UserError(EdgespecError):
    """Bad input: a path, a name, an option or a file the user gave. Exit code 2."""

    exit_code = 2


class RunLockedError(UserError):
    """Another edgespec process is writing to the same directory."""


class ExportCheckError(EdgespecError):
    """An exported artifact does not compute what the PyTorch model computes."""


class IntegrityError(UserError):
    """A file does not match the hash its manifest records."""


class OutOfSpaceError(EdgespecError):
    """A write failed for lack of disk space (exit 1: the input was fine, the disk was full)."""


#: Optional packages and the extra that installs each: a missing one is named with its fix, not an internal error.
EXTRAS = {"ultralytics": "detect", "tensorrt": "tensorrt", "cuda": "tensorrt"}


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' or '' so messages stay one line."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UserError:
    choices = sorted(choices)
    hint = did_you_mean(name, choices)
    listing = ", ".join(choices) if len(choices) <= 12 else ", ".join(choices[:12]) + ", ..."
    return UserError(f"unknown {kind} {name!r}{hint}; choose one of: {listing}")


def dotted(loc: tuple) -> str:
    """A pydantic error location as a config key: `train.epochs`."""
    return ".".join(str(p) for p in loc)


def as_option(loc: tuple) -> str:
    """A pydantic error location as a command-line option: `--batch-size`."""
    return "--" + dotted(loc).replace("_", "-")


def describe_validation(exc: Any, *, key: Callable[[tuple], str] = dotted, unknown: str = "unknown key",
                        empty: str = "config", allowed: Callable[[tuple], str] | None = None,
                        missing: bool = False, show_input: bool = True) -> str:
    """The one formatter of pydantic validation errors: every failing key on one line, '; '-separated.

    `key` names a location (config key or option), `unknown` words an extra key, `allowed(parent)` adds a hint
    after it, `missing` words a missing field as 'missing key', `show_input` adds the offending value (never a
    mapping or list, whose repr could be a whole expanded file; a long scalar is cut)."""
    parts = []
    for err in exc.errors():
        name = key(err["loc"]) if err["loc"] else ""
        if err["type"] == "extra_forbidden":
            parts.append(f"{unknown} {name!r}" + (allowed(err["loc"][:-1]) if allowed else ""))
        elif missing and err["type"] == "missing":
            parts.append(f"missing key {name!r}")
        else:
            got = err.get("input")
            shown = show_input and name and "input" in err and not isinstance(got, dict | list | tuple | set)
            parts.append(f"{name or empty}: {err['msg']}" + (f" (got {_short_repr(got)})" if shown else ""))
    return "; ".join(parts)


def _short_repr(value: Any, limit: int = 80) -> str:
    """A scalar's repr, cut to `limit` characters (a 10 MB string from a config stays out of the message)."""
    text = repr(value) if not isinstance(value, str) or len(value) <= limit else repr(value[:limit])
    return text if len(text) <= limit + 2 else text[:limit] + "..."


def build_config(schema: type[M], /, **values: Any) -> M:
    """`schema(**values)`, its validation errors as one UserError line naming the options (`--batch-size: ...`)."""
    from pydantic import ValidationError

    try:
        return schema(**values)
    except ValidationError as exc:
        raise UserError(f"invalid option: {describe_validation(exc, key=as_option)}") from None
