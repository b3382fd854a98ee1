"""`edgespec compress`: pruned, distilled copies of classification runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Quiet, Resume, echo, setup


def compress(
    runs: Annotated[list[Path], typer.Argument(help="Runs to compress (specialists, or a generalist as the "
                                                    "baseline).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output run directory (one RUN), or the directory of "
                                                          "OUT/<run>-compressed/ runs (several).")],
    macs_ratio: Annotated[float | None, typer.Option(help="Fraction of the MACs kept, in (0, 1) [0.33].")] = None,
    param_ratio: Annotated[float | None, typer.Option(help="Fraction of the parameters kept, instead.")] = None,
    steps: Annotated[int, typer.Option(help="Prune / recalibrate / fine-tune rounds.")] = 1,
    round_to: Annotated[int, typer.Option(help="Round channel counts to multiples of this.")] = 8,
    importance: Annotated[str, typer.Option(help="taylor (on the run's own data) or group-norm.")] = "taylor",
    bn: Annotated[str, typer.Option(help="After each step: recalibrate (batch-norm statistics anew), daft "
                                         "(DAFT's conversion) or none.")] = "recalibrate",
    distill: Annotated[bool, typer.Option("--distill/--no-distill", help="Distil from a teacher.")] = True,
    teacher: Annotated[str, typer.Option(help="specialist (the unpruned run) or generalist (its logits at the "
                                              "run's classes).")] = "specialist",
    temperature: Annotated[float, typer.Option(help="Distillation temperature T.")] = 4.0,
    alpha: Annotated[float, typer.Option(help="Weight of the distillation term.")] = 0.7,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs after each step.")] = 4,
    lr: Annotated[float, typer.Option(help="Peak learning rate of the fine-tuning.")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed for importance batches and augmentation.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Prune whole channels (Torch-Pruning), recalibrate batch-norm, fine-tune with distillation."""
    from ..compress import CompressConfig
    from ..compress import compress as run_compress
    from ..errors import build_config

    reporter = setup(quiet)
    cfg = build_config(CompressConfig, macs_ratio=macs_ratio, param_ratio=param_ratio, steps=steps, round_to=round_to,
                      importance=importance, bn=bn, distill=distill, teacher=teacher, temperature=temperature,
                      alpha=alpha, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=device)
    for res in run_compress(runs, out, cfg, resume=resume, reporter=reporter):
        c = res["compression"]
        echo(f"{res['run']}: MACs {c['macs_before']:,} -> {c['macs_after']:,} ({c['macs_ratio']:.2f}), params "
             f"{c['params_before']:,} -> {c['params_after']:,} ({c['params_ratio']:.2f}); test top-1 "
             f"{res['test']['top1']:.4f} ({res['test']['images']} images)")


def register(app: typer.Typer) -> None:
    app.command()(compress)
