"""`edgespec pipeline [CONFIG]`: train -> partition -> specialize -> export -> bench, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Quiet, echo, setup


def pipeline(
    config: Annotated[Path | None, typer.Argument(help="Pipeline YAML (default: the embedded digits pipeline).",
                                                  show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory for every stage.")] = Path("runs"),
    show_default: Annotated[bool, typer.Option(help="Print the embedded default config and exit.")] = False,
    fail_on_budget: Annotated[bool, typer.Option(help="Exit 1 when a budget check fails.")] = False,
    quiet: Quiet = False,
) -> None:
    """Run every stage from one YAML; unchanged stages are skipped, changed ones rerun with what depends on them."""
    import time

    from ..pipeline import DEFAULT_CONFIG, run_pipeline

    if show_default:
        echo(DEFAULT_CONFIG.rstrip())
        return
    reporter = setup(quiet)
    t0 = time.perf_counter()
    result = run_pipeline(config, out, reporter=reporter,
                          on_stage=lambda stage, status, s: echo(f"{stage:<11} {status}" + (f" ({s:.1f} s)" if s
                                                                                             else "")))
    report = result["report"]
    echo(summary(report))
    echo(f"pipeline done in {time.perf_counter() - t0:.1f} s; reports in {out / 'report'} "
         "(report.md, report.html, report.json, junit.xml)")
    bad = [c for c in report["budgets"] if c["passed"] is False]
    if fail_on_budget and bad:
        from ..errors import EdgespecError

        raise EdgespecError(f"{len(bad)} budget check(s) failed; see {out / 'report' / 'report.md'}")


def summary(report: dict) -> str:
    """Each specialist against its generalist, per device and format (the Markdown report has everything)."""
    from benchmarks.report import fmt_ms

    lines = [f"{'device':<17} {'specialist':<14} {'format':<14} {'how':<17} {'acc':>6} {'gen closed':>10} "
             f"{'p50 ms':>9} {'speedup':>8}"]
    for r in report["rows"]:
        if r["role"] != "specialist":
            continue
        acc, gen = r.get("accuracy"), r.get("generalist_accuracy_closed")
        sp = r.get("speedup_vs_generalist")
        lines.append(f"{r['device']:<17} {r['model']:<14} {r['format']:<14} {r['measurement']:<17} "
                     f"{'–' if acc is None else f'{acc:.4f}':>6} {'–' if gen is None else f'{gen:.4f}':>10} "
                     f"{fmt_ms((r.get('latency_ms') or {}).get('p50')):>9} {'–' if sp is None else f'{sp:.2f}x':>8}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command()(pipeline)
