"""`edgespec evaluate` on a detection run: mAP50-95, mAP50 and per-class AP on the run's own validation images.

Validation goes through Ultralytics' validator with one class per box, as `edgespec bench` measures
(single_label_validator); the validator's standard multi-label figures are kept beside them. A generalist
is evaluated on its run view (run_dir/data, the whole dataset), a specialist on its derived group dataset, so the
label caches Ultralytics writes stay inside the run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import read_yaml, write_json, write_text
from .dataset import load_data, run_view
from .offline import SAFE_ARGS, keep_threads, yolo
from .runs import device_arg, open_detect_run

log = logging.getLogger(__name__)

SPLITS = ("val", "train")


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


def validate(run_dir: Path, weights: Path, data_yaml: Path, imgsz: int, name: str, batch: int = 16,
             device: str = "cpu", multilabel_only: bool = False) -> dict[str, Any]:
    """Ultralytics' validation of `weights` on the val split of `data_yaml`: one class per box (with per-class AP
    and instance counts), and the multi-label figures ("..._multilabel"). Outputs go to run_dir/ultra/<name>."""
    model = yolo(run_dir, weights)
    args = {**SAFE_ARGS, "data": str(data_yaml), "imgsz": imgsz, "batch": batch, "device": device_arg(device),
            "project": str(Path(run_dir) / "ultra"), "name": name, "save_json": False, "half": False, "rect": False}
    out: dict[str, Any] = {}
    with keep_threads():
        multi = model.val(**args)
        out.update(map50_95_multilabel=float(multi.box.map), map50_multilabel=float(multi.box.map50))
        if multilabel_only:
            return out
        single = model.val(validator=single_label_validator(), **args)
    box = single.box
    names = [model.names[i] for i in range(len(model.names))]
    counts = [int(n) for n in single.nt_per_class] if single.nt_per_class is not None else [0] * len(names)
    per_class: dict[str, Any] = {c: {"ap50_95": None, "ap50": None, "instances": counts[i]}
                                 for i, c in enumerate(names)}
    for j, c in enumerate(box.ap_class_index):
        if counts[int(c)]:  # a class with no instance has no AP (Ultralytics reports 0 for its false positives)
            per_class[names[int(c)]].update(ap50_95=float(box.ap[j]), ap50=float(box.ap50[j]))
    return {"map50_95": float(box.map), "map50": float(box.map50), **out, "instances": sum(counts),
            "per_class": per_class}


def run_data(run_dir: Path, info: dict[str, Any], split: str) -> Path:
    """A data file in the run whose val split is `split` of the run's data (view or derived group data)."""
    import yaml

    data_yaml = run_dir / "data" / "data.yaml"
    if not data_yaml.is_file():
        if info["kind"] != "train":
            raise UserError(f"{run_dir} has lost its derived dataset ({data_yaml}); specialize it again")
        data_yaml, _ = run_view(load_data(info["data"]), run_dir / "data")  # a run from before views existed
    if split == "val":
        return data_yaml
    doc = read_yaml(data_yaml, "run data file", f"specialize or train {run_dir} again")  # bounded like every config
    path = run_dir / "data" / f"eval-{split}.yaml"
    write_text(path, yaml.safe_dump({**doc, "val": doc[split]}, sort_keys=False))
    return path


def evaluate_detect(run: str | Path, which: str = "best", split: str = "val", device: str = "cpu",
                    save: bool = True) -> dict[str, Any]:
    """mAP50-95, mAP50 and per-class AP of a detection run's `which` weights on its `split` images; written
    atomically to RUN/eval-<split>.json (as classification's evaluate) unless `save` is False."""
    run_dir = Path(run).resolve()
    info = open_detect_run(run_dir)
    if which not in ("best", "last"):
        raise UserError(f"unknown checkpoint {which!r}; choose best or last")
    if split not in SPLITS:
        raise UserError(f"detection runs have no {split!r} split; choose val or train")
    weights = run_dir / "weights" / f"{which}.pt"
    if not weights.is_file():
        raise UserError(f"{weights} is missing; evaluate --checkpoint best, or train the run again")
    data_yaml = run_data(run_dir, info, split)
    images = len(load_data(data_yaml).image_files("val"))
    imgsz = int(info["arch"]["input_size"][0])
    log.info("evaluating %s on %d %s images", weights, images, split)
    m = validate(run_dir, weights, data_yaml, imgsz, f"eval-{split}", device=device)
    result = {"task": "detect", "split": split, "checkpoint": which, "images": images, "kind": info["kind"],
              "group": info.get("group"), "classes": info["classes"], "class_ids": info["class_ids"],
              "metric": "mAP50-95 (box), one class per box", **m}
    if save:
        write_json(run_dir / f"eval-{split}.json", result)
    return result
