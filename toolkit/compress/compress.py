"""`edgespec compress`: a pruned, distilled copy of a classification run, as a run of kind "compress".

Per step (methods.md 4): prune to the step's share of the target with importance from the run's own training data
(a specialist's D_S), recalibrate batch-norm on that data with DAFT's conversion, fine-tune with distillation from
the unpruned model. The output is an ordinary run: its checkpoints carry the pruned layer sizes (meta "layers"),
so `evaluate`, `export`, `bench` and `bundle` load it like any model. Resumable at epoch boundaries; a kill
between steps repeats the (deterministic) pruning of the next step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ..errors import UserError
from ..progress import NULL, Reporter
from ..runs import RUN_FILE, Run
from ..train.config import TrainConfig

#: measure(parent, pruned, chw) -> {"speedup": float, ...}: two models timed side by side (injected by the CLI).
Measure = Callable[[Any, Any, tuple[int, int, int]], dict[str, Any]]

log = logging.getLogger(__name__)

DEFAULT_MACS_RATIO = 0.33
TEACHERS = ("specialist", "generalist")
SUFFIX = "-compressed"  # OUT/<run><SUFFIX> for several inputs: export names artifacts by directory name


class CompressConfig(TrainConfig):
    """Pruning target and recovery fine-tuning; data, model and input size always come from the input run."""

    macs_ratio: float | None = Field(None, gt=0, lt=1, description="fraction of the MACs kept (default 0.33)")
    param_ratio: float | None = Field(None, gt=0, lt=1, description="fraction of the parameters kept instead")
    target_speedup: float | None = Field(None, gt=1, le=100, description="prune until the model runs this many times "
                                         "faster than the input run, measured side by side (needs a measure)")
    speedup_device: str = Field("host-cpu", description="device profile the speedup is measured on (on this host)")
    steps: int = Field(1, ge=1, description="prune / recalibrate / fine-tune rounds to reach the target")
    round_to: int = Field(8, ge=1, description="channel counts rounded to multiples of this")
    importance: Literal["taylor", "group-norm"] = Field("taylor", description="taylor: |w dL/dw| on the run's own "
                                                                              "training data; group-norm: weights")
    importance_batches: int = Field(4, ge=1, description="training batches the Taylor importance sums over")
    distill: bool = Field(True, description="distil from a teacher during recovery fine-tuning")
    teacher: Literal["specialist", "generalist"] = Field(
        "specialist", description="specialist: the unpruned input run; generalist: the lineage's generalist's logits "
                                  "at the run's classes")
    temperature: float = Field(4.0, gt=0, description="distillation temperature T")
    alpha: float = Field(0.7, ge=0, le=1, description="weight a of the distillation term")
    bn: Literal["recalibrate", "daft", "none"] = Field(
        "recalibrate", description="after each step, on the run's data: recalibrate (batch-norm statistics measured "
                                   "anew), daft (DAFT's conversion: eval output kept, statistics moved) or none")
    epochs: int = Field(4, gt=0, description="fine-tuning epochs after each pruning step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate of the recovery fine-tuning")
    warmup_epochs: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _one_target(self) -> CompressConfig:
        if sum(v is not None for v in (self.macs_ratio, self.param_ratio, self.target_speedup)) > 1:
            raise ValueError("give one of macs_ratio, param_ratio or target_speedup, not both")
        if self.macs_ratio is None and self.param_ratio is None and self.target_speedup is None:
            self.macs_ratio = DEFAULT_MACS_RATIO
        return self

    @property
    def target(self) -> tuple[str, float]:
        """(what is counted, the ratio kept); with target_speedup, the MACs ratio its search found (set on the copy
        of the config that run_compression gets)."""
        if self.param_ratio is not None:
            return "params", self.param_ratio
        if self.macs_ratio is None:
            raise ValueError("target_speedup: the MACs ratio is not searched yet")
        return "macs", self.macs_ratio


#: The task this module compresses (the task plug-in sends other tasks' runs elsewhere: toolkit/tasks/).
TASK = "classify"


def check_input(path: str | Path) -> Run:
    run = Run.open(path)
    if run.info.get("task", TASK) != TASK:
        raise UserError(f"{path} is a {run.info.get('task')} run; this API compresses classification runs: use "
                        "`edgespec compress`, which sends each run to its task's compression")
    if not run.complete or not run.checkpoint_path("best").is_file():
        raise UserError(f"{run.path} is not a complete run (no finished checkpoints/best.pt); finish it with "
                        "--resume first")
    return run


def compress(runs: list[str | Path], out: str | Path, cfg: CompressConfig, *, resume: bool = False,
             reporter: Reporter = NULL, measure: Measure | None = None) -> list[dict[str, Any]]:
    """Compress each run: into `out` itself for one run, into out/<run>-compressed/ for several."""
    opened = [check_input(p) for p in runs]  # every input is checked before the first one is pruned
    if not opened:
        raise UserError("pass at least one run directory to compress")
    names = [r.path.resolve().name for r in opened]
    if len(set(names)) < len(names):
        raise UserError("two input runs share a directory name, which names their outputs; compress them into "
                        "different --out directories")
    out = Path(out)
    targets = [out] if len(opened) == 1 else [out / f"{n}{SUFFIX}" for n in names]
    if cfg.target_speedup is not None and measure is None:
        raise UserError("--target-speedup needs a way to time models (the CLI measures on this host)")
    return [compress_run(r, t, cfg, resume=resume, reporter=reporter, measure=measure)
            for r, t in zip(opened, targets, strict=True)]


def compress_run(run: Run | str | Path, out: str | Path, cfg: CompressConfig, *, resume: bool = False,
                 reporter: Reporter = NULL, measure: Measure | None = None) -> dict[str, Any]:
    from ..io import DirLock, sha256_file
    from ..runs import new_run_info

    run = run if isinstance(run, Run) else check_input(run)
    out = Path(out)
    if out.resolve() == run.path.resolve():
        raise UserError(f"--out {out} is the input run itself; choose another directory")
    arch = dict(run.info["arch"])
    cfg = cfg.model_copy(update={"data": run.info["data"], "model": arch["name"], "image_size": arch["input_size"][0],
                                 "pretrained": False, "weights": None})
    bundle = run.data()
    parent_ckpt = run.checkpoint_path("best")
    lineage = list((run.info.get("parent") or {}).get("lineage") or []) + [str(run.path.resolve())]
    info = new_run_info("compress", cfg.model_dump(), bundle, arch, parent={
        "run": str(run.path.resolve()), "checkpoint": "best", "checkpoint_sha256": sha256_file(parent_ckpt),
        "kind": run.kind, "lineage": lineage})
    search = None
    if cfg.target_speedup is not None:
        from .target import search_speedup

        if measure is None:
            raise UserError("--target-speedup needs a way to time models (the CLI measures on this host)")
        search = search_speedup(run, out, cfg, resume, measure)
        cfg = cfg.model_copy(update={"macs_ratio": search["macs_ratio"]})  # run.json keeps the user's config
    target, ratio = cfg.target
    info.update(group=run.info.get("group"), compression={
        "method": "torch-pruning structured channel pruning (DepGraph)", "importance": cfg.importance,
        "target": "speedup" if search else target, "target_ratio": ratio, "steps": cfg.steps, "round_to": cfg.round_to,
        **({"target_speedup": cfg.target_speedup, "speedup_search": search} if search else {}),
        "bn": cfg.bn,
        "distillation": ({"teacher": cfg.teacher, "temperature": cfg.temperature, "alpha": cfg.alpha}
                         if cfg.distill else None)})
    with DirLock(out):
        from .loop import run_compression

        result = run_compression(run, bundle, cfg, out, info, resume, reporter)
        if search is not None:  # the fine-tuned result, timed against the parent once more
            done = Run.open(out)
            pre = info["preprocess"]
            chw = (int(pre["channels"]), *(int(s) for s in pre["input_size"]))
            m = measure(run.model("best").eval(), done.model("best").eval(), chw)
            result["compression"] = dict(result["compression"], measured_speedup=m["speedup"],
                                         speedup_device=m["device"], speedup_measurement=m)
            done.update(compression=result["compression"])
            if m["speedup"] < cfg.target_speedup:
                log.warning("%s: the fine-tuned model measured %.2fx, below --target-speedup %g (the search measured "
                            "%.2fx): timings on this host vary", out, m["speedup"], cfg.target_speedup,
                            search["measured"]["speedup"])
        return result


__all__ = ["RUN_FILE", "TEACHERS", "CompressConfig", "check_input", "compress", "compress_run"]
