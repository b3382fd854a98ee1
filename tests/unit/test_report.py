"""Report schema, rendering, budgets, JUnit and the baseline regression mark, on hand-made rows."""

from __future__ import annotations

import copy
import json
import re
from xml.etree import ElementTree as ET

import pytest

from benchmarks.budgets import check_budgets, compare_baseline, failed, parse_budget_overrides
from benchmarks.report import (
    REPORT_SCHEMA,
    ROW_TYPES,
    TABLE_HEAD,
    fmt_ms,
    render_html,
    render_junit,
    render_markdown,
    validate_report,
    write_reports,
)
from toolkit.errors import UserError


def row(model="gen", role="generalist", fmt="onnx", device="host-cpu", measurement="measured on host", p50=1.25,
        acc=0.9, size=1000, **extra):
    r = {"model": model, "role": role, "group": None if role == "generalist" else model, "format": fmt,
         "precision": "fp32", "device": device, "measurement": measurement, "accuracy": acc,
         "generalist_accuracy_closed": None, "generalist_accuracy_open": None,
         "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.5, "mean": p50, "std": 0.1},
         "throughput_ips": 1000 / p50, "batch_size": 1, "size_bytes": size, "peak_rss_mb": 300.0,
         "first_inference_ms": 5.0, "speedup_vs_generalist": None, "images": 100, "artifact_sha256": "ab" * 32,
         "notes": [], "how": {}}
    r.update(extra)
    return r


def report(rows, budgets=None):
    devices = {r["device"]: {"measurement": r["measurement"], "how": r["measurement"]} for r in rows}
    return {"schema": REPORT_SCHEMA, "created": "now", "source": {"path": "/x"}, "devices": devices, "rows": rows,
            "budgets": budgets or [], "baseline": None, "methods": {"latency": "perf_counter"}}


def sample():
    spec = row("digits-a", "specialist", p50=0.8123456, acc=0.97, size=900, generalist_accuracy_closed=0.95,
               generalist_accuracy_open=0.9, speedup_vs_generalist=1.25 / 0.8123456)
    est = row("digits-a", "specialist", fmt="tensorrt-fp16", device="jetson-orin-nano", measurement="estimate",
              p50=0.0034, size=None, how={"accuracy_proxy": True})
    est["latency_ms"].update(p90=None, p99=None, mean=None, std=None)
    return [row(), spec, est]


def test_valid_report_has_no_problems():
    assert validate_report(report(sample())) == []


@pytest.mark.parametrize("mutate, problem", [
    (lambda r: r["rows"][0].pop("accuracy"), "rows[0].accuracy is missing"),
    (lambda r: r["rows"][1].update(size_bytes="big"), "rows[1].size_bytes has type str"),
    (lambda r: r["rows"][0].update(measurement="guessed"), "rows[0].measurement"),
    (lambda r: r["rows"][0].update(role="expert"), "rows[0].role"),
    (lambda r: r["rows"][0]["latency_ms"].pop("p99"), "rows[0].latency_ms.p99"),
    (lambda r: r.update(schema="edgespec.report/0"), "schema is"),
    (lambda r: r["rows"][0].update(batch_size=True), "rows[0].batch_size"),
])
def test_schema_violations_are_reported(mutate, problem):
    rep = report(sample())
    mutate(rep)
    problems = validate_report(rep)
    assert any(problem in p for p in problems), problems


def test_every_required_key_is_checked():
    for key in ROW_TYPES:
        rep = report(sample())
        del rep["rows"][0][key]
        assert f"rows[0].{key} is missing" in validate_report(rep)


def test_markdown_shows_the_json_numbers(tmp_path):
    rep = report(sample())
    paths = write_reports(rep, tmp_path)
    assert sorted(p.name for p in paths.values()) == ["junit.xml", "report.html", "report.json", "report.md"]
    md = (tmp_path / "report.md").read_text()
    data = json.loads((tmp_path / "report.json").read_text())
    spec = data["rows"][1]
    line = next(ln for ln in md.splitlines() if ln.startswith("| digits-a | specialist") and "| onnx |" in ln)
    cells = dict(zip(TABLE_HEAD, (c.strip() for c in line.strip("|").split("|")), strict=True))
    assert cells["p50 ms"] == fmt_ms(spec["latency_ms"]["p50"]) == "0.8123"
    assert float(cells["accuracy"]) == pytest.approx(spec["accuracy"], abs=5e-5)
    assert cells["speedup (paired p50 ratio)"] == f"{spec['speedup_vs_generalist']:.2f}x"
    assert cells["measurement"] == spec["measurement"] == "measured on host"
    assert "### jetson-orin-nano — estimate" in md and "### host-cpu — measured on host" in md
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2  # accuracy-latency per device with points, plus sizes
    assert "0.8123" in html


