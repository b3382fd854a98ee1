"""Bring a bundle's results.json back into report.json, next to the host measurements and estimates, and re-render
report.md, report.html and junit.xml with benchmarks.report.

Imported rows replace earlier `measured on device` rows of the same (device, model, format); every
other row (host measurements, estimates, other devices) stays. Budget checks are added for the imported rows with
the device profile's budgets, since these are measured figures.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from benchmarks.schema import Measurement, row_range_problems

from ..errors import UserError
from ..io import read_json

log = logging.getLogger(__name__)

RESULTS_SCHEMA = "edgespec.device-results/1"
_SHA256 = re.compile(r"[0-9a-f]{64}")
MEASURED_ON_DEVICE = Measurement.DEVICE
METHOD = ("rows marked 'measured on device' come from `edgespec bundle`: the runner verified every file's sha256 "
          "on the device, then measured with a copy of the bench timing harness (first inference, warm-up, timed "
          "runs until a count or time limit) and the same accuracy on a seeded sample of the group's test images")


def load_results(path: str | Path) -> dict[str, Any]:
    from benchmarks.report import REPORT_SCHEMA, validate_report

    path = Path(path)
    data = read_json(path, "device results")
    if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA:
        raise UserError(f"{path} is not a {RESULTS_SCHEMA} file; pass the results.json written by a bundle's run.py")
    problems = validate_report({"schema": REPORT_SCHEMA, "rows": data.get("rows")})
    if problems:
        raise UserError(f"{path} has rows that do not match the report format: {problems[0]}; rerun the bundle "
                        "built by this edgespec version")
    problems = [p for i, r in enumerate(data["rows"]) for p in row_range_problems(r, f"rows[{i}]")]
    if problems:
        raise UserError(f"{path} holds figures no measurement gives: {problems[0]}; it was edited or corrupted: "
                        "rerun the bundle on the device")
    forged = [i for i, r in enumerate(data["rows"]) if r["artifact_sha256"] is not None
              and not _SHA256.fullmatch(r["artifact_sha256"])]
    if forged:
        raise UserError(f"{path}: rows[{forged[0]}].artifact_sha256 is not a sha256 (64 hex digits); it was edited: "
                        "rerun the bundle on the device")
    seen: dict[tuple, int] = {}
    for i, r in enumerate(data["rows"]):
        key = (r["device"], r["model"], r["format"], r["batch_size"])
        if key in seen:
            raise UserError(f"{path}: rows[{i}] repeats rows[{seen[key]}] ({r['model']} {r['format']} batch "
                            f"{r['batch_size']} on {r['device']}); rerun the bundle instead of merging result files")
        seen[key] = i
    bad = [r for r in data["rows"] if r["measurement"] not in (MEASURED_ON_DEVICE, Measurement.OTHER_HARDWARE,
                                                                Measurement.UNAVAILABLE)
           or r["device"] != data.get("device")]
    if bad:
        raise UserError(f"{path} holds rows that were not measured on device {data.get('device')!r}; refusing to "
                        "import them as device measurements")
    return data


def _empty_report(results: dict[str, Any], source: Path) -> dict[str, Any]:
    from benchmarks.report import REPORT_SCHEMA
    from toolkit import __version__
    from toolkit.runs import now

    return {"schema": REPORT_SCHEMA, "created": now(), "edgespec_version": __version__,
            "source": {"path": str(results.get("bundle", {}).get("export", {}).get("path") or source)},
            "host": {}, "devices": {}, "methods": {}, "budgets": [], "rows": []}


def _key(row: dict[str, Any]) -> tuple:
    return row["device"], row["model"], row["format"]  # one row per (model, format, device), as bench writes


def _describe_device(facts: dict[str, Any]) -> str:
    parts = [facts.get("device_tree_model") or facts.get("cpu") or facts.get("machine"), facts.get("gpu"),
             facts.get("os_release"), (facts.get("jetpack") or {}).get("l4t"), facts.get("power_mode"),
             f"{facts.get('runtime')} {facts.get('runtime_version')}"]
    return ", ".join(str(p) for p in parts if p)


def _budgets_for(device: str) -> dict[str, float]:
    from ..devices import load_profile

    try:
        return load_profile(device).budgets.model_dump()
    except UserError:  # a bundle built from a profile file that is not here: no budgets to check
        return {}


def merge_results(report: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """Merge `results` (a loaded results.json) into `report` in place; returns the report."""
    from benchmarks.budgets import check_budgets
    from benchmarks.rows import flag_estimates_below_measured, speedup_resolved

    device = results["device"]
    facts = results.get("device_facts") or {}
    new_rows = [dict(r) for r in results["rows"]]
    by_key = {(r["model"], r["format"], r.get("batch_size")): r for r in new_rows}
    for r in new_rows:
        r["how"] = {"measurement": r["measurement"], "bundle_sha256": results.get("bundle", {}).get("sha256"),
                    "measured": results.get("measured")}
        gen = by_key.get((r.get("generalist_model"), r["format"], r.get("batch_size")))
        if r.get("speedup_vs_generalist") is not None and gen is not None:
            r["speedup_resolved"] = speedup_resolved(r, gen)
    keys = {_key(r) for r in new_rows}
    # the measurement replaces what the report had for the same artifact on that device (an estimate, an earlier
    # import): one row per artifact and device, never an estimate beside its measurement
    kept = [r for r in report["rows"] if _key(r) not in keys]
    label = MEASURED_ON_DEVICE if any(r["measurement"] == MEASURED_ON_DEVICE for r in new_rows) else \
        Measurement.OTHER_HARDWARE if any(r["measurement"] == Measurement.OTHER_HARDWARE for r in new_rows) else \
        MEASURED_ON_DEVICE
    devices = report.setdefault("devices", {})
    dev = devices.setdefault(device, {})
    before = dev.get("measurement")
    left = {r["measurement"] for r in kept if r["device"] == device}
    if before and label not in before and left:
        dev["measurement"] = f"{before} + {label}"
    elif not before or not left:
        dev["measurement"] = label
    how = f"measured on the device with a bundle ({_describe_device(facts)}) on {results.get('measured')}"
    dev["how"] = f"{dev['how']}; {how}" if dev.get("how") and how not in dev["how"] else how
    dev["device_facts"] = facts
    order = {name: i for i, name in enumerate(devices)}
    rows = kept + new_rows
    report["rows"] = sorted(rows, key=lambda r: order.get(r["device"], len(order)))  # stable: bench order kept
    checks = [c for c in report.get("budgets", []) if (c["device"], c["model"], c["format"]) not in keys]
    for c in check_budgets(new_rows, {device: _budgets_for(device)}, report.get("budget_overrides")):
        c["measured_on_device"] = True
        checks.append(c)
    report["budgets"] = checks
    flag_estimates_below_measured(report["rows"], devices)  # a device measured now may be faster than one estimated
    report.setdefault("methods", {})[MEASURED_ON_DEVICE] = METHOD
    report.setdefault("imports", []).append({"device": device, "measured": results.get("measured"),
                                             "bundle_sha256": results.get("bundle", {}).get("sha256"),
                                             "rows": len(new_rows)})
    return report


def import_results(results_path: str | Path, report_dir: str | Path) -> dict[str, Any]:
    """Merge a results.json into REPORT_DIR/report.json (created if absent) and re-render the four reports."""
    from benchmarks.report import load_report, write_reports

    from ..io import DirLock

    results = load_results(results_path)
    report_dir = Path(report_dir)
    if report_dir.exists() and not report_dir.is_dir():
        raise UserError(f"--report {report_dir} is a file; pass the directory that holds (or will hold) report.json")
    if (report_dir / "report.json").is_file():
        _check_artifacts(results, load_report(report_dir / "report.json"), results_path, report_dir)
    with DirLock(report_dir, "report directory"):  # read-merge-write: a concurrent bench or import is refused
        if (report_dir / "report.json").is_file():
            report = load_report(report_dir / "report.json")
        else:
            report = _empty_report(results, Path(results_path))
        merge_results(report, results)
        write_reports(report, report_dir)
    log.info("merged %d device rows from %s into %s", len(results["rows"]), results_path, report_dir)
    return report


def _check_artifacts(results: dict[str, Any], report: dict[str, Any], results_path: str | Path,
                     report_dir: Path) -> None:
    """Device rows may only join a report about the same files: their artifact hashes must be ones it lists."""
    known = {r.get("artifact_sha256") for r in report.get("rows", [])} - {None}
    if not known:
        return
    foreign = sorted({str(r.get("artifact_sha256")) for r in results["rows"]} - known)
    if foreign:
        raise UserError(f"{results_path} was measured on artifacts that {report_dir / 'report.json'} does not list "
                        f"(sha256 {foreign[0][:12]}...); bundle the export this report benchmarks, or import into a "
                        "new --report directory")
