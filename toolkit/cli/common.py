"""Shared options, logging setup and the error table every command uses."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ..progress import NULL, Reporter, RichReporter

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, warnings and errors only (for CI).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")]
RunDir = Annotated[Path, typer.Argument(help="A run directory written by `edgespec train` or `specialize`.",
                                        show_default=False)]


class _State:
    quiet = False


STATE = _State()


def setup(quiet: bool) -> Reporter:
    """Configure logging for a command and return the progress reporter it should use."""
    STATE.quiet = quiet
    level = logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    if not any(getattr(h, "_edgespec", False) for h in root.handlers):
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, show_time=False, markup=False, rich_tracebacks=False)
        handler._edgespec = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in ("toolkit", "exporters", "benchmarks"):
        logging.getLogger(name).setLevel(level)
    return NULL if quiet else RichReporter()


def echo(text: str = "") -> None:
    """Results go to stdout (even with --quiet: they are what the user asked for)."""
    typer.echo(text)
