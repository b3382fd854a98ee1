"""Shared option aliases, logging setup and the bench summary the commands print (errors: toolkit/cli/errors.py)."""

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


def setup(quiet: bool) -> Reporter:
    """Configure logging for a command and return the progress reporter it should use."""
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


def print_summary(result: dict) -> None:
    from benchmarks.report import fmt, fmt_ms

    for row in result["rows"]:
        lat = (row.get("latency_ms") or {}).get("p50")
        sp = row.get("speedup_vs_generalist")
        echo(f"{row['device']:<17} {row['model']:<22} {row['format']:<14} {row['measurement']:<17} "
             f"p50 {fmt_ms(lat):>8} ms  {row.get('metric', 'acc')} "
             f"{fmt(row.get('accuracy'), 4):>6}" + (f"  mAP50 {fmt(row['map50'], 4)}" if "map50" in row else "")
             + (f"  speedup {sp:.2f}x" if sp else "")
             + (" (within timing spread)" if sp and row.get("speedup_resolved") is False else ""))
    bad = [c for c in result["budgets"] if c["passed"] is False]
    echo(f"budgets: {len(result['budgets'])} checks, {len(bad)} failed")
    for c in bad:
        echo(f"  FAILED {c['device']} {c['model']} {c['format']}: {c['check']} {c['op']} {c['limit']:g}, got "
             f"{fmt(c['value'], 4)}")
    for r in (result.get("baseline") or {}).get("regressions", []):
        echo(f"  REGRESSION {r['device']} {r['model']} {r['format']}: {r['text']}")
