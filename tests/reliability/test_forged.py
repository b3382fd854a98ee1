"""Forged or tampered inputs: manifests naming files outside their export directory or of the wrong shape, an ONNX
file without edgespec's metadata, imported device results with impossible figures, a split whose test images are
training images. Each is refused with exit 2 and one `error:` line, and nothing on disk changes."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from rel_support import assert_untouched, check_error_line, snapshot


def _forge(exp: Path, edit) -> Path:
    manifest = json.loads((exp / "manifest.json").read_text())
    edit(manifest["artifacts"], exp)
    (exp / "manifest.json").write_text(json.dumps(manifest))
    return exp


def _outside(arts, exp: Path, rel_of) -> None:
    """Point the first entry at a real file outside the export directory, with its true hash (a careful forger)."""
    secret = exp.parent / "secret.onnx"
    shutil.copy(exp / arts[0]["path"], secret)
    arts[0]["path"] = rel_of(secret, exp)
    arts[0]["sha256"] = hashlib.sha256(secret.read_bytes()).hexdigest()


def _companion_outside(arts, exp: Path) -> None:
    secret = exp.parent / "id_rsa"
    secret.write_text("private")
    arts[0]["files"] = [{"path": "../id_rsa", "sha256": hashlib.sha256(b"private").hexdigest(), "kind": "data"}]


def _symlink_out(arts, exp: Path) -> None:
    secret = exp.parent / "secret.onnx"
    shutil.copy(exp / arts[0]["path"], secret)
    (exp / "inner.onnx").symlink_to(secret)
    arts[0]["path"] = "inner.onnx"


FORGERIES = {
    "dotdot": lambda a, e: _outside(a, e, lambda s, x: "../secret.onnx"),
    "deep-dotdot": lambda a, e: _outside(a, e, lambda s, x: "sub/../../secret.onnx"),
    "absolute": lambda a, e: _outside(a, e, lambda s, x: str(s)),
    "companion-dotdot": _companion_outside,
    "symlink-out": _symlink_out,
    "entry-is-a-list": lambda a, e: a.__setitem__(0, [a[0]["path"], a[0]["sha256"]]),
    "path-is-a-number": lambda a, e: a[0].update(path=7),
    "sha-not-hex": lambda a, e: a[0].update(sha256="zz"),
    "no-name": lambda a, e: a[0].pop("name"),
    "files-not-a-list": lambda a, e: a[0].update(files={"path": "x"}),
    "unknown-format": lambda a, e: a[0].update(format="tflite"),
    "unknown-role": lambda a, e: a[0].update(role="admin"),
    "name-repeated": lambda a, e: a.append(copy.deepcopy(a[0])),
    "backslash-path": lambda a, e: a[0].update(path="..\\secret.onnx"),
}


@pytest.mark.parametrize("command", ["bench", "bundle", "export"])
@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_forged_manifest_is_refused(forgery, command, digits_export, digits_run, tmp_path, cli):
    exp = _forge(shutil.copytree(digits_export, tmp_path / "exp"), FORGERIES[forgery])
    argv = {"bench": ["bench", exp, "--report", tmp_path / "rep", "-q"],
            "bundle": ["bundle", exp, "--device", "host-cpu", "--out", tmp_path / "b.tar.gz", "-q"],
            "export": ["export", digits_run, "--formats", "onnx", "--out", exp, "-q"]}[command]
    before = snapshot(tmp_path, digits_run)
    code, _, err = cli(*argv)
    check_error_line(code, err, "manifest")
    assert_untouched(before, snapshot(tmp_path, digits_run))
    assert not (tmp_path / "b.tar.gz").exists() and not (tmp_path / "rep" / "report.json").exists()


def test_onnx_without_edgespec_metadata_is_not_this_model(digits_export, tmp_path, cli):
    """Another model's ONNX with its metadata stripped and its hash written into the manifest."""
    import onnx

    exp = shutil.copytree(digits_export, tmp_path / "exp")
    proto = onnx.load(str(exp / "digits.onnx"))
    del proto.metadata_props[:]
    data = proto.SerializeToString()

    def swap(arts, e):
        (e / arts[0]["path"]).write_bytes(data)
        arts[0].update(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))

    _forge(exp, swap)
    before = snapshot(tmp_path)
    for argv in (["bench", exp, "--report", tmp_path / "rep", "-q"],
                 ["bundle", exp, "--device", "host-cpu", "--out", tmp_path / "b.tar.gz", "-q"]):
        code, _, err = cli(*argv)
        check_error_line(code, err, "checkpoint hash")
    assert_untouched(before, snapshot(tmp_path))


