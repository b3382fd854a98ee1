"""The one table of export formats: it drives option validation, the export order, the default format list,
which runtime executes what (device profiles, the bench) and each format's precision.

Each row says what a format is built from, what it needs (Python packages, a CUDA GPU), which options it takes,
and the tolerance its parity check holds it to. Nothing else in edgespec lists formats: every other list is derived
from FORMATS here. This module depends on toolkit.errors alone, so every layer may read it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from toolkit.errors import UserError, unknown_name


@dataclass(frozen=True)
class Tolerance:
    """What an export must reproduce of the PyTorch fp32 logits on the run's test images.

    max_abs_diff must stay <= atol + rtol * max|reference logit| (None: reported, not bounded; int8 logits move
    by design); top-1 agreement with PyTorch >= min_agreement; accuracy may drop by at most max_accuracy_drop.
    """

    atol: float | None
    rtol: float
    min_agreement: float
    max_accuracy_drop: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {"atol": self.atol, "rtol": self.rtol, "min_top1_agreement": self.min_agreement,
                "max_accuracy_drop": self.max_accuracy_drop}


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-4, min_agreement=0.995, max_accuracy_drop=None),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2, min_agreement=0.99, max_accuracy_drop=None),
    "int8": Tolerance(atol=None, rtol=0.0, min_agreement=0.95, max_accuracy_drop=0.02),
}

_COMMON = ("opset", "simplify", "parity_images")
_CALIB = ("calib_count", "calib_method")
#: CPU instruction-set families a device profile can name (`isa:`); each has an int8 recipe in
#: exporters/int8_recipes.py. "tensorrt" is a recipe, not an ISA: the QDQ file TensorRT builds its engine from.
ISAS = ("x86-avx2", "x86-avx512", "x86-avx-vnni", "x86-avx512-vnni", "x86-amx", "arm-neon", "arm-dotprod", "generic")
INT8_RECIPES = (*ISAS, "tensorrt")
_TRT = ("min_batch", "opt_batch", "max_batch", "workspace_mb", "timing_cache", "dla_core", "gpu_fallback")


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str  # file name is <model><suffix>
    precision: Literal["fp32", "fp16", "int8"]
    runtime: Literal["onnxruntime", "tensorrt", "executorch"]  # what executes it (benchmarks pick their runtime)
    source: str | None  # the format it is built from (None: from the PyTorch checkpoint)
    packages: tuple[str, ...]  # importable modules it needs
    gpu: bool  # needs a CUDA GPU to build
    options: tuple[str, ...]
    description: str
    default: bool = False  # exported when a pipeline or a run-directory bench names no formats
    extra: str | None = None  # the optional pip extra of edgespec that provides `packages` (built on request only)

    @property
    def tolerance(self) -> Tolerance:
        return TOLERANCES[self.precision]

    def missing(self) -> list[str]:
        """What this host lacks to build the format (empty: it can)."""
        lacks = [f"python package '{p}'" for p in self.packages if importlib.util.find_spec(p) is None]
        if self.gpu and not _cuda_available():
            lacks.append("a CUDA GPU")
        return lacks


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", "fp32", "onnxruntime", None, ("onnx", "onnxscript"), False, _COMMON,
           "ONNX, dynamic batch, metadata inside", default=True),
    Format("onnx-fp16", ".fp16.onnx", "fp16", "onnxruntime", "onnx", ("onnx",), False, _COMMON,
           "ONNX with fp16 weights and compute, fp32 inputs/outputs; ops whose activations overflow fp16 on "
           "calib_count training images stay fp32 (exporters/fp16_guard.py)", default=True),
    Format("onnx-int8", ".int8.onnx", "int8", "onnxruntime", "onnx", ("onnxruntime",), False, _COMMON + _CALIB
           + ("int8_recipe",), "ONNX Runtime static quantization: QDQ, per-channel, the target ISA's int8 recipe",
           default=True),
    Format("ort", ".ort", "fp32", "onnxruntime", "onnx", ("onnxruntime",), False, _COMMON + ("ort_platform",),
           "ONNX Runtime mobile format plus the operator config for a reduced build", default=True),
    Format("tensorrt-fp16", ".fp16.engine", "fp16", "tensorrt", "onnx-fp16", ("tensorrt",), True,
           _COMMON + _TRT, "TensorRT 10.x/11.x strongly typed engine from the fp16 ONNX file"),
    Format("tensorrt-int8", ".int8.engine", "int8", "tensorrt", "onnx-int8", ("tensorrt",), True,
           _COMMON + _CALIB + _TRT, "TensorRT 10.x/11.x strongly typed engine from the QDQ model (explicit "
           "quantization)"),
    Format("executorch", ".pte", "fp32", "executorch", None, ("executorch",), False, ("parity_images",),
           "ExecuTorch program, XNNPACK delegate, fp32, batch 1 (exporters/executorch.py)", extra="mobile"),
    Format("executorch-int8", ".int8.pte", "int8", "executorch", None, ("executorch",), False,
           ("parity_images", "calib_count"), "ExecuTorch program, PT2E int8 (XNNPACK quantizer, calibrated on "
           "training images), XNNPACK delegate, batch 1", extra="mobile"),
)}

CPU_FORMATS = tuple(n for n, f in FORMATS.items() if not f.gpu)
DEFAULT_FORMATS = tuple(n for n, f in FORMATS.items() if f.default)
#: The bench's pseudo-format for the run's PyTorch checkpoint (not an exported file; runtime "pytorch").
CHECKPOINT_FORMAT = "pytorch"
#: Which formats each runtime executes, from the table (plus the checkpoint on PyTorch).
RUNTIME_FORMATS: dict[str, tuple[str, ...]] = {
    **{rt: tuple(n for n, f in FORMATS.items() if f.runtime == rt) for rt in dict.fromkeys(
        f.runtime for f in FORMATS.values())},
    "pytorch": (CHECKPOINT_FORMAT,),
}
RUNTIMES = tuple(RUNTIME_FORMATS)
ALL_FORMATS = tuple(f for fs in RUNTIME_FORMATS.values() for f in fs)


def precision_of(fmt: str) -> str:
    """A format's precision (the checkpoint is fp32)."""
    return FORMATS[fmt].precision if fmt in FORMATS else "fp32"


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


