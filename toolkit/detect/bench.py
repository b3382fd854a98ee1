"""Bench detection specialists against their generalist: mAP50-95 and mAP50 through Ultralytics' validator on
the group's validation images, for the PyTorch checkpoint and the ONNX artifact, plus host latency.

Baselines, both on the same images as the specialist:
- closed set: the generalist restricted to the group's classes (its head sliced to them, no training: exactly
  what the specialist starts from), so a box can only be one of the group's classes;
- open set: the whole generalist; a box it gives a class outside the group is no detection of the group.
Ultralytics' validator keeps every class above the confidence floor for each box (multi-label NMS), and AP is per
class, so classes outside the group could never cost the open set anything. The headline figures therefore use
one class per box, as Ultralytics' predict() does when deployed; the validator's standard multi-label mAP is kept
as "map50_95_multilabel" / "map50_multilabel". Rows follow benchmarks/report.py (edgespec.report/1):
accuracy = mAP50-95, plus "map50".
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io import DirLock, sha256_file
from ..progress import NULL, Reporter
from .dataset import derive_dataset, load_data
from .export import letterbox_images
from .offline import SAFE_ARGS, keep_threads, load_weights, ultralytics_env, yolo
from .specialize import save_ultralytics, slice_detect
from .train import open_detect_run

log = logging.getLogger(__name__)
DEVICE = "host-cpu"
#: One thread per runtime: a tiny detector gains little from more, and on a shared CPU more threads made PyTorch's
#: p50 vary 50-fold between runs.
THREADS = 1
HOW = ("measured on host: mAP50-95 through Ultralytics' validator with one class per box (as predict() deploys it; "
       "PyTorch, and ONNX Runtime for ONNX) on the group's validation images; generalist closed = its head sliced to "
       "the group, open = all its classes; latency of one batch-1 inference on letterboxed [0, 1] inputs, "
       "preprocessing and NMS excluded, one thread for PyTorch and ONNX Runtime")


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


def time_model(run: Any, images: np.ndarray) -> dict[str, Any]:
    """Warm-up, then timed batch-1 calls (benchmarks.timing's harness and statistics)."""
    import torch

    from benchmarks.timing import TimingConfig, peak_rss_mb, reset_peak_rss, summarize, time_calls

    reset_peak_rss()
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        t0 = time.perf_counter()
        run(images[:1])
        first_ms = (time.perf_counter() - t0) * 1e3
        cfg = TimingConfig(warmup=5, runs=100, min_runs=10, time_limit_s=1.0)
        stats = summarize(time_calls(lambda: run(images[:1]), cfg), 1)
    finally:
        torch.set_num_threads(threads)
    return {**stats, "first_inference_ms": first_ms, "peak_rss_mb": peak_rss_mb(), "threads": THREADS}


def torch_runner(weights: Path):
    import torch

    model = load_weights(weights)

    def run(x: np.ndarray) -> Any:
        with torch.no_grad():
            return model(torch.from_numpy(x))[0]
    return run


def onnx_runner(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {inp: x})


def _row(model: str, role: str, group: str, fmt: str, acc: dict[str, float] | None, timing: dict[str, Any] | None,
         images: int, size: int | None, sha: str | None, notes: list[str]) -> dict[str, Any]:
    return {"model": model, "role": role, "group": group, "format": fmt, "precision": "fp32", "device": DEVICE,
            "measurement": "measured on host", "accuracy": acc["map50_95"] if acc else None,
            "map50": acc["map50"] if acc else None, "generalist_accuracy_closed": None,
            "generalist_accuracy_open": None, "latency_ms": timing["latency_ms"] if timing else None,
            "throughput_ips": timing["throughput_ips"] if timing else None, "batch_size": 1, "size_bytes": size,
            "peak_rss_mb": timing["peak_rss_mb"] if timing else None,
            "first_inference_ms": timing["first_inference_ms"] if timing else None, "speedup_vs_generalist": None,
            "size_ratio_vs_generalist": None, "accuracy_change_vs_generalist": None,
            "images": images, "artifact_sha256": sha, "notes": notes, "task": "detect", "metric": "mAP50-95",
            "map50_95_multilabel": (acc or {}).get("map50_95_multilabel"),
            "map50_multilabel": (acc or {}).get("map50_multilabel")}


def _artifacts(export_dir: Path | None) -> dict[str, dict[str, Any]]:
    if export_dir is None:
        return {}
    from exporters.manifest import load_manifest, verify_artifact

    out = {}
    for a in load_manifest(export_dir)["artifacts"]:
        if a.get("task") == "detect" and a["format"] == "onnx":
            verify_artifact(export_dir, a)
            out[a["model"]] = a
    return out


def bench_group(spec_dir: Path, work: Path, artifacts: dict[str, dict[str, Any]], export_dir: Path | None,
                gen_cache: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for one specialist and its generalist on the specialist's group."""
    info = open_detect_run(spec_dir)
    if info["kind"] != "specialize":
        raise UserError(f"{spec_dir} is a generalist; bench takes specialist runs (their generalist comes along)")
    gen_dir = Path(info["generalist"])
    gen = open_detect_run(gen_dir)
    group, name, gname = info["group"], spec_dir.name, gen_dir.name
    imgsz = int(info["arch"]["input_size"][0])
    data = load_data(spec_dir / "data" / "data.yaml")
    n_val = len(data.image_files("val"))
    gw = work / group
    # closed set: the generalist's head sliced to the group (from the generalist, also for gradual chains)
    from ultralytics.nn.tasks import load_checkpoint

    gmodel, gckpt = load_checkpoint(str(gen_dir / "weights" / "best.pt"))
    closed_pt = save_ultralytics(slice_detect(gmodel, info["class_ids"], info["classes"]),
                                 gw / f"{gname}-closed.pt", dict(gckpt.get("train_args") or {}))
    closed = val_map(closed_pt, data.path, imgsz, work, f"{group}-generalist-closed")
    # open set: the group's val images with generalist class ids; the whole generalist predicts
    open_yaml, _ = derive_dataset(data, list(range(len(info["classes"]))), gen["classes"], gw / "open",
                                  ids=info["class_ids"], splits=("val",))
    opened = val_map(gen_dir / "weights" / "best.pt", open_yaml, imgsz, work, f"{group}-generalist-open",
                     multilabel=False)
    spec_acc = val_map(spec_dir / "weights" / "best.pt", data.path, imgsz, work, f"{group}-{name}")
    timing_imgs = letterbox_images(data.image_files("val")[:16], imgsz)
    if gname not in gen_cache:
        gen_cache[gname] = {"pytorch": time_model(torch_runner(gen_dir / "weights" / "best.pt"), timing_imgs)}
    rows = []
    spec_t = time_model(torch_runner(spec_dir / "weights" / "best.pt"), timing_imgs)
    gen_t = gen_cache[gname]["pytorch"]
    rows.append(_row(gname, "generalist", group, "pytorch", opened, gen_t, n_val, None,
                     sha256_file(gen_dir / "weights" / "best.pt"), ["accuracy: open set (all classes)"]))
    rows.append(_row(name, "specialist", group, "pytorch", spec_acc, spec_t, n_val, None,
                     sha256_file(spec_dir / "weights" / "best.pt"), []))
    for a_name, role in ((gname, "generalist"), (name, "specialist")):
        art = artifacts.get(a_name)
        if art is None:
            continue
        path = export_dir / art["path"]
        if role == "generalist":
            if "onnx" not in gen_cache[gname]:
                gen_cache[gname]["onnx"] = time_model(onnx_runner(path), timing_imgs)
            acc = val_map(path, open_yaml, imgsz, work, f"{group}-{a_name}-onnx", multilabel=False)
            rows.append(_row(a_name, role, group, "onnx", acc, gen_cache[gname]["onnx"], n_val, art["size_bytes"],
                             art["sha256"], ["accuracy: open set (all classes)"]))
        else:
            acc = val_map(path, data.path, imgsz, work, f"{group}-{a_name}-onnx", batch=1)
            rows.append(_row(a_name, role, group, "onnx", acc, time_model(onnx_runner(path), timing_imgs), n_val,
                             art["size_bytes"], art["sha256"], []))
    for r in rows:
        r["generalist_accuracy_closed"], r["generalist_accuracy_open"] = closed["map50_95"], opened["map50_95"]
        r["generalist_map50_closed"], r["generalist_map50_open"] = closed["map50"], opened["map50"]
        r["generalist_map50_95_multilabel_closed"] = closed["map50_95_multilabel"]
        base = next((g for g in rows if g["role"] == "generalist" and g["format"] == r["format"]), None)
        if r["role"] == "specialist" and base and base["latency_ms"] and r["latency_ms"]:
            r["speedup_vs_generalist"] = base["latency_ms"]["p50"] / r["latency_ms"]["p50"]
            r["accuracy_change_vs_generalist"] = r["accuracy"] - closed["map50_95"]
            if base["size_bytes"] and r["size_bytes"]:
                r["size_ratio_vs_generalist"] = r["size_bytes"] / base["size_bytes"]
    return rows


def bench_detect(specialists: list[str | Path], out: str | Path, export_dir: str | Path | None = None,
                 reporter: Reporter = NULL) -> dict[str, Any]:
    """Bench each specialist run (and its generalist) on its group; writes the four reports into `out`."""
    from benchmarks.report import REPORT_SCHEMA, write_reports
    from exporters.manifest import host_facts, package_versions

    from .. import __version__
    from ..runs import now

    if not specialists:
        raise UserError("no specialist run given; pass the runs written by `edgespec specialize` on a detection run")
    out = Path(out).resolve()
    export_dir = Path(export_dir).resolve() if export_dir else None
    work = out / "work"
    ultralytics_env(out)
    artifacts = _artifacts(export_dir)
    rows: list[dict[str, Any]] = []
    gen_cache: dict[str, Any] = {}
    with DirLock(out, "report directory"), reporter.task("bench detect", total=len(specialists), unit="group") as t:
        for spec in specialists:
            rows += bench_group(Path(spec).resolve(), work, artifacts, export_dir, gen_cache)
            t.advance(1)
        host = {**host_facts(), "cores": os.cpu_count()}
        report = {"schema": REPORT_SCHEMA, "created": now(), "edgespec_version": __version__, "task": "detect",
                  "host": host, "packages": package_versions(),
                  "source": {"path": str(export_dir or out), "runs": [str(Path(s).resolve()) for s in specialists]},
                  "devices": {DEVICE: {"measurement": "measured on host", "how": HOW}},
                  "metric": {"accuracy": "mAP50-95 (box)", "map50": "mAP50 (box)"}, "rows": rows}
        write_reports(report, out)
    return report
