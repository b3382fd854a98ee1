"""Budget checks per row and regressions against a baseline report.

Budgets come from each device profile's `budgets:` (or `--budget KEY=VALUE`, which overrides them for every
device). Each (row, budget) pair is one check: passed, failed, or skipped with a reason (an estimated latency
or a proxy accuracy is never checked against a budget: only measured figures are). Sizes and memory are in
MiB (2^20 bytes).
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import UserError
from toolkit.tasks import task_of

from .schema import Measurement

BUDGET_KEYS = {
    # key: (row value getter, comparison, unit)
    "latency_p50_ms": (lambda r: (r.get("latency_ms") or {}).get("p50"), "<=", "ms"),
    "latency_p99_ms": (lambda r: (r.get("latency_ms") or {}).get("p99"), "<=", "ms"),
    "min_accuracy": (lambda r: r.get("accuracy"), ">=", ""),  # top-1 of a classifier
    "min_map50_95": (lambda r: r.get("accuracy"), ">=", ""),  # mAP50-95 of a detector (its row's accuracy)
    "max_size_mb": (lambda r: None if r.get("size_bytes") is None else r["size_bytes"] / 2**20, "<=", "MiB"),
    "max_peak_rss_mb": (lambda r: r.get("peak_rss_mb"), "<=", "MiB"),
}
MEASURED = Measurement.MEASURED
#: Accuracy budgets mean different things per task: a top-1 threshold is no mAP threshold.
TASK_OF_BUDGET = {"min_accuracy": "classify", "min_map50_95": "detect"}


def parse_budget_overrides(items: list[str]) -> dict[str, float]:
    """`KEY=VALUE` strings from the command line."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in BUDGET_KEYS:
            raise UserError(f"--budget {item!r}: expected KEY=VALUE with KEY one of {', '.join(BUDGET_KEYS)}")
        try:
            out[key] = float(value)
        except ValueError:
            raise UserError(f"--budget {item!r}: {value!r} is not a number") from None
    return out


def _measured_value(row: dict[str, Any], key: str) -> tuple[Any, str | None]:
    value = BUDGET_KEYS[key][0](row)
    if row["measurement"] not in MEASURED:
        if key in ("max_size_mb",) and value is not None:
            return value, None  # the artifact's size is a fact wherever it runs
        return None, f"{row['measurement']}: only measured figures are checked"
    if key in TASK_OF_BUDGET and (row.get("how") or {}).get("accuracy_proxy"):
        return None, "accuracy is a proxy from another runtime"
    if value is None:
        return None, "no value in this row"
    return value, None


def check_budgets(rows: list[dict[str, Any]], budgets_by_device: dict[str, dict[str, float]],
                  overrides: dict[str, float] | None = None) -> list[dict[str, Any]]:
    checks = []
    for row in rows:
        budgets = {k: v for k, v in (budgets_by_device.get(row["device"]) or {}).items() if v is not None}
        budgets.update(overrides or {})
        task = task_of(row).name
        for key, limit in budgets.items():
            if TASK_OF_BUDGET.get(key, task) != task:  # not a check for this row, not a skipped one either
                continue
            _, op, unit = BUDGET_KEYS[key]
            value, skip = _measured_value(row, key)
            passed = None if skip else (value <= limit if op == "<=" else value >= limit)
            checks.append({"device": row["device"], "model": row["model"], "format": row["format"],
                           "batch_size": row.get("batch_size"), "measurement": row["measurement"], "check": key,
                           "op": op, "limit": limit, "unit": unit, "value": value, "passed": passed, "skipped": skip})
    return checks


def failed(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in checks if c["passed"] is False]


# -- baseline ---------------------------------------------------------------------------------------------------

def _key(row: dict[str, Any]) -> tuple:
    return row["model"], row["format"], row["device"], row.get("batch_size")


