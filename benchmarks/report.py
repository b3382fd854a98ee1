"""The four reports of `edgespec bench`: report.json (schema edgespec.report/1), report.md, report.html, junit.xml.

The JSON schema is documented in benchmarks/REPORT_SCHEMA.md; `validate_report` checks it. The Markdown and
HTML reports are renderings of the JSON and never contain a figure the JSON lacks.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from toolkit.errors import UserError
from toolkit.io import json_text, publish_together, read_json

from .schema import LATENCY_KEYS, Measurement, row_problems
from .schema import ROW_TYPES as ROW_TYPES  # re-exported: the schema report.json is validated against

MEASUREMENTS = Measurement.ALL

REPORT_SCHEMA = "edgespec.report/1"
_OPT_NUM = (int, float, type(None))
REPORT_FILES = ("report.json", "report.md", "report.html", "junit.xml")


def validate_report(report: Any) -> list[str]:
    """Problems with `report` against edgespec.report/1 (empty when valid)."""
    if not isinstance(report, dict):
        return ["report is not a JSON object"]
    problems = []
    if report.get("schema") != REPORT_SCHEMA:
        problems.append(f"schema is {report.get('schema')!r}, expected {REPORT_SCHEMA!r}")
    rows = report.get("rows")
    if not isinstance(rows, list):
        return [*problems, "rows is missing or not a list"]
    for i, row in enumerate(rows):
        found = row_problems(row, f"rows[{i}]")
        problems += found
        if not isinstance(row, dict):
            continue
        lat = row.get("latency_ms")
        if isinstance(lat, dict):
            for k in LATENCY_KEYS:
                if k not in lat or not isinstance(lat[k], _OPT_NUM):
                    problems.append(f"rows[{i}].latency_ms.{k} is missing or not a number/null")
    return problems


def load_report(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    data = read_json(path, "baseline report")
    problems = validate_report(data)
    if problems:
        raise UserError(f"{path} is not an {REPORT_SCHEMA} report: {problems[0]}")
    return data


# -- formatting ---------------------------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 3) -> str:
    """Fixed decimals so the Markdown shows exactly round(value, digits) of the JSON."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float | int):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_ms(value: Any) -> str:
    """Latency with 4 significant digits: sub-millisecond figures keep their precision."""
    return "–" if value is None else f"{value:.4g}"


def _size_kib(row: dict[str, Any]) -> str:
    return "–" if row.get("size_bytes") is None else f"{row['size_bytes'] / 1024:.1f}"


