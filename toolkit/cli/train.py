"""`edgespec train`, `edgespec evaluate`, `edgespec models`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Out, Quiet, Resume, RunDir, echo, setup


def train(
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
    download: Annotated[bool, typer.Option(help="Let torchvision datasets download.")] = False,
    out: Out = Path("runs/generalist"),
    resume: Resume = False,
    quiet: Quiet = False,
    task: Annotated[str, typer.Option(help="classify, or detect: Ultralytics YOLO on a YOLO data.yaml (--data, "
                                      "--model yolo11n.yaml|PATH.pt, --epochs, --batch-size, --image-size, "
                                      "--device, --seed, --workers, --out, --resume).")] = "classify",
) -> None:
    """Train a generalist classifier (CPU or GPU; multi-GPU under torchrun), or a detector with --task detect."""
    if task != "classify":
        if task != "detect":
            from ..errors import UserError

            raise UserError(f"--task {task!r} is not supported; use classify or detect")
        return _train_detect(data, model, epochs, batch_size, image_size, device, seed, workers or 0, out, resume,
                             quiet)
    from ..train import TrainConfig
    from ..train import train as run_train
    from .errors import config_from

    reporter = setup(quiet)
    cfg = config_from(TrainConfig, data=data, model=model, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                      lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, label_smoothing=label_smoothing,
                      seed=seed, device=device, image_size=image_size, pretrained=pretrained,
                      weights=str(weights) if weights else None, workers=workers, download=download,
                      compile=compile_model)
    result = run_train(cfg, out, resume=resume, reporter=reporter)
    if "test" in result:
        echo(f"{out}: best val top-1 {result['best_val_acc']:.4f}, test top-1 {result['test']['top1']:.4f} "
             f"({result['test']['images']} images)")


def _train_detect(data: str, model: str, epochs: int, batch_size: int, image_size: int | None, device: str,
                  seed: int, workers: int, out: Path, resume: bool, quiet: bool) -> None:
    """`train --task detect`: Ultralytics' trainer on a YOLO data.yaml; --resume continues an interrupted run."""
    from ..detect.train import DetectTrainConfig, train_detect
    from ..errors import UserError
    from .errors import config_from

    if not data.endswith((".yaml", ".yml")):
        raise UserError(f"--task detect needs --data DATA.yaml (a YOLO data file), not {data!r}; "
                        "`edgespec data synth-detect --out DIR` makes one")
    reporter = setup(quiet)
    cfg = config_from(DetectTrainConfig, data=data, model="yolo11n.yaml" if model == "smallcnn" else model,
                      epochs=epochs, batch=batch_size, imgsz=image_size, device=device, seed=seed, workers=workers)
    info = train_detect(cfg, out, resume=resume, reporter=reporter)
    m = info["metrics"]["val"]
    echo(f"{out}: {info['arch']['name']} on {len(info['classes'])} classes, {info['metrics']['epochs']} epochs, "
         f"val mAP50-95 {m['map50_95']:.4f}, mAP50 {m['map50']:.4f}")


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
    from ..detect.train import is_detect_run
    from ..errors import UserError

    if is_detect_run(run):
        return _evaluate_detect(run, checkpoint, split or "val", device, quiet)
    from ..evaluate import evaluate_run
    from ..runs import Run
    from ..train import resolve_device

    setup(quiet)
    split = split or "test"
    if split not in ("test", "val", "train"):
        raise UserError(f"unknown split {split!r}; choose test, val or train")
    r = Run.open(run)
    result = evaluate_run(r, checkpoint, split, device=str(resolve_device(device)))
    echo(f"{run} ({r.kind}, {len(r.classes)} classes): top-1 {result['top1']:.4f} on {result['images']} "
         f"{split} images")
    width = max(len(c) for c in r.classes)
    for name, acc in result["per_class"].items():
        echo(f"  {name:<{width}}  {'n/a' if acc is None else f'{acc:.4f}'}")
    echo(f"confusion matrix: {r.path / f'confusion-{split}.csv'} and .png")


def _evaluate_detect(run: Path, checkpoint: str, split: str, device: str, quiet: bool) -> None:
    from ..detect.evaluate import evaluate_detect

    setup(quiet)
    r = evaluate_detect(run, checkpoint, split, device=device)
    what = f"{r['kind']}{' ' + r['group'] if r['group'] else ''}, {len(r['classes'])} classes"
    echo(f"{run} (detect {what}): mAP50-95 {r['map50_95']:.4f}, mAP50 {r['map50']:.4f} on {r['images']} {split} "
         f"images ({r['instances']} objects); per class AP50-95 / AP50:")
    width = max(len(c) for c in r["classes"])
    for name, c in r["per_class"].items():
        ap = "n/a (no objects)" if c["ap50_95"] is None else f"{c['ap50_95']:.4f} / {c['ap50']:.4f}"
        echo(f"  {name:<{width}}  {ap}  ({c['instances']} objects)")
    echo(f"saved: {Path(run) / f'eval-{split}.json'}")


def models() -> None:
    """List the model names `--model` accepts."""
    from ..models import REGISTRY

    for name in sorted(REGISTRY):
        echo(f"{name:<22} {REGISTRY[name].description}")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(evaluate)
    app.command()(models)