def test_write_refuses_an_invalid_report(tmp_path):
    rep = report(sample())
    del rep["rows"][0]["model"]
    with pytest.raises(ValueError):
        write_reports(rep, tmp_path)
    assert not (tmp_path / "report.json").exists()


def test_budgets_check_measured_rows_and_skip_estimates():
    rows = sample()
    checks = check_budgets(rows, {"host-cpu": {"latency_p50_ms": 1.0, "min_accuracy": 0.95},
                                  "jetson-orin-nano": {"latency_p50_ms": 0.001, "max_size_mb": None}})
    by = {(c["model"], c["device"], c["check"]): c for c in checks}
    assert by[("gen", "host-cpu", "latency_p50_ms")]["passed"] is False  # 1.25 > 1.0
    assert by[("digits-a", "host-cpu", "latency_p50_ms")]["passed"] is True  # 0.81
    assert by[("gen", "host-cpu", "min_accuracy")]["passed"] is False  # 0.9 < 0.95
    assert by[("digits-a", "host-cpu", "min_accuracy")]["passed"] is True
    est = by[("digits-a", "jetson-orin-nano", "latency_p50_ms")]
    assert est["passed"] is None and "estimate" in est["skipped"]
    assert len(failed(checks)) == 2
    assert len(checks) == 5  # None-valued budgets are not checks


def test_budget_overrides_parse_and_reject():
    assert parse_budget_overrides(["latency-p50-ms=2.5", "min_accuracy=0.9"]) == {"latency_p50_ms": 2.5,
                                                                                 "min_accuracy": 0.9}
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_budget_overrides(["latency=3"])
    with pytest.raises(UserError, match="not a number"):
        parse_budget_overrides(["min_accuracy=high"])


def test_junit_has_one_testcase_per_budget_check():
    rows = sample()
    checks = check_budgets(rows, {"host-cpu": {"latency_p50_ms": 1.0}, "jetson-orin-nano": {"latency_p50_ms": 1}})
    xml = ET.fromstring(render_junit(report(rows, checks)))
    suite = xml.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(checks) == 3
    assert suite.get("failures") == "1" and suite.get("skipped") == "1"
    assert sum(1 for c in cases if c.find("failure") is not None) == 1
    assert sum(1 for c in cases if c.find("skipped") is not None) == 1


def test_baseline_marks_regressions_beyond_the_threshold():
    old = report(sample())
    new_rows = copy.deepcopy(sample())
    new_rows[0]["latency_ms"]["p50"] *= 1.5       # generalist 50% slower: regression
    new_rows[0]["artifact_sha256"] = "cd" * 32    # (a rebuilt file: the same file could not have slowed down)
    new_rows[1]["latency_ms"]["p50"] *= 1.05      # specialist 5% slower: within 10%
    new_rows[1]["accuracy"] -= 0.05               # but 5 points less accurate: regression
    regs = compare_baseline(new_rows, old, threshold=0.10, accuracy_drop=0.01)
    assert {(r["model"], r["metric"]) for r in regs} == {("gen", "latency_p50"), ("digits-a", "accuracy")}
    assert new_rows[0]["baseline"]["regression"] and new_rows[0]["baseline"]["p50_change"] == pytest.approx(0.5)
    assert new_rows[1]["baseline"]["regression"]
    assert new_rows[2]["baseline"]["regression"] is False
    rep = report(new_rows)
    rep["baseline"] = {"path": "old/report.json", "threshold": 0.1, "accuracy_drop": 0.01, "regressions": regs}
    md = render_markdown(rep)
    assert md.count("⚠ REGRESSION") == 2
    assert "p50 +50.0%" in md
    junit = ET.fromstring(render_junit(rep))
    base = [s for s in junit.findall("testsuite") if s.get("name") == "edgespec.baseline"][0]
    assert base.get("failures") == "2"
    page = render_html(rep)
    assert page.count("⚠ REGRESSION") == 2 and "<td class='warn'>" in page


