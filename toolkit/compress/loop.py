"""The compression loop: steps of prune -> recalibrate -> distil, checkpointed at every epoch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..checkpoint import model_from_checkpoint, save_checkpoint
from ..data import DataBundle
from ..errors import UserError
from ..io import write_csv, write_json
from ..models._shapes import layer_shapes
from ..progress import Reporter
from ..runs import RUN_FILE, Run
from ..train.loop import eval_loader, make_optimizer, make_scheduler, predict, prepare_run_dir, resolve_device

log = logging.getLogger(__name__)

COMPARE = ("kind", "data", "config", "arch", "class_ids", "parent")


def _accuracy(model, loader, device) -> float:
    logits, labels = predict(model, loader, device)
    return float((logits.argmax(1) == labels).mean()) if len(labels) else float("nan")


def _generalist(run: Run) -> Run:
    lineage = (run.info.get("parent") or {}).get("lineage") or []
    return Run.open(lineage[0]) if lineage else run


def _teacher(run: Run, cfg, device):
    if not cfg.distill:
        return None
    if cfg.teacher == "specialist":
        return run.model("best").to(device).eval()
    from .distill import GroupLogits

    gen = _generalist(run)
    missing = [c for c in run.class_ids if c not in gen.class_ids]
    if missing:
        raise UserError(f"--teacher generalist: {gen.path} does not serve class ids {missing[:5]} of {run.path}; "
                        "use --teacher specialist")
    return GroupLogits(gen.model("best"), [gen.class_ids.index(c) for c in run.class_ids]).to(device).eval()


def _step_ratio(ratio: float, step: int, steps: int) -> float:
    """Each step removes the same fraction of what is left: step k of n keeps ratio**(k/n) of the original."""
    return ratio ** ((step + 1) / steps)


def run_compression(run: Run, bundle: DataBundle, cfg, out: Path, info: dict[str, Any], resume: bool,
                    reporter: Reporter) -> dict[str, Any]:
    from ..specialize.bn import convert_batchnorm
    from .distill import finetune_epoch
    from .prune import count, prune_to, recalibrate_batchnorm

    device = resolve_device(cfg.device)
    ckpt = prepare_run_dir(out, resume, info, COMPARE)
    if not (out / RUN_FILE).is_file():
        write_json(out / "split.json", bundle.split)
        write_json(out / "classes.json", bundle.classes)
        write_json(out / RUN_FILE, info)
    pre = info["preprocess"]
    chw = (int(pre["channels"]), *(int(s) for s in pre["input_size"]))
    arch_name, n_classes = info["arch"]["name"], len(bundle.classes)
    target, ratio = cfg.target
    base_model = run.model("best")
    base = count(base_model, chw)
    del base_model

    if ckpt is not None:
        model = model_from_checkpoint(ckpt)
        step, epoch, history, best_acc = ckpt["step"], ckpt["epoch"], list(ckpt["history"]), ckpt["best_acc"]
        if epoch >= cfg.epochs:
            step, epoch = step + 1, 0
        log.info("resuming %s at step %d/%d, epoch %d/%d", out, step + 1, cfg.steps, epoch + 1, cfg.epochs)
    else:
        model, step, epoch, history, best_acc = run.model("best"), 0, 0, [], -1.0
    teacher = _teacher(run, cfg, device)
    train_ds = bundle.dataset("train", train_transform=True)
    workers = cfg.workers or 0  # None: automatic in training; compression fine-tunes in memory-sized steps
    val_loader = eval_loader(bundle, "val", workers=workers)
    gen = torch.Generator()
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=workers,
                        drop_last=len(train_ds) > cfg.batch_size)

    for s in range(step, cfg.steps):
        final = s == cfg.steps - 1
        model.to(device)
        if epoch == 0:  # a new step: prune, recalibrate, fresh optimizer
            torch.manual_seed(cfg.seed * 1000 + s)
            gen.manual_seed(cfg.seed * 1000 + s)
            grad_batches = [b for _, b in zip(range(cfg.importance_batches),
                                              DataLoader(bundle.dataset("train"), batch_size=cfg.batch_size,
                                                         shuffle=True, generator=gen), strict=False)]
            prune_to(model, chw, target=target, ratio=_step_ratio(ratio, s, cfg.steps),
                               base=base[0 if target == "macs" else 1], importance=cfg.importance,
                               round_to=cfg.round_to, arch=arch_name, num_classes=n_classes, grad_batches=grad_batches)
            model.to(device)
            torch.manual_seed(cfg.seed * 1000 + s)
            batches = DataLoader(bundle.dataset("train"), batch_size=cfg.batch_size)
            if cfg.bn == "recalibrate":
                recalibrate_batchnorm(model, batches, device)
            elif cfg.bn == "daft":
                convert_batchnorm(model, batches, device)
        opt = make_optimizer(model, cfg)
        sched = make_scheduler(opt, cfg, len(loader))
        if ckpt is not None and epoch > 0 and s == ckpt["step"]:
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
        meta = _meta(info, bundle, model)
        if final and epoch == 0:  # the pruned, recalibrated model is the one to beat
            best_acc = _accuracy(model, val_loader, device)
            save_checkpoint(out / "checkpoints" / "best.pt", model, meta, step=s, epoch=0, best_acc=best_acc,
                            history=history)
        macs, params = count(model.cpu(), chw)
        model.to(device)
        with reporter.task(f"compress {out.name} step {s + 1}/{cfg.steps}", total=(cfg.epochs - epoch) * len(train_ds),
                           unit="img") as task:
            for e in range(epoch, cfg.epochs):
                torch.manual_seed(cfg.seed * 100000 + s * 1000 + e)  # augmentation: same per epoch, resumed or not
                gen.manual_seed(cfg.seed * 100000 + s * 1000 + e)
                stats = finetune_epoch(model, teacher, loader, opt, sched, cfg.alpha, cfg.temperature, device, task)
                val_acc = _accuracy(model, val_loader, device)
                history.append({"step": s + 1, "epoch": e + 1, "macs": macs, "params": params,
                                "train_loss": round(stats["loss"] / stats["seen"], 6),
                                "train_acc": round(stats["correct"] / stats["seen"], 6), "val_acc": round(val_acc, 6),
                                "lr": round(opt.param_groups[0]["lr"], 8), "epoch_s": round(stats["time"], 3)})
                state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": s, "epoch": e + 1,
                         "history": history}
                if final and val_acc > best_acc:
                    best_acc = val_acc
                    save_checkpoint(out / "checkpoints" / "best.pt", model, meta, best_acc=best_acc, **state)
                save_checkpoint(out / "checkpoints" / "last.pt", model, meta, best_acc=best_acc, **state)
                write_csv(out / "metrics.csv", history)
                write_json(out / "metrics.json", history)
                log.info("step %d/%d epoch %d/%d: %.3g MACs, val_acc %.4f", s + 1, cfg.steps, e + 1, cfg.epochs, macs,
                         val_acc)
        epoch = 0
    return _finish(out, cfg, base, chw, best_acc, history, device)


def _meta(info: dict[str, Any], bundle: DataBundle, model) -> dict[str, Any]:
    return {"arch": info["arch"], "classes": bundle.classes, "class_ids": bundle.class_ids,
            "preprocess": info["preprocess"], "data": bundle.source.spec, "kind": info["kind"],
            "layers": layer_shapes(model)}


def _finish(out: Path, cfg, base: tuple[int, int], chw, best_acc: float, history: list, device) -> dict[str, Any]:
    from ..evaluate import evaluate_run
    from ..runs import now
    from .prune import count

    result_run = Run.open(out)
    best = result_run.model("best")
    macs, params = count(best, chw)
    target, ratio = cfg.target
    facts = dict(result_run.info["compression"], macs_before=base[0], macs_after=macs, params_before=base[1],
                 params_after=params, macs_ratio=macs / base[0], params_ratio=params / base[1])
    reached = facts["macs_ratio" if target == "macs" else "params_ratio"]
    if reached > ratio * 1.1 + 0.02:
        log.warning("%s: the %s target %.3f was not reached (%.3f): every group is at its maximum pruning ratio "
                    "or rounding left nothing to remove", out, target, ratio, reached)
    result_run.update(compression=facts)
    test = evaluate_run(result_run, device=str(device))
    result_run.update(status="complete", finished=now())
    return {"run": str(out), "best_val_acc": best_acc, "history": history, "test": test, "compression": facts}
