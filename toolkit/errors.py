"""One exception family. The CLI turns these into one line on stderr and an exit code."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' or '' so messages stay one line."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UserError:
    choices = sorted(choices)
    hint = did_you_mean(name, choices)
    listing = ", ".join(choices) if len(choices) <= 12 else ", ".join(choices[:12]) + ", ..."
    return UserError(f"unknown {kind} {name!r}{hint}; choose one of: {listing}")
