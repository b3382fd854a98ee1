"""The one schema of a report row: its keys, their types and empty values, and the measurement labels.

rows.py builds every row from ROW_DEFAULTS, report.py validates against ROW_TYPES, REPORT_SCHEMA.md documents
each key, and the device runner's copy (toolkit/bundle/runner/run.py, which may not import edgespec) is checked
against this module by tests/unit/test_architecture.py.
"""

from __future__ import annotations

from typing import Any


class Measurement:
    """How a row's figures were obtained (the `measurement` of a row and of a device)."""

    HOST = "measured on host"
    DEVICE = "measured on device"
    OTHER_HARDWARE = "measured on other hardware"  # a bundle run with --allow-other-hardware: not the device's
    ESTIMATE = "estimate"
    UNAVAILABLE = "unavailable"
    MEASURED = (HOST, DEVICE)  # figures of the device itself: budgets are checked on these
    TIMED = (HOST, DEVICE, OTHER_HARDWARE)  # figures from a real timing, wherever it ran
    ALL = (HOST, DEVICE, OTHER_HARDWARE, ESTIMATE, UNAVAILABLE)


ROLES = ("generalist", "specialist")
LATENCY_KEYS = ("p50", "p90", "p99", "mean", "std")

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))
#: Required keys of every row and their types (a bool is never a number here).
ROW_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "role": (str,), "group": _OPT_STR, "format": (str,), "precision": (str,), "device": (str,),
    "measurement": (str,), "accuracy": _OPT_NUM, "generalist_accuracy_closed": _OPT_NUM,
    "generalist_accuracy_open": _OPT_NUM, "latency_ms": (dict, type(None)), "throughput_ips": _OPT_NUM,
    "batch_size": (int,), "size_bytes": (int, type(None)), "peak_rss_mb": _OPT_NUM,
    "first_inference_ms": _OPT_NUM, "speedup_vs_generalist": _OPT_NUM, "images": (int, type(None)),
    "artifact_sha256": _OPT_STR, "notes": (list,),
}
#: Keys a new row starts with besides its identity (model, role, group, format, precision, device, measurement,
#: batch_size), and their empty values: figures not (yet) obtained are null.
ROW_DEFAULTS: dict[str, Any] = {
    "accuracy": None, "generalist_accuracy_closed": None, "generalist_accuracy_open": None, "latency_ms": None,
    "throughput_ips": None, "size_bytes": None, "peak_rss_mb": None, "first_inference_ms": None,
    "speedup_vs_generalist": None, "size_ratio_vs_generalist": None, "accuracy_change_vs_generalist": None,
    "images": None, "artifact_sha256": None, "notes": [], "how": {}, "batches": [],
    "macs": None, "params": None,  # per image, counted by Torch-Pruning at export (classification artifacts)
}


def empty_row(model: str, role: str, group: str | None, fmt: str, precision: str, device: str, measurement: str,
              batch_size: int) -> dict[str, Any]:
    """A row with its identity set and every figure empty (fresh lists and dicts, never shared)."""
    return {"model": model, "role": role, "group": group, "format": fmt, "precision": precision, "device": device,
            "measurement": measurement, "batch_size": batch_size,
            **{k: (type(v)() if isinstance(v, list | dict) else v) for k, v in ROW_DEFAULTS.items()}}


def row_problems(row: Any, where: str = "row") -> list[str]:
    """What is wrong with one row against the schema (empty when valid)."""
    if not isinstance(row, dict):
        return [f"{where} is not an object"]
    problems = []
    for key, types in ROW_TYPES.items():
        if key not in row:
            problems.append(f"{where}.{key} is missing")
        elif not isinstance(row[key], types) or isinstance(row[key], bool):
            problems.append(f"{where}.{key} has type {type(row[key]).__name__}")
    if row.get("role") not in ROLES:
        problems.append(f"{where}.role is {row.get('role')!r}, expected generalist or specialist")
    if row.get("measurement") not in Measurement.ALL:
        problems.append(f"{where}.measurement is {row.get('measurement')!r}, expected one of {Measurement.ALL}")
    return problems


#: Figures that are fractions, and figures that are counts or physical quantities (finite, never negative).
FRACTION_KEYS = ("accuracy", "generalist_accuracy_closed", "generalist_accuracy_open")
NON_NEGATIVE_KEYS = ("throughput_ips", "size_bytes", "peak_rss_mb", "first_inference_ms", "speedup_vs_generalist",
                     "images", "macs", "params")


def row_range_problems(row: dict[str, Any], where: str = "row") -> list[str]:
    """Figures a row's types allow but no measurement can give: NaN, infinities, negatives, accuracy outside [0, 1]
    (call after `row_problems` found none)."""
    import math

    def bad(value: Any, low: float, high: float = math.inf) -> bool:
        return isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and low <= value <= high)

    problems = [f"{where}.{k} is {row[k]!r}, expected a fraction in [0, 1]" for k in FRACTION_KEYS
                if row.get(k) is not None and bad(row[k], 0.0, 1.0)]
    problems += [f"{where}.{k} is {row[k]!r}, expected a finite number >= 0" for k in NON_NEGATIVE_KEYS
                 if row.get(k) is not None and bad(row[k], 0.0)]
    if bad(row.get("batch_size"), 1):
        problems.append(f"{where}.batch_size is {row.get('batch_size')!r}, expected an integer >= 1")
    latency = row.get("latency_ms") or {}
    problems += [f"{where}.latency_ms.{k} is {v!r}, expected a finite number of milliseconds >= 0"
                 for k, v in latency.items() if v is not None and bad(v, 0.0)]
    problems += [f"{where}.{k} is {v!r}, expected a finite number" for k, v in row.items()
                 if isinstance(v, float) and not math.isfinite(v)]  # any other figure (a change may be negative)
    batches = row.get("batches") or []
    if not isinstance(batches, list):
        return [*problems, f"{where}.batches is not a list"]
    for i, b in enumerate(batches):  # per batch size: timings and counts, all finite and >= 0
        if not isinstance(b, dict):
            problems.append(f"{where}.batches[{i}] is not an object")
            continue
        flat = [(k, v) for k, v in b.items() if not isinstance(v, dict)]
        flat += [(f"{k}.{k2}", v2) for k, v in b.items() if isinstance(v, dict) for k2, v2 in v.items()]
        problems += [f"{where}.batches[{i}].{k} is {v!r}, expected a finite number >= 0" for k, v in flat
                     if isinstance(v, int | float) and v is not None and bad(v, 0.0)]
    return problems
