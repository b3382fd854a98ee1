"""`edgespec train --task detect`: Ultralytics' own trainer, wrapped in an edgespec run directory.

The run directory holds run.json ("task": "detect"), weights/best.pt and weights/last.pt (Ultralytics
checkpoints), and ultra/ with everything Ultralytics writes (its settings, results.csv, args.yaml).
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import DirLock, atomic_path, write_json, write_text
from ..progress import NULL, Reporter
from ..runs import RUN_FILE, now
from .config import DetectTrainConfig
from .dataset import SPLITS, DetData, load_data, run_view
from .offline import SAFE_ARGS, keep_threads, yolo
from .runs import (
    TASK,
    config_changes,
    device_arg,
    existing_run,
    has_checkpoint,
    is_detect_run,
    open_detect_run,
    resumed_info,
    run_info,
)

log = logging.getLogger(__name__)

def default_imgsz(data: DetData) -> int:
    synth = data.raw.get("synth")
    return int(synth["size"]) if isinstance(synth, dict) and "size" in synth else 640


def check_model_arg(model: str) -> str:
    """A .yaml builds from scratch (Ultralytics' bundled configs by name); a .pt must be a local file: never fetched."""
    if model.endswith((".yaml", ".yml")):
        return model
    if model.endswith(".pt"):
        p = Path(model).expanduser()
        if not p.is_file():
            raise UserError(f"weights file not found: {p}; edgespec never downloads weights: pass a local .pt or a "
                            "model .yaml such as yolo11n.yaml to start from random weights")
        from .offline import check_pickle

        check_pickle(p, resolve=False)  # before the run directory is made; yolo() checks in full before loading
        return str(p.resolve())
    raise UserError(f"--model {model!r} must be a model .yaml (e.g. yolo11n.yaml) or a local .pt checkpoint")


def ultra_fit(model: Any, run_dir: Path, data_yaml: Path, cfg: DetectTrainConfig, imgsz: int,
              reporter: Reporter = NULL, name: str = "train", resume: bool = False,
              trainer: type | None = None) -> dict[str, Any]:
    """Train `model` (an ultralytics YOLO) with Ultralytics' trainer; outputs stay in run_dir/ultra/<name>.

    `resume`: continue the interrupted training in run_dir/ultra/<name> from its weights/last.pt with the arguments
    it was started with (Ultralytics' own resume; `model` is not used); a training that had already finished there
    is only validated and recorded. `trainer`: an Ultralytics trainer class instead of the task's own."""
    save_dir = run_dir / "ultra" / name
    last = save_dir / "weights" / "last.pt"
    done = 0
    if resume and last.is_file():
        done = checkpoint_epochs(last)
        if done is None:  # stripped by Ultralytics' final step: training ended, edgespec's bookkeeping did not
            return _record(run_dir, save_dir, _final_metrics(run_dir, save_dir, data_yaml, imgsz, cfg))
        _trim_results(save_dir / "results.csv", done)
        model = yolo(run_dir, last)
        args: dict[str, Any] = {"resume": True, "data": str(data_yaml), "save_dir": str(save_dir),
                                "device": device_arg(cfg.device), "workers": cfg.workers, "plots": False}
        log.info("resuming %s after epoch %d of %d", save_dir, done, cfg.epochs)
    else:
        args = {**SAFE_ARGS, "data": str(data_yaml), "epochs": cfg.epochs, "imgsz": imgsz, "batch": cfg.batch,
                "device": device_arg(cfg.device), "workers": cfg.workers, "seed": cfg.seed, "deterministic": True,
                "optimizer": cfg.optimizer, "patience": cfg.patience, "project": str(run_dir / "ultra"),
                "name": name, "val": True, "amp": False}  # amp=True runs an AMP check that downloads yolo weights
        for key in ("lr0", "warmup_epochs", "freeze"):
            if getattr(cfg, key) is not None:
                args[key] = getattr(cfg, key)
        shutil.rmtree(save_dir, ignore_errors=True)  # a stale attempt that never saved an epoch
    # Ultralytics trains on cores - 1 threads; kept: on a busy 2-core host, 2 threads ran an epoch 4x slower than 1
    with reporter.task(f"train {run_dir.name}", total=cfg.epochs, unit="epoch") as task, keep_threads():
        if done:
            task.advance(done)

        def _epoch_end(trainer: Any) -> None:
            if trainer.epoch >= trainer.epochs:  # the final validation of best.pt calls this once more
                return
            m = trainer.metrics or {}
            task.advance(1, mAP50_95=float(m.get("metrics/mAP50-95(B)", 0.0)), mAP50=float(m.get("metrics/mAP50(B)",
                                                                                                      0.0)))
        model.add_callback("on_fit_epoch_end", _epoch_end)
        metrics = model.train(**args, **({"trainer": trainer} if trainer is not None else {}))
    box = metrics.box
    return _record(run_dir, save_dir, {"map50_95": float(box.map), "map50": float(box.map50)})


def _record(run_dir: Path, save_dir: Path, val: dict[str, float]) -> dict[str, Any]:
    """Copy Ultralytics' best/last weights into run_dir/weights (atomically); the metrics run.json records."""
    weights = run_dir / "weights"
    for which in ("best", "last"):
        src = save_dir / "weights" / f"{which}.pt"
        if src.is_file():
            with atomic_path(weights / f"{which}.pt") as tmp:
                shutil.copyfile(src, tmp)
    return {"val": val, "epochs": _epochs_run(save_dir),
            "results_csv": str((save_dir / "results.csv").relative_to(run_dir))}


def checkpoint_epochs(path: Path) -> int | None:
    """Epochs an Ultralytics training checkpoint holds, or None when it is no longer resumable (training finished:
    Ultralytics strips the optimizer and epoch). A checkpoint that cannot be read is a UserError."""
    import zipfile

    from .offline import check_pickle, ultralytics_env

    if not zipfile.is_zipfile(path):  # torch.save writes a zip; Ultralytics writes last.pt in place, not atomically
        raise UserError(f"cannot resume: {path} is not a whole checkpoint (cut off while being written?); delete "
                        "the run directory and train again")
    ultralytics_env(path.parent.parent.parent.parent)  # RUN/ultra/<name>/weights/last.pt
    check_pickle(path)
    from ultralytics.nn.tasks import load_checkpoint

    try:
        _, ckpt = load_checkpoint(str(path))
    except Exception as exc:  # noqa: BLE001 - a truncated file (killed while Ultralytics wrote it) and the like
        raise UserError(f"cannot resume: {path} is unreadable ({type(exc).__name__}), probably cut off while being "
                        "written; delete the run directory and train again") from None
    if ckpt.get("optimizer") is None or int(ckpt.get("epoch", -1)) < 0:
        return None
    return int(ckpt["epoch"]) + 1


def _final_metrics(run_dir: Path, save_dir: Path, data_yaml: Path, imgsz: int,
                   cfg: DetectTrainConfig) -> dict[str, float]:
    from .evaluate import validate

    best = save_dir / "weights" / "best.pt"
    m = validate(run_dir, best if best.is_file() else save_dir / "weights" / "last.pt", data_yaml, imgsz,
                 name="resume-val", batch=cfg.batch, device=cfg.device, multilabel_only=True)
    return {"map50_95": m["map50_95_multilabel"], "map50": m["map50_multilabel"]}


def _epochs_run(save_dir: Path) -> int:
    path = save_dir / "results.csv"
    if not path.is_file():
        return 0
    with open(path, newline="") as fh:
        return len({row.get("epoch") for row in csv.DictReader(fh)})


def _trim_results(path: Path, epochs: int) -> None:
    """Keep results.csv's rows of the first `epochs` epochs: a run killed after logging an epoch but before saving
    its last.pt trains that epoch again on resume, and Ultralytics appends its row a second time."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if _row_epoch(line) <= epochs]
    if kept != lines:
        log.info("dropping %d result rows past epoch %d from %s", len(lines) - len(kept), epochs, path)
        write_text(path, "".join(kept))


def _row_epoch(line: str) -> float:
    try:
        return float(line.split(",", 1)[0])
    except ValueError:
        return float("inf")  # a row cut off mid-write


def check_train_out(out: Path, cfg: DetectTrainConfig, data: DetData, resume: bool) -> dict[str, Any] | None:
    """Check `out` for training; return the interrupted run's run.json to resume, or None for a fresh start.

    Without --resume `out` must hold no run; with it, an interrupted detection run started with the same data and
    options (as classification's --resume)."""
    info = existing_run(out, may_hold=(".lock",))
    if info is None:
        if resume and not (out / ".lock").exists():
            raise UserError(f"nothing to resume: {out} holds no run; drop --resume to start a new one")
        return None  # a new or empty directory, or a run killed before its run.json: start afresh
    if info.get("kind") != "train":
        raise UserError(f"{out} holds a detection specialist; rerun `edgespec specialize` into a new --out instead")
    if info.get("status") == "complete":
        raise UserError(f"{out} already holds a finished run{'; nothing to resume' if resume else ''}; "
                        "choose another --out")
    diffs = (["data"] if info.get("data") != str(data.path) else []) + config_changes(info, cfg)
    if diffs:
        raise UserError(f"{out} holds an interrupted run with other {', '.join(diffs)}; resume it with the options it "
                        "was started with, or choose another --out")
    if not resume:
        raise UserError(f"{out} already holds an interrupted run; pass --resume to continue it or choose another --out")
    return info


def arch_name(model: str) -> str:
    return Path(model).stem


def train_detect(cfg: DetectTrainConfig, out: str | Path, resume: bool = False,
                 reporter: Reporter = NULL) -> dict[str, Any]:
    """Train a generalist detector on a YOLO dataset, or continue an interrupted one (`resume`); returns run.json.

    Ultralytics reads the run's own view of the data (run_dir/data, links only), so its label caches stay in the run."""
    out = Path(out).resolve()
    model_arg = check_model_arg(cfg.model)
    data = load_data(cfg.data)
    cfg = cfg.model_copy(update={"data": str(data.path), "model": model_arg})  # recorded: absolute paths
    imgsz = cfg.imgsz or default_imgsz(data)
    prior = check_train_out(out, cfg, data, resume)
    for split in SPLITS:
        data.image_files(split)  # no images: refused before anything is written
    with DirLock(out):
        if prior is None:
            info = run_info("train", data, cfg, imgsz, data.names, list(range(len(data.names))), data.names,
                            data.groups, arch_name(model_arg))
            write_json(out / RUN_FILE, info)
        else:
            info = resumed_info(prior, cfg)
            write_json(out / RUN_FILE, info)
        view, counts = run_view(data, out / "data")
        resuming = prior is not None and has_checkpoint(out)
        model = None if resuming else yolo(out, model_arg)
        log.info("%s %s on %s (%d classes, imgsz %d, %s images) into %s", "resuming" if resuming else "training",
                 model_arg, data.path, len(data.names), imgsz, counts, out)
        result = ultra_fit(model, out, view, cfg, imgsz, reporter, resume=resuming)
        info.update(status="complete", finished=now(), metrics=result, images=counts)
        write_json(out / RUN_FILE, info)
    return info


__all__ = ["TASK", "DetectTrainConfig", "check_train_out", "device_arg", "is_detect_run", "open_detect_run",
           "train_detect"]