def _ratio(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    return "–" if v is None else f"{v:.2f}x"


def _paired_p50s(row: dict[str, Any]) -> str:
    """The p50s of the side-by-side timing the speedup is the ratio of (not the row's own p50, timed apart)."""
    paired = row.get("speedup_paired") or {}
    if not paired.get("specialist_p50_ms"):
        return "–"
    return f"{fmt_ms(paired['specialist_p50_ms'])} / {fmt_ms(paired['generalist_p50_ms'])}"


def _delta(row: dict[str, Any]) -> str:
    v = row.get("accuracy_change_vs_generalist")
    return "–" if v is None else f"{v * 100:+.1f} pt"


TABLE_HEAD = ["model", "role", "group", "format", "measurement", "batch", "accuracy", "generalist closed",
              "generalist open", "Δ acc vs closed", "p50 ms", "p99 ms", "paired p50 ms: this / generalist",
              "speedup (paired p50 ratio)", "size KiB", "size ratio", "peak RSS MiB"]


DETECT_HEAD = ["mAP50", "generalist mAP50 closed", "generalist mAP50 open"]
DETECT_NOTE = "Detection rows: accuracy is mAP50-95 (box); their mAP50 figures are in the last columns."


def has_detect(rows: list[dict[str, Any]]) -> bool:
    """Whether rows carry mAP50 figures (the detection scorer's extra fields), which get columns of their own."""
    return any("map50" in r for r in rows)


#: Column names of a table of estimates: a roofline figure is a lower bound, not a measurement.
ESTIMATE_HEAD = {"p50 ms": "estimated p50 ms (lower bound)", "p99 ms": "estimated p99 ms",
                 "speedup (paired p50 ratio)": "estimated speedup"}


def table_head(rows: list[dict[str, Any]], estimated: bool = False) -> list[str]:
    head = [ESTIMATE_HEAD.get(h, h) for h in TABLE_HEAD] if estimated else list(TABLE_HEAD)
    return head + (DETECT_HEAD if has_detect(rows) else [])


def row_cells(row: dict[str, Any], detect: bool) -> list[str]:
    """table_cells plus, in a table with detection rows, the mAP50 columns."""
    extra = [fmt(row.get(k), 4) for k in ("map50", "generalist_map50_closed", "generalist_map50_open")]
    return table_cells(row) + (extra if detect else [])


def table_cells(row: dict[str, Any]) -> list[str]:
    lat = row.get("latency_ms") or {}
    cells = [row["model"], row["role"], row.get("group") or "–", row["format"], row["measurement"],
             str(row["batch_size"]),
             fmt(row.get("accuracy"), 4), fmt(row.get("generalist_accuracy_closed"), 4),
             fmt(row.get("generalist_accuracy_open"), 4), _delta(row), fmt_ms(lat.get("p50")), fmt_ms(lat.get("p99")),
             _paired_p50s(row),
             _ratio(row, "speedup_vs_generalist") + ("~" if row.get("speedup_resolved") is False else "")
             + (" [{:.2f}–{:.2f}]".format(*row["speedup_ci"]) if row.get("speedup_ci") else ""),
             _size_kib(row), _ratio(row, "size_ratio_vs_generalist"),
             fmt(row.get("peak_rss_mb"), 1)]
    below = row.get("below_measurement")
    if below:
        cells[10] += f" ⚠ below {below['device']}'s measured {fmt_ms(below['p50_ms'])}"
    slow = row.get("slower_than_fp32")
    if slow:
        cells[3] += f" ⚠ slower than {slow['fp32_format']} ({slow['ratio']:.2f}x p50)"
    base = row.get("baseline")
    if base and base.get("regression"):
        cells[0] += " ⚠ REGRESSION (" + ", ".join(base["what"]) + ")"
    return cells


def aa_noise_lines(noise: dict[str, Any] | None) -> list[str]:
    """The A/A floor of a device: each generalist timed against a second session of itself, per format."""
    if not noise:
        return []
    parts = [f"{key} {n['speedup']:.3f}x [{n['speedup_ci'][0]:.3f}–{n['speedup_ci'][1]:.3f}], floor "
             f"{n['aa_floor']:.3f}x" for key, n in noise.items() if n]
    return ["", "A/A noise floor (the generalist timed against a second session of itself, same pairing; a speedup "
            "is resolved only when its 95% interval lies outside [1/floor, floor], else marked ~): "
            + "; ".join(parts) + ". Speedup cells: paired p50 ratio [95% interval]."] if parts else []


def device_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    out = []
    for name, dev in report.get("devices", {}).items():
        rows = [r for r in report["rows"] if r["device"] == name]
        out.append((name, dev, rows))
    return out


def device_heading(name: str, dev: dict[str, Any]) -> str:
    return f"{name} — {dev.get('measurement', '?')}"


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# edgespec benchmark report", ""]
    host = report.get("host", {})
    lines.append(f"Source `{report.get('source', {}).get('path', '?')}`, created {report.get('created', '?')} on "
                 f"{host.get('cpu') or host.get('machine', '?')} ({host.get('cores', '?')} cores), edgespec "
                 f"{report.get('edgespec_version', '?')}.")
    from .recommend import recommendations_markdown

    lines += ["", *recommendations_markdown(report.get("recommendations", []))]
    lines += ["## Specialists against the generalist, per device", ""]
    for name, dev, rows in device_rows(report):
        lines += [f"### {device_heading(name, dev)}", "", f"*{dev.get('how', '')}*", ""]
        if not rows:
            lines += ["No rows.", ""]
            continue
        detect = has_detect(rows)
        if detect:
            lines += [DETECT_NOTE, ""]
        measured = [r for r in rows if r["measurement"] in Measurement.TIMED]  # on host, device, other hardware
        others = [r for r in rows if r["measurement"] not in Measurement.TIMED]
        for part, estimated in ((measured, False), (others, True)):  # estimates never share a column with figures
            if not part:
                continue
            head = table_head(part, estimated)
            if estimated and measured:
                lines += ["Not measured (estimates and unavailable rows):", ""]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(row_cells(r, detect)) + " |" for r in part]
            lines.append("")
        lines += aa_noise_lines(report.get("aa_noise", {}).get(name))
        notes = sorted({n for r in rows for n in r.get("notes", [])})
        lines += [""] + [f"- {n}" for n in notes] + [""]
        lines += throughput_markdown(rows)
    lines += budget_markdown(report)
    lines += regression_markdown(report)
    lines += ["## How each figure was obtained", ""]
    lines += [f"- **{k}**: {v}" for k, v in report.get("methods", {}).items()]
    return "\n".join(lines) + "\n"


