"""`edgespec compress` on a YOLO detection run: Torch-Pruning's structured pruning, fine-tuned by Ultralytics.

Follows Torch-Pruning's own Ultralytics example (examples/yolov8): the split-then-concatenate blocks (C2f, C3k2,
C2PSA) are rewritten split-free first (layers.py, same outputs), the head's last layers are ignored so its outputs
keep their meaning: every scale's final class conv (the sliced class branch: one channel per class of the group),
its final box conv (4 x reg_max channels that DFL reshapes) and DFL. The attention layers of C2PSA are ignored too
(their reshape into heads fixes their width). Importance is first-order Taylor, |w dL/dw| summed over each
dependency group, with L Ultralytics' own detection loss (box, class, DFL) on the first `importance_batches` batches
of the run's training images, unaugmented and in a fixed order (methods.md 4: what the group's data does not use
goes first); `group-norm` ranks by the weights alone. Each step prunes to its share of the target and fine-tunes
with Ultralytics' trainer on the run's data (its augmentations, loss and EMA); no distillation (Ultralytics' trainer
has no teacher for a pruned student).

The output is an ordinary detection run (kind "compress"): weights/best.pt loads with YOLO(), so evaluate, export
(with its parity check) and bench treat it like any detector. Resumable: a step's training resumes with
Ultralytics' own resume; a finished step is skipped; pruning is deterministic (the same batches in the same order,
or the weights alone), so a step killed before its training began is pruned again identically.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import EdgespecError, UserError
from ..io import DirLock, sha256_file, write_json
from ..progress import NULL, Reporter
from ..runs import RUN_FILE, now

log = logging.getLogger(__name__)

DEFAULT_MACS_RATIO = 0.5
#: Largest difference the split-free rewrite may make to the raw head outputs (it copies weights: ~0 in fp32).
REWRITE_TOLERANCE = 1e-4


class DetectCompressConfig(BaseModel):
    """What `edgespec compress` does to a detection run; fine-tuning follows the run's own Ultralytics recipe."""

    model_config = ConfigDict(extra="forbid")
    macs_ratio: float | None = Field(None, gt=0, lt=1, description="fraction of the MACs kept (default 0.5)")
    param_ratio: float | None = Field(None, gt=0, lt=1, description="fraction of the parameters kept instead")
    steps: int = Field(1, ge=1, description="prune / fine-tune rounds to reach the target")
    round_to: int = Field(8, ge=1, description="channel counts rounded to multiples of this")
    importance: Literal["taylor", "group-norm"] = Field(
        "taylor", description="taylor: |w dL/dw| of Ultralytics' detection loss on the run's training images; "
        "group-norm: the weights alone")
    importance_batches: int = Field(4, ge=1, le=1000, description="training batches the Taylor importance sums over")
    epochs: int = Field(10, ge=1, le=10_000, description="Ultralytics fine-tuning epochs after each step")
    lr0: float | None = Field(None, gt=0, le=1, description="AdamW learning rate (default: specialize's 5e-4)")
    batch: int | None = Field(None, ge=1, le=4096, description="batch size (default: the run's)")
    device: str = "auto"
    seed: int | None = Field(None, ge=0, description="seed (default: the run's)")

    @model_validator(mode="after")
    def _one_target(self) -> DetectCompressConfig:
        if self.macs_ratio is not None and self.param_ratio is not None:
            raise ValueError("give either macs_ratio or param_ratio, not both")
        if self.macs_ratio is None and self.param_ratio is None:
            self.macs_ratio = DEFAULT_MACS_RATIO
        return self

    @property
    def target(self) -> tuple[str, float]:
        return ("params", self.param_ratio) if self.param_ratio is not None else ("macs", self.macs_ratio)


def ignored_layers(model: Any) -> list[Any]:
    """What Torch-Pruning must keep whole in a YOLO DetectionModel: the head's output layers and attention."""
    from ultralytics.nn.modules.block import Attention

    from .specialize import detect_head

    head = detect_head(model)
    keep = [head.dfl] if hasattr(head, "dfl") else []
    for attr in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
        for seq in getattr(head, attr, None) or []:
            keep.append(seq[-1])
    return keep + [m for m in model.modules() if isinstance(m, Attention)]


def raw_outputs(model: Any, x: Any) -> Any:
    import torch

    with torch.no_grad():
        out = model.eval()(x)
    return out[0] if isinstance(out, tuple) else out


