"""`edgespec train`, `edgespec evaluate`, `edgespec models`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

try:  # typer >= 0.22 vendors click
    from typer._click.core import ParameterSource
except ImportError:  # pragma: no cover - older typer on plain click
    from click.core import ParameterSource

from .common import Out, Quiet, Resume, RunDir, echo, setup


def train(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="digits | synthetic[:k=v,..] | imagefolder:PATH | torchvision:NAME[:ROOT]")]
    = "digits",
    model: Annotated[str, typer.Option(help="Model name (see `edgespec models`).")] = "smallcnn",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 15,
    batch_size: Annotated[int, typer.Option(help="Global batch size.")] = 64,
    optimizer: Annotated[str, typer.Option(help="sgd or adamw.")] = "adamw",
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-3,
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 1e-4,
    warmup_epochs: Annotated[float, typer.Option(help="Linear warm-up epochs before cosine decay.")] = 1.0,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing for the training loss.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for the split, initialisation and augmentation.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    image_size: Annotated[int | None, typer.Option(help="Input side in pixels (default: the data's).")] = None,
    pretrained: Annotated[bool, typer.Option(help="Start from torchvision's ImageNet weights.")] = False,
    weights: Annotated[Path | None, typer.Option(help="Start from this state_dict or checkpoint.")] = None,
    workers: Annotated[int | None, typer.Option(help="Loader worker processes for data read from files [default: the "
                                                "usable CPUs less one, at most 8; detect: 0].")] = None,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the model for training.")] = False,
    cache_images: Annotated[bool, typer.Option(help="Decode and resize images read from files once into a "
                                               "memory-mapped cache in the run (reused by later epochs, --resume "
                                               "and the run's specialists; rebuilt when a file changes).")] = False,
    download: Annotated[bool, typer.Option(help="Let torchvision datasets download.")] = False,
    out: Out = Path("runs/generalist"),
    resume: Resume = False,
    quiet: Quiet = False,
    task: Annotated[str, typer.Option(help="classify, or detect: Ultralytics YOLO on a YOLO data.yaml (--data, "
                                      "--model yolo11n.yaml|PATH.pt, --epochs, --batch-size, --image-size, "
                                      "--device, --seed, --workers, --out, --resume).")] = "classify",
) -> None:
    """Train a generalist classifier (CPU or GPU; multi-GPU under torchrun), or a detector with --task detect."""
    from ..tasks import task_named

    chosen = task_named(task)
    reporter = setup(quiet)
    options = {"data": data, "model": model, "epochs": epochs, "batch_size": batch_size, "optimizer": optimizer,
               "lr": lr, "weight_decay": weight_decay, "warmup_epochs": warmup_epochs,
               "label_smoothing": label_smoothing, "seed": seed, "device": device, "image_size": image_size,
               "pretrained": pretrained, "weights": str(weights) if weights else None, "workers": workers,
               "download": download, "compile": compile_model, "cache_images": cache_images}
    if resume:  # the run's recorded config, with the flags typed now checked against it
        typed = {p for p in ctx.params if ctx.get_parameter_source(p) not in (None, ParameterSource.DEFAULT)}
        given = {"compile" if p == "compile_model" else p for p in typed}
        options = chosen.resume_options(out, options, given)
    for line in chosen.train(options, out, resume, reporter):
        echo(line)


def evaluate(
    run: RunDir,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    split: Annotated[str | None, typer.Option(help="test, val or train (from the run's saved split) [test; val for "
                                              "detection runs, which have no test split].")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    quiet: Quiet = False,
) -> None:
    """Top-1 and per-class accuracy and the confusion matrix (JSON, CSV, PNG) in the run; for a detection run
    mAP50-95, mAP50 and per-class AP (JSON in the run)."""
    from ..tasks import task_of

    setup(quiet)
    for line in task_of(run).evaluate(run, checkpoint, split, device):
        echo(line)


def models() -> None:
    """List the model names `--model` accepts."""
    from ..models import REGISTRY

    for name in sorted(REGISTRY):
        echo(f"{name:<22} {REGISTRY[name].description}")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(evaluate)
    app.command()(models)
