"""Remote commands are argument lists with quoted words; device results merge into report.json beside the rest."""

from __future__ import annotations

import json
import shlex

import pytest

from toolkit.bundle.merge import import_results, load_results, merge_results
from toolkit.bundle.remote import Remote, check_host
from toolkit.bundle.runner.run import new_row
from toolkit.errors import UserError


@pytest.mark.parametrize("host", ["jetson", "nvidia@192.168.55.1", "pi@rpi5.local", "user_1@orin-nano"])
def test_hosts_from_ssh_config_are_accepted(host):
    assert check_host(host) == host


@pytest.mark.parametrize("host", ["-oProxyCommand=touch /tmp/x", "a b", "host;rm -rf /", "$(id)", "", "h\nx",
                                  "user@-oProxyCommand=x", "host`id`"])
def test_hosts_that_could_inject_options_or_commands_are_refused(host):
    with pytest.raises(UserError, match="USER@HOST"):
        check_host(host)


def test_remote_command_is_one_quoted_string_in_an_argument_list(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host dev\n  HostName 127.0.0.1\n")
    r = Remote("dev", ssh_config=cfg, python="/opt/my env/bin/python3")
    hostile = "x; touch /tmp/pwned #"
    argv = r.ssh_argv([["cd", "/tmp/edgespec-bundle.abc"], [r.python, "run.py", "--only", hostile]])
    assert argv[0] == "ssh" and argv[1:3] == ["-F", str(cfg)] and "BatchMode=yes" in argv and argv[-2] == "dev"
    first, second = argv[-1].split(" && ")
    assert shlex.split(first) == ["cd", "/tmp/edgespec-bundle.abc"]
    assert shlex.split(second) == ["/opt/my env/bin/python3", "run.py", "--only", hostile]  # words survive intact
    with pytest.raises(UserError, match="remote-python"):
        Remote("dev", python="-c")
    with pytest.raises(UserError, match="ssh-config"):
        Remote("dev", ssh_config=tmp_path / "missing")


def _results(device: str, p50: float, measurement: str = "measured on device") -> dict:
    bundle = {"device": device, "runtime": "onnxruntime"}
    rows = []
    for model, role, group in (("gen", "generalist", None), ("spec", "specialist", "a")):
        item = {"model": model, "role": role, "group": group, "format": "onnx", "precision": "fp32",
                "size_bytes": 1000, "sha256": "0" * 64}
        row = new_row(bundle, item, 1, 4)
        row.update(measurement=measurement, accuracy=0.9, images=50,
                   latency_ms={"p50": p50, "p90": p50, "p99": p50, "mean": p50, "std": 0.0})
        rows.append(row)
    return {"schema": "edgespec.device-results/1", "device": device, "measured": "2026-01-01T00:00:00+00:00",
            "bundle": {"sha256": "f" * 64}, "device_facts": {"cpu": "Cortex-A76", "runtime": "onnxruntime",
                                                             "runtime_version": "1.20.0", "os_release": "Debian 12"},
            "rows": rows}


def _report() -> dict:
    rows = []
    for device, measurement in (("host-cpu", "measured on host"), ("raspberry-pi-5", "estimate")):
        res = _results(device, 1.0, measurement)
        rows += res["rows"]
    return {"schema": "edgespec.report/1", "created": "x", "source": {"path": "export"}, "host": {},
            "devices": {"host-cpu": {"measurement": "measured on host", "how": "here"},
                        "raspberry-pi-5": {"measurement": "estimate", "how": "roofline"}},
            "methods": {}, "budgets": [], "rows": rows}


def test_import_replaces_the_estimates_of_the_artifacts_it_measured_and_its_own_rows_on_reimport(tmp_path):
    from benchmarks.report import write_reports

    write_reports(_report(), tmp_path / "report")
    (tmp_path / "r1.json").write_text(json.dumps(_results("raspberry-pi-5", 7.0)))
    report = import_results(tmp_path / "r1.json", tmp_path / "report")
    pi = [r for r in report["rows"] if r["device"] == "raspberry-pi-5"]
    assert sorted(r["measurement"] for r in pi) == ["measured on device", "measured on device"]  # no estimate beside
    assert [r["device"] for r in report["rows"]] == ["host-cpu"] * 2 + ["raspberry-pi-5"] * 2  # grouped by device
    assert report["devices"]["raspberry-pi-5"]["measurement"] == "measured on device"
    assert "Cortex-A76" in report["devices"]["raspberry-pi-5"]["how"]
    checks = [c for c in report["budgets"] if c.get("measured_on_device")]
    assert checks and {c["check"] for c in checks} == {"latency_p50_ms"}  # the Pi profile's budget: 20 ms
    assert all(c["passed"] for c in checks)
    from benchmarks.report import table_cells

    md = (tmp_path / "report" / "report.md").read_text()
    assert "raspberry-pi-5 — measured on device" in md
    for row in (r for r in pi if r["measurement"] == "measured on device"):  # the re-rendered table shows them
        assert "| " + " | ".join(table_cells(row)) + " |" in md

    (tmp_path / "r2.json").write_text(json.dumps(_results("raspberry-pi-5", 30.0)))
    report = import_results(tmp_path / "r2.json", tmp_path / "report")
    measured = [r for r in report["rows"] if r["measurement"] == "measured on device"]
    assert len(measured) == 2 and {r["latency_ms"]["p50"] for r in measured} == {30.0}  # replaced, not duplicated
    checks = [c for c in report["budgets"] if c.get("measured_on_device")]
    assert len(checks) == 2 and not any(c["passed"] for c in checks)  # 30 ms > 20 ms budget
    assert "junit" not in report and (tmp_path / "report" / "junit.xml").read_text().count("<failure") == 2
    on_disk = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(on_disk["rows"]) == 4 and len(on_disk["imports"]) == 2


def test_import_into_an_empty_report_dir(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(_results("jetson-orin-nano", 2.0)))
    report = import_results(tmp_path / "r.json", tmp_path / "new")
    assert [r["measurement"] for r in report["rows"]] == ["measured on device"] * 2
    assert (tmp_path / "new" / "report.html").is_file()


def test_results_that_are_not_device_measurements_are_refused(tmp_path):
    bad = _results("raspberry-pi-5", 1.0, measurement="measured on host")
    (tmp_path / "r.json").write_text(json.dumps(bad))
    with pytest.raises(UserError, match="not measured on device"):
        load_results(tmp_path / "r.json")
    (tmp_path / "r.json").write_text(json.dumps({"schema": "other", "rows": []}))
    with pytest.raises(UserError, match="edgespec.device-results/1"):
        load_results(tmp_path / "r.json")
    broken = _results("raspberry-pi-5", 1.0)
    del broken["rows"][0]["latency_ms"]
    (tmp_path / "r.json").write_text(json.dumps(broken))
    with pytest.raises(UserError, match="latency_ms"):
        load_results(tmp_path / "r.json")
    report = _report()
    merge_results(report, _results("raspberry-pi-5", 1.0))
    assert len(report["rows"]) == 4  # the two estimates replaced by their measurements
