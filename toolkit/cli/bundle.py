"""`edgespec bundle`: pack the benchmark for the real device (run it there with `python3 run.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Quiet, echo, print_summary, setup


def bundle(
    export_dir: Annotated[Path, typer.Argument(help="An export directory written by `edgespec export`.",
                                               show_default=False)],
    device: Annotated[str, typer.Option(help="Device profile name or .yaml path (see `edgespec devices list`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The bundle to write (FILE.tar.gz).")],
    format: Annotated[list[str] | None, typer.Option(
        "--format", help="Only these of the profile's formats (repeatable or comma-separated).")] = None,
    samples: Annotated[int, typer.Option(help="Test images per group shipped for accuracy (0: latency only).")]
    = 500,
    recommended: Annotated[bool, typer.Option(
        "--recommended", help="Only each group's recommended artifact for --device (the report's recommendations "
                              "table).")] = False,
    report: Annotated[Path | None, typer.Option(help="With --recommended: the report directory or report.json "
                                                     "[EXPORT_DIR/report].")] = None,
    adb: Annotated[str | None, typer.Option(
        "--adb", help="An Android phone over adb: its serial, or 'auto' for the only attached one. The bundle then "
        "carries adb_driver.py (run on the computer the phone is plugged into) and --runner-binary.")] = None,
    runner_binary: Annotated[Path | None, typer.Option(
        help="With --adb: ExecuTorch's executor_runner or ONNX Runtime's onnxruntime_perf_test built for the phone.")]
    = None,
    quiet: Quiet = False,
) -> None:
    """Pack the artifacts a device deploys, their hashes, test samples and a runner that needs no torch."""
    from ..bundle import make_bundle
    from ..bundle.pack import AdbTarget, recommended_artifacts
    from ..devices import load_profile
    from ..errors import UserError

    setup(quiet)
    formats = [f.strip() for item in format or [] for f in item.split(",") if f.strip()] or None
    if report is not None and not recommended:
        raise UserError("--report goes with --recommended; drop it or add --recommended")
    if runner_binary is not None and adb is None:
        raise UserError("--runner-binary goes with --adb SERIAL (or --adb auto): it runs on an Android phone")
    target = AdbTarget.make(adb, runner_binary) if adb is not None else None
    only = recommended_artifacts(report or export_dir / "report", load_profile(device).name) if recommended else None
    info = make_bundle(export_dir, device, out, formats, samples, only, adb=target)
    echo(f"{info.path}: {len(info.items)} artifacts for {info.device}, {info.size_bytes / 2**20:.2f} MiB, "
         f"sha256 {info.sha256}")
    for item in info.items:
        echo(f"  {item['name']:<36} {item['format']:<14} {item['role']:<10} {item.get('group') or ''}")
    if target is not None:
        echo(f"on the computer the phone is plugged into: mkdir b && tar -xzf {info.path.name} -C b && cd b && "
             "python3 adb_driver.py --out results.json   (latency only: the binary feeds its own inputs)")
        echo("then here: edgespec bench --import results.json --report DIR")
        return
    echo(f"on the device: mkdir b && tar -xzf {info.path.name} -C b && cd b && python3 run.py --out results.json")
    echo("then here: edgespec bench --import results.json --report DIR")


def register(app: typer.Typer) -> None:
    app.command()(bundle)


def device_results(source: Path | None, devices: str, report: Path | None, import_path: Path | None,
                   remote: str | None, ssh_config: Path | None, remote_python: str, formats: str | None,
                   timing: tuple[int, int, float, float | None], quiet: bool,
                   allow_other_hardware: bool = False) -> None:
    """`edgespec bench --import RESULTS.json` and `edgespec bench --remote USER@HOST --device PROFILE`."""
    from ..errors import UserError

    setup(quiet)
    if import_path is not None and remote is not None:
        raise UserError("--import and --remote are alternatives: --remote runs the bundle and imports its results")
    out = report or (source / "report" if source is not None else None)
    if out is None:
        raise UserError("--import needs --report DIR: the directory whose report.json the results merge into")
    if import_path is not None:
        from ..bundle.merge import import_results

        result = import_results(import_path, out)
    else:
        from ..bundle.remote import Remote, bench_remote

        names = [d.strip() for d in devices.split(",") if d.strip()]
        if source is None or len(names) != 1:
            raise UserError("--remote needs an export directory and exactly one --device PROFILE to bundle for")
        target = Remote(remote, ssh_config=ssh_config, python=remote_python)
        chosen = [f.strip() for f in formats.split(",")] if formats else None
        runs, warmup, time_limit, warmup_time = timing
        args = ["--runs", str(runs), "--warmup", str(warmup), "--time-limit", str(time_limit),
                *(["--warmup-time", str(warmup_time)] if warmup_time is not None else []),
                *(["--allow-other-hardware"] if allow_other_hardware else [])]
        result = bench_remote(source, names[0], target, out, formats=chosen, runner_args=args)
    print_summary(result)
    echo(f"reports: {out}/report.md, report.html, report.json, junit.xml")