def test_baseline_ignores_rows_measured_differently():
    old = report(sample())
    new_rows = copy.deepcopy(sample())
    new_rows[0]["measurement"] = "measured on device"
    new_rows[0]["latency_ms"]["p50"] *= 10
    assert compare_baseline(new_rows, old) == []
    assert new_rows[0]["baseline"] is None


def test_markdown_rounding_is_stable():
    assert fmt_ms(0.0123456) == "0.01235"
    assert fmt_ms(None) == "–"
    assert re.fullmatch(r"\d+\.\d+", fmt_ms(12.3456))


def test_accuracy_budgets_apply_to_their_own_task_only():
    cls = {**sample()[0], "measurement": "measured on host", "device": "host-cpu", "accuracy": 0.9}
    det = {**cls, "model": "det", "task": "detect", "accuracy": 0.4}
    checks = check_budgets([cls, det], {"host-cpu": {"min_accuracy": 0.8, "min_map50_95": 0.5}})
    by = {(c["model"], c["check"]): c["passed"] for c in checks}
    assert by == {(cls["model"], "min_accuracy"): True, ("det", "min_map50_95"): False}  # 0.4 < 0.5
    assert parse_budget_overrides(["min_map50_95=0.3"]) == {"min_map50_95": 0.3}


def test_a_speedup_within_timing_spread_is_marked():
    from benchmarks.report import table_cells
    from benchmarks.rows import fill_comparisons

    def rows(spec_p50, spec_p90, measurement="measured on host"):
        gen = {**sample()[0], "model": "gen", "role": "generalist", "measurement": measurement,
               "latency_ms": {"p50": 1.0, "p90": 1.2, "p99": 1.5, "mean": 1.0, "std": 0.1}, "notes": []}
        spec = {**gen, "model": "spec", "role": "specialist", "notes": [],
                "latency_ms": {**gen["latency_ms"], "p50": spec_p50, "p90": spec_p90}}
        fill_comparisons([gen, spec], {"spec": "gen", "gen": None})
        return spec

    clear, noise = rows(0.5, 0.6), rows(0.95, 1.1)  # 0.6 < 1.0: resolved; 1.1 >= 1.0: within spread
    assert clear["speedup_resolved"] is True and noise["speedup_resolved"] is False
    speedup = TABLE_HEAD.index("speedup (paired p50 ratio)")
    assert table_cells(clear)[speedup] == "2.00x" and table_cells(noise)[speedup] == f"{1 / 0.95:.2f}x~"
    assert rows(2.0, 2.2)["speedup_resolved"] is True  # a clear slowdown is resolved too (0.50x)
    assert rows(0.5, 0.6, "estimate")["speedup_resolved"] is None


def test_paired_timing_tells_a_slower_call_apart():
    import time

    from benchmarks.timing import TimingConfig, time_paired

    res = time_paired(lambda: None, lambda: time.sleep(0.002), TimingConfig(warmup=1, runs=80, time_limit_s=5),
                      block=5)
    assert res["rounds"] == 16 and res["calls_per_round"] == 5 and res["b_slower_rounds"] == 16
    assert res["resolved"] and res["ratio"] > 10 and res["p50_b_ms"] >= 2.0


def test_a_paired_speedup_replaces_the_ratio_of_two_separate_timings():
    from benchmarks.rows import fill_comparisons

    gen = {**sample()[0], "model": "gen", "role": "generalist", "measurement": "measured on host", "notes": [],
           "latency_ms": {"p50": 6.0, "p90": 6.5, "p99": 7.0, "mean": 6.0, "std": 0.1}}
    spec = {**gen, "model": "spec", "role": "specialist", "notes": [],
            "latency_ms": {**gen["latency_ms"], "p50": 1.7, "p90": 1.9},  # a load spike hit the generalist's timing
            "speedup_paired": {"speedup": 1.01, "resolved": False}}
    fill_comparisons([gen, spec], {"spec": "gen", "gen": None})
    assert spec["speedup_vs_generalist"] == 1.01 and spec["speedup_resolved"] is False


