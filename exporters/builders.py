"""One builder per format row: turns the previous artifacts of a run into the next one, in the work directory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .formats import FORMATS, ExportOptions
from .onnx_export import INPUT_NAME, OUTPUT_NAME


@dataclass
class Built:
    path: Path
    opset: int | None  # None: not an ONNX-based file
    run_logits: Callable[[np.ndarray], np.ndarray]
    details: dict[str, Any]
    calibration: dict[str, Any] | None = None
    companions: dict[str, Path] = field(default_factory=dict)  # kind -> extra file shipped with the artifact
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    fixed_batch: int | None = None  # the only batch the artifact takes (None: dynamic)

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.run_logits(images)


@dataclass
class BuildState:
    run: Any
    model: nn.Module
    meta: dict[str, Any]
    chw: tuple[int, int, int]
    opts: ExportOptions
    work: Path
    out_dir: Path
    name: str
    timing_cache: Path
    built: dict[str, Built] = field(default_factory=dict)

    def path(self, fmt: str) -> Path:
        return self.work / f"{self.name}{FORMATS[fmt].suffix}"

    def meta_for(self, fmt: str, **extra: Any) -> dict[str, Any]:
        return {**self.meta, "format": fmt, "precision": FORMATS[fmt].precision, **extra}


def _ort_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    from .parity import run_onnxruntime

    return lambda images: run_onnxruntime(path, images, INPUT_NAME)


def _onnx(fmt: str, s: BuildState) -> Built:
    from .onnx_export import export_onnx

    path = s.path(fmt)
    info = export_onnx(s.model, path, s.chw, s.opts.opset, s.opts.simplify, s.meta_for(fmt))
    return Built(path, info["opset"], _ort_runner(path), info)


def _fp16(fmt: str, s: BuildState) -> Built:
    """fp16 with the overflow guard on the calibration images (the same seeded sample int8 calibrates on)."""
    from .fp16 import convert_fp16
    from .fp16_guard import run_as_stored
    from .quantize import calibration_set

    path = s.path(fmt)
    calib = calibration_set(s.run, s.opts.calib_count, "minmax")
    info = convert_fp16(s.built["onnx"].path, path, s.meta_for(fmt), guard_images=calib.images,
                        input_name=INPUT_NAME)
    info["fp16_guard"]["calibration_sha256"] = calib.facts["sha256"]
    # parity with every activation held in fp16 as declared (as a GPU / strongly typed engine holds it): ONNX
    # Runtime's CPU provider would compute runs of fp16 ops in fp32 and hide an overflow between them
    info["parity_run"] = "onnxruntime cpu, every activation held in its declared type (fp16_guard.run_as_stored)"
    return Built(path, info["opset"], lambda images: run_as_stored(path, images, INPUT_NAME), info)


def _int8(fmt: str, s: BuildState) -> Built:
    from .int8_recipes import choose
    from .quantize import calibration_set, quantize_int8

    path = s.path(fmt)
    calib = calibration_set(s.run, s.opts.calib_count, s.opts.calib_method)
    recipe, facts = choose(s.opts.int8_recipe)
    info = quantize_int8(s.built["onnx"].path, path, calib, INPUT_NAME,
                         s.meta_for(fmt, calibration_sha256=calib.facts["sha256"], int8_recipe=recipe.name),
                         recipe=recipe)
    info["int8_recipe"] = facts
    return Built(path, info["opset"], _ort_runner(path), info, calibration=calib.facts)


def _ort(fmt: str, s: BuildState) -> Built:
    from .ort_mobile import convert_ort

    path = s.path(fmt)
    config = s.work / f"{s.name}.required_operators.config"
    info = convert_ort(s.built["onnx"].path, path, config, s.opts.ort_platform, s.meta_for(fmt))
    return Built(path, s.built["onnx"].opset, _ort_runner(path), info, companions={"required_operators": config})


def _tensorrt(fmt: str, s: BuildState) -> Built:
    from .tensorrt import EngineSpec, build_engine, run_engine, trtexec_argv, trtexec_commands

    src = FORMATS[fmt].source
    o = s.opts
    spec = EngineSpec(s.built[src].path, s.path(fmt), FORMATS[fmt].precision, INPUT_NAME, s.chw, o.min_batch,
                      o.opt_batch, o.max_batch, o.workspace_mb, s.timing_cache, o.dla_core, o.gpu_fallback)
    info = build_engine(spec)
    # the command as it reads in the output directory, for rebuilding on the device: for the TensorRT that built
    # this engine, and for each supported major version (a bundle picks the device's)
    shipped = EngineSpec(Path(s.built[src].path.name), Path(spec.engine_path.name), spec.precision, INPUT_NAME,
                         s.chw, o.min_batch, o.opt_batch, o.max_batch, o.workspace_mb, Path(s.timing_cache.name),
                         o.dla_core, o.gpu_fallback)
    info["trtexec"] = trtexec_argv(shipped, info["tensorrt_major"])
    info["trtexec_by_version"] = trtexec_commands(shipped)
    path, key = spec.engine_path, info["engine_key"]
    return Built(path, s.built[src].opset,
                 lambda images: run_engine(path, images, INPUT_NAME, OUTPUT_NAME, o.max_batch, key), info,
                 calibration=s.built[src].calibration)


def _executorch(fmt: str, s: BuildState) -> Built:
    from .executorch import export_fp32, export_int8, runner_for

    path = s.path(fmt)
    calibration = None
    if FORMATS[fmt].precision == "int8":
        from .quantize import calibration_set

        calib = calibration_set(s.run, s.opts.calib_count, "minmax")  # the same seeded images as onnx-int8
        calib.facts["observers"] = "PT2E, XNNPACK quantizer: HistogramObserver activations, per-channel min/max weights"
        info = export_int8(s.model, path, s.chw, calib.images)
        calibration = calib.facts
    else:
        info = export_fp32(s.model, path, s.chw)
    return Built(path, None, runner_for(path), info, calibration=calibration, input_name="x", output_name="output",
                 fixed_batch=info["batch"])


BUILDERS: dict[str, Callable[[str, BuildState], Built]] = {
    "onnx": _onnx, "onnx-fp16": _fp16, "onnx-int8": _int8, "ort": _ort,
    "tensorrt-fp16": _tensorrt, "tensorrt-int8": _tensorrt, "executorch": _executorch, "executorch-int8": _executorch,
}


def build(fmt: str, state: BuildState) -> Built:
    built = BUILDERS[fmt](fmt, state)
    state.built[fmt] = built
    return built
