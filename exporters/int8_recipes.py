"""Which int8 recipe is fast and exact on which CPU: one table, keyed by instruction-set family, with its evidence.

ONNX Runtime's CPU int8 kernels differ per instruction set, so one file is not fast everywhere:

- x86 without VNNI (AVX2, AVX-512F): u8 x s8 pairs are summed into a saturating int16 (VPMADDUBSW); 255 * 127 * 2
  overflows it, 255 * 63 * 2 does not, so weights use 7 bits (reduce_range). Activations stay u8 (the kernels'
  native type; s8 activations are converted at run time).
- x86 with VNNI (AVX-512 VNNI, AVX-VNNI) or AMX: VPDPBUSD / TDPBUSD accumulate u8 x s8 into int32 with no
  saturation, so all 8 weight bits are kept; u8 asymmetric activations are the fast path, symmetric s8
  activations (S8S8 QDQ) were 2-3.5x slower than fp32 on those CPUs (measured, see `evidence`).
- Arm: ONNX Runtime's arm64 kernels take s8 or u8 activations (SDOT/UDOT with dot-product); S8S8 symmetric is
  ONNX Runtime's documented default there. Not measured on an Arm CPU by edgespec yet (the evidence says so).
- TensorRT: explicit quantization needs zero points of 0, so the QDQ file a `tensorrt-int8` engine is built from is
  symmetric int8 throughout (kept with 7-bit weights, as edgespec has always built it).

`benchmarks/scripts/int8_recipes.py` measures every recipe against fp32 on the host it runs on.
This module imports nothing heavy and nothing of edgespec beyond the formats table.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .formats import INT8_RECIPES, ISAS


@dataclass(frozen=True)
class Int8Recipe:
    name: str
    activations: Literal["U8", "S8"]  # activation type; U8 is asymmetric (zero point free), S8 symmetric
    reduce_range: bool  # weights in 7 bits (no int16 saturation on x86 without VNNI)
    per_channel: bool = True  # weights per output channel
    float_ops: tuple[str, ...] = ()  # op types left in float
    evidence: str = ""  # the measurement or document that justifies the entry

    @property
    def symmetric_activations(self) -> bool:
        return self.activations == "S8"

    def settings(self) -> tuple[Any, ...]:
        return self.activations, self.reduce_range, self.per_channel, self.float_ops

    def describe(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


_NO_VNNI = ("x86 without VNNI saturates u8 x s8 pair sums in int16 (VPMADDUBSW); measured on an AVX2-only AMD EPYC, "
            "digits generalist: 8-bit weights agreed with PyTorch on 94.4% of test images, 7-bit on 100%")
_VNNI = ("measured by benchmarks/scripts/int8_recipes.py on an AMD EPYC Zen 4 (AVX-512 VNNI, no AMX), 2 threads, "
         "batch 1, random weights, two runs on a shared host (load ~4 on 2 cores, so absolute ms are noisy): "
         "fp32 / U8S8 8-bit / S8S8 8-bit ms: resnet18 64 px 9.0 / 1.41 / 8.7 and 25.6 / 1.55 / 20.5, "
         "mobilenet_v2 96 px 6.9 / 1.53 / 11.7 and 6.4 / 1.27 / 10.8, mobilenet_v3_small 96 px 1.19 / 1.52 / 13.0 "
         "and 1.01 / 1.33 / 17.4 (int8 slower than fp32 for this small model); top-1 agreement with fp32 "
         "1.000 / 1.000 / 0.977 (U8S8 8-bit)")
_AMX = ("measured by benchmarks/scripts/int8_recipes.py on an Intel Xeon with AMX and AVX-512 VNNI/BF16/FP16 (2 vCPUs "
        "at 2.0 GHz), 2 threads, batch 1, random weights, two runs on an otherwise idle host: fp32 / U8S8 8-bit / "
        "S8S8 8-bit ms: resnet18 64 px 8.24 / 2.16 / 7.87 and 8.42 / 2.39 / 9.66, mobilenet_v2 96 px 2.40 / 1.34 / "
        "7.69 and 5.37 / 2.12 / 6.66, mobilenet_v3_small 96 px 1.54 / 1.75 / 8.80 and 1.64 / 1.96 / 8.93 (int8 "
        "slower than fp32 for this small model); top-1 agreement with fp32 1.000 / 1.000 / 0.977 (U8S8 8-bit). "
        "The issue's report from another such Xeon: resnet18 1.66 / 0.92 / 3.18 ms, mobilenet_v2 0.95 / 0.68 / 2.22")
_ARM = ("not measured by edgespec on Arm: ONNX Runtime's quantization guide names S8S8 QDQ its default; verify with "
        "benchmarks/scripts/int8_recipes.py on the device")

RECIPES: dict[str, Int8Recipe] = {r.name: r for r in (
    Int8Recipe("x86-avx2", "U8", reduce_range=True, evidence=_NO_VNNI),
    Int8Recipe("x86-avx512", "U8", reduce_range=True, evidence=_NO_VNNI + " (AVX-512F/BW has the same VPMADDUBSW)"),
    Int8Recipe("x86-avx-vnni", "U8", reduce_range=False,
               evidence="same VPDPBUSD instruction as AVX-512 VNNI: " + _VNNI),
    Int8Recipe("x86-avx512-vnni", "U8", reduce_range=False, evidence=_VNNI),
    Int8Recipe("x86-amx", "U8", reduce_range=False, evidence=_AMX),
    Int8Recipe("arm-neon", "S8", reduce_range=False, evidence=_ARM),
    Int8Recipe("arm-dotprod", "S8", reduce_range=False, evidence=_ARM),
    Int8Recipe("generic", "U8", reduce_range=True,
               evidence="unknown CPU: the 7-bit u8 x s8 file is exact on every x86 CPU (see x86-avx2)"),
    Int8Recipe("tensorrt", "S8", reduce_range=True,
               evidence="TensorRT explicit quantization takes zero points of 0 only (symmetric QDQ); 7-bit weights "
                        "kept as edgespec built it before recipes, so the same file stays exact on x86 CPUs"),
)}
assert set(RECIPES) == set(INT8_RECIPES), "every recipe name of exporters.formats has a table entry"


def isa_from_flags(flags: set[str], machine: str) -> str:
    """The ISA family of a CPU from its /proc/cpuinfo flags (x86 'flags', Arm 'Features') and machine name."""
    machine = machine.lower()
    if machine in ("aarch64", "arm64") or machine.startswith("arm"):
        return "arm-dotprod" if "asimddp" in flags else "arm-neon"
    if machine in ("x86_64", "amd64", "i686", "x86"):
        if "amx_int8" in flags:
            return "x86-amx"
        if "avx512_vnni" in flags:
            return "x86-avx512-vnni"
        if "avx_vnni" in flags:
            return "x86-avx-vnni"
        if "avx512bw" in flags:
            return "x86-avx512"
        if "avx2" in flags:
            return "x86-avx2"
    return "generic"


def host_isa(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """This machine's ISA family (`generic` where /proc/cpuinfo cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "generic"
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
            break
    return isa_from_flags(flags, platform.machine())


def choose(requested: str | None, host: str | None = None) -> tuple[Int8Recipe, dict[str, Any]]:
    """The recipe for `requested` (a recipe name; None: this host's ISA) and the manifest facts saying how it was
    chosen and whether host timings of the file stand for the target's."""
    host = host or host_isa()
    name = requested or host
    recipe = RECIPES[name]
    facts: dict[str, Any] = {**recipe.describe(), "chosen_by": "int8_recipe option or device profile isa"
                             if requested else "this host's CPU flags", "host_isa": host}
    if name != host and RECIPES[host].settings() != recipe.settings():
        facts["note"] = (f"built for {name}; this host is {host}: timings of this file on this host are not the "
                         "target's")
    return recipe, facts


__all__ = ["ISAS", "RECIPES", "Int8Recipe", "choose", "host_isa", "isa_from_flags"]
