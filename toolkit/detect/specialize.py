"""Detection specialists: slice each scale's class branch to a group's classes, then fine-tune on the group.

A YOLO Detect head ends every scale's class branch (`cv3[i]`, and `one2one_cv3[i]` for end-to-end heads) in a
1x1 conv whose output channels are the class logits. Keeping the rows (weights and biases) of the group's
classes is the exact analogue of last-layer extraction (methods.md section 1): before any training the
specialist's box outputs equal the generalist's and its class logits equal the generalist's at the group's
channels. The dataset is filtered to the group and remapped (dataset.derive_dataset), without copying images.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError, as_option, describe_validation
from ..io import DirLock, atomic_path, sha256_file, write_json
from ..progress import NULL, Reporter
from ..runs import RUN_FILE, now
from .config import DetectTrainConfig
from .dataset import check_groups, derive_dataset, load_data, load_groups
from .offline import ultralytics_env, yolo
from .runs import config_changes, existing_run, has_checkpoint, open_detect_run, resumed_info, run_info
from .train import ultra_fit

log = logging.getLogger(__name__)

#: Fine-tuning defaults: a short schedule at a low learning rate, no warm-up (its high bias learning rate
#: would undo the extracted head), the generalist's augmentations.
FINETUNE = {"epochs": 20, "optimizer": "AdamW", "lr0": 5e-4, "warmup_epochs": 0.0}


def detect_head(model: Any) -> Any:
    from ultralytics.nn.modules.head import Detect

    head = model.model[-1] if hasattr(model, "model") else None
    if type(head) is not Detect:
        raise UserError(f"the model's last layer is {type(head).__name__}, not a plain YOLO Detect head; only "
                        "detection models can be specialized with --task detect")
    if getattr(head, "cv3", None) is None and getattr(head, "one2one_cv3", None) is None:
        raise UserError("the model's Detect head has no class branch (fused?); specialize from an unfused checkpoint")
    return head


def slice_detect(model: Any, keep: list[int], names: list[str]) -> Any:
    """A copy of `model` (an Ultralytics DetectionModel) whose class outputs are `keep`, in that order."""
    import torch
    from torch import nn

    head = detect_head(model)
    if not keep or len(set(keep)) != len(keep) or not all(0 <= k < head.nc for k in keep):
        raise UserError(f"class ids {keep} are not distinct ids below {head.nc}")
    model = copy.deepcopy(model)
    head = model.model[-1]
    idx = torch.as_tensor(keep, dtype=torch.long)
    for attr in ("cv3", "one2one_cv3"):
        branch = getattr(head, attr, None)
        if branch is None:
            continue
        for seq in branch:
            conv = seq[-1]
            if not isinstance(conv, nn.Conv2d) or conv.out_channels != head.nc:
                raise UserError(f"unexpected class branch in the Detect head ({attr}); cannot slice it")
            new = nn.Conv2d(conv.in_channels, len(keep), conv.kernel_size, conv.stride, conv.padding,
                            bias=conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(conv.weight[idx])
                if conv.bias is not None:
                    new.bias.copy_(conv.bias[idx])
            new.requires_grad_(conv.weight.requires_grad)
            seq[-1] = new
    head.nc = len(keep)
    head.no = head.nc + head.reg_max * 4
    model.nc = len(keep)
    model.names = dict(enumerate(names))
    if isinstance(getattr(model, "yaml", None), dict):
        model.yaml["nc"] = len(keep)
    return model


def save_ultralytics(model: Any, path: Path, train_args: dict[str, Any]) -> Path:
    """Write `model` as an Ultralytics checkpoint (what YOLO(path) loads); fp16 like Ultralytics' own."""
    import torch
    from ultralytics import __version__ as ultra_version

    ckpt = {"date": now(), "version": ultra_version, "epoch": -1, "best_fitness": None, "model": None,
            "ema": copy.deepcopy(model).half(), "updates": 0, "optimizer": None, "train_args": train_args,
            "train_metrics": None, "train_results": None}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def finetune_config(parent: dict[str, Any], weights: str, overrides: dict[str, Any]) -> DetectTrainConfig:
    from pydantic import ValidationError

    values = {**parent, **FINETUNE, "data": "", "model": weights,
              **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return DetectTrainConfig(**values)
    except ValidationError as exc:
        raise UserError(f"invalid option {describe_validation(exc, key=as_option, show_input=False)}") from None


def resolve_group(group: str, groups_file: str | Path | None, info: dict[str, Any],
                  source_names: list[str]) -> list[str]:
    """The group's class names from --groups FILE or the groups the run's data file declares."""
    root = info.get("source_classes") or info["classes"]
    groups = load_groups(groups_file, root) if groups_file else check_groups(info.get("groups") or {}, root, "run")
    if group not in groups:
        from ..errors import unknown_name

        if not groups:
            raise UserError("the run's data declares no groups; pass --groups FILE (YAML: group name -> class names)")
        raise unknown_name("group", group, groups)
    members = groups[group]
    missing = [c for c in members if c not in source_names]
    if missing:
        raise UserError(f"group {group!r} has classes {missing} that the source model does not detect "
                        f"(it has {source_names}); specialize from a run that holds them")
    return members


@dataclass
class SpecialistPlan:
    """Everything a specialist run is made of, resolved and checked before its directory is touched."""

    run: Path
    group: str
    out: Path
    gen_info: dict[str, Any]
    src_dir: Path
    src_info: dict[str, Any]
    members: list[str]
    keep: list[int]
    class_ids: list[int]
    cfg: DetectTrainConfig
    imgsz: int
    parent_ckpt: Path
    parent_sha256: str


def plan_specialist(run: str | Path, group: str, out: str | Path, groups_file: str | Path | None = None,
                    source: str | Path | None = None, freeze: int | None = None, epochs: int | None = None,
                    lr0: float | None = None, batch: int | None = None, device: str | None = None,
                    seed: int | None = None) -> SpecialistPlan:
    run = Path(run).resolve()
    out = Path(out).resolve()
    gen_info = open_detect_run(run)
    src_dir = Path(source).resolve() if source else run
    src_info = open_detect_run(src_dir) if source else gen_info
    if gen_info["kind"] != "train":
        raise UserError(f"{run} is a specialist; pass its generalist as RUN and {run} with --from")
    if source and src_info.get("generalist") != str(run):
        raise UserError(f"--from {src_dir} was not specialized from {run}; pass the generalist it came from")
    src_names = list(src_info["classes"])
    members = resolve_group(group, groups_file, gen_info, src_names)
    keep = [src_names.index(c) for c in members]
    overrides = {"freeze": freeze, "epochs": epochs, "lr0": lr0, "batch": batch, "device": device, "seed": seed}
    parent_ckpt = src_dir / "weights" / "best.pt"
    cfg = finetune_config(gen_info["config"], str(parent_ckpt), overrides)
    cfg = cfg.model_copy(update={"data": str(out / "data" / "data.yaml")})  # what derive_dataset writes
    return SpecialistPlan(run, group, out, gen_info, src_dir, src_info, members, keep,
                          [src_info["class_ids"][k] for k in keep], cfg, int(src_info["arch"]["input_size"][0]),
                          parent_ckpt, sha256_file(parent_ckpt))


def check_specialist_out(plan: SpecialistPlan, resume: bool, skip_finished: bool = False) -> dict[str, Any] | None:
    """Check plan.out; return the run.json there to resume (or, with `skip_finished`, a finished one to skip), or
    None for a fresh start. Without `resume` an existing run is refused, as for detection training; with it, the
    run must have been started from the same parent (same checkpoint hash), group and options."""
    out = plan.out
    info = existing_run(out, may_hold=(".lock", "data"))  # data: killed while deriving its data (before run.json)
    if info is None:
        return None
    if info.get("kind") != "specialize":
        raise UserError(f"{out} holds a detection generalist, not a specialist; choose another --out")
    finished = info.get("status") == "complete"
    if finished and not resume:
        raise UserError(f"{out} already holds a finished run; choose another --out")
    parent = info.get("parent") or {}
    was = {"generalist": info.get("generalist"), "group": info.get("group"), "parent": parent.get("run"),
           "classes": info.get("classes")}
    now_ = {"generalist": str(plan.run), "group": plan.group, "parent": str(plan.src_dir), "classes": plan.members}
    diffs = [k for k in was if was[k] != now_[k]] + config_changes(info, plan.cfg)
    state = "a finished" if finished else "an interrupted"
    if diffs:
        raise UserError(f"{out} holds {state} specialist with other {', '.join(diffs)}; rerun with the options it was "
                        "started with, or choose another --out")
    if parent.get("checkpoint_sha256") != plan.parent_sha256:
        raise UserError(f"the parent checkpoint {plan.parent_ckpt} changed since {out} was started (sha256 differs); "
                        "specialize it into another --out")
    if finished:
        if skip_finished:
            return info
        raise UserError(f"{out} already holds a finished run; nothing to resume; choose another --out")
    if not resume:
        raise UserError(f"{out} holds an interrupted run; pass --resume or choose another --out")
    return info


def specialize_detect(run: str | Path, group: str, out: str | Path, groups_file: str | Path | None = None,
                      source: str | Path | None = None, freeze: int | None = None, epochs: int | None = None,
                      lr0: float | None = None, batch: int | None = None, device: str | None = None,
                      seed: int | None = None, resume: bool = False, reporter: Reporter = NULL) -> dict[str, Any]:
    """Extract a specialist for `group` from `source` (default: `run`) and fine-tune it with the generalist's recipe
    and FINETUNE's defaults, whatever options `source` had; `resume` continues an interrupted one in `out`.
    Returns run.json."""
    return specialize_detect_groups(run, [group], out, single=True, groups_file=groups_file, source=source,
                                    freeze=freeze, epochs=epochs, lr0=lr0, batch=batch, device=device, seed=seed,
                                    resume=resume, reporter=reporter)[0]


def specialize_detect_groups(run: str | Path, groups: list[str], out: str | Path, single: bool = False,
                             resume: bool = False, reporter: Reporter = NULL, **options: Any) -> list[dict[str, Any]]:
    """One specialist per group into out/<group> (into `out` itself when `single`), one after another. Every group
    and output directory is checked first. With `resume`, finished groups are skipped (their run.json is returned
    with "skipped": true), an interrupted one continues and groups not started yet start."""
    out = Path(out).resolve()
    if single and len(groups) != 1:
        raise UserError("writing into --out itself needs exactly one group; pass --group NAME")
    plans = [plan_specialist(run, g, out if single else out / g, **options) for g in groups]
    priors = [check_specialist_out(p, resume, skip_finished=not single) for p in plans]
    if resume:
        if all(prior is None and not (p.out / ".lock").exists() for p, prior in zip(plans, priors, strict=True)):
            where = out if single else f"{out} (for groups {', '.join(groups)})"
            raise UserError(f"nothing to resume: {where} holds no specialist run; drop --resume to start a new one")
        if all(prior is not None and prior.get("status") == "complete" for prior in priors):
            raise UserError(f"nothing to resume: every group's specialist in {out} is finished; choose another --out")
    results = []
    for plan, prior in zip(plans, priors, strict=True):
        if prior is not None and prior.get("status") == "complete":
            log.info("%s specialist in %s finished earlier: skipped", plan.group, plan.out)
            results.append({**prior, "skipped": True})
        else:
            results.append(run_specialist(plan, prior, reporter))
    return results


def run_specialist(plan: SpecialistPlan, prior: dict[str, Any] | None, reporter: Reporter = NULL) -> dict[str, Any]:
    """Derive the group's data, extract (checked exact) and fine-tune into plan.out, or continue `prior` there."""
    out, cfg, group, members = plan.out, plan.cfg, plan.group, plan.members
    with DirLock(out):
        sub_groups = {g: m for g, m in (plan.gen_info.get("groups") or {}).items() if set(m) <= set(members)}
        data_path, counts = derive_dataset(load_data(plan.src_info["data"]), plan.keep, members, out / "data",
                                           sub_groups, group=group)
        if prior is not None and prior.get("images") not in (None, counts):
            raise UserError(f"the source data changed since {out} was started ({prior['images']} images, now "
                            f"{counts}); specialize into another --out")
        if prior is None:
            src_info = plan.src_info
            lineage = [*(src_info.get("parent") or {}).get("lineage", [str(plan.src_dir)])]
            if lineage[-1] != str(plan.src_dir):
                lineage.append(str(plan.src_dir))
            parent = {"run": str(plan.src_dir), "checkpoint_sha256": plan.parent_sha256, "kind": src_info["kind"],
                      "lineage": lineage}
            info = run_info("specialize", load_data(data_path), cfg, plan.imgsz, members, plan.class_ids,
                            plan.gen_info["source_classes"], sub_groups, plan.gen_info["arch"]["name"], parent=parent,
                            group=group, init="extract", images=counts, generalist=str(plan.run))
        else:
            info = resumed_info(prior, cfg)
        write_json(out / RUN_FILE, info)
        init_pt = out / "weights" / "init.pt"
        if "extraction_check" not in info or not init_pt.is_file():  # killed before the check was recorded: redo
            info["extraction_check"] = extract_to(plan.parent_ckpt, plan.keep, members, init_pt, data_path,
                                                  plan.imgsz, out)
            write_json(out / RUN_FILE, info)
        resuming = prior is not None and has_checkpoint(out)
        model = None if resuming else yolo(out, init_pt)
        log.info("%s %s specialist (%d classes, %s images) in %s", "resuming" if resuming else "fine-tuning", group,
                 len(members), counts, out)
        result = ultra_fit(model, out, data_path, cfg, plan.imgsz, reporter, resume=resuming)
        info.update(status="complete", finished=now(), metrics=result)
        write_json(out / RUN_FILE, info)
    return info


def extract_to(parent_ckpt: Path, keep: list[int], names: list[str], path: Path, data_path: Path, imgsz: int,
               run_dir: Path) -> dict[str, Any]:
    """Slice the parent's head, save it, and check on a random input that the saved model computes exactly the
    parent's outputs at the kept channels (the extraction invariant)."""
    ultralytics_env(run_dir)
    from ultralytics.nn.tasks import load_checkpoint

    parent, ckpt = load_checkpoint(str(parent_ckpt))
    spec = slice_detect(parent, keep, names)
    train_args = {**(ckpt.get("train_args") or {}), "data": str(data_path), "imgsz": imgsz}
    save_ultralytics(spec, path, train_args)
    loaded, _ = load_checkpoint(str(path))
    diff = head_difference(parent, loaded, keep, imgsz)
    exact = diff["boxes_max_abs"] == 0.0 and diff["scores_max_abs"] == 0.0
    if not exact:
        if diff["boxes_max_abs"] != 0.0 or diff["scores_max_abs"] > 1e-5:
            from ..errors import EdgespecError

            raise EdgespecError(f"extracted specialist differs from its parent ({diff}); please report this")
        log.warning("extracted head equals the parent's to %.2g, not bit-exactly: this PyTorch build sums the "
                    "narrower class conv in another order", diff["scores_max_abs"])
    return {**diff, "exact": exact}


def raw_head_outputs(model: Any, x: Any) -> dict[str, Any]:
    """Raw Detect outputs (box distribution, class logits) in eval mode, fp32 on the CPU."""
    import torch

    model = model.float().eval().cpu()
    with torch.no_grad():
        out = model(x)
    preds = out[1] if isinstance(out, tuple) else out
    if "one2many" in preds:
        preds = preds["one2many"]
    return {"boxes": preds["boxes"], "scores": preds["scores"], "decoded": out[0] if isinstance(out, tuple) else None}


def head_difference(parent: Any, spec: Any, keep: list[int], imgsz: int, seed: int = 0) -> dict[str, float]:
    """Largest differences between the parent's and the specialist's raw head outputs on random inputs.

    A batch of 16 keeps PyTorch on its oneDNN convolution for any thread count: its single-thread fallback for 1x1
    convs at small batches sums a one-channel conv in another order than a wider one (differences ~4e-6)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(16, 3, imgsz, imgsz, generator=g)
    a, b = raw_head_outputs(parent, x), raw_head_outputs(spec, x)
    return {"boxes_max_abs": float((a["boxes"] - b["boxes"]).abs().max()),
            "scores_max_abs": float((a["scores"][:, keep] - b["scores"]).abs().max())}
