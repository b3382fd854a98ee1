"""The detection task's exporter (exporters/plugin.py says what it provides; exporters/export.py does the rest).

The ONNX model comes from Ultralytics' exporter with a dynamic batch; its height and width are then fixed to the
run's square input size and the graph simplified again, so that every shape but the batch is static (counted FLOPs,
TensorRT profiles). It takes float32 NCHW RGB in [0, 1], letterboxed to the run's input size, and returns
Ultralytics' raw detections `output0` [N, 4 + classes, anchors]: box centre x, y, width, height in input pixels,
then per-class scores (sigmoid), before NMS. From it: onnx-fp16 (exporters.fp16), ort (exporters.ort_mobile) and
tensorrt-fp16 (exporters.tensorrt). Each artifact is checked against PyTorch on the run's validation images plus
one noise image (boxes and scores within its precision's tolerance); only when every artifact of every run passes
are they published and merged into OUT/manifest.json by exporters.export, "task": "detect".

onnx-int8 (on request only, never by default): ONNX Runtime's static QDQ of the backbone, neck and the head's
convolutions (int8 per-channel weights, uint8 activations: the CPU's fast path), calibrated on the run's training
images letterboxed as above; the Detect head's decode after its last convolutions (DFL, box decode, concat,
sigmoid: see exporters.detect_int8) stays float, because quantizing the whole graph took mAP50-95 to 0.00. It ships
only behind a gate: its mAP50-95 on the run's validation images may drop by at most INT8_MAX_MAP_DROP below the
fp32 ONNX file's, measured with the bench's code (toolkit.detect.metrics.det_map). tensorrt-int8 stays refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.detect.dataset import load_data
from toolkit.detect.offline import keep_threads, load_weights, ultralytics_env, yolo
from toolkit.detect.preprocess import letterbox_images, onnx_outputs
from toolkit.detect.runs import open_detect_run
from toolkit.errors import ExportCheckError, UserError
from toolkit.io import sha256_file
from toolkit.progress import NULL, Reporter
from toolkit.tasks.detect import ON_REQUEST, REFUSED

from .plugin import ExportModel, shipped

log = logging.getLogger(__name__)

#: Against PyTorch fp32 on the CPU: scores are sigmoids in [0, 1]; boxes are in input pixels and may be far outside
#: the image on an untrained model, so fp16 also allows a relative error on the largest box coordinate.
TOLERANCE = {
    "fp32": {"boxes_atol_px": 1e-2, "boxes_rtol": 0.0, "scores_atol": 1e-4},
    "fp16": {"boxes_atol_px": 0.5, "boxes_rtol": 2e-3, "scores_atol": 1e-2},
}
INPUT_NAME, OUTPUT_NAME = "images", "output0"
OUTPUT_LAYOUT = "[N, 4 + classes, anchors]: cx, cy, w, h in input pixels, then class scores (sigmoid); no NMS"
DEFAULT_PARITY_IMAGES = 16


def parity_images(info: dict[str, Any], count: int, seed: int = 0) -> np.ndarray:
    """`count` validation images of the run's data plus one uniform-noise input."""
    size = int(info["arch"]["input_size"][0])
    files = load_data(info["data"]).image_files("val")[:count]
    noise = np.random.default_rng(seed).random((1, 3, size, size), dtype=np.float32)
    return np.concatenate([letterbox_images(files, size), noise])


def torch_outputs(weights: Path, images: np.ndarray) -> np.ndarray:
    import torch

    model = load_weights(weights)
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(images[i:i + 1]))[0].numpy() for i in range(len(images))])