def test_junit_is_valid_against_the_xsd_rules_with_times_and_unique_names():
    """The rules of the JUnit XSD pytest validates its own junit.xml against (pytest's
    testing/example_scripts/junit-10.xsd): testsuite needs name, tests, failures and errors; time attributes
    match SUREFIRE_TIME; testcase needs name; only the XSD's child elements appear."""
    rows = sample()
    dup = copy.deepcopy(rows[0])
    dup["measurement"] = "measured on device"  # an imported row beside the host one: same model/format/batch
    rows = [*rows, dup]
    rows[0]["batches"] = [{"batch_size": 1, "runs": 200, "latency_ms": {"mean": 1.5}}]
    checks = check_budgets(rows, {"host-cpu": {"latency_p50_ms": 1.0, "min_accuracy": 0.5}})
    checks += [dict(checks[0])]  # even a repeated check keeps its own name
    rep = report(rows, checks)
    rep["baseline"] = {"path": "b", "threshold": 0.1, "accuracy_drop": 0.01, "regressions": []}
    root = ET.fromstring(render_junit(rep))
    time_re = re.compile(r"(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]{0,3})?")
    assert root.tag == "testsuites" and time_re.fullmatch(root.get("time"))
    allowed = {"skipped", "errors", "failure", "rerunFailure", "rerunError", "flakyFailure", "flakyError",
               "system-out", "system-err"}
    for suite in root.findall("testsuite"):
        assert {"name", "tests", "failures", "errors"} <= set(suite.attrib)
        assert time_re.fullmatch(suite.get("time"))
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases)
        pairs = [(c.get("classname"), c.get("name")) for c in cases]
        assert len(set(pairs)) == len(pairs)
        for c in cases:
            assert c.get("name") and time_re.fullmatch(c.get("time"))
            assert {child.tag for child in c} <= allowed
    budget = root.find("testsuite")
    assert float(budget.find("testcase").get("time")) == pytest.approx(0.3)  # 200 runs x 1.5 ms
    assert any("measured on device" in c.get("name") for c in budget.findall("testcase"))


def test_a_rerun_of_the_same_artifacts_passes_the_gate_and_a_slower_rebuilt_one_fails_beyond_the_spread():
    old = report(sample())
    old["packages"] = {"onnxruntime": "1.0"}
    old["aa_noise"] = {"host-cpu": {"gen/onnx": {"aa_floor": 1.04}}}
    new = copy.deepcopy(old)
    rows = new["rows"]
    rows[0]["latency_ms"]["p50"] *= 1.46         # the same file on the same runtime, 46% slower: the machine
    assert compare_baseline(rows, old, 0.10, new=new) == []
    assert rows[0]["baseline"]["same_artifact_and_runtime"] and rows[0]["baseline"]["p50_change"] > 0.45
    rows[1]["artifact_sha256"] = "cd" * 32       # a rebuilt specialist, 16% slower: inside 10% + 2 x 4% spread
    rows[1]["latency_ms"]["p50"] *= 1.16
    assert compare_baseline(rows, old, 0.10, new=new) == []
    assert rows[1]["baseline"]["p50_threshold"] == pytest.approx(0.18)
    rows[1]["latency_ms"]["p50"] *= 1.1          # now 27.6% slower: beyond it
    regs = compare_baseline(rows, old, 0.10, new=new)
    assert [(r["model"], r["metric"]) for r in regs] == [("digits-a", "latency_p50")]
    assert "threshold 10% + A/A spread 8.0%" in regs[0]["text"]
    new["packages"] = {"onnxruntime": "2.0"}     # another runtime: the same file may have become slower
    assert {r["model"] for r in compare_baseline(rows, old, 0.10, new=new)} == {"gen", "digits-a"}


def test_the_gate_uses_the_a_a_spread_of_the_rows_own_format():
    """A noisy format (here ExecuTorch's A/A floor 1.30) widens its own rows' threshold, not every format's."""
    old = report(sample())
    old["packages"] = {"onnxruntime": "1.0"}
    old["aa_noise"] = {"host-cpu": {"gen/onnx": {"aa_floor": 1.02}, "gen/executorch": {"aa_floor": 1.30}}}
    new = copy.deepcopy(old)
    new["packages"] = {"onnxruntime": "2.0"}
    rows = new["rows"]
    rows[1]["latency_ms"]["p50"] *= 1.20         # 20% slower onnx: beyond 10% + 2 x 2%
    regs = compare_baseline(rows, old, 0.10, new=new)
    assert [r["model"] for r in regs] == ["digits-a"] and "A/A spread 4.0%" in regs[0]["text"]
    del new["aa_noise"]["host-cpu"]["gen/onnx"], old["aa_noise"]["host-cpu"]["gen/onnx"]
    assert compare_baseline(rows, old, 0.10, new=new) == []  # no onnx pair: the device's largest floor (30%) counts


