"""The training loop: plain functions that read top to bottom (after torchvision's references)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data import DataBundle
from ..errors import UserError
from ..evaluate import eval_loader, evaluate_run, predict
from ..io import DirLock, is_own_temporary, remove_own_temporaries, write_csv, write_json
from ..models import head_path
from ..progress import NULL, Reporter
from ..runs import RUN_FILE, Run, mark_stopped, now
from .config import TrainConfig
from .data import attach_image_cache, eval_workers, train_loader, use_channels_last
from .distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown

log = logging.getLogger(__name__)

CUDA_REPORT_EVERY = 10  # steps between progress updates on CUDA (each one waits for the GPU)
RESUME_MAY_CHANGE = {"workers", "compile"}  # config keys that change how fast a run trains, not what it trains
RESUME_MAY_GROW = {"epochs"}  # config keys --resume may raise (a run extended; checked against its checkpoint)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: the hyper-parameters (a learning rate far too high) were at fault."""


def check_finite_loss(value: float, epoch: int, step: int, cfg: TrainConfig) -> None:
    if not math.isfinite(value):
        raise TrainingDiverged(f"training diverged: the loss became {value} at epoch {epoch + 1}, step {step}; lower "
                               f"--lr (now {cfg.lr:g}) or raise --warmup-epochs, then train again (the run is marked "
                               "failed, its checkpoints hold the last finite epoch)")