def prunable(model: Any, imgsz: int) -> Any:
    """`model` (fp32, CPU) with its split blocks rewritten, checked to compute what it computed before."""
    import torch

    from .layers import replace_split_blocks

    x = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    before = raw_outputs(model, x)
    n = replace_split_blocks(model)
    diff = float((raw_outputs(model, x) - before).abs().max())
    if diff > REWRITE_TOLERANCE:
        raise EdgespecError(f"rewriting {n} split blocks for pruning changed the model's output by {diff:.3g}; "
                            "please report this")
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def prune_detector(model: Any, imgsz: int, *, target: str, ratio: float, base: int, round_to: int, arch: str,
                   importance: str = "group-norm", gradients: Any = None) -> dict[str, Any]:
    """Prune a (prunable) DetectionModel in place to `ratio` * `base` MACs or parameters; the output keeps its
    shape (4 box coordinates + one score per class, per anchor). `importance` "taylor" needs `gradients(model)`
    (detection_gradients)."""
    from ..compress.prune import check_forward, prune_to

    if importance == "taylor" and gradients is None:
        raise EdgespecError("Taylor importance of a detector needs its training data (detection_gradients)")
    chw = (3, imgsz, imgsz)
    nc = int(model.model[-1].nc)
    anchors = raw_outputs(model, _zeros(chw)).shape[-1]
    return prune_to(model, chw, target=target, ratio=ratio, base=base, importance=importance, round_to=round_to,
                    arch=arch, num_classes=nc, ignored=ignored_layers(model), gradients=gradients,
                    check=lambda m: check_forward(m, chw, nc, arch, expected=(2, 4 + nc, anchors)))


def detection_gradients(data_yaml: Path, imgsz: int, batch: int, batches: int) -> Any:
    """gradients(model): Ultralytics' detection loss (box + class + DFL, its default gains) summed over the first
    `batches` batches of the training images of `data_yaml`, unaugmented (letterboxed as in validation) and in
    file order, back-propagated in eval mode (batch-norm statistics kept) and averaged per image."""

    def gradients(model: Any) -> None:
        import torch
        from ultralytics.cfg import get_cfg
        from ultralytics.data import build_dataloader, build_yolo_dataset
        from ultralytics.data.utils import check_det_dataset

        args = get_cfg(overrides={"imgsz": imgsz, "task": "detect", "data": str(data_yaml)})
        data = check_det_dataset(str(data_yaml))
        dataset = build_yolo_dataset(args, data["train"], batch, data, mode="val", rect=False,
                                     stride=max(32, int(model.stride.max())))
        loader = build_dataloader(dataset, batch, workers=0, shuffle=False, pin_memory=False, device="cpu")
        model.args, model.criterion = args, None  # the loss's gains; a criterion built for another model goes
        model.eval()
        model.zero_grad(set_to_none=True)
        seen = 0
        for i, b in enumerate(loader):
            if i >= batches:
                break
            b["img"] = b["img"].float() / 255
            loss, _ = model.loss(b)  # (box, cls, dfl), each times the batch size
            loss.sum().backward()
            seen += len(b["img"])
        if seen == 0:
            raise UserError(f"{data_yaml} lists no training images to rank channels with; use --importance group-norm")
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.grad /= seen
        model.criterion = None

    return gradients


def _zeros(chw: tuple[int, int, int]) -> Any:
    import torch

    return torch.zeros(2, *chw)