def detect_parity(ref: np.ndarray, got: np.ndarray, nc: int, precision: str = "fp32") -> dict[str, Any]:
    """Parity of raw detections against PyTorch's; the dict goes into the manifest as is."""
    tol = TOLERANCE["fp16" if precision == "fp16" else "fp32"]
    if ref.shape != got.shape:
        return {"passed": False, "images": int(ref.shape[0]), "precision": precision,
                "failures": [f"output shape {list(got.shape)} != PyTorch {list(ref.shape)}"]}
    finite = bool(np.isfinite(got).all())
    box = float(np.abs(ref[:, :4] - got[:, :4]).max()) if finite else float("inf")
    score = float(np.abs(ref[:, 4:4 + nc] - got[:, 4:4 + nc]).max()) if finite else float("inf")
    box_bound = tol["boxes_atol_px"] + tol["boxes_rtol"] * float(np.abs(ref[:, :4]).max())
    failures = []
    if not finite:
        failures.append("non-finite outputs")
    if not box <= box_bound:
        failures.append(f"box max |diff| {box:.3g} px > {box_bound:.3g}")
    if not score <= tol["scores_atol"]:
        failures.append(f"score max |diff| {score:.3g} > {tol['scores_atol']}")
    # anchors PyTorch scores above 0.25 (predict()'s default confidence): same best class?
    conf = ref[:, 4:4 + nc].max(1) > 0.25
    agree = float((ref[:, 4:].argmax(1) == got[:, 4:].argmax(1))[conf].mean()) if conf.any() else None
    result = {"reference": "pytorch fp32 (cpu)", "split": "val", "images": int(ref.shape[0]), "precision": precision,
              "passed": not failures, "boxes_max_abs_px": box, "boxes_bound_px": box_bound, "scores_max_abs": score,
              "max_abs_reference_box_px": float(np.abs(ref[:, :4]).max()), "confident_anchors": int(conf.sum()),
              "class_agreement_confident": agree, "tolerance": dict(tol)}
    if failures:
        result["failures"] = failures
    return result


def open_runs(run_dirs: Sequence[str | Path], formats: list[str], out_dir: Path, opts: Any) -> list[ExportModel]:
    from .formats import check_requirements

    check_requirements(formats, ", e.g. trtexec --onnx=MODEL.fp16.onnx --saveEngine=MODEL.fp16.engine "
                                "--stronglyTyped --noDataTransfers (TensorRT 11: without --stronglyTyped)")
    runs = [Path(p).resolve() for p in run_dirs]
    return [ExportModel(p.name, p, open_detect_run(p)) for p in runs]


def prepare(models: list[ExportModel], out_dir: Path) -> None:
    ultralytics_env(models[0].run)


def export_one(model: ExportModel, formats: list[str], opts: Any, work: Path, out_dir: Path,
               reporter: Reporter = NULL) -> list[dict[str, Any]]:
    """Every format of one detection run (Ultralytics' ONNX export first), each checked against PyTorch.

    `opts` is exporters.formats.ExportOptions, already checked against the formats by exporters.export_runs."""
    from .formats import build_order

    return _export_one(model.run, model.source, build_order(formats), shipped(formats), opts, work, out_dir,
                       reporter)