ADDED_KEYS = {"cache_images": False}  # config keys newer than some runs: absent in run.json means this default


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Backbone and head as two groups so the head can learn faster (DAFT's head/backbone rates)."""
    head = head_path(model) + "."
    groups: dict[str, list] = {"backbone": [], "head": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups["head" if name.startswith(head) else "backbone"].append(p)
    return [{"params": groups["backbone"], "lr": cfg.lr, "name": "backbone"},
            {"params": groups["head"], "lr": cfg.lr * cfg.head_lr_mult, "name": "head"}]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = [g for g in param_groups(model, cfg) if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Per-step linear warm-up then cosine decay to 1% of the peak rate."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)

    def factor(step: int) -> float:
        if step < warm:
            return 0.1 + 0.9 * step / max(1, warm)
        progress = (step - warm) / max(1, total - warm)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _amp_dtype(device: torch.device, cfg: TrainConfig) -> torch.dtype | None:
    if device.type != "cuda" or not cfg.amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train_one_epoch(model, loader, opt, sched, scaler, loss_fn, device, amp_dtype, channels_last, task,
                    frozen: tuple[nn.Module, ...] = (), finite: Callable[[float, int], None] | None = None) -> dict:
    model.train()
    for m in frozen:  # layers of a frozen backbone keep their batch-norm statistics
        m.eval()
    # sums stay on the device: on CUDA, reading a number back every step would stall the queue of kernels
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen, pending, t0 = 0, 0, time.perf_counter()
    for step, (x, y) in enumerate(loader, 1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
            loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        n = y.numel()
        total_loss += loss.detach().double() * n
        correct += (logits.argmax(1) == y).sum()
        seen += n
        pending += n
        if device.type != "cuda" or step % CUDA_REPORT_EVERY == 0:
            value = loss.item()
            if finite is not None:  # a NaN loss stops the run here, before its weights reach a checkpoint
                finite(value, step)
            task.advance(pending, loss=value, img_s=seen / max(1e-9, time.perf_counter() - t0))
            pending = 0
    if pending:
        task.advance(pending, img_s=seen / max(1e-9, time.perf_counter() - t0))
    return {"loss": total_loss.item(), "correct": int(correct.item()), "seen": seen, "time": time.perf_counter() - t0}


def _metrics(logits: np.ndarray, labels: np.ndarray, loss_fn) -> tuple[float, float]:
    if len(labels) == 0:
        return float("nan"), float("nan")
    loss = loss_fn(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    return loss, float((logits.argmax(1) == labels).mean())


def prepare_run_dir(out: Path, resume: bool, run_info: dict[str, Any], compare_keys: tuple[str, ...]) -> dict | None:
    """Check `out` against `resume`; return the checkpoint to resume from, or None for a fresh start."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a directory; choose another --out")
    has_run = (out / RUN_FILE).is_file()
    if has_run:
        old = Run.open(out)
        diffs = [k for k in compare_keys if _comparable(k, old.info.get(k)) != _comparable(k, run_info.get(k))]
        if diffs:
            raise UserError(f"{out} already holds a different run (differs in {', '.join(diffs)}); "
                            "choose another --out or delete that directory")
        if not resume:
            raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        remove_own_temporaries(out, recursive=True)  # of a killed writer; never visible under a final name
        last = out / "checkpoints" / "last.pt"
        return load_checkpoint(last) if last.is_file() else None
    # What _fit writes before run.json, and temporaries: a run killed in between starts afresh instead of being refused
    before_run = {".lock", "split.json", "classes.json"}
    if out.is_dir() and any(p for p in out.iterdir()
                            if p.name not in before_run and not is_own_temporary(p)):
        raise UserError(f"output directory {out} is not empty and holds no edgespec run; choose another --out")
    return None


def _comparable(key: str, value: Any) -> Any:
    if key == "config" and isinstance(value, dict):  # epochs: checked against the checkpoint in _fit
        return {k: v for k, v in {**ADDED_KEYS, **value}.items() if k not in RESUME_MAY_CHANGE | RESUME_MAY_GROW}
    return value


@dataclass
class FitHooks:
    """Optional changes to the loop for specialization (toolkit.specialize); all off by default."""

    head_only_epochs: int = 0  # first epochs train only the head: backbone frozen, its BN statistics kept
    export: Callable[[nn.Module], nn.Module] | None = None  # what checkpoints store as "model"; the trained
    # module itself is stored as "train_model" so --resume continues it
    validate_start: bool = False  # best.pt starts as the initial model; an epoch must validate better to replace it
    train_sampler: Callable[[Any, torch.Generator], Any] | None = None  # (train dataset, the generator reseeded
    # every epoch) -> the sampler of training items, instead of a uniform shuffle (importance sampling)


def _freeze_backbone(model: nn.Module, frozen: bool) -> tuple[nn.Module, ...]:
    head = head_path(model) + "."
    for name, p in model.named_parameters():
        if not name.startswith(head):
            p.requires_grad_(not frozen)
    if not frozen:
        return ()
    return tuple(m for name, m in model.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and not (name + ".").startswith(head))


def fit(model: nn.Module, bundle: DataBundle, cfg: TrainConfig, out: Path, run_info: dict[str, Any], *,
        resume: bool = False, reporter: Reporter = NULL, init_ckpt: dict | None = None,
        hooks: FitHooks | None = None) -> dict[str, Any]:
    """Train `model` on `bundle` into run directory `out`; resumable at epoch boundaries."""
    out = Path(out)
    device = resolve_device(cfg.device)
    owner = not torch.distributed.is_initialized()  # a caller that set up the process group keeps it (specialize)
    dist_info = init_distributed(device.type)
    try:
        if dist_info.is_main:
            with DirLock(out):
                owned: list[bool] = []  # set once this process writes the run (not when it refuses another's)
                try:
                    return _fit(model, bundle, cfg, out, run_info, resume, reporter, device, dist_info, init_ckpt,
                                hooks or FitHooks(), owned)
                except BaseException as exc:
                    if owned:
                        mark_stopped(out, exc)
                    raise
        return _fit(model, bundle, cfg, out, run_info, resume, NULL, device, dist_info, init_ckpt, hooks or FitHooks())
    finally:
        if owner:
            shutdown(dist_info)


def _fit(model, bundle, cfg, out, run_info, resume, reporter, device, dist_info: DistInfo, init_ckpt,
         hooks: FitHooks, owned: list[bool] | None = None):
    must_match = ("kind", "data", "config", "arch", "class_ids", "parent")
    ckpt = prepare_run_dir(out, resume, run_info, must_match) if dist_info.is_main else None
    if ckpt is not None and ckpt["epoch"] > cfg.epochs:
        raise UserError(f"{out} has trained {ckpt['epoch']} epochs, more than --epochs {cfg.epochs}; with --resume "
                        "--epochs may only extend a run: drop it, or give more")
    if ckpt is not None:
        _check_resume_checkpoint(out, ckpt, run_info)
    if owned is not None:
        owned.append(True)
    if dist_info.is_main and (out / RUN_FILE).is_file():
        _reopen(out, run_info, ckpt, cfg)
    if dist_info.enabled:  # every rank resumes from what rank 0 found
        barrier(dist_info)
        last = out / "checkpoints" / "last.pt"
        ckpt = load_checkpoint(last) if resume and last.is_file() else None
    if dist_info.is_main and not (out / RUN_FILE).is_file():
        write_json(out / "split.json", bundle.split)
        write_json(out / "classes.json", bundle.classes)
        write_json(out / RUN_FILE, run_info)
    meta = {"arch": run_info["arch"], "classes": bundle.classes, "class_ids": bundle.class_ids,
            "preprocess": run_info["preprocess"], "data": bundle.source.spec, "kind": run_info["kind"]}

    torch.manual_seed(cfg.seed)
    model.to(device)
    channels_last = use_channels_last(device, run_info["arch"]["name"], cfg.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    attach_image_cache(bundle, cfg, out, run_info, device, dist_info)
    train_ds = bundle.dataset("train", train_transform=True)
    if len(train_ds) == 0:
        raise UserError("the training split holds no images for these classes; check the data and groups")
    per_rank = max(1, cfg.batch_size // dist_info.world_size)
    gen = torch.Generator()
    if hooks.train_sampler is not None and dist_info.enabled:
        raise UserError("importance sampling runs in one process; start it without torchrun")
    loader, sampler = train_loader(bundle, train_ds, cfg, device, dist_info, per_rank, gen,
                                   sampler=hooks.train_sampler(train_ds, gen) if hooks.train_sampler else None)
    val_loader = eval_loader(bundle, "val", workers=eval_workers(bundle, cfg, dist_info.world_size))
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, len(loader))
    amp_dtype = _amp_dtype(device, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    eval_loss = nn.CrossEntropyLoss()

    start, best_acc, history = 0, -1.0, []
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt.get("train_model", ckpt["model"]))
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            start, best_acc, history = ckpt["epoch"], ckpt["best_acc"], list(ckpt["history"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # tensors or optimizer state of another model
            raise UserError(f"{out / 'checkpoints' / 'last.pt'} does not fit this run's model or optimizer "
                            f"({type(exc).__name__}); restore the run's own last.pt, or train into another --out") \
                from None
        if dist_info.is_main:  # a kill between last.pt and the metrics files left them an epoch behind the checkpoint
            _write_history(out, history)
        if start >= cfg.epochs:
            log.info("%s has trained all %d epochs already; nothing to resume (give --epochs N > %d to extend it)",
                     out, cfg.epochs, cfg.epochs)
        else:
            log.info("resuming %s at epoch %d/%d", out, start + 1, cfg.epochs)
    elif init_ckpt is not None:
        model.load_state_dict(init_ckpt)
    if hooks.validate_start and ckpt is None:  # the starting model is the one to beat
        best_acc = _metrics(*predict(model, val_loader, device), eval_loss)[1]
        if dist_info.is_main:
            start_model = hooks.export(model) if hooks.export is not None else model
            save_checkpoint(out / "checkpoints" / "best.pt", start_model, meta, epoch=0, best_acc=best_acc, history=[])
        log.info("starting model: val_acc %.4f", best_acc)
    ddp_model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=hooks.head_only_epochs > 0) \
        if dist_info.enabled else model
    if cfg.compile:  # checkpoints and validation keep using `model`, which shares the compiled module's weights
        ddp_model = torch.compile(ddp_model)

    per_epoch = len(loader) * per_rank if loader.drop_last else len(loader.sampler)
    with reporter.task(f"train {out.name}", total=(cfg.epochs - start) * per_epoch, unit="img") as task:
        for epoch in range(start, cfg.epochs):
            torch.manual_seed(cfg.seed * 1000 + epoch)  # augmentation draws: same per epoch, resumed or not
            gen.manual_seed(cfg.seed * 1000 + epoch)
            if sampler is not None:
                sampler.set_epoch(epoch)
            frozen = _freeze_backbone(model, epoch < hooks.head_only_epochs) if hooks.head_only_epochs else ()
            stats = train_one_epoch(ddp_model, loader, opt, sched, scaler, loss_fn, device, amp_dtype,
                                    channels_last, task, frozen,
                                    lambda value, step, epoch=epoch: check_finite_loss(value, epoch, step, cfg))
            loss_sum, correct, seen = all_reduce_sum(dist_info, stats["loss"], stats["correct"], stats["seen"])
            check_finite_loss(loss_sum, epoch, len(loader), cfg)  # the steps a CUDA run did not read back
            logits, labels = predict(model, val_loader, device)
            val_loss, val_acc = _metrics(logits, labels, eval_loss)
            row = {"epoch": epoch + 1, "train_loss": round(loss_sum / seen, 6), "train_acc": round(correct / seen, 6),
                   "val_loss": round(val_loss, 6), "val_acc": round(val_acc, 6),
                   "lr": round(opt.param_groups[0]["lr"], 8), "epoch_s": round(stats["time"], 3),
                   "images_per_s": round(seen / max(1e-9, stats["time"]), 1)}
            history.append(row)
            is_best = val_acc > best_acc
            best_acc = max(best_acc, val_acc)
            if dist_info.is_main:
                state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "scaler": scaler.state_dict(), "epoch": epoch + 1, "best_acc": best_acc, "history": history}
                saved = model
                if hooks.export is not None:
                    saved = hooks.export(model)
                    state["train_model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                if is_best:
                    save_checkpoint(out / "checkpoints" / "best.pt", saved, meta, **state)
                save_checkpoint(out / "checkpoints" / "last.pt", saved, meta, **state)
                _write_history(out, history)
            log.info("epoch %d/%d train_loss %.4f val_acc %.4f", epoch + 1, cfg.epochs, row["train_loss"], val_acc)
    barrier(dist_info)
    result: dict[str, Any] = {"run": str(out), "epochs": cfg.epochs, "best_val_acc": best_acc, "history": history}
    if dist_info.is_main:
        run = Run.open(out)
        result["test"] = evaluate_run(run, device=str(device))
        run.update(status="complete", finished=now())
    return result


def _check_resume_checkpoint(out: Path, ckpt: dict, run_info: dict[str, Any]) -> None:
    """last.pt must be this run's: same architecture and classes as run.json, and the state a resume needs."""
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    path = out / "checkpoints" / "last.pt"
    if meta.get("arch") != run_info["arch"] or list(meta.get("class_ids") or []) != list(run_info["class_ids"]):
        raise UserError(f"{path} belongs to another model than {out / RUN_FILE} describes (architecture or classes "
                        "differ); restore the run's own last.pt, or train into another --out")
    missing = [k for k in ("model", "optimizer", "scheduler", "scaler", "epoch", "best_acc", "history")
               if k not in ckpt]
    if missing or not isinstance(ckpt.get("epoch"), int):
        raise UserError(f"{path} lacks {', '.join(missing) or 'its epoch'}, so the run cannot resume from it; restore "
                        "the run's own last.pt, or train into another --out")


def _reopen(out: Path, run_info: dict[str, Any], ckpt: dict | None, cfg: TrainConfig) -> None:
    """A resumed run is running again, with the config it now trains to (its epochs may have been extended)."""
    run = Run.open(out)
    config = dict(run.info.get("config") or {})
    if run.info.get("status") == "running" and config.get("epochs") == cfg.epochs:
        return
    done = ckpt is not None and ckpt["epoch"] >= cfg.epochs and run.complete
    if config.get("epochs") != cfg.epochs:
        log.info("extending %s from %s to %d epochs (the cosine schedule is stretched to the new length)", out,
                 config.get("epochs"), cfg.epochs)
        config["epochs"] = cfg.epochs
    fields: dict[str, Any] = {"config": {**config, **{k: v for k, v in run_info["config"].items()
                                                       if k in RESUME_MAY_CHANGE}}}
    if not done:
        fields.update(status="running", error=None)
    run.update(**fields)


def _write_history(out: Path, history: list[dict]) -> None:
    """metrics.csv/json from the epochs last.pt holds: the checkpoint is what a resumed run continues from."""
    if history:
        write_csv(out / "metrics.csv", history)
        write_json(out / "metrics.json", history)
