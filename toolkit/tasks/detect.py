"""Detection: Ultralytics YOLO detectors, trained by its own trainer inside an edgespec run (toolkit/detect/)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ..errors import UserError, build_config
from ..progress import NULL, Reporter
from .base import Task

#: Formats a detection run exports to by default (bench, pipeline); onnx-int8 only when asked for.
DEFAULT_FORMATS = ("onnx", "onnx-fp16", "ort", "tensorrt-fp16")
ON_REQUEST = ("onnx-int8",)
#: Measured on the synthetic pipeline (yolo11n, 64 px, 40 epochs, 100 val images): ONNX Runtime static QDQ int8
#: (minmax, per-channel) of the whole graph took mAP50-95 from 0.374 to 0.000 (pixel boxes and [0, 1] scores share
#: one output tensor, hence one scale); with the head's decode kept float it measured 0.381 (onnx-int8 ships, gated).
#: TensorRT int8 of that graph was never measured (no TensorRT on the host that measured it), so it is refused.
REFUSED = {"tensorrt-int8": "tensorrt-int8 is not available for detection runs: its mAP was never measured "
                            "(whole-graph int8 measured mAP50-95 0.00); export onnx-int8 (head decode in float, "
                            f"mAP-gated) or {', '.join(DEFAULT_FORMATS)}"}


class DetectTask(Task):
    name = "detect"
    metric = "map50_95"
    metric_label = "mAP50-95"
    label = "detection"
    default_formats = DEFAULT_FORMATS
    exportable_formats = DEFAULT_FORMATS + ON_REQUEST
    refused_formats = REFUSED
    bundled = False  # the device runner has no letterbox, NMS or mAP
    checkpoint_file = "weights/best.pt"
    min_group_size = 1  # one class branch of the head
    partition_methods = ("data",)  # the data file's groups (or named groups): no confusion partitioning yet

    def open_run(self, path: str | Path) -> dict[str, Any]:
        from ..detect.runs import open_detect_run

        return open_detect_run(path)

    def train(self, options: dict[str, Any], out: Path, resume: bool, reporter: Reporter = NULL) -> list[str]:
        """Ultralytics' trainer on a YOLO data.yaml; the options `edgespec train --task detect` maps onto it."""
        from ..detect.config import DetectTrainConfig
        from ..detect.train import train_detect

        data, model = options["data"], options["model"]
        if not str(data).endswith((".yaml", ".yml")):
            raise UserError(f"--task detect needs --data DATA.yaml (a YOLO data file), not {data!r}; "
                            "`edgespec data synth-detect --out DIR` makes one")
        cfg = build_config(DetectTrainConfig, data=data, model="yolo11n.yaml" if model == "smallcnn" else model,
                           epochs=options["epochs"], batch=options["batch_size"], imgsz=options["image_size"],
                           device=options["device"], seed=options["seed"], workers=options["workers"] or 0)
        info = train_detect(cfg, out, resume=resume, reporter=reporter)
        m = info["metrics"]["val"]
        return [f"{out}: {info['arch']['name']} on {len(info['classes'])} classes, {info['metrics']['epochs']} "
                f"epochs, val mAP50-95 {m['map50_95']:.4f}, mAP50 {m['map50']:.4f}"]

    def evaluate(self, run: Path, which: str, split: str | None, device: str) -> list[str]:
        from ..detect.evaluate import evaluate_detect
        from ..io import DirLock

        split = split or "val"
        held = DirLock(run, "run directory") if Path(run).is_dir() else contextlib.nullcontext()
        with held:  # its eval files are the run's: a process training it holds the lock
            r = evaluate_detect(run, which, split, device=device)
        what = f"{r['kind']}{' ' + r['group'] if r['group'] else ''}, {len(r['classes'])} classes"
        width = max(len(c) for c in r["classes"])
        lines = [f"{run} (detect {what}): mAP50-95 {r['map50_95']:.4f}, mAP50 {r['map50']:.4f} on {r['images']} "
                 f"{split} images ({r['instances']} objects); per class AP50-95 / AP50:"]
        for name, c in r["per_class"].items():
            ap = "n/a (no objects)" if c["ap50_95"] is None else f"{c['ap50_95']:.4f} / {c['ap50']:.4f}"
            lines.append(f"  {name:<{width}}  {ap}  ({c['instances']} objects)")
        return [*lines, f"saved: {Path(run) / f'eval-{split}.json'}"]

    def pipeline_sections(self) -> tuple[type, type]:
        from ..detect.config import DetectSpecializeConfig, DetectTrainConfig

        return DetectTrainConfig, DetectSpecializeConfig

    def pipeline_train(self, cfg: Any, out: Path, root: Path, resume: bool, reporter: Reporter = NULL) -> None:
        """`data: synth-detect[:train=N,val=N,size=N,...]` is generated into ROOT/data first (deterministic)."""
        from ..detect.synth import resolve_synth
        from ..detect.train import train_detect

        data = resolve_synth(cfg.data, root / "data")
        train_detect(cfg.model_copy(update={"data": str(data)}), out, resume=resume, reporter=reporter)

    def pipeline_specialize(self, run: Path, groups: dict[str, list[str]], groups_file: Path, out: Path, cfg: Any,
                            resume: bool, reporter: Reporter = NULL) -> None:
        from ..detect.specialize import specialize_detect_groups

        specialize_detect_groups(run, list(groups), out, resume=resume, reporter=reporter, groups_file=groups_file,
                                 freeze=cfg.freeze, epochs=cfg.epochs, lr0=cfg.lr, batch=cfg.batch_size,
                                 device=cfg.device, seed=cfg.seed)

    def specialize(self, run: Path, out: Path, *, groups_file: Path | None, group: str | None,
                   options: dict[str, Any], from_run: Path | None, resume: bool,
                   reporter: Reporter = NULL) -> list[str]:
        """One specialist per group of the file (default: the data file's groups) in OUT/<group>, or --group into
        OUT itself; --resume skips finished groups and continues an interrupted one."""
        from ..detect.dataset import load_groups
        from ..detect.runs import open_detect_run
        from ..detect.specialize import specialize_detect_groups

        if options.get("target_images") is not None:
            raise UserError("--target-images is for classifiers; a detection specialist is trained on its group's "
                            "labelled images (drop --target-images)")
        if options.get("init", "extract") != "extract":
            raise UserError(f"--init {options['init']} is for classifiers; detection specialists are extracted "
                            "(--init extract)")
        info = open_detect_run(run)
        chosen = [group] if group else list(load_groups(groups_file, info["classes"]) if groups_file
                                            else info["groups"])
        results = specialize_detect_groups(run, chosen, out, single=group is not None, resume=resume,
                                          reporter=reporter, groups_file=groups_file, source=from_run,
                                          epochs=options.get("epochs"), lr0=options.get("lr"),
                                          batch=options.get("batch_size"), device=options.get("device"),
                                          seed=options.get("seed"))
        lines = []
        for g, res in zip(chosen, results, strict=True):
            m = res["metrics"]["val"]
            skipped = " (finished earlier, skipped)" if res.get("skipped") else ""
            lines.append(f"{g}: {out if group else out / g}{skipped} val mAP50-95 {m['map50_95']:.4f}, "
                         f"mAP50 {m['map50']:.4f} ({res['images']['val']} images)")
        return lines

    #: `edgespec compress` options that only classifiers take (distillation, batch-norm handling).
    CLASSIFY_COMPRESS_OPTIONS = ("bn", "distill", "teacher", "temperature", "alpha")

    def compress(self, runs: list[Path], out: Path, options: dict[str, Any], resume: bool,
                 reporter: Reporter = NULL, measure: Any = None) -> list[str]:
        """Torch-Pruning on a YOLO run, fine-tuned by Ultralytics' trainer (toolkit/detect/compress.py)."""
        from ..compress.compress import SUFFIX
        from ..detect.compress import DetectCompressConfig, compress_detect

        given = [k for k in self.CLASSIFY_COMPRESS_OPTIONS if options.get(k) is not None]
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} is for classifiers; detection runs are fine-tuned by "
                            "Ultralytics' trainer without distillation (drop it)")
        if options.get("target_speedup") is not None:
            raise UserError("--target-speedup is for classifiers for now; give detection runs --macs-ratio or "
                            "--param-ratio")
        names = {"lr": "lr0", "batch_size": "batch"}
        values = {names.get(k, k): v for k, v in options.items() if v is not None and k not in
                  ("target_speedup", "speedup_device")}
        cfg = build_config(DetectCompressConfig, **values)
        targets = [out] if len(runs) == 1 else [out / f"{Path(r).resolve().name}{SUFFIX}" for r in runs]
        if len({t.name for t in targets}) < len(targets):
            raise UserError("two input runs share a directory name, which names their outputs; compress them into "
                            "different --out directories")
        lines = []
        for run, target in zip(runs, targets, strict=True):
            res = compress_detect(run, target, cfg, resume=resume, reporter=reporter)
            c, t = res["compression"], res["test"]
            lines.append(f"{res['run']}: MACs {c['macs_before']:,} -> {c['macs_after']:,} ({c['macs_ratio']:.2f}), "
                         f"params {c['params_before']:,} -> {c['params_after']:,} ({c['params_ratio']:.2f}); val "
                         f"mAP50-95 {t['map50_95']:.4f}, mAP50 {t['map50']:.4f} ({t['images']} images)")
        return lines
