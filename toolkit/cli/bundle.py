"""`edgespec bundle`: pack the benchmark for the real device (run it there with `python3 run.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Quiet, echo, setup


def bundle(
    export_dir: Annotated[Path, typer.Argument(help="An export directory written by `edgespec export`.",
                                               show_default=False)],
    device: Annotated[str, typer.Option(help="Device profile name or .yaml path (see `edgespec devices list`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The bundle to write (FILE.tar.gz).")],
    format: Annotated[list[str] | None, typer.Option(
        "--format", help="Only these of the profile's formats (repeatable or comma-separated).")] = None,
    samples: Annotated[int, typer.Option(help="Test images per group shipped for accuracy (0: latency only).")]
    = 500,
    quiet: Quiet = False,
) -> None:
    """Pack the artifacts a device deploys, their hashes, test samples and a runner that needs no torch."""
    from ..bundle import make_bundle

    setup(quiet)
    formats = [f.strip() for item in format or [] for f in item.split(",") if f.strip()] or None
    info = make_bundle(export_dir, device, out, formats, samples)
    echo(f"{info.path}: {len(info.items)} artifacts for {info.device}, {info.size_bytes / 2**20:.2f} MiB, "
         f"sha256 {info.sha256}")
    for item in info.items:
        echo(f"  {item['name']:<36} {item['format']:<14} {item['role']:<10} {item.get('group') or ''}")
    echo(f"on the device: mkdir b && tar -xzf {info.path.name} -C b && cd b && python3 run.py --out results.json")
    echo("then here: edgespec bench --import results.json --report DIR")


def register(app: typer.Typer) -> None:
    app.command()(bundle)