class ExportOptions(BaseModel):
    """Options of `edgespec export`; each applies only to the formats whose row lists it."""

    model_config = ConfigDict(extra="forbid")

    opset: int = Field(20, ge=18, le=25, description="ONNX opset (20: torch's default, TensorRT 10 parses it)")
    simplify: bool = Field(True, description="simplify the ONNX graph with onnxslim")
    parity_images: int = Field(512, ge=1, description="test images for the parity check (a seeded sample)")
    calib_count: int = Field(256, ge=1, description="training images used to calibrate int8")
    calib_method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="calibration method")
    int8_recipe: Literal[INT8_RECIPES] | None = Field(  # type: ignore[valid-type]
        None, description="int8 recipe (exporters/int8_recipes.py): the target's ISA; default: the device profile's "
        "isa, 'tensorrt' when a TensorRT engine is built from the file, else this host's CPU flags")
    ort_platform: Literal["arm", "amd64"] | None = Field(
        None, description="target CPU of the .ort file's optimisations (default: the device profile's instruction "
                          "set, else this host's machine)")
    min_batch: int = Field(1, ge=1, description="TensorRT profile: smallest batch")
    opt_batch: int = Field(1, ge=1, description="TensorRT profile: batch the kernels are tuned for")
    max_batch: int = Field(32, ge=1, description="TensorRT profile: largest batch")
    workspace_mb: int = Field(1024, ge=16, description="TensorRT workspace memory pool limit in MiB")
    timing_cache: Path | None = Field(None, description="TensorRT timing cache file (default: OUT/tensorrt.cache)")
    dla_core: int | None = Field(None, ge=0, description="TensorRT: build for this DLA core (Jetson AGX Orin: 0 or "
                                 "1) instead of the GPU; default: the device profile's dla_core")
    gpu_fallback: bool = Field(True, description="TensorRT with dla_core: layers the DLA cannot run fall back to "
                               "the GPU (false: the build fails instead)")

    @model_validator(mode="after")
    def _batch_order(self) -> ExportOptions:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need min_batch <= opt_batch <= max_batch, got {self.min_batch}, {self.opt_batch}, "
                             f"{self.max_batch}")
        return self


def parse_formats(formats: str | list[str] | tuple[str, ...]) -> list[str]:
    """'onnx,ort' or a list -> known names in table order, without duplicates; unknown names fail with a hint."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    names = [n.strip().lower() for n in items if n and n.strip()]
    if not names:
        raise UserError(f"no export format given; choose from: {', '.join(FORMATS)}")
    for n in names:
        if n not in FORMATS:
            raise unknown_name("export format", n, FORMATS)
    return [n for n in FORMATS if n in names]


def build_order(formats: list[str]) -> list[str]:
    """Requested formats plus the ones they are built from, sources first."""
    need: set[str] = set()
    for n in formats:
        while n is not None:
            need.add(n)
            n = FORMATS[n].source
    return [n for n in FORMATS if n in need]


def check_options(formats: list[str], options: ExportOptions) -> None:
    """An option the user set that none of the requested formats takes is a mistake, not something to ignore."""
    taken = {o for n in build_order(formats) for o in FORMATS[n].options}
    stray = sorted(o for o in options.model_fields_set if o not in taken)
    if stray:
        users = {o: [n for n, f in FORMATS.items() if o in f.options] for o in stray}
        detail = "; ".join(f"{o.replace('_', '-')} applies to {', '.join(users[o])}" for o in stray)
        raise UserError(f"option(s) not used by formats {', '.join(formats)}: {detail}; drop them or add a format")


def check_requirements(formats: list[str], trtexec_hint: str = "") -> None:
    """Fail before any work when this host cannot build a requested format."""
    trt = [n for n in formats if FORMATS[n].runtime == "tensorrt" and FORMATS[n].missing()]
    if trt:
        lacks = FORMATS[trt[0]].missing()
        sources = ",".join(dict.fromkeys(str(FORMATS[n].source) for n in trt))
        raise UserError(f"{', '.join(trt)} need TensorRT 10.x or 11.x and a CUDA GPU; this host lacks "
                        f"{' and '.join(lacks)}; "
                        f"export --formats {sources} here and build the engine on the device with `edgespec bundle` "
                        f"or trtexec{trtexec_hint}")
    for n in formats:
        lacks = FORMATS[n].missing()
        if lacks:
            extra = FORMATS[n].extra
            how = (f"install edgespec's {extra} extra (pip install 'edgespec[{extra}]'; in a clone: pip install -e "
                   f"'.[{extra}]')" if extra else "install edgespec's dependencies (pip install -e .)")
            raise UserError(f"format {n} needs {' and '.join(lacks)}; {how} and retry")