def throughput_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """Throughput (images/s at p50) for every batch size timed, and the first-inference time."""
    sizes = sorted({b["batch_size"] for r in rows for b in r.get("batches", [])})
    if not sizes:
        return []
    head = ["model", "format", *[f"img/s @ batch {s}" for s in sizes], "first inference ms"]
    lines = ["<details><summary>Throughput by batch size</summary>", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        by = {b["batch_size"]: b.get("throughput_ips") for b in r.get("batches", [])}
        cells = [r["model"], r["format"], *[fmt(by.get(s), 0) for s in sizes], fmt(r.get("first_inference_ms"), 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, "", "</details>", ""]


def budget_markdown(report: dict[str, Any]) -> list[str]:
    checks = report.get("budgets", [])
    if not checks:
        return ["## Budgets", "", "No budgets set for these devices.", ""]
    bad = [c for c in checks if c["passed"] is False]
    ok = sum(1 for c in checks if c["passed"])
    skipped = sum(1 for c in checks if c["passed"] is None)
    lines = ["## Budgets", "", f"{len(checks)} checks: {ok} passed, {len(bad)} failed, {skipped} skipped "
             "(estimates and proxies are not checked).", ""]
    if bad:
        lines += ["| device | model | format | check | limit | value |", "|---|---|---|---|---|---|"]
        lines += [f"| {c['device']} | {c['model']} | {c['format']} | {c['check']} | {c['op']} {c['limit']:g} "
                  f"{c['unit']} | {fmt(c['value'], 4)} |" for c in bad]
        lines.append("")
    return lines


def regression_markdown(report: dict[str, Any]) -> list[str]:
    base = report.get("baseline")
    if not base:
        return []
    regs = base.get("regressions", [])
    spread = "; ".join(f"{d} {v:.1%}" for d, v in (base.get("spread") or {}).items())
    lines = ["## Regressions against the baseline", "",
             f"Baseline `{base['path']}`; threshold {base['threshold']:.0%} on size, on p50 {base['threshold']:.0%} "
             f"plus the A/A spread of both runs per device ({spread or 'none recorded'}); an artifact whose file and "
             f"runtime packages are the baseline's is not compared on p50 (its change is the machine's); "
             f"{base['accuracy_drop']:.3f} absolute on accuracy: {len(regs)} regression(s).", ""]
    lines += [f"- ⚠ {r['device']} / {r['model']} / {r['format']} (batch {r['batch_size']}): {r['text']}" for r in regs]
    return [*lines, ""]


def _junit_time(seconds: Any) -> str:
    """JUnit's `time` (the XSD's SUREFIRE_TIME: digits, at most 3 decimals)."""
    return f"{max(0.0, float(seconds or 0.0)):.3f}"


def timed_seconds(row: dict[str, Any]) -> float:
    """Seconds a row's timed runs took: runs x mean latency, summed over its batch sizes (0 for an estimate)."""
    return sum((b.get("runs") or 0) * ((b.get("latency_ms") or {}).get("mean") or 0.0) / 1000
               for b in row.get("batches") or [])


def _unique_cases(cases: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(classname, name) pairs made unique: a repeat (an imported row beside a host one) gets ' #2', ' #3'."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for classname, name in cases:
        n = seen[(classname, name)] = seen.get((classname, name), 0) + 1
        out.append((classname, name if n == 1 else f"{name} #{n}"))
    return out


def _suite(parent: ET.Element, name: str, cases: list[dict[str, Any]], timestamp: str) -> None:
    """One <testsuite> with the attributes the JUnit XSD requires (tests, failures, errors) and times."""
    total = sum(float(c.get("time") or 0.0) for c in cases)
    suite = ET.SubElement(parent, "testsuite", name=name, tests=str(len(cases)),
                          failures=str(sum(c["outcome"] == "failure" for c in cases)), errors="0",
                          skipped=str(sum(c["outcome"] == "skipped" for c in cases)), time=_junit_time(total),
                          timestamp=timestamp)
    names = _unique_cases([(c["classname"], c["name"]) for c in cases])
    for c, (classname, case_name) in zip(cases, names, strict=True):
        case = ET.SubElement(suite, "testcase", classname=classname, name=case_name, time=_junit_time(c.get("time")))
        if c["outcome"] == "failure":
            ET.SubElement(case, "failure", message=c["message"], type=c["type"])
        elif c["outcome"] == "skipped":
            ET.SubElement(case, "skipped", message=c["message"])


def render_junit(report: dict[str, Any]) -> str:
    """junit.xml: budget checks and baseline regressions as test cases, valid against the JUnit XSD pytest tests
    its own output with (testing/example_scripts/junit-10.xsd in pytest's repository): every suite has tests,
    failures, errors, skipped and time; every case a time (the seconds its row's timed runs took, 0 for a
    row not timed here) and a (classname, name) of its own."""
    timestamp = str(report.get("created", ""))
    seconds = {(r["device"], r["model"], r["format"], r.get("batch_size"), r["measurement"]): timed_seconds(r)
               for r in report.get("rows", [])}
    cases = []
    for c in report.get("budgets", []):
        outcome = "failure" if c["passed"] is False else "skipped" if c["passed"] is None else "passed"
        where = c.get("measurement")
        cases.append({
            "classname": f"{c['device']}.{c['model']}.{c['format']}",
            "name": f"{c['check']} {c['op']} {c['limit']:g}{c['unit']} (batch {c['batch_size']}"
                    + (f", {where})" if where else ")"),
            "time": seconds.get((c["device"], c["model"], c["format"], c["batch_size"], where)),
            "outcome": outcome, "type": "budget",
            "message": (f"{c['check']}: {fmt(c['value'], 4)} {c['unit']} is not {c['op']} {c['limit']:g}"
                        if outcome == "failure" else (c.get("skipped") or "not checked"))})
    suites = ET.Element("testsuites", name="edgespec bench")
    _suite(suites, "edgespec.budgets", cases, timestamp)
    base = report.get("baseline")
    if base:
        regs = base.get("regressions", [])
        reg_cases = [{"classname": f"{r['device']}.{r['model']}.{r['format']}",
                      "name": f"{r['metric']} regression (batch {r['batch_size']})", "outcome": "failure",
                      "type": "regression", "message": r["text"]} for r in regs]
        _suite(suites, "edgespec.baseline", reg_cases or [{"classname": "baseline", "name": "no regression",
                                                            "outcome": "passed"}], timestamp)
    suites.set("tests", str(sum(int(s.get("tests")) for s in suites)))
    suites.set("failures", str(sum(int(s.get("failures")) for s in suites)))
    suites.set("errors", "0")
    suites.set("time", _junit_time(sum(float(s.get("time")) for s in suites)))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def render_html(report: dict[str, Any]) -> str:
    """report.md's content as HTML (benchmarks/html.py), with the accuracy-against-latency plot of each device after
    its heading and the artifact sizes at the end: one source, so the two reports cannot say different things."""
    from .html import markdown_to_html
    from .plots import accuracy_latency_png, sizes_png

    by_heading = {device_heading(name, dev): (name, rows) for name, dev, rows in device_rows(report)}
    recs = report.get("recommendations") or []

    def plot(heading: str) -> str:
        if heading not in by_heading:
            return ""
        name, rows = by_heading[heading]
        png = accuracy_latency_png(rows, name, [r for r in recs if r["device"] == name])
        return (f"<img alt='accuracy against p50 latency on {html.escape(name)}' "
                f"src='data:image/png;base64,{png}'>") if png else ""

    body = markdown_to_html(render_markdown(report), plot)
    sizes = sizes_png(report["rows"])
    if sizes:
        body += f"\n<h2>Artifact sizes</h2><img alt='artifact sizes' src='data:image/png;base64,{sizes}'>"
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px;"
             "margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child,"
             "th:first-child{text-align:left}td.warn{background:#fdd}img{max-width:100%}details{margin:0.5em 0}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>edgespec benchmark report</title>"
            f"<style>{style}</style></head><body>\n{body}\n</body></html>\n")


def write_reports(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Validate, then write the four reports atomically into `out_dir`."""
    problems = validate_report(report)
    if problems:  # our own output: a bug, not bad input
        raise ValueError(f"report does not match {REPORT_SCHEMA}: {problems[:3]}")
    out = Path(out_dir)
    texts = {"report.json": json_text(report), "report.md": render_markdown(report),
             "report.html": render_html(report), "junit.xml": render_junit(report)}
    publish_together({out / name: text for name, text in texts.items()})  # the four together or none of them
    return {name: out / name for name in texts}