def pruned_trainer() -> type:
    """Ultralytics' DetectionTrainer that trains the model it is given: the stock one rebuilds the model from its
    YAML and copies matching weights in, which would undo the pruning (fresh start and resume alike)."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    class PrunedTrainer(DetectionTrainer):
        def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> Any:
            if weights is None:
                raise EdgespecError("a pruned detector is fine-tuned from its own checkpoint; none was given")
            model = weights.float()
            for p in model.parameters():
                p.requires_grad_(True)
            return model

    return PrunedTrainer


def _step_ratio(ratio: float, step: int, steps: int) -> float:
    return ratio ** ((step + 1) / steps)


def check_compress_out(out: Path, parent_sha: str, cfg: DetectCompressConfig, resume: bool) -> dict[str, Any] | None:
    from .runs import existing_run

    info = existing_run(out, may_hold=(".lock", "data", "weights", "ultra"))
    if info is None:
        if resume and not (out / ".lock").exists() and not (out / "weights").exists():
            raise UserError(f"nothing to resume: {out} holds no run; drop --resume to start a new one")
        return None
    if info.get("kind") != "compress":
        raise UserError(f"{out} holds a detection run that is not a compressed one; choose another --out")
    if info.get("status") == "complete":
        raise UserError(f"{out} already holds a finished run{'; nothing to resume' if resume else ''}; choose "
                        "another --out")
    if (info.get("parent") or {}).get("checkpoint_sha256") != parent_sha:
        raise UserError(f"the parent checkpoint changed since {out} was started (sha256 differs); compress it into "
                        "another --out")
    same = {k: v for k, v in (info.get("compress_config") or {}).items() if k != "device"}  # hardware may change
    if same != {k: v for k, v in cfg.model_dump().items() if k != "device"}:
        raise UserError(f"{out} holds an interrupted compression with other options; resume it with the options it "
                        "was started with, or choose another --out")
    if not resume:
        raise UserError(f"{out} already holds an interrupted run; pass --resume to continue it or choose another --out")
    return info


def compress_detect(run: str | Path, out: str | Path, cfg: DetectCompressConfig, *, resume: bool = False,
                    reporter: Reporter = NULL) -> dict[str, Any]:
    """Prune and fine-tune a detection run into `out` (a run of kind "compress"); returns its summary."""
    from .dataset import load_data, run_view
    from .runs import open_detect_run, run_info
    from .specialize import finetune_config

    run = Path(run).resolve()
    out = Path(out).resolve()
    if out == run:
        raise UserError(f"--out {out} is the input run itself; choose another directory")
    src = open_detect_run(run)
    parent_ckpt = run / "weights" / "best.pt"
    parent_sha = sha256_file(parent_ckpt)
    prior = check_compress_out(out, parent_sha, cfg, resume)
    imgsz = int(src["arch"]["input_size"][0])
    overrides = {"epochs": cfg.epochs, "lr0": cfg.lr0, "batch": cfg.batch, "device": cfg.device, "seed": cfg.seed}
    train_cfg = finetune_config(src["config"], str(parent_ckpt), overrides)
    target, ratio = cfg.target
    with DirLock(out):
        data = load_data(src["data"])
        view, counts = run_view(data, out / "data")
        train_cfg = train_cfg.model_copy(update={"data": str(view)})
        if prior is None:
            lineage = list((src.get("parent") or {}).get("lineage") or []) + [str(run)]
            parent = {"run": str(run), "checkpoint": "best", "checkpoint_sha256": parent_sha, "kind": src["kind"],
                      "lineage": lineage}
            info = run_info("compress", data, train_cfg, imgsz, src["classes"], src["class_ids"],
                            src.get("source_classes") or src["classes"], src.get("groups") or {}, src["arch"]["name"],
                            parent=parent, group=src.get("group"), images=counts,
                            generalist=src.get("generalist") or str(run), compress_config=cfg.model_dump(),
                            compression={"method": "torch-pruning structured channel pruning (DepGraph), split "
                                                   "blocks rewritten split-free, head outputs and attention ignored",
                                         "importance": cfg.importance, "target": target, "target_ratio": ratio,
                                         "steps": cfg.steps, "round_to": cfg.round_to, "bn": "ultralytics fine-tuning",
                                         "distillation": None, "history": []})
            write_json(out / RUN_FILE, info)
        else:
            info = prior
        return _run_steps(run, out, info, cfg, train_cfg, view, imgsz, reporter)


def _run_steps(run: Path, out: Path, info: dict[str, Any], cfg: DetectCompressConfig, train_cfg: Any, view: Path,
               imgsz: int, reporter: Reporter) -> dict[str, Any]:
    from ..compress.prune import count
    from .offline import load_weights, yolo
    from .specialize import save_ultralytics
    from .train import ultra_fit

    chw = (3, imgsz, imgsz)
    target, ratio = cfg.target
    base = count(load_weights(run / "weights" / "best.pt", out), chw)
    facts = info["compression"]
    history = facts["history"]
    trainer = pruned_trainer()
    for s in range(len(history), cfg.steps):
        name = f"step{s + 1}"
        pruned_pt = out / "weights" / f"{name}-pruned.pt"
        resuming = (out / "ultra" / name / "weights" / "last.pt").is_file()
        if not resuming:
            source = run / "weights" / "best.pt" if s == 0 else out / "ultra" / f"step{s}" / "weights" / "best.pt"
            model = prunable(load_weights(source, out), imgsz)
            grads = detection_gradients(view, imgsz, train_cfg.batch, cfg.importance_batches) \
                if cfg.importance == "taylor" else None
            reached = prune_detector(model, imgsz, target=target, ratio=_step_ratio(ratio, s, cfg.steps),
                                     base=base[0 if target == "macs" else 1], round_to=cfg.round_to,
                                     arch=info["arch"]["name"], importance=cfg.importance, gradients=grads)
            save_ultralytics(model, pruned_pt, {**train_cfg.model_dump(), "imgsz": imgsz})
            log.info("%s step %d/%d: pruned to %.3g MACs, %.3g parameters", out, s + 1, cfg.steps, reached["macs"],
                     reached["params"])
        fit = ultra_fit(None if resuming else yolo(out, pruned_pt), out, view, train_cfg, imgsz, reporter, name=name,
                        resume=resuming, trainer=trainer)
        macs, params = count(load_weights(out / "weights" / "best.pt", out), chw)
        history.append({"step": s + 1, "macs": macs, "params": params, "val": fit["val"], "epochs": fit["epochs"]})
        write_json(out / RUN_FILE, info)
    macs, params = count(load_weights(out / "weights" / "best.pt", out), chw)
    facts.update(macs_before=base[0], macs_after=macs, params_before=base[1], params_after=params,
                 macs_ratio=macs / base[0], params_ratio=params / base[1])
    reached = facts["macs_ratio" if target == "macs" else "params_ratio"]
    if reached > ratio * 1.1 + 0.02:
        log.warning("%s: the %s target %.3f was not reached (%.3f): every prunable group is at its maximum ratio",
                    out, target, ratio, reached)
    from .evaluate import evaluate_detect

    info.update(status="complete", finished=now(), metrics={"val": history[-1]["val"], "epochs": history[-1]["epochs"]})
    write_json(out / RUN_FILE, info)
    test = evaluate_detect(out, "best", "val", device=cfg.device if cfg.device != "auto" else "cpu")
    return {"run": str(out), "compression": facts, "test": test}