def _export_one(run_dir: Path, info: dict[str, Any], order: list[str], ship: set[str], opts: Any, work: Path,
                out_dir: Path, reporter: Reporter) -> list[dict[str, Any]]:
    from .formats import FORMATS
    from .manifest import host_facts, package_versions

    name = run_dir.name
    weights = run_dir / "weights" / "best.pt"
    size = int(info["arch"]["input_size"][0])
    ckpt_sha = sha256_file(weights)
    role = "specialist" if info["kind"] in ("specialize", "compress") else "generalist"  # compress: compared like one
    meta = {"model": name, "role": role, "group": info.get("group"), "task": "detect", "classes": info["classes"],
            "class_ids": info["class_ids"], "mean": info["preprocess"]["mean"], "std": info["preprocess"]["std"],
            "input_size": [size, size], "channels": 3, "output_layout": OUTPUT_LAYOUT,
            "source_checkpoint_sha256": ckpt_sha}
    n_parity = opts.parity_images if "parity_images" in opts.model_fields_set else DEFAULT_PARITY_IMAGES
    images = parity_images(info, n_parity)
    ref = torch_outputs(weights, images)
    from toolkit.compress.prune import count

    macs, params = count(load_weights(weights), (3, size, size))  # per image, as classification entries count them
    built: dict[str, dict[str, Any]] = {}
    entries = []
    with reporter.task(f"export {name}", total=len(order), unit="format") as task:
        for fmt in order:
            built[fmt] = _build(fmt, run_dir, name, size, opts, work, built, meta)
            got = built[fmt].pop("run")(images)
            if fmt in ON_REQUEST:
                from .detect_int8 import int8_gate

                parity = int8_gate(run_dir, built["onnx"]["path"], built[fmt]["path"], f"{name}-{fmt}")
                parity["raw_outputs"] = {k: detect_parity(ref, got, len(info["classes"]))[k] for k in
                                         ("boxes_max_abs_px", "scores_max_abs", "class_agreement_confident")}
            else:
                parity = detect_parity(ref, got, len(info["classes"]), FORMATS[fmt].precision)
            if not parity["passed"]:
                raise ExportCheckError(f"{name}-{fmt} does not match PyTorch on {parity['images']} images: "
                                       f"{'; '.join(parity['failures'])}; nothing was written")
            log.info("%s-%s: %s", name, fmt, parity.get("summary") or f"box max |diff| {parity['boxes_max_abs_px']:.3g}"
                     f" px, score max |diff| {parity['scores_max_abs']:.3g} against PyTorch")
            task.advance(1, format=fmt)
            if fmt not in ship:
                continue
            b = built[fmt]
            path: Path = b["path"]
            entry = {
                "name": f"{name}-{fmt}", "model": name, "task": "detect", "role": role, "group": info.get("group"),
                "run": str(run_dir), "format": fmt, "precision": FORMATS[fmt].precision, "path": path.name,
                "sha256": sha256_file(path), "size_bytes": path.stat().st_size, "input_name": INPUT_NAME,
                "input_shape": [-1, 3, size, size], "output_name": OUTPUT_NAME, "output_layout": OUTPUT_LAYOUT,
                "opset": built["onnx"]["opset"], "classes": info["classes"], "class_ids": info["class_ids"],
                "mean": info["preprocess"]["mean"], "std": info["preprocess"]["std"], "preprocess": info["preprocess"],
                "source_checkpoint_sha256": ckpt_sha, "parity": parity, "calibration": b.get("calibration"),
                "macs": macs, "params": params,
                "files": [{"path": p.name, "sha256": sha256_file(p), "size_bytes": p.stat().st_size, "kind": k}
                          for k, p in b.get("companions", {}).items()],
                "built": {"host": host_facts(), "packages": {**package_versions(), **_ultra_version()},
                          "details": b["details"]},
            }
            if "trtexec" in b:
                entry["trtexec"] = b["trtexec"]
                entry["engine_key"] = b["engine_key"]
            if info.get("compression"):
                entry["compression"] = info["compression"]
            entries.append(entry)
    return entries


