"""`edgespec compress`: pruned, distilled copies of classification runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Quiet, Resume, echo, setup


def compress(
    runs: Annotated[list[Path], typer.Argument(help="Runs to compress (specialists, or a generalist as the "
                                                    "baseline; classification or YOLO detection).",
                                               show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output run directory (one RUN), or the directory of "
                                                          "OUT/<run>-compressed/ runs (several).")],
    macs_ratio: Annotated[float | None, typer.Option(help="Fraction of the MACs kept, in (0, 1) [0.33; detection "
                                                          "0.5].")] = None,
    param_ratio: Annotated[float | None, typer.Option(help="Fraction of the parameters kept, instead.")] = None,
    target_speedup: Annotated[float | None, typer.Option(
        help="Instead: prune until the model runs this many times faster than the input run, ONNX Runtime fp32 "
             "batch 1 on --speedup-device, timed side by side on this host (classifiers).")] = None,
    speedup_device: Annotated[str | None, typer.Option(
        help="Device profile --target-speedup is measured on; it must be served by this host [host-cpu]. (--device "
             "is the training device.)")] = None,
    steps: Annotated[int | None, typer.Option(help="Prune / recalibrate / fine-tune rounds [1].")] = None,
    round_to: Annotated[int | None, typer.Option(help="Round channel counts to multiples of this [8].")] = None,
    importance: Annotated[str | None, typer.Option(help="taylor (|w dL/dw| of the task's loss on the run's own "
                                                        "data) or group-norm (the weights alone) [taylor].")] = None,
    bn: Annotated[str | None, typer.Option(help="Classifiers, after each step: recalibrate (batch-norm statistics "
                                                "anew), daft (DAFT's conversion) or none [recalibrate].")] = None,
    distill: Annotated[bool | None, typer.Option("--distill/--no-distill", help="Classifiers: distil from a "
                                                                                "teacher [on].")] = None,
    teacher: Annotated[str | None, typer.Option(help="Classifiers: specialist (the unpruned run) or generalist (its "
                                                     "logits at the run's classes) [specialist].")] = None,
    temperature: Annotated[float | None, typer.Option(help="Distillation temperature T [4].")] = None,
    alpha: Annotated[float | None, typer.Option(help="Weight of the distillation term [0.7].")] = None,
    epochs: Annotated[int | None, typer.Option(help="Fine-tuning epochs after each step [4; detection 10].")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate of the fine-tuning [1e-3; detection "
                                                  "5e-4].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size [64; detection: the run's].")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for importance batches and augmentation [0; detection: "
                                                  "the run's].")] = None,
    device: Annotated[str, typer.Option(help="Training device: auto, cpu or cuda.")] = "auto",
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Prune whole channels (Torch-Pruning), recalibrate batch-norm, fine-tune (with distillation for classifiers)."""
    from ..errors import UserError
    from ..tasks import task_of

    reporter = setup(quiet)
    if not runs:
        raise UserError("pass at least one run directory to compress")
    tasks = {task_of(r).name: task_of(r) for r in runs}
    if len(tasks) > 1:
        raise UserError(f"the runs are of several tasks ({', '.join(tasks)}); compress each task's runs separately")
    if speedup_device is not None and target_speedup is None:
        raise UserError("--speedup-device goes with --target-speedup; drop it or give --target-speedup S")
    measure = None
    if target_speedup is not None:
        from benchmarks.speedup import paired_speedup

        measure = paired_speedup(speedup_device or "host-cpu")
    options = {"macs_ratio": macs_ratio, "param_ratio": param_ratio, "target_speedup": target_speedup,
               "speedup_device": speedup_device, "steps": steps, "round_to": round_to, "importance": importance,
               "bn": bn, "distill": distill, "teacher": teacher, "temperature": temperature, "alpha": alpha,
               "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "device": device}
    for line in next(iter(tasks.values())).compress(runs, out, options, resume, reporter, measure=measure):
        echo(line)


def register(app: typer.Typer) -> None:
    app.command()(compress)