def device_spread(report: dict[str, Any] | None, device: str) -> float:
    """A report's A/A noise on `device`: how far (relative) the generalist timed against a second session of itself
    strayed from 1, the largest over its formats (0 where the report has none)."""
    noise = ((report or {}).get("aa_noise") or {}).get(device) or {}
    floors = [n["aa_floor"] for n in noise.values() if isinstance(n, dict) and n.get("aa_floor")]
    return max(floors) - 1 if floors else 0.0


def format_spread(report: dict[str, Any] | None, device: str, fmt: str) -> float:
    """A report's A/A noise for one format on `device` (the generalists of that format timed against themselves);
    the device's largest (device_spread) where that format has no A/A pair."""
    noise = ((report or {}).get("aa_noise") or {}).get(device) or {}
    floors = [n["aa_floor"] for key, n in noise.items()
              if key.rpartition("/")[2] == fmt and isinstance(n, dict) and n.get("aa_floor")]
    return max(floors) - 1 if floors else device_spread(report, device)


def compare_baseline(rows: list[dict[str, Any]], old: dict[str, Any], threshold: float = 0.10,
                     accuracy_drop: float = 0.01, new: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Mark each row whose p50 or size grew beyond the noise, or whose accuracy fell by more than `accuracy_drop`
    (absolute), against the same (model, format, device, batch size) measured the same way in `old`.

    A p50 is a regression only when it grew by more than `threshold` plus the A/A spread of both runs for that
    format on that device (`new` is the report being built, for its `aa_noise` and `packages`), and never when the
    artifact and the runtime packages are the same as the baseline's: the same file on the same runtime cannot
    have become slower, so the change is the machine's (a shared CI runner). Sets row["baseline"]; returns the
    regressions."""
    old_rows = {_key(r): r for r in old.get("rows", []) if isinstance(r, dict) and "model" in r}
    same_runtime = new is not None and (old.get("packages") or {}) == (new.get("packages") or {})
    regressions = []
    for row in rows:
        prev = old_rows.get(_key(row))
        if prev is None or prev.get("measurement") != row["measurement"]:
            row["baseline"] = None
            continue
        found = []
        new_p50, old_p50 = (row.get("latency_ms") or {}).get("p50"), (prev.get("latency_ms") or {}).get("p50")
        spread = format_spread(old, row["device"], row["format"]) + format_spread(new, row["device"], row["format"])
        same_file = bool(row.get("artifact_sha256")) and row.get("artifact_sha256") == prev.get("artifact_sha256")
        entry: dict[str, Any] = {"p50_ms_old": old_p50, "accuracy_old": prev.get("accuracy"),
                                 "size_bytes_old": prev.get("size_bytes"), "p50_threshold": threshold + spread,
                                 "p50_spread": spread, "same_artifact_and_runtime": same_file and same_runtime}
        if new_p50 is not None and old_p50:
            entry["p50_change"] = new_p50 / old_p50 - 1
            if entry["p50_change"] > threshold + spread and not entry["same_artifact_and_runtime"]:
                found.append(("latency_p50", old_p50, new_p50,
                              f"p50 {entry['p50_change']:+.1%} (threshold {threshold:.0%} + A/A spread {spread:.1%})"))
        if row.get("accuracy") is not None and prev.get("accuracy") is not None:
            entry["accuracy_change"] = row["accuracy"] - prev["accuracy"]
            if entry["accuracy_change"] < -accuracy_drop:
                found.append(("accuracy", prev["accuracy"], row["accuracy"],
                              f"accuracy {entry['accuracy_change']:+.4f}"))
        if row.get("size_bytes") and prev.get("size_bytes"):
            entry["size_change"] = row["size_bytes"] / prev["size_bytes"] - 1
            if entry["size_change"] > threshold:
                found.append(("size", prev["size_bytes"], row["size_bytes"], f"size {entry['size_change']:+.1%}"))
        entry["regression"] = bool(found)
        entry["what"] = [f[3] for f in found]
        row["baseline"] = entry
        for metric, before, after, text in found:
            regressions.append({"device": row["device"], "model": row["model"], "format": row["format"],
                                "batch_size": row.get("batch_size"), "metric": metric, "old": before, "new": after,
                                "text": text})
    return regressions