def _build(fmt: str, run_dir: Path, name: str, size: int, opts: Any, work: Path, built: dict[str, dict[str, Any]],
           meta: dict[str, Any]) -> dict[str, Any]:
    """One artifact in `work`: {"path", "opset", "details", "run": images -> raw outputs, ...}."""
    from .formats import FORMATS

    path = work / f"{name}{FORMATS[fmt].suffix}"
    meta = {**meta, "format": fmt, "precision": FORMATS[fmt].precision}
    if fmt == "onnx":
        details = _ultralytics_onnx(run_dir, name, size, opts, work, path, meta)
        return {"path": path, "opset": details["opset"], "details": details, "run": lambda x: onnx_outputs(path, x)[0]}
    src = built["onnx"]["path"]
    if fmt == "onnx-fp16":
        from .fp16 import convert_fp16

        details = convert_fp16(src, path, meta)
        return {"path": path, "details": details, "run": lambda x: onnx_outputs(path, x)[0]}
    if fmt == "ort":
        from .ort_mobile import convert_ort

        config = work / f"{name}.required_operators.config"
        details = convert_ort(src, path, config, opts.ort_platform, meta)
        return {"path": path, "details": details, "companions": {"required_operators": config},
                "run": lambda x: onnx_outputs(path, x)[0]}
    if fmt == "onnx-int8":
        from .detect_int8 import calibration_images, head_tail_nodes
        from .quantize import quantize_int8

        calib = calibration_images(run_dir, opts.calib_count, opts.calib_method)
        # uint8 activations: ONNX Runtime's fast CPU path; no TensorRT engine is built from this file (REFUSED)
        details = quantize_int8(src, path, calib, INPUT_NAME, meta, exclude=head_tail_nodes, skip_symbolic_shape=True,
                                symmetric_activations=False)
        return {"path": path, "details": details, "calibration": calib.facts, "run": lambda x: onnx_outputs(path, x)[0]}
    if fmt == "tensorrt-fp16":
        import shlex

        from .tensorrt import EngineSpec, build_engine, run_engine, trtexec_argv

        src = built[FORMATS[fmt].source]["path"]  # strongly typed: the float16 file gives the fp16 engine
        timing_cache = opts.timing_cache or work.parent / "tensorrt.cache"
        spec = EngineSpec(src, path, "fp16", INPUT_NAME, (3, size, size), opts.min_batch, opts.opt_batch,
                          opts.max_batch, opts.workspace_mb, timing_cache, opts.dla_core, opts.gpu_fallback)
        details = build_engine(spec)
        shipped = EngineSpec(Path(src.name), Path(path.name), "fp16", INPUT_NAME, (3, size, size), opts.min_batch,
                             opts.opt_batch, opts.max_batch, opts.workspace_mb, Path(timing_cache.name),
                             opts.dla_core, opts.gpu_fallback)
        key = details["engine_key"]
        return {"path": path, "details": details, "engine_key": key,
                "trtexec": shlex.join(trtexec_argv(shipped, details["tensorrt_major"])),
                "run": lambda x: run_engine(path, x, INPUT_NAME, OUTPUT_NAME, opts.max_batch, key)}
    raise UserError(REFUSED.get(fmt, f"{fmt} is not available for detection runs"))  # checked before, by the task


def _ultralytics_onnx(run_dir: Path, name: str, size: int, opts: Any, work: Path, path: Path,
                      meta: dict[str, Any]) -> dict[str, Any]:
    """Ultralytics' ONNX export (dynamic axes), then height and width fixed to `size` and simplified again."""
    import onnx

    from .onnx_export import opset_of, save_checked, set_metadata, simplify_model

    model = yolo(run_dir, run_dir / "weights" / "best.pt")
    model.model.pt_path = str(work / f"{name}.pt")  # Ultralytics writes the .onnx beside this path
    args: dict[str, Any] = {"format": "onnx", "imgsz": size, "batch": 1, "dynamic": True, "simplify": opts.simplify,
                            "half": False, "int8": False, "nms": False, "device": "cpu", "verbose": False}
    if "opset" in opts.model_fields_set:
        args["opset"] = opts.opset
    strides = [int(s) for s in model.model.stride]
    with keep_threads():
        exported = Path(model.export(**args))
    if exported.resolve() != path.resolve():
        os.replace(exported, path)
    proto = onnx.load(str(path))
    channels = proto.graph.output[0].type.tensor_type.shape.dim[1]
    if len(proto.graph.output) != 1 or channels.dim_value != 4 + len(meta["classes"]):
        raise UserError(f"{run_dir.name}: Ultralytics exported another output than raw detections [N, 4 + classes, "
                        "anchors] (an NMS-free end-to-end head such as yolo26's?); edgespec exports raw Detect heads "
                        "only: train a yolo11 model")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for d in (dims[2], dims[3]):
        d.Clear()
        d.dim_value = size
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    out_dims[2].Clear()
    out_dims[2].dim_value = sum((size // s) ** 2 for s in strides)  # one anchor per cell of each Detect scale
    if opts.simplify:
        proto = simplify_model(proto)  # folds the shape arithmetic the dynamic height and width needed
    set_metadata(proto, meta)
    save_checked(proto, path)
    return {"exporter": f"ultralytics {_ultra_version()['ultralytics']} (dynamic=True, then height/width fixed)",
            "simplified": bool(opts.simplify), "opset": opset_of(proto), "nodes": len(proto.graph.node)}


def _ultra_version() -> dict[str, str]:
    import ultralytics

    return {"ultralytics": ultralytics.__version__}
