"""Device profiles: what to run on a device, how, and what it can do at most (`devices/<name>.yaml`).

A profile says which runtime and artifact formats a device deploys, with which threads and batch sizes, the
device's published peak compute and memory bandwidth *with their source* (used only for labelled estimates),
how to recognise the device when edgespec runs on it, and optional budgets that `edgespec bench` checks.
The schema forbids unknown keys, so a typo is an error that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from exporters.formats import ALL_FORMATS, ISAS, RUNTIME_FORMATS, RUNTIMES

from .errors import UserError, describe_validation, unknown_name
from .io import read_yaml

PROFILE_SCHEMA = "edgespec.device/1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # an infinite peak or budget is a typo


#: Bounds of what a profile may claim: beyond them a value is a typo that would crash or hang a later step (2^40
#: threads, a batch of 10^9 images), not a device. Peaks: 10^8 G(FL)OP/s is 100 PFLOP/s, bandwidth 10^6 GB/s.
MAX_THREADS = 1024
MAX_BATCH = 4096
MAX_PEAK_G = 1e8
MAX_BANDWIDTH_GBS = 1e6
MAX_MEMORY_MB = 1 << 24  # 16 TiB


class Peak(_Strict):
    """Published peak figures. Only used for estimates, which the report labels as such."""

    fp32_gflops: float | None = Field(None, gt=0, le=MAX_PEAK_G, description="peak fp32 GFLOP/s")
    fp16_gflops: float | None = Field(None, gt=0, le=MAX_PEAK_G,
                                      description="peak fp16 GFLOP/s (dense, tensor cores where present)")
    int8_gops: float | None = Field(None, gt=0, le=MAX_PEAK_G, description="peak int8 GOP/s (dense)")
    memory_bandwidth_gbs: float = Field(gt=0, le=MAX_BANDWIDTH_GBS, description="peak DRAM bandwidth in GB/s")
    source: str = Field(min_length=8, description="where the figures come from: document name and URL")
    notes: str | None = Field(None, description="how derived figures were derived (e.g. cores x clock x FLOPs/cycle)")

    def compute_for(self, precision: str) -> tuple[float | None, str]:
        """Peak ops/s for `precision`, falling back to a wider type the device has (named in the second value)."""
        order = {"int8": ("int8_gops", "fp16_gflops", "fp32_gflops"), "fp16": ("fp16_gflops", "fp32_gflops"),
                 "fp32": ("fp32_gflops",)}[precision]
        for key in order:
            value = getattr(self, key)
            if value is not None:
                return value * 1e9, key
        return None, ""


class Match(_Strict):
    """How to tell that edgespec runs on this device (then figures are measured, not estimated)."""

    host: bool = Field(False, description="always the machine running edgespec (measured on host)")
    cuda: bool = Field(False, description="requires a visible CUDA GPU on the host (measured on host)")
    device_tree_model: str | None = Field(
        None, description="substring of /proc/device-tree/model, e.g. 'Raspberry Pi 5' (measured on device)")


class Budgets(_Strict):
    """Limits checked per row; each becomes one JUnit test case."""

    latency_p50_ms: float | None = Field(None, gt=0)
    latency_p99_ms: float | None = Field(None, gt=0)
    min_accuracy: float | None = Field(None, ge=0, le=1, description="top-1, classification rows")
    min_map50_95: float | None = Field(None, ge=0, le=1, description="mAP50-95, detection rows")
    max_size_mb: float | None = Field(None, gt=0)
    max_peak_rss_mb: float | None = Field(None, gt=0)


class DeviceProfile(_Strict):
    schema_: Literal["edgespec.device/1"] = Field(PROFILE_SCHEMA, alias="schema")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str
    runtime: Literal[RUNTIMES]  # type: ignore[valid-type]  # the runtimes of exporters.formats
    execution_providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"],
                                           description="onnxruntime providers in priority order")
    other_runtimes: list[Literal[RUNTIMES]] = Field(  # type: ignore[valid-type]
        default_factory=list, description="further runtimes the device has (a phone: executorch beside onnxruntime); "
        "their formats may be listed too, each runs on its own runtime (exporters.formats)")
    formats: list[str] = Field(min_length=1, description="artifact formats this device deploys, preferred first")
    batch_sizes: list[int] = Field(default_factory=lambda: [1], min_length=1, max_length=16)
    threads: int | None = Field(None, ge=1, le=MAX_THREADS, description="intra-op threads; null = all cores of the "
                                "host")
    memory_mb: int | None = Field(None, gt=0, le=MAX_MEMORY_MB, description="device memory in MB")
    isa: Literal[ISAS] | None = Field(  # type: ignore[valid-type]
        None, description="CPU instruction-set family; picks the onnx-int8 recipe (exporters/int8_recipes.py); "
        "null: the host's, read from /proc/cpuinfo")
    dla_core: int | None = Field(None, ge=0, description="TensorRT profiles: build engines for this DLA core "
                                 "(Jetson AGX Orin: 0 or 1) instead of the GPU; null: the GPU")
    dla_gpu_fallback: bool = Field(True, description="with dla_core: layers the DLA cannot run go to the GPU "
                                   "(false: such a model fails to build)")
    peak: Peak | None = None
    match: Match = Field(default_factory=Match)
    budgets: Budgets = Field(default_factory=Budgets)
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    @field_validator("formats")
    @classmethod
    def _formats_fit_runtime(cls, formats: list[str], info: ValidationInfo) -> list[str]:
        runtime = info.data.get("runtime")
        runtimes = [runtime, *info.data.get("other_runtimes", [])]
        allowed = [f for rt in runtimes for f in RUNTIME_FORMATS.get(rt, ALL_FORMATS)]
        bad = [f for f in formats if f not in allowed]
        if bad:
            on = f"runtime {runtime!r}" if len(runtimes) == 1 else f"runtimes {', '.join(map(repr, runtimes))}"
            raise ValueError(f"{bad} cannot run on {on}; allowed: {', '.join(allowed)} (other_runtimes: adds a "
                             "runtime the device also has)")
        return formats

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, sizes: list[int]) -> list[int]:
        if any(b < 1 or b > MAX_BATCH for b in sizes):
            raise ValueError(f"every batch size must be between 1 and {MAX_BATCH}")
        if len(set(sizes)) != len(sizes):
            raise ValueError("a batch size is listed twice; list each once")
        return sizes

    @property
    def thread_count(self) -> int:
        return self.threads or os.cpu_count() or 1


def devices_dir() -> Path:
    """Repository-root `devices/`, next to the toolkit package; EDGESPEC_DEVICES_DIR overrides it."""
    env = os.environ.get("EDGESPEC_DEVICES_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "devices"


def list_profiles() -> list[str]:
    d = devices_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _describe(exc: ValidationError) -> str:
    def allowed(parent: tuple) -> str:
        keys = _allowed_keys(parent)
        return f" (allowed: {', '.join(keys)})" if keys else ""

    return describe_validation(exc, empty="(top level)", allowed=allowed, missing=True)


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = DeviceProfile
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        sub = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
                   None)
        if sub is None:
            return []
        model = sub
    return [f.alias or n for n, f in model.model_fields.items()]


def parse_profile(data: object, where: str) -> DeviceProfile:
    if not isinstance(data, dict):
        raise UserError(f"device profile {where} must be a YAML mapping of keys to values")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"invalid device profile {where}: {_describe(exc)}") from None


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A profile by name (from `devices_dir()`) or by path to a YAML file."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or os.sep in text):
        path = devices_dir() / f"{text}.yaml"
        if not path.is_file():
            raise unknown_name("device profile", text, list_profiles())
    data = read_yaml(path, "device profile file", "pass a profile name or a .yaml path")
    profile = parse_profile(data, str(path))
    if path.parent == devices_dir() and profile.name != path.stem:
        raise UserError(f"device profile {path} has name {profile.name!r}; rename the file or the name to match")
    return profile


def device_tree_model() -> str:
    try:
        return Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode("utf-8", "replace")
    except OSError:
        return ""


def host_description() -> dict[str, object]:
    """What 'measured on host' means: this machine."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "device_tree_model": device_tree_model() or None}


__all__ = ["ALL_FORMATS", "RUNTIMES", "RUNTIME_FORMATS", "Budgets", "DeviceProfile", "Match", "Peak", "devices_dir",
           "host_description", "list_profiles", "load_profile", "parse_profile", "unknown_name"]