# ---- bench --import: device results are checked against the row schema, ranges included --------------------------

@pytest.fixture(scope="module")
def device_results(tmp_path_factory) -> dict:
    """A valid results.json as a bundle's run.py writes it (two rows on host-cpu)."""
    from benchmarks.schema import Measurement, empty_row
    from toolkit.bundle.merge import RESULTS_SCHEMA

    rows = []
    for model, role in (("digits", "generalist"), ("digits-g0", "specialist")):
        r = empty_row(model, role, None if role == "generalist" else "g0", "onnx", "fp32", "host-cpu",
                      Measurement.DEVICE, 1)
        r.update(accuracy=0.9, latency_ms={"p50": 1.0, "p90": 1.2, "p99": 1.5, "mean": 1.1, "std": 0.1},
                 throughput_ips=900.0, size_bytes=1000, images=64, artifact_sha256="a" * 64, peak_rss_mb=50.0,
                 first_inference_ms=3.0)
        rows.append(r)
    return {"schema": RESULTS_SCHEMA, "device": "host-cpu", "measured": "2026-01-01T00:00:00+00:00", "rows": rows}


def _nan_latency(d):
    d["rows"][0]["latency_ms"]["p50"] = float("nan")


IMPORT_FORGERIES = {
    "accuracy-7.5": lambda d: d["rows"][0].update(accuracy=7.5),
    "accuracy-negative": lambda d: d["rows"][1].update(accuracy=-0.1),
    "accuracy-nan": lambda d: d["rows"][0].update(accuracy=float("nan")),
    "latency-nan": _nan_latency,
    "latency-negative": lambda d: d["rows"][0]["latency_ms"].update(p99=-1.0),
    "latency-infinite": lambda d: d["rows"][0]["latency_ms"].update(mean=float("inf")),
    "latency-not-a-number": lambda d: d["rows"][0]["latency_ms"].update(p50="fast"),
    "throughput-infinite": lambda d: d["rows"][0].update(throughput_ips=float("inf")),
    "size-negative": lambda d: d["rows"][0].update(size_bytes=-5),
    "batch-zero": lambda d: d["rows"][0].update(batch_size=0),
    "rss-negative": lambda d: d["rows"][0].update(peak_rss_mb=-1.0),
    "duplicate-row": lambda d: d["rows"].append(copy.deepcopy(d["rows"][0])),
    "rows-not-a-list": lambda d: d.update(rows={"a": 1}),
    "batch-latency-nan": lambda d: d["rows"][0].update(batches=[{"batch_size": 1, "runs": 5, "latency_ms": {
        "p50": float("nan")}, "throughput_ips": 1.0}]),
    "batch-throughput-negative": lambda d: d["rows"][0].update(batches=[{"batch_size": 1, "throughput_ips": -3.0}]),
    "batches-not-a-list": lambda d: d["rows"][0].update(batches="many"),
    "change-infinite": lambda d: d["rows"][1].update(accuracy_change_vs_generalist=float("-inf")),
    "sha-not-hex": lambda d: d["rows"][0].update(artifact_sha256="../../etc/passwd"),
}


@pytest.mark.parametrize("forgery", sorted(IMPORT_FORGERIES))
def test_bench_import_refuses_impossible_figures(forgery, device_results, tmp_path, cli):
    data = copy.deepcopy(device_results)
    IMPORT_FORGERIES[forgery](data)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(data))  # json writes NaN and Infinity as Python reads them back
    report = tmp_path / "rep"
    report.mkdir()
    (report / "report.md").write_text("the user's earlier report")
    before = snapshot(tmp_path)
    code, _, err = cli("bench", "--import", results, "--report", report, "-q")
    check_error_line(code, err, str(results.name))
    assert_untouched(before, snapshot(tmp_path))


def test_bench_import_accepts_valid_results(device_results, tmp_path, cli):
    """The control: the same file unforged merges (so the refusals above are about the forgery)."""
    results = tmp_path / "results.json"
    results.write_text(json.dumps(device_results))
    code, _, err = cli("bench", "--import", results, "--report", tmp_path / "rep", "-q")
    assert code == 0, err
    assert len(json.loads((tmp_path / "rep" / "report.json").read_text())["rows"]) == 2
