"""Bench detection specialists: `edgespec detect bench` is a thin alias of the generic `edgespec bench`
(benchmarks/, mAP50-95 and mAP50 through each runtime, see benchmarks/detect_rows.py) over an export directory;
without one, the specialists and their generalist are exported as ONNX first.

`val_map` runs Ultralytics' own validator (one class per box, as predict() deploys it, plus the standard multi-label
figures): the pipeline script uses it to cross-check the bench's mAP and for its compute-matched control.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..progress import NULL, Reporter
from .offline import SAFE_ARGS, keep_threads, yolo
from .train import open_detect_run

log = logging.getLogger(__name__)


def single_label_validator() -> type:
    """Ultralytics' DetectionValidator with predict()'s NMS: one class per box (its best), class-aware."""
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils import nms

    class SingleLabelValidator(DetectionValidator):
        def postprocess(self, preds: Any) -> list[dict[str, Any]]:
            out = nms.non_max_suppression(preds, self.args.conf, self.args.iou, multi_label=False,
                                          agnostic=self.args.single_cls or self.args.agnostic_nms,
                                          max_det=self.args.max_det, end2end=self.end2end)
            return [{"bboxes": x[:, :4], "conf": x[:, 4], "cls": x[:, 5], "extra": x[:, 6:]} for x in out]

    return SingleLabelValidator


def val_map(model: str | Path, data_yaml: Path, imgsz: int, work: Path, name: str, batch: int = 16,
            multilabel: bool = True) -> dict[str, float]:
    """mAP50-95 and mAP50 of a .pt or .onnx on a data file's val split: one class per box, and (`multilabel`)
    the validator's standard multi-label figures."""
    m = yolo(work, model)
    args = {**SAFE_ARGS, "data": str(data_yaml), "imgsz": imgsz, "batch": batch, "device": "cpu",
            "project": str(work / "ultra"), "name": name, "save_json": False, "half": False,
            "rect": False}  # rect pads 64 px images to 96: PyTorch would see other inputs than the fixed-size ONNX
    out = {}
    with keep_threads():
        metrics = m.val(validator=single_label_validator(), **args)
        out.update(map50_95=float(metrics.box.map), map50=float(metrics.box.map50))
        if multilabel:
            metrics = m.val(**args)
            out.update(map50_95_multilabel=float(metrics.box.map), map50_multilabel=float(metrics.box.map50))
    return out


def bench_detect(specialists: list[str | Path], out: str | Path, export_dir: str | Path | None = None,
                 devices: tuple[str, ...] | list[str] = ("host-cpu",), reporter: Reporter = NULL) -> dict[str, Any]:
    """Bench specialist runs against their generalist through `edgespec bench`; writes the four reports to `out`."""
    from benchmarks import BenchConfig, bench
    from exporters import export_runs
    from exporters.manifest import load_manifest

    if not specialists:
        raise UserError("no specialist run given; pass the runs written by `edgespec specialize` on a detection run")
    infos = [open_detect_run(s) for s in specialists]
    for s, info in zip(specialists, infos, strict=True):
        if info["kind"] != "specialize":
            raise UserError(f"{s} is a generalist; bench takes specialist runs (their generalist comes along)")
    out = Path(out).resolve()
    if export_dir is None:
        export_dir = out / "export"
        runs = list(dict.fromkeys([info["parent"]["lineage"][0] for info in infos] +
                                  [str(Path(s).resolve()) for s in specialists]))
        export_runs(runs, ["onnx"], export_dir, reporter=reporter)
    else:
        listed = {a["run"] for a in load_manifest(export_dir)["artifacts"]}
        missing = [str(s) for s in specialists if str(Path(s).resolve()) not in listed]
        if missing:
            raise UserError(f"{export_dir} holds no artifact of {missing[0]}; export it there first "
                            "(`edgespec export RUN --out DIR`) or drop --export")
    return bench(export_dir, out, BenchConfig(devices=list(devices)), reporter=reporter)
