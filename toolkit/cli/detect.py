"""`edgespec data synth-detect` and `edgespec detect specialize|export|bench` (`train --task detect` is in train.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Out, Quiet, Resume, echo, print_summary, setup

data_app = typer.Typer(help="Datasets for tests and demos.", no_args_is_help=True)
detect_app = typer.Typer(help="Detection specialists (Ultralytics YOLO): specialize, export, bench.",
                         no_args_is_help=True)


@data_app.command("synth-detect")
def synth_detect(
    out: Out,
    train: Annotated[int, typer.Option(help="Training images.")] = 300,
    val: Annotated[int, typer.Option(help="Validation images.")] = 100,
    size: Annotated[int, typer.Option(help="Image side in pixels (a multiple of 32).")] = 64,
    max_objects: Annotated[int, typer.Option(help="Objects per image, at most.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same files.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset in --out.")] = False,
    quiet: Quiet = False,
) -> None:
    """Write a deterministic YOLO-format dataset whose 9 classes come in 3 semantic groups."""
    from ..detect.synth import GROUPS
    from ..detect.synth import synth_detect as make

    setup(quiet)
    path = make(out, train=train, val=val, size=size, max_objects=max_objects, seed=seed, overwrite=overwrite)
    echo(f"{path}: {train} training and {val} validation images of {size}x{size}")
    for name, members in GROUPS.items():
        echo(f"  group {name}: {', '.join(members)}")


@detect_app.command("specialize")
def specialize(
    run: Annotated[Path, typer.Argument(help="A detection run (the generalist).", show_default=False)],
    group: Annotated[str, typer.Option(help="Group name (from --groups, else from the data file's groups).")],
    out: Out,
    groups: Annotated[Path | None, typer.Option("--groups", help="Groups file (YAML: name: [class, ...]).")] = None,
    from_run: Annotated[Path | None, typer.Option("--from", help="Start from this specialist run (gradual).")] = None,
    freeze: Annotated[int | None, typer.Option(help="Freeze the first N model layers while fine-tuning.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Fine-tuning epochs [20].")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (AdamW) [5e-4].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size [the generalist's].")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed [the generalist's].")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda[:N] [the generalist's].")] = None,
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Slice the Detect head to the group's classes, derive the group's data (no copies), fine-tune."""
    from ..detect.specialize import specialize_detect

    reporter = setup(quiet)
    info = specialize_detect(run, group, out, groups_file=groups, source=from_run, freeze=freeze, epochs=epochs,
                             lr0=lr, batch=batch_size, device=device, seed=seed, resume=resume, reporter=reporter)
    m = info["metrics"]["val"]
    echo(f"{out}: {group} specialist ({', '.join(info['classes'])}), extraction exact, val mAP50-95 "
         f"{m['map50_95']:.4f}, mAP50 {m['map50']:.4f} on {info['images']['val']} images")


@detect_app.command("export")
def export(
    runs: Annotated[list[Path], typer.Argument(help="Detection runs (a generalist and/or its specialists).",
                                               show_default=False)],
    out: Out,
    formats: Annotated[str, typer.Option(help="Comma-separated: onnx, onnx-fp16, ort, tensorrt-fp16.")] = "onnx",
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: Ultralytics' choice).")] = None,
    quiet: Quiet = False,
) -> None:
    """`edgespec export` for detection runs: parity against PyTorch, merged into OUT/manifest.json."""
    from exporters import export_runs

    from ..tasks import task_named
    from .export import parity_line

    for run in runs:
        task_named("detect").open_run(run)  # this alias takes detection runs only (`edgespec export` takes both kinds)
    reporter = setup(quiet)
    for e in export_runs(runs, formats, out, reporter=reporter, opset=opset):
        echo(parity_line(e))
    echo(f"manifest: {out / 'manifest.json'}")


@detect_app.command("bench")
def bench(
    specialists: Annotated[list[Path], typer.Argument(help="Detection specialist runs.", show_default=False)],
    report: Annotated[Path, typer.Option(help="Directory for the reports.")],
    export_dir: Annotated[Path | None, typer.Option("--export", help="Export directory with their artifacts "
                                                    "(default: export them and their generalist as ONNX).")] = None,
    devices: Annotated[str, typer.Option(help="Comma-separated device profiles.")] = "host-cpu",
    quiet: Quiet = False,
) -> None:
    """`edgespec bench` for detection specialists: mAP50-95 / mAP50 against the generalist (closed and open set)."""
    from benchmarks.bench import bench_detect

    reporter = setup(quiet)
    result = bench_detect(specialists, report, export_dir=export_dir,
                          devices=[d.strip() for d in devices.split(",") if d.strip()], reporter=reporter)
    print_summary(result)
    echo(f"reports: {Path(report) / 'report.md'}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
    app.add_typer(detect_app, name="detect")
