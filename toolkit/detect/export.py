"""Export detection runs through the generic `edgespec export` (exporters.export_runs dispatches here).

The ONNX model comes from Ultralytics' exporter with a dynamic batch; its height and width are then fixed to the
run's square input size and the graph simplified again, so that every shape but the batch is static (counted FLOPs,
TensorRT profiles). It takes float32 NCHW RGB in [0, 1], letterboxed to the run's input size, and returns
Ultralytics' raw detections `output0` [N, 4 + classes, anchors]: box centre x, y, width, height in input pixels,
then per-class scores (sigmoid), before NMS. From it: onnx-fp16 (exporters.fp16), ort (exporters.ort_mobile) and
tensorrt-fp16 (exporters.tensorrt). Each artifact is checked against PyTorch on the run's validation images plus
one noise image (boxes and scores within its precision's tolerance); only when every artifact of every run passes
are they published and merged into OUT/manifest.json (exporters.manifest), "task": "detect".

onnx-int8 (on request only, never by default): ONNX Runtime's static QDQ of the backbone, neck and the head's
convolutions (int8 per-channel weights, uint8 activations: the CPU's fast path), calibrated on the run's training
images letterboxed as above; the Detect head's decode after its last convolutions (DFL, box decode, concat,
sigmoid: see toolkit.detect.quantize) stays float, because quantizing the whole graph took mAP50-95 to 0.00. It ships
only behind a gate: its mAP50-95 on the run's validation images may drop by at most INT8_MAX_MAP_DROP below the
fp32 ONNX file's, measured with the bench's code (toolkit.detect.metrics.det_map). tensorrt-int8 stays refused.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportCheckError, UserError
from ..io import DirLock, sha256_file
from ..progress import NULL, Reporter
from .dataset import load_data
from .offline import keep_threads, load_weights, ultralytics_env, yolo
from .preprocess import letterbox_images, onnx_outputs
from .runs import open_detect_run

log = logging.getLogger(__name__)

#: Formats a detection run exports to by default (bench, pipeline); onnx-int8 only when asked for (INT8_FORMATS).
DETECT_FORMATS = ("onnx", "onnx-fp16", "ort", "tensorrt-fp16")
INT8_FORMATS = ("onnx-int8",)
#: Measured on the synthetic pipeline (yolo11n, 64 px, 40 epochs, 100 val images): ONNX Runtime static QDQ int8
#: (minmax, per-channel) of the whole graph took mAP50-95 from 0.374 to 0.000 (pixel boxes and [0, 1] scores share
#: one output tensor, hence one scale); with the head's decode kept float it measured 0.381 (onnx-int8 ships, gated).
#: TensorRT int8 of that graph was never measured (no TensorRT on the host that measured it), so it is refused.
REFUSED = {"tensorrt-int8": "tensorrt-int8 is not available for detection runs: its mAP was never measured "
                            "(whole-graph int8 measured mAP50-95 0.00); export onnx-int8 (head decode in float, "
                            f"mAP-gated) or {', '.join(DETECT_FORMATS)}"}
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


def check_detect_formats(formats: Sequence[str]) -> None:
    for f in formats:
        if f in REFUSED:
            raise UserError(REFUSED[f])
        if f not in DETECT_FORMATS + INT8_FORMATS:  # a format row added later without a detection builder
            raise UserError(f"{f} is not available for detection runs; export "
                            f"{', '.join(DETECT_FORMATS + INT8_FORMATS)}")


def export_detect_runs(run_dirs: Sequence[str | Path], formats: list[str], out_dir: str | Path, opts: Any,
                       reporter: Reporter = NULL) -> list[dict[str, Any]]:
    """Export detection runs as `formats` into `out_dir` (all or nothing); returns the new manifest entries.

    `opts` is exporters.formats.ExportOptions, already checked against the formats by exporters.export_runs."""
    from exporters.formats import FORMATS, build_order, check_requirements
    from exporters.manifest import MANIFEST, load_manifest, write_manifest

    check_detect_formats(formats)
    # a TensorRT engine ships with the ONNX file it was built from (for rebuilding it on the device), as classification
    ship = set(formats) | {FORMATS[f].source for f in formats if FORMATS[f].runtime == "tensorrt"}
    check_requirements(formats, ", e.g. trtexec --onnx=MODEL.onnx --saveEngine=MODEL.fp16.engine --fp16")
    runs = [Path(p).resolve() for p in run_dirs]
    infos = [open_detect_run(p) for p in runs]
    names = [p.name for p in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"runs share the directory name {dup[0]!r}, which names their artifacts; rename one run "
                        "directory or export them into different --out directories")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with DirLock(out_dir, "export directory"):
        for stale in out_dir.glob(".export-*"):  # work dirs of a killed export; the lock says none is in use
            shutil.rmtree(stale, ignore_errors=True)
        if (out_dir / MANIFEST).is_file():
            owners = {a["model"]: a["run"] for a in load_manifest(out_dir)["artifacts"]}
            for p in runs:
                if owners.get(p.name) not in (None, str(p)):
                    raise UserError(f"{out_dir} already holds model {p.name!r} exported from {owners[p.name]}; "
                                    f"export {p} into another --out or rename its directory")
        ultralytics_env(runs[0])
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
            entries: list[dict[str, Any]] = []
            for run_dir, info in zip(runs, infos, strict=True):
                entries += _export_one(run_dir, info, build_order(formats), ship, opts, Path(tmp), out_dir, reporter)
            for entry in entries:  # every check passed: publish
                for rel in [entry["path"]] + [f["path"] for f in entry.get("files", [])]:
                    os.replace(Path(tmp) / rel, out_dir / rel)
            write_manifest(out_dir, entries)
    return entries


def _export_one(run_dir: Path, info: dict[str, Any], order: list[str], ship: set[str], opts: Any, work: Path,
                out_dir: Path, reporter: Reporter) -> list[dict[str, Any]]:
    from exporters.formats import FORMATS
    from exporters.manifest import host_facts, package_versions

    name = run_dir.name
    weights = run_dir / "weights" / "best.pt"
    size = int(info["arch"]["input_size"][0])
    ckpt_sha = sha256_file(weights)
    role = "specialist" if info["kind"] == "specialize" else "generalist"
    meta = {"model": name, "role": role, "group": info.get("group"), "task": "detect", "classes": info["classes"],
            "class_ids": info["class_ids"], "mean": info["preprocess"]["mean"], "std": info["preprocess"]["std"],
            "input_size": [size, size], "channels": 3, "output_layout": OUTPUT_LAYOUT,
            "source_checkpoint_sha256": ckpt_sha}
    n_parity = opts.parity_images if "parity_images" in opts.model_fields_set else DEFAULT_PARITY_IMAGES
    images = parity_images(info, n_parity)
    ref = torch_outputs(weights, images)
    built: dict[str, dict[str, Any]] = {}
    entries = []
    with reporter.task(f"export {name}", total=len(order), unit="format") as task:
        for fmt in order:
            built[fmt] = _build(fmt, run_dir, name, size, opts, work, built, meta)
            got = built[fmt].pop("run")(images)
            if fmt in INT8_FORMATS:
                from .quantize import int8_gate

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
                "files": [{"path": p.name, "sha256": sha256_file(p), "size_bytes": p.stat().st_size, "kind": k}
                          for k, p in b.get("companions", {}).items()],
                "built": {"host": host_facts(), "packages": {**package_versions(), **_ultra_version()},
                          "details": b["details"]},
            }
            if "trtexec" in b:
                entry["trtexec"] = b["trtexec"]
            entries.append(entry)
    return entries


def _build(fmt: str, run_dir: Path, name: str, size: int, opts: Any, work: Path, built: dict[str, dict[str, Any]],
           meta: dict[str, Any]) -> dict[str, Any]:
    """One artifact in `work`: {"path", "opset", "details", "run": images -> raw outputs, ...}."""
    from exporters.formats import FORMATS

    path = work / f"{name}{FORMATS[fmt].suffix}"
    meta = {**meta, "format": fmt, "precision": FORMATS[fmt].precision}
    if fmt == "onnx":
        details = _ultralytics_onnx(run_dir, name, size, opts, work, path, meta)
        return {"path": path, "opset": details["opset"], "details": details, "run": lambda x: onnx_outputs(path, x)[0]}
    src = built["onnx"]["path"]
    if fmt == "onnx-fp16":
        from exporters.fp16 import convert_fp16

        details = convert_fp16(src, path, meta)
        return {"path": path, "details": details, "run": lambda x: onnx_outputs(path, x)[0]}
    if fmt == "ort":
        from exporters.ort_mobile import convert_ort

        config = work / f"{name}.required_operators.config"
        details = convert_ort(src, path, config, opts.ort_platform, meta)
        return {"path": path, "details": details, "companions": {"required_operators": config},
                "run": lambda x: onnx_outputs(path, x)[0]}
    if fmt == "onnx-int8":
        from exporters.quantize import quantize_int8

        from .quantize import calibration_images, head_tail_nodes

        calib = calibration_images(run_dir, opts.calib_count, opts.calib_method)
        # uint8 activations: ONNX Runtime's fast CPU path; no TensorRT engine is built from this file (REFUSED)
        details = quantize_int8(src, path, calib, INPUT_NAME, meta, exclude=head_tail_nodes, skip_symbolic_shape=True,
                                symmetric_activations=False)
        return {"path": path, "details": details, "calibration": calib.facts, "run": lambda x: onnx_outputs(path, x)[0]}
    if fmt == "tensorrt-fp16":
        import shlex

        from exporters.tensorrt import EngineSpec, build_engine, run_engine, trtexec_argv

        timing_cache = opts.timing_cache or work.parent / "tensorrt.cache"
        spec = EngineSpec(src, path, "fp16", INPUT_NAME, (3, size, size), opts.min_batch, opts.opt_batch,
                          opts.max_batch, opts.workspace_mb, timing_cache)
        details = build_engine(spec)
        shipped = EngineSpec(Path(src.name), Path(path.name), "fp16", INPUT_NAME, (3, size, size), opts.min_batch,
                             opts.opt_batch, opts.max_batch, opts.workspace_mb, Path(timing_cache.name))
        return {"path": path, "details": details, "trtexec": shlex.join(trtexec_argv(shipped)),
                "run": lambda x: run_engine(path, x, INPUT_NAME, OUTPUT_NAME, opts.max_batch)}
    raise UserError(REFUSED.get(fmt, f"{fmt} is not available for detection runs"))


def _ultralytics_onnx(run_dir: Path, name: str, size: int, opts: Any, work: Path, path: Path,
                      meta: dict[str, Any]) -> dict[str, Any]:
    """Ultralytics' ONNX export (dynamic axes), then height and width fixed to `size` and simplified again."""
    import onnx

    from exporters.onnx_export import opset_of, save_checked, set_metadata, simplify_model

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
