"""Integrity on the device and on the way back: the bundle's runner refuses a changed file before it runs anything,
and device results about other files are refused before they join a report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rel_support import ENV, assert_untouched, check_error_line, snapshot


@pytest.fixture(scope="module")
def device_results(digits_run, tmp_path_factory):
    """digits_run exported, bundled for host-cpu, unpacked and run as on a device (a few timed runs)."""
    from exporters import export_runs
    from toolkit.bundle import make_bundle, safe_extract

    root = tmp_path_factory.mktemp("integrity")
    export_runs([digits_run], "onnx", root / "export", parity_images=64)
    make_bundle(root / "export", "host-cpu", root / "b.tar.gz", samples=32)
    safe_extract(root / "b.tar.gz", root / "device")
    proc = subprocess.run([sys.executable, "run.py", "--out", "results.json", "--runs", "5", "--warmup", "1",
                           "--min-runs", "2", "--time-limit", "0.05"], cwd=root / "device", env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


def test_runner_refuses_a_changed_artifact_before_running(device_results, tmp_path):
    device = tmp_path / "device"
    shutil.copytree(device_results / "device", device)
    (device / "results.json").unlink()
    victim = next((device / "artifacts").glob("*.onnx"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0x20
    victim.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "run.py", "--out", "results.json"], cwd=device, env=ENV,
                          capture_output=True, text=True, timeout=300)
    check_error_line(proc.returncode, proc.stderr, victim.name)
    assert not (device / "results.json").exists()


def test_results_about_other_artifacts_do_not_join_a_report(device_results, tmp_path, cli):
    report = tmp_path / "report"
    code, _, err = cli("bench", device_results / "export", "--report", report, "--runs", "5", "--warmup", "1",
                       "--time-limit", "0.05", "--max-images", "32", "--quiet")
    assert code == 0, err
    results = json.loads((device_results / "device" / "results.json").read_text())
    for row in results["rows"]:
        row["artifact_sha256"] = "f" * 64  # measured on some other file
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(results))
    before = snapshot(report)
    code, _, err = cli("bench", "--import", foreign, "--report", report, "--quiet")
    check_error_line(code, err, "does not list")
    assert_untouched(before, snapshot(report))
    code, _, err = cli("bench", "--import", device_results / "device" / "results.json", "--report", report, "--quiet")
    assert code == 0, err  # the genuine results merge
    rows = json.loads((report / "report.json").read_text())["rows"]
    assert any(r["measurement"] == "measured on device" for r in rows)


def test_a_bundle_with_a_hostile_member_is_refused_by_the_script_the_device_runs(tmp_path):
    """safe_extract.py runs on the device as a plain script (no edgespec there): same refusal, exit 2."""
    import io
    import tarfile

    archive = tmp_path / "b.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../../outside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    script = Path(__file__).resolve().parents[2] / "toolkit" / "bundle" / "safe_extract.py"
    proc = subprocess.run([sys.executable, str(script), str(archive), str(tmp_path / "d" / "e")], env=ENV,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    check_error_line(proc.returncode, proc.stderr, "outside.txt")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "d" / "outside.txt").exists()
