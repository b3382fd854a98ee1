"""`edgespec bench`, `edgespec devices list`, `edgespec devices show NAME`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Quiet, echo, print_summary, setup

devices_app = typer.Typer(help="Device profiles: what runs where, published peaks, budgets.", no_args_is_help=True)


def bench(
    source: Annotated[Path | None, typer.Argument(help="An export directory (manifest.json) or a run directory.",
                                                  show_default=False)] = None,
    devices: Annotated[str, typer.Option("--devices", "--device",
                                         help="Comma-separated device profile names or YAML paths.")] = "host-cpu",
    report: Annotated[Path | None, typer.Option(help="Directory for the reports (default: SOURCE/report).")] = None,
    formats: Annotated[str | None, typer.Option(help="Only these formats (comma-separated).")] = None,
    runs: Annotated[int, typer.Option(help="Timed runs per batch size (at most).")] = 200,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs.")] = 10,
    warmup_time: Annotated[float | None, typer.Option(help="Seconds of untimed warm-up runs at least (a fresh "
                                                           "session starts slow) [default: the timing harness's "
                                                           "WARMUP_S].")] = None,
    time_limit: Annotated[float, typer.Option(help="Seconds of timing per batch size (after 10 runs).")] = 2.0,
    max_images: Annotated[int | None, typer.Option(help="Accuracy on at most this many test images.")] = None,
    threads: Annotated[int | None, typer.Option(help="Threads for every device instead of each profile's.")] = None,
    batch_sizes: Annotated[str | None, typer.Option(help="Batch sizes for every device instead of each profile's "
                                                         "(comma-separated, e.g. 1,8).")] = None,
    budget: Annotated[list[str] | None, typer.Option(help="KEY=VALUE budget for every device, e.g. "
                                                    "latency_p50_ms=5 (repeatable).")] = None,
    fail_on_budget: Annotated[bool, typer.Option(help="Exit 1 when a budget check fails.")] = False,
    baseline: Annotated[Path | None, typer.Option(help="An older report.json: mark regressions against it.")] = None,
    threshold: Annotated[float, typer.Option(help="Relative p50/size growth that counts as a regression.")] = 0.10,
    max_accuracy_drop: Annotated[float, typer.Option(help="Recommendations: at most this far (absolute) below the "
                                                          "generalist's closed-set accuracy.")] = 0.01,
    fail_on_regression: Annotated[bool, typer.Option(help="Exit 1 when a regression is marked.")] = False,
    import_path: Annotated[Path | None, typer.Option("--import", help="Merge a bundle's results.json (from the "
                                                     "device) into --report instead of benchmarking.")] = None,
    remote: Annotated[str | None, typer.Option(help="USER@HOST or SSH alias: bundle SOURCE for --device, run it "
                                               "there over SSH and merge its results.")] = None,
    ssh_config: Annotated[Path | None, typer.Option(help="ssh_config file for --remote (default ~/.ssh/config).")]
    = None,
    remote_python: Annotated[str, typer.Option(help="Python on the device for --remote.")] = "python3",
    allow_other_hardware: Annotated[bool, typer.Option(help="--remote: measure even where the profile's match rules "
                                                            "do not recognise the machine (rows say 'measured on "
                                                            "other hardware').")] = False,
    quiet: Quiet = False,
) -> None:
    """Latency, memory and accuracy of every artifact per device profile, against the generalist."""
    from benchmarks import BenchConfig, TimingConfig
    from benchmarks import bench as run_bench
    from benchmarks.budgets import failed, parse_budget_overrides

    from ..errors import build_config

    if import_path is not None or remote is not None:  # device figures: edgespec bundle (toolkit/bundle)
        from .bundle import device_results

        return device_results(source, devices, report, import_path, remote, ssh_config, remote_python, formats,
                              (runs, warmup, time_limit, warmup_time), quiet, allow_other_hardware)
    if source is None:
        from ..errors import UserError

        raise UserError("pass an export or run directory to benchmark (or --import RESULTS.json)")
    reporter = setup(quiet)
    timing = build_config(TimingConfig, runs=runs, warmup=warmup, time_limit_s=time_limit,
                          **({} if warmup_time is None else {"warmup_s": warmup_time}))
    cfg = build_config(BenchConfig, devices=[d.strip() for d in devices.split(",") if d.strip()],
                      formats=[f.strip() for f in formats.split(",")] if formats else None, timing=timing,
                      max_images=max_images, budgets=parse_budget_overrides(budget or []),
                      baseline=str(baseline) if baseline else None, regression_threshold=threshold,
                      max_accuracy_drop=max_accuracy_drop, threads=threads,
                      batch_sizes=parse_batch_sizes(batch_sizes) if batch_sizes else None)
    out = report or source / "report"
    result = run_bench(source, out, cfg, reporter=reporter)
    print_summary(result)
    echo(f"reports: {out}/report.md, report.html, report.json, junit.xml")
    bad = failed(result["budgets"])
    regs = (result.get("baseline") or {}).get("regressions", [])
    if (fail_on_budget and bad) or (fail_on_regression and regs):
        from ..errors import EdgespecError  # exit code 1: the work ran, the result fails

        raise EdgespecError(f"{len(bad)} budget check(s) failed, {len(regs)} regression(s); see {out}/report.md")


def parse_batch_sizes(text: str) -> list[int]:
    from ..errors import UserError

    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--batch-sizes {text!r}: expected whole numbers separated by commas, e.g. 1,8") from None


@devices_app.command("list")
def devices_list() -> None:
    """Shipped device profiles (from devices/, or EDGESPEC_DEVICES_DIR)."""
    from ..devices import devices_dir, list_profiles, load_profile

    names = list_profiles()
    if not names:
        echo(f"no device profiles in {devices_dir()}")
    for name in names:
        p = load_profile(name)
        echo(f"{name:<18} {p.runtime:<12} {','.join(p.formats):<28} {p.description}")


@devices_app.command("show")
def devices_show(name: Annotated[str, typer.Argument(help="Profile name or YAML path.", show_default=False)]) -> None:
    """A profile in full, as validated (YAML)."""
    import yaml

    from ..devices import load_profile

    profile = load_profile(name)
    echo(yaml.safe_dump(profile.model_dump(by_alias=True), sort_keys=False, width=110).rstrip())


def register(app: typer.Typer) -> None:
    app.command()(bench)
    app.add_typer(devices_app, name="devices")
