"""`edgespec bench` and `edgespec devices`: exit codes, budgets, baselines, the files written."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import pytest

FAST = ["--runs", "20", "--warmup", "2", "--time-limit", "0.2", "-q"]


def test_devices_list_and_show(cli):
    code, out, _ = cli("devices", "list")
    assert code == 0
    for name in ("host-cpu", "gpu-server", "jetson-orin-nano", "jetson-agx-orin", "raspberry-pi-5", "android-mid"):
        assert name in out
    code, out, _ = cli("devices", "show", "jetson-orin-nano")
    assert code == 0 and "memory_bandwidth_gbs: 68" in out and "source:" in out
    code, _, err = cli("devices", "show", "jetson-orin-nan")
    assert code == 2 and "did you mean 'jetson-orin-nano'" in err


@pytest.fixture(scope="module")
def first(digits_run, tmp_path_factory):
    """`edgespec bench RUN_DIR`: the run is exported into the report directory, then benchmarked."""
    from toolkit.cli.main import main

    report = tmp_path_factory.mktemp("cli") / "report"
    code = main(["bench", str(digits_run), "--devices", "host-cpu,raspberry-pi-5", "--formats", "onnx",
                 "--report", str(report), *FAST])
    return code, report


def test_bench_a_run_dir_writes_four_reports(first):
    code, report = first
    assert code == 0
    for name in ("report.json", "report.md", "report.html", "junit.xml"):
        assert (report / name).is_file()
    assert (report / "export" / "manifest.json").is_file()
    data = json.loads((report / "report.json").read_text())
    assert {(r["device"], r["measurement"]) for r in data["rows"]} == {("host-cpu", "measured on host"),
                                                                        ("raspberry-pi-5", "estimate")}


def test_fail_on_budget_exit_code(cli, first, tmp_path):
    _, report = first
    export = report / "export"
    args = ["bench", export, "--devices", "host-cpu", "--report", tmp_path / "r", "--budget", "latency_p50_ms=1e-6",
            *FAST]
    code, out, _ = cli(*args)
    assert code == 0 and "FAILED host-cpu" in out  # reported, but not fatal without the flag
    code, _, err = cli(*args, "--fail-on-budget")
    assert code == 1 and "budget check(s) failed" in err
    suite = ET.parse(tmp_path / "r" / "junit.xml").getroot().find("testsuite")
    assert int(suite.get("failures")) >= 1
    code, _, _ = cli("bench", export, "--devices", "host-cpu", "--report", tmp_path / "ok", "--budget",
                     "latency_p50_ms=1e6", "--fail-on-budget", *FAST)
    assert code == 0


def test_baseline_regression_is_marked(cli, first, tmp_path):
    _, report = first
    old = json.loads((report / "report.json").read_text())
    for r in old["rows"]:
        if r["measurement"] == "measured on host":
            r["latency_ms"]["p50"] /= 100  # the "old" build was 100x faster: now is a regression
            r["artifact_sha256"] = "0" * 64  # (another build: the same file cannot have become slower)
    (tmp_path / "old.json").write_text(json.dumps(old))
    out_dir = tmp_path / "new"
    args = ["bench", report / "export", "--devices", "host-cpu", "--report", out_dir, "--baseline",
            tmp_path / "old.json", *FAST]
    code, out, _ = cli(*args)
    assert code == 0 and "REGRESSION host-cpu digits onnx" in out
    new = json.loads((out_dir / "report.json").read_text())
    assert new["baseline"]["regressions"] and all(r["baseline"]["regression"] for r in new["rows"])
    assert "⚠ REGRESSION" in (out_dir / "report.md").read_text()
    code, _, _ = cli(*args, "--fail-on-regression")
    assert code == 1


def test_a_rerun_of_the_same_artifacts_passes_the_regression_gate(cli, first, tmp_path):
    _, report = first
    old = json.loads((report / "report.json").read_text())
    for r in old["rows"]:
        if r["measurement"] == "measured on host":
            r["latency_ms"]["p50"] /= 2  # a quieter machine then: the same files ran twice as fast
    (tmp_path / "old.json").write_text(json.dumps(old))
    code, out, _ = cli("bench", report / "export", "--devices", "host-cpu", "--report", tmp_path / "again",
                       "--baseline", tmp_path / "old.json", "--fail-on-regression", *FAST)
    assert code == 0 and "REGRESSION" not in out
    new = json.loads((tmp_path / "again" / "report.json").read_text())
    measured = [r for r in new["rows"] if r["measurement"] == "measured on host"]
    assert measured and all(r["baseline"]["same_artifact_and_runtime"] for r in measured)
    assert "not compared on p50" in (tmp_path / "again" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--devices", "nosuch"], "unknown device profile"),
    (["--budget", "speed=3"], "KEY=VALUE"),
    (["--runs", "0"], "runs"),
])
def test_bad_options_exit_2(cli, first, tmp_path, args, message):
    _, report = first
    code, _, err = cli("bench", report / "export", "--report", tmp_path, *args)
    assert code == 2 and message in err


def test_not_a_source_exits_2(cli, tmp_path):
    code, _, err = cli("bench", tmp_path, "--report", tmp_path / "r")
    assert code == 2 and "neither an export directory" in err


def test_version_short_help_and_bench_threads_and_batch_sizes(cli, first, tmp_path):
    from toolkit import __version__

    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"edgespec {__version__}"
    code, out, _ = cli("bench", "-h")
    assert code == 0 and "--batch-sizes" in out and "--threads" in out
    _, report = first
    code, _, _ = cli("bench", report / "export", "--devices", "host-cpu", "--report", tmp_path / "t",
                     "--threads", "1", "--batch-sizes", "1,4", *FAST)
    assert code == 0
    rows = [r for r in json.loads((tmp_path / "t" / "report.json").read_text())["rows"]
            if r["measurement"] == "measured on host"]
    assert rows and all(r["threads"] == 1 and [b["batch_size"] for b in r["batches"]] == [1, 4] for r in rows)
    for bad in (["--batch-sizes", "1,x"], ["--batch-sizes", "0"], ["--threads", "0"]):
        code, _, err = cli("bench", report / "export", "--report", tmp_path / "bad", *bad, *FAST)
        assert code == 2 and err.count("\n") == 1 and "error:" in err, (bad, err)
