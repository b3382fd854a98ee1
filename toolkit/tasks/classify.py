"""Classification: torchvision classifiers and smallcnn, trained by toolkit.train, specialized by toolkit.specialize."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporters.formats import DEFAULT_FORMATS

from ..errors import UserError, build_config
from ..progress import NULL, Reporter
from .base import Task


class ClassifyTask(Task):
    name = "classify"
    metric = "top1"
    metric_label = "top-1"
    label = "classification"
    default_formats = DEFAULT_FORMATS
    checkpoint_file = "checkpoints/best.pt"
    partition_methods = ("confusion", "weights", "random", "data")

    def open_run(self, path: str | Path) -> dict[str, Any]:
        from ..runs import Run

        return Run.open(path).info

    def train(self, options: dict[str, Any], out: Path, resume: bool, reporter: Reporter = NULL) -> list[str]:
        from ..train import TrainConfig, train

        cfg = build_config(TrainConfig, **options)
        result = train(cfg, out, resume=resume, reporter=reporter)
        if "test" not in result:  # a non-main rank under torchrun
            return []
        return [f"{out}: best val top-1 {result['best_val_acc']:.4f}, test top-1 {result['test']['top1']:.4f} "
                f"({result['test']['images']} images)"]

    def evaluate(self, run: Path, which: str, split: str | None, device: str) -> list[str]:
        from ..evaluate import evaluate_run
        from ..runs import Run
        from ..train import resolve_device

        split = split or "test"
        if split not in ("test", "val", "train"):
            raise UserError(f"unknown split {split!r}; choose test, val or train")
        r = Run.open(run)
        result = evaluate_run(r, which, split, device=str(resolve_device(device)))
        width = max(len(c) for c in r.classes)
        return [f"{run} ({r.kind}, {len(r.classes)} classes): top-1 {result['top1']:.4f} on {result['images']} "
                f"{split} images",
                *(f"  {name:<{width}}  {'n/a' if acc is None else f'{acc:.4f}'}"
                  for name, acc in result["per_class"].items()),
                f"confusion matrix: {r.path / f'confusion-{split}.csv'} and .png"]

    def pipeline_sections(self) -> tuple[type, type]:
        from ..specialize import SpecializeConfig
        from ..train import TrainConfig

        return TrainConfig, SpecializeConfig

    def pipeline_train(self, cfg: Any, out: Path, root: Path, resume: bool, reporter: Reporter = NULL) -> None:
        from ..train import train

        train(cfg, out, resume=resume, reporter=reporter)

    def _partition(self, run: Path, section: Any) -> dict[str, list[str]]:
        from ..runs import Run
        from ..specialize import partition

        return partition(Run.open(run), section.method, section.groups, section.group_size, seed=section.seed)

    def pipeline_specialize(self, run: Path, groups: dict[str, list[str]], groups_file: Path, out: Path, cfg: Any,
                            resume: bool, reporter: Reporter = NULL) -> None:
        from ..specialize import specialize

        specialize(run, groups, out, cfg, resume=resume, reporter=reporter)

    def specialize(self, run: Path, out: Path, *, groups_file: Path | None, group: str | None,
                   options: dict[str, Any], from_run: Path | None, resume: bool,
                   reporter: Reporter = NULL) -> list[str]:
        from ..runs import Run
        from ..specialize import SpecializeConfig, load_groups
        from ..specialize import specialize as run_specialize
        from ..specialize.groups import select_group

        cfg = build_config(SpecializeConfig, **options)
        r = Run.open(run)
        target, proposed = None, None
        if cfg.target_images is not None:
            from ..specialize.target import propose_for_target

            target, proposed = propose_for_target(r, cfg, out, groups_file is None and group is None)
            if proposed is not None:  # OUT/groups.yaml and the specialist in OUT/target/
                groups_file = proposed
        if groups_file is None:
            raise UserError("pass --groups FILE (write one with `edgespec partition RUN --out FILE` or by hand)")
        chosen = select_group(load_groups(groups_file, r.classes), group)
        results = run_specialize(r, chosen, out, cfg, from_run=from_run, single=group is not None,
                                 resume=resume, reporter=reporter, target=target)
        lines = []
        if target is not None and "proposed_group" in target.record:
            lines.append(f"proposed group {', '.join(target.record['proposed_group'])} (from {target.record['count']} "
                         f"target images; groups file {groups_file}: edit it and pass --groups to change it)")
        return lines + [f"{name}: {res['run']} best val top-1 {res['best_val_acc']:.4f}, test top-1 "
                        f"{res['test']['top1']:.4f} ({res['test']['images']} images)"
                        for name, res in zip(chosen, results, strict=True) if "test" in res]  # no "test": not rank 0

    def compress(self, runs: list[Path], out: Path, options: dict[str, Any], resume: bool,
                 reporter: Reporter = NULL, measure: Any = None) -> list[str]:
        from ..compress import CompressConfig
        from ..compress import compress as run_compress

        cfg = build_config(CompressConfig, **{k: v for k, v in options.items() if v is not None})
        lines = []
        for res in run_compress(runs, out, cfg, resume=resume, reporter=reporter, measure=measure):
            c = res["compression"]
            speed = (f"; measured {c['measured_speedup']:.2f}x faster on {c['speedup_device']}"
                     if c.get("measured_speedup") else "")
            lines.append(f"{res['run']}: MACs {c['macs_before']:,} -> {c['macs_after']:,} ({c['macs_ratio']:.2f}), "
                         f"params {c['params_before']:,} -> {c['params_after']:,} ({c['params_ratio']:.2f}){speed}; "
                         f"test top-1 {res['test']['top1']:.4f} ({res['test']['images']} images)")
        return lines
