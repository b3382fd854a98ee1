"""`edgespec specialize`: one specialist run per group, trained with toolkit.train.fit from its parent.

A specialist run is an ordinary run (run.json kind "specialize"): `edgespec evaluate` and export work on it.
It records its group, how it was initialised, the generalist class ids of its outputs (in output order),
its parent run with the sha256 of the parent checkpoint, and the lineage from the generalist down.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer, model_validator

from ..errors import UserError
from ..progress import NULL, Reporter
from ..runs import Run
from ..train.config import TrainConfig

if TYPE_CHECKING:
    from .target import TargetPlan

log = logging.getLogger(__name__)

INITS = ("extract", "new-head", "head-first", "suppress")
FRESH_HEAD_LR_MULT = 10.0  # a random head has everything to learn in a short schedule (DAFT: head lr >> backbone)


class SpecializeConfig(TrainConfig):
    """The generalist's recipe family with a short, gentle schedule (measured: benchmarks/scripts/ablation.py).

    data, model, image_size, pretrained and weights always come from the parent run.
    """

    init: Literal["extract", "new-head", "head-first", "suppress"] = Field(
        "extract", description="extract: slice the parent's head; new-head / head-first / suppress: baselines")
    bn_convert: bool | None = Field(None, description="DAFT batch-norm conversion first (default: if the model "
                                                      "has batch-norm)")
    head_epochs: int = Field(1, ge=1, description="head-first: epochs that train the head alone")
    keep_start: bool = Field(True, description="keep the starting model (for extract: the generalist restricted to "
                                               "the group) unless a fine-tuned epoch validates better")
    epochs: int = Field(5, gt=0, description="fine-tuning epochs")
    lr: float = Field(3e-4, gt=0, description="peak (backbone) learning rate")
    head_lr_mult: float | None = Field(None, gt=0, description="head lr = lr * this (default: 10 for a new head, "
                                                              "1 for an extracted one)")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up before the cosine decay")
    # toward a deployment site (toolkit.specialize.target); left out of model_dump while unset, so the run files and
    # pipeline stage hashes of configs without them stay what they were
    target_images: str | None = Field(None, description="folder of unlabelled images from the deployment site")
    sampling: Literal["uniform", "importance"] | None = Field(
        None, description="importance: draw training images by the target's cluster histogram (default with "
                          "target_images)")
    bn_target: Literal["target", "group", "adapt"] | None = Field(
        None, description="target: DAFT conversion on the target images (eval outputs kept); group: on the group's "
                          "training images; adapt: group conversion, then every saved checkpoint's statistics "
                          "re-estimated on the target images (AdaBN, eval outputs move to the target; the default "
                          "with target_images, measured in benchmarks/scripts/target_domain.py)")
    clusters: int | None = Field(None, ge=2, description="k-means clusters for importance sampling (default 8)")
    min_share: float | None = Field(None, gt=0, le=1, description="proposed group: classes predicted on at least "
                                                                 "this share of the target images (default 0.01)")

    @model_validator(mode="after")
    def _target_defaults(self) -> SpecializeConfig:
        if self.target_images is None:
            given = [k for k in TARGET_KEYS[1:] if getattr(self, k) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} target_images "
                                 "(--target-images DIR)")
            return self
        for key, default in (("sampling", "importance"), ("bn_target", "adapt"), ("clusters", 8),
                             ("min_share", 0.01)):
            if getattr(self, key) is None:
                setattr(self, key, default)
        return self

    @model_serializer(mode="wrap")
    def _drop_unset_target(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        if self.target_images is None:
            for key in TARGET_KEYS:
                data.pop(key, None)
        return data


TARGET_KEYS = ("target_images", "sampling", "bn_target", "clusters", "min_share")


def resolve_group(run: Run, parent: Run, names: list[str]) -> tuple[list[int], list[int]]:
    """Generalist ids of `names` (in the given order) and their output positions in `parent`."""
    by_name = {n: cid for n, cid in zip(run.classes, run.class_ids, strict=True)}
    ids = [by_name[n] for n in names]
    missing = [n for n, cid in zip(names, ids, strict=True) if cid not in parent.class_ids]
    if missing:
        raise UserError(f"{parent.path} does not serve {', '.join(missing[:5])}; a gradual specialist's classes must "
                        "be a subset of the run it starts from (--from)")
    return ids, [parent.class_ids.index(cid) for cid in ids]


def check_parent(run: Run, parent: Run) -> None:
    if not parent.checkpoint_path("best").is_file() or not parent.complete:
        raise UserError(f"{parent.path} is not a complete run (no finished checkpoints/best.pt); finish it with "
                        "--resume first")
    if parent.path.resolve() != run.path.resolve():
        if parent.kind != "specialize":
            raise UserError(f"--from {parent.path} is a {parent.kind} run; --from takes a specialist run")
        if parent.info["data"] != run.info["data"]:
            raise UserError(f"--from {parent.path} was trained on {parent.info['data']!r}, not {run.info['data']!r}")
        if _root(parent) != _root(run):
            raise UserError(f"--from {parent.path} does not descend from {run.path}; pass the generalist it came "
                            "from as RUN")


def _root(run: Run) -> str:
    lineage = (run.info.get("parent") or {}).get("lineage") or []
    return lineage[0] if lineage else str(run.path.resolve())


def specialize_group(run: Run, name: str, classes: list[str], out: str | Path, cfg: SpecializeConfig, *,
                     parent: Run | None = None, resume: bool = False, reporter: Reporter = NULL,
                     target: TargetPlan | None = None) -> dict[str, Any]:
    """Train the specialist for one group into `out`; `parent` (default: `run`) is where it starts."""
    import torch
    from torch.utils.data import DataLoader

    from ..io import sha256_file
    from ..models import has_batchnorm
    from ..train.loop import FitHooks, fit, resolve_device
    from .bn import convert_batchnorm
    from .extract import drop_suppressed, extract, suppress, with_new_head

    parent = parent or run
    check_parent(run, parent)
    ids, positions = resolve_group(run, parent, classes)
    out = Path(out)
    if (out / "run.json").is_file() and not resume and int(os.environ.get("RANK", "0")) == 0:
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    device = resolve_device(cfg.device)
    model = parent.model("best")
    has_bn = has_batchnorm(model)
    if cfg.bn_convert and not has_bn:
        raise UserError(f"--bn-convert: {parent.info['arch']['name']} has no batch-norm layers; use --no-bn-convert")
    if cfg.init == "head-first" and cfg.head_epochs >= cfg.epochs:
        raise UserError(f"--head-epochs {cfg.head_epochs} leaves no epoch to fine-tune all layers; "
                        f"use fewer than --epochs {cfg.epochs}")
    arch = dict(parent.info["arch"], num_classes=len(ids))
    fresh_head = cfg.init in ("new-head", "head-first")
    cfg = cfg.model_copy(update={
        "data": run.info["data"], "model": arch["name"], "image_size": arch["input_size"][0], "pretrained": False,
        "weights": None, "bn_convert": has_bn if cfg.bn_convert is None else cfg.bn_convert,
        "head_lr_mult": cfg.head_lr_mult or (FRESH_HEAD_LR_MULT if fresh_head else 1.0)})
    bundle = parent.data().restrict(ids)

    torch.manual_seed(cfg.seed)
    if cfg.init == "extract":
        model = extract(model, positions)
    elif cfg.init in ("new-head", "head-first"):
        model = with_new_head(model, len(ids))
    else:
        model = suppress(model, positions)
    if cfg.bn_convert:
        torch.manual_seed(cfg.seed)
        if target is not None and target.bn_target == "target":  # unlabelled images are enough for statistics
            loader = DataLoader(target.images, batch_size=cfg.batch_size)
        else:  # the augmented training batches fine-tuning will see, in a fixed order
            loader = DataLoader(bundle.dataset("train", train_transform=True), batch_size=cfg.batch_size)
        convert_batchnorm(model.to(device), loader, device)

    parent_ckpt = parent.checkpoint_path("best")
    lineage = list((parent.info.get("parent") or {}).get("lineage") or []) + [str(parent.path.resolve())]
    from ..runs import new_run_info

    info = new_run_info("specialize", cfg.model_dump(), bundle, arch, parent={
        "run": str(parent.path.resolve()), "checkpoint": "best", "checkpoint_sha256": sha256_file(parent_ckpt),
        "kind": parent.kind, "lineage": lineage})
    info.update(group=name, init=cfg.init, bn_convert=cfg.bn_convert)
    if target is not None:
        info["target"] = dict(target.record, group=classes)
    export = drop_suppressed if cfg.init == "suppress" else None
    if target is not None and target.bn_target == "adapt":
        export = _adapt_on(target.images, cfg.batch_size, device, then=export)
    hooks = FitHooks(head_only_epochs=cfg.head_epochs if cfg.init == "head-first" else 0,
                     export=export, validate_start=cfg.keep_start,
                     train_sampler=target.sampler_factory(bundle) if target is not None else None)
    log.info("specializing %s: %d classes from %s (init %s, bn-convert %s)", name, len(ids), parent.path, cfg.init,
             cfg.bn_convert)
    return fit(model, bundle, cfg, out, info, resume=resume, reporter=reporter, hooks=hooks)


def _adapt_on(images, batch_size: int, device, then=None):
    """FitHooks.export for --bn-target adapt: each saved model with BN statistics of the target `images`;
    validation (and resume, through the checkpoint's train_model) keep the unadapted model."""
    from torch.utils.data import DataLoader

    from .bn import adapt_statistics

    def export(model):
        model = then(model) if then is not None else model
        return adapt_statistics(model, DataLoader(images, batch_size=batch_size), device)
    return export


def specialize(run: str | Path | Run, groups: dict[str, list[str]], out: str | Path, cfg: SpecializeConfig, *,
               from_run: str | Path | None = None, single: bool = False, resume: bool = False,
               reporter: Reporter = NULL, target: TargetPlan | None = None) -> list[dict[str, Any]]:
    """All `groups`, one after another: into out/<group>/, or into `out` itself when `single`."""
    run = run if isinstance(run, Run) else Run.open(run)
    parent = Run.open(from_run) if from_run is not None else run
    check_parent(run, parent)
    if single and len(groups) != 1:
        raise UserError("writing into --out itself needs exactly one group; pass --group NAME")
    for classes in groups.values():  # every group is checked before the first one trains
        resolve_group(run, parent, classes)
    out = Path(out)
    results = []
    from ..train.distributed import init_distributed, shutdown
    from ..train.loop import resolve_device

    if target is None and cfg.target_images is not None:
        from .target import plan_target

        target = plan_target(run, cfg.target_images, cfg, resolve_device(cfg.device))

    dist_info = init_distributed(resolve_device(cfg.device).type)  # under torchrun: one process group for all groups
    try:
        for name, classes in groups.items():
            results.append(specialize_group(run, name, classes, out if single else out / name, cfg, parent=parent,
                                            resume=resume, reporter=reporter, target=target))
    finally:
        shutdown(dist_info)
    return results
