"""A bundle from a real export runs in a fresh virtual environment that has only numpy and onnxruntime (no torch,
no edgespec) and its results merge into the bench reports as `measured on device` rows.

This host plays the device: the runner runs in a separate Python environment, exactly as it would on a board.
The helpers below are shared with test_remote_ssh.py (cached: the venv and the export are built once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_CACHE: dict[str, Path] = {}
FAST = ["--warmup", "2", "--runs", "20", "--time-limit", "0.2"]


def clean_env() -> dict[str, str]:
    """The environment without anything that would let the device venv see edgespec's packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def device_python(tmp_path_factory) -> Path:
    """The python of a fresh venv with only numpy and onnxruntime installed (from the configured index)."""
    if "python" not in _CACHE:
        root = tmp_path_factory.mktemp("device-venv")
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, env=clean_env(), timeout=120)
        py = root / "bin" / "python"
        proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy", "onnxruntime"], capture_output=True,
                              text=True, env=clean_env(), timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"pip could not install numpy and onnxruntime into a fresh venv: {proc.stderr[-800:]}")
        _CACHE["python"] = py
    return _CACHE["python"]


def digits_export(digits_run: Path, tmp_path_factory) -> Path:
    """The digits generalist and one specialist (classes 0-3, one epoch) exported to ONNX into one directory."""
    if "export" not in _CACHE:
        from exporters import export_runs
        from toolkit.runs import Run
        from toolkit.specialize import SpecializeConfig, specialize_group

        root = tmp_path_factory.mktemp("bundle-export")
        spec = root / "digits-low"
        specialize_group(Run.open(digits_run), "low", ["0", "1", "2", "3"], spec,
                         SpecializeConfig(epochs=1, device="cpu", seed=0))
        export_runs([digits_run, spec], "onnx", root / "export", parity_images=64)
        _CACHE["export"] = root / "export"
    return _CACHE["export"]


def host_report(export: Path, report_dir: Path) -> dict:
    """The bench reports for this host (measured) and the Raspberry Pi 5 (estimated here)."""
    from benchmarks import BenchConfig, TimingConfig
    from benchmarks import bench as run_bench

    cfg = BenchConfig(devices=["host-cpu", "raspberry-pi-5"],
                      timing=TimingConfig(warmup=2, runs=20, min_runs=5, time_limit_s=0.2))
    return run_bench(export, report_dir, cfg)


@pytest.fixture
def device_py(tmp_path_factory) -> Path:
    return device_python(tmp_path_factory)


@pytest.fixture
def export(digits_run, tmp_path_factory) -> Path:
    return digits_export(digits_run, tmp_path_factory)


def test_device_venv_has_no_torch_and_no_edgespec(device_py, tmp_path):
    for module in ("torch", "toolkit", "exporters", "benchmarks", "pydantic"):
        proc = subprocess.run([str(device_py), "-c", f"import {module}"], capture_output=True, text=True,
                              cwd=tmp_path, env=clean_env())
        assert proc.returncode != 0 and "No module named" in proc.stderr, module
    proc = subprocess.run([str(device_py), "-c", "import numpy, onnxruntime"], cwd=tmp_path, env=clean_env())
    assert proc.returncode == 0


def test_bundle_runs_in_the_device_venv_and_merges_into_the_reports(device_py, export, tmp_path, cli):
    from toolkit.bundle import safe_extract

    report_dir = tmp_path / "report"
    host = host_report(export, report_dir)
    assert {r["measurement"] for r in host["rows"] if r["device"] == "raspberry-pi-5"} == {"estimate"}

    code, out, err = cli("bundle", export, "--device", "raspberry-pi-5", "--out", tmp_path / "pi5.tar.gz", "-q")
    assert code == 0, err
    assert "digits-low-onnx" in out and "raspberry-pi-5" in out
    root = tmp_path / "on-device"
    safe_extract(tmp_path / "pi5.tar.gz", root)
    refused = subprocess.run([str(device_py), "run.py", "--out", str(tmp_path / "results.json"), *FAST], cwd=root,
                             capture_output=True, text=True, env=clean_env(), timeout=300)
    if "Raspberry Pi 5" not in (Path("/proc/device-tree/model").read_text(errors="replace")
                                if Path("/proc/device-tree/model").is_file() else ""):
        # this host is no Raspberry Pi 5: its figures must never read "measured on device"
        assert refused.returncode == 2 and "--allow-other-hardware" in refused.stderr, refused.stderr
        assert refused.stderr.count("error:") == 1 and not (tmp_path / "results.json").exists()
    proc = subprocess.run([str(device_py), "run.py", "--out", str(tmp_path / "results.json"), *FAST,
                           "--allow-other-hardware"], cwd=root, capture_output=True, text=True, env=clean_env(),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    label = "measured on device" if refused.returncode == 0 else "measured on other hardware"
    results = json.loads((tmp_path / "results.json").read_text())
    facts = results["device_facts"]
    assert facts["runtime"] == "onnxruntime" and facts["runtime_version"] and facts["cpu"] and facts["os_release"]

    code, out, err = cli("bench", "--import", tmp_path / "results.json", "--report", report_dir)
    assert code == 0, err
    report = json.loads((report_dir / "report.json").read_text())
    device_rows = {r["model"]: r for r in report["rows"] if r["measurement"] == label}
    assert set(device_rows) == {"digits", "digits-low"}
    host_rows = {r["model"]: r for r in report["rows"] if r["measurement"] == "measured on host"}
    pi = [(r["model"], r["format"]) for r in report["rows"] if r["device"] == "raspberry-pi-5"]
    assert len(pi) == len(set(pi))  # each artifact's estimate was replaced by its measurement, not kept beside it
    assert {(m, "onnx") for m in device_rows} <= set(pi)
    for model, row in device_rows.items():
        assert row["device"] == "raspberry-pi-5" and row["threads"] == 4
        # the same ONNX model through the same runtime on the same test images: the same accuracy as bench
        assert row["accuracy"] == pytest.approx(host_rows[model]["accuracy"]) and row["images"] \
            == host_rows[model]["images"]
        assert row["latency_ms"]["p50"] > 0 and row["peak_rss_mb"] > 0 and row["first_inference_ms"] > 0
    spec, gen_host = device_rows["digits-low"], host_rows["digits-low"]
    assert spec["generalist_accuracy_closed"] == pytest.approx(gen_host["generalist_accuracy_closed"])
    assert spec["generalist_accuracy_open"] == pytest.approx(gen_host["generalist_accuracy_open"])
    assert spec["speedup_vs_generalist"] == pytest.approx(
        device_rows["digits"]["latency_ms"]["p50"] / spec["latency_ms"]["p50"])
    assert spec["speedup_resolved"] is (device_rows["digits"]["latency_ms"]["p50"] > spec["latency_ms"]["p90"]
                                        if spec["speedup_vs_generalist"] >= 1 else
                                        spec["latency_ms"]["p50"] > device_rows["digits"]["latency_ms"]["p90"])
    md = (report_dir / "report.md").read_text()
    heading = next(ln for ln in md.splitlines() if ln.startswith("### raspberry-pi-5 — "))
    assert label in heading and "host-cpu — measured on host" in md
    assert label in (report_dir / "report.html").read_text()