def test_rows_slower_than_their_fp32_file_are_flagged_in_the_row_and_the_markdown():
    from benchmarks.rows import flag_slower_than_fp32

    fp32 = row("gen", p50=1.0)
    int8 = row("gen", fmt="onnx-int8", p50=2.5, precision="int8")
    fp16 = row("gen", fmt="onnx-fp16", p50=1.03, precision="fp16")  # within the 5% margin
    est = row("gen", fmt="onnx-int8", p50=9.0, precision="int8", device="jetson-orin-nano", measurement="estimate")
    rows = [fp32, int8, fp16, est]
    flag_slower_than_fp32(rows)
    assert int8["slower_than_fp32"] == {"fp32_format": "onnx", "fp32_p50_ms": 1.0, "ratio": 2.5}
    assert "slower_than_fp32" not in fp16 and "slower_than_fp32" not in fp32 and "slower_than_fp32" not in est
    md = render_markdown(report(rows))
    assert "onnx-int8 ⚠ slower than onnx (2.50x p50)" in md and "slower than its fp32 file (onnx)" in md


def test_an_estimate_below_a_faster_devices_measurement_is_flagged_and_scaled_by_the_peaks():
    from benchmarks.rows import flag_estimates_below_measured

    host = row("gen", p50=0.40)
    pi = row("gen", device="raspberry-pi-5", measurement="estimate", p50=0.02)
    pi_ok = row("gen", fmt="onnx-int8", precision="int8", device="raspberry-pi-5", measurement="estimate", p50=0.9)
    jetson = row("gen", fmt="tensorrt-fp16", device="jetson-orin-nano", measurement="estimate", p50=0.01)
    rows = [host, pi, pi_ok, jetson]
    rep = report(rows)
    rep["devices"]["host-cpu"]["derived_peak"] = {"fp32_gflops": 300.0, "source": "test"}
    rep["devices"]["raspberry-pi-5"]["peak"] = {"fp32_gflops": 150.0, "int8_gops": 600.0,
                                                "memory_bandwidth_gbs": 17.0, "source": "a datasheet"}
    rep["devices"]["jetson-orin-nano"]["peak"] = {"fp32_gflops": 20000.0, "memory_bandwidth_gbs": 68.0,
                                                  "source": "a datasheet"}
    flag_estimates_below_measured(rows, rep["devices"])  # the Jetson's peak is above the host's: no flag for it
    assert pi["below_measurement"] == {"device": "host-cpu", "format": "onnx", "p50_ms": 0.40, "peak_ratio": 2.0,
                                       "scaled_p50_ms": pytest.approx(0.80)}
    assert "below_measurement" not in pi_ok and "below_measurement" not in jetson and "below_measurement" not in host
    flag_estimates_below_measured(rows, rep["devices"])  # again (an import): one note, not two
    assert sum("is below what host-cpu measured" in n for n in pi["notes"]) == 1
    md = render_markdown(rep)
    assert "0.02 ⚠ below host-cpu's measured 0.4 |" in md and "a faster device" in md and "~0.8 ms here" in md
    host["latency_ms"]["p50"] = 0.01  # the estimate no longer beats it: the flag goes
    flag_estimates_below_measured(rows, rep["devices"])
    assert "below_measurement" not in pi and not any("is below what" in n for n in pi["notes"])


@pytest.mark.skipif(__import__("platform").machine() not in ("x86_64", "amd64"), reason="x86 cpuinfo flags")
def test_the_host_peak_floor_is_cores_times_clock_times_one_fma_pipe(tmp_path):
    from benchmarks.estimate import host_peak

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu MHz\t\t: 2500.000\nflags\t\t: fpu sse avx2 fma\n"
                    "processor\t: 1\ncpu MHz\t\t: 2400.000\n")  # the lowest clock: a floor
    peak = host_peak(4, info)
    assert peak["fp32_gflops"] == pytest.approx(4 * 2.4 * 16) and "x86-avx2" in peak["source"]
    info.write_text(info.read_text().replace("avx2", "avx2 avx512f avx512bw"))
    assert host_peak(2, info)["fp32_gflops"] == pytest.approx(2 * 2.4 * 32)
