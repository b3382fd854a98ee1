"""ExecuTorch formats: XNNPACK-delegated fp32 and PT2E int8 .pte files pass parity, record the delegate's share,
and are measured by the bench on host-cpu through executorch.runtime.

smallcnn runs on the session's digits run; resnet18 and mobilenet_v3_small train for one epoch on small
synthetic 32 px data (lowering a resnet18 to XNNPACK takes 15-30 s on a busy 2-core host, so those are `slow`).
"""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                reason="ExecuTorch not installed (pip install -e '.[mobile]')")

ET = ["executorch", "executorch-int8"]


def _check_entries(entries: list[dict], model: str) -> dict[str, dict]:
    by = {e["format"]: e for e in entries if e["model"] == model and e["format"] in ET}
    assert set(by) == set(ET)
    for fmt, e in by.items():
        assert e["path"].endswith(".int8.pte" if fmt == "executorch-int8" else ".pte")
        assert e["input_shape"][0] == 1  # the program's fixed batch
        p = e["parity"]
        assert p["passed"], p
        if fmt == "executorch":  # fp32 tolerance: logits within atol + rtol * scale
            assert p["max_abs_diff"] <= 1e-4 + 1e-4 * p["max_abs_reference_logit"]
        else:  # int8: top-1 agreement and accuracy drop, as onnx-int8
            assert p["top1_agreement"] >= 0.95 and p["reference_accuracy"] - p["accuracy"] <= 0.02
            assert e["calibration"]["split"] == "train" and e["calibration"]["images"] > 0
        d = e["delegation"]
        assert d["backend"] == "XnnpackBackend" and d["delegated_subgraphs"] >= 1
        assert 0.5 < d["delegated_share"] <= 1.0
        assert d["delegated_nodes"] + d["non_delegated_nodes"] > 10
        assert set(d["ops_not_delegated"]) <= set(d["by_operator"])
    return by


@pytest.fixture(scope="module")
def et_export(digits_run, tmp_path_factory) -> Path:
    from exporters import export_runs

    out = tmp_path_factory.mktemp("et") / "export"
    export_runs([digits_run], ET + ["onnx"], out, parity_images=128, calib_count=64)
    return out


def test_smallcnn_pte_pass_parity_and_record_delegation(et_export):
    from exporters.manifest import load_manifest, verify_all

    entries = load_manifest(et_export)["artifacts"]
    by = _check_entries(entries, "digits")
    assert by["executorch"]["delegation"]["delegated_share"] == 1.0  # conv/relu/pool/linear: all XNNPACK
    assert "executorch" in by["executorch"]["built"]["packages"]
    verify_all(et_export)


def test_bench_measures_pte_rows_on_host_cpu(et_export, tmp_path):
    from benchmarks.bench import BenchConfig, bench
    from benchmarks.timing import TimingConfig

    cfg = BenchConfig(devices=["host-cpu", "android-mid"], formats=["onnx", *ET],
                      timing=TimingConfig(warmup=2, runs=20, min_runs=5, time_limit_s=0.5))
    report = bench(et_export, tmp_path / "report", cfg)
    rows = {(r["device"], r["format"]): r for r in report["rows"]}
    for fmt in ET:
        host = rows[("host-cpu", fmt)]
        assert host["measurement"] == "measured on host" and host["runtime"] == "executorch"
        assert host["latency_ms"]["p50"] > 0 and host["accuracy"] > 0.8
        assert any("fixed batch" in n for n in host["notes"])  # batch 32 of host-cpu skipped, said so
        phone = rows[("android-mid", fmt)]
        assert phone["measurement"] == "estimate" and phone["how"]["accuracy_proxy"]
    assert rows[("host-cpu", "onnx")]["runtime"] == "onnxruntime"


def test_missing_executorch_is_refused_with_the_install_line(digits_run, tmp_path, monkeypatch, cli):
    import exporters.formats as formats

    real = importlib.util.find_spec
    monkeypatch.setattr(formats.importlib.util, "find_spec",
                        lambda name, *a: None if name == "executorch" else real(name, *a))
    code, out, err = cli("export", digits_run, "--formats", "executorch", "--out", tmp_path / "x")
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "pip install 'edgespec[mobile]'" in lines[0]
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_profiles_list_executorch_beside_ort():
    from toolkit.devices import load_profile, parse_profile
    from toolkit.errors import UserError

    phone = load_profile("android-mid")
    assert {"ort", *ET} <= set(phone.formats) and phone.other_runtimes == ["executorch"]
    data = phone.model_dump(mode="json", by_alias=True)
    data["other_runtimes"] = []
    with pytest.raises(UserError, match="cannot run on runtime 'onnxruntime'"):
        parse_profile(data, "test")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_models_pass_parity(model, tmp_path):
    from exporters import export_runs
    from toolkit.train import TrainConfig, train

    run = tmp_path / model
    train(TrainConfig(data="synthetic:groups=2,classes=2,per_class=60,size=32", model=model, epochs=2, seed=0,
                      device="cpu", batch_size=32), run)
    entries = export_runs([run], ET, tmp_path / "export", parity_images=64, calib_count=32)
    by = _check_entries(entries, model)
    if model == "mobilenet_v3_small":  # its hardswish/SE blocks leave layout copies to the portable kernels
        assert by["executorch"]["delegation"]["delegated_share"] < 1.0


FAKE_ADB = '''#!{python}
"""A stand-in for adb: logs its argv, answers `devices`, accepts push, and for `shell` prints a real
executor_runner capture (tests/unit/data/device_output) when the quoted command line runs executor_runner."""
import json, shlex, sys
with open({log!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args == ["devices"]:
    print("List of devices attached")
    print("FAKE123\\tdevice")
elif args[2:3] == ["shell"]:
    words = shlex.split(args[3])
    if words[0].endswith("executor_runner"):
        print(open({capture!r}).read())
    elif words[0] == "getprop":
        print("fake-phone")
'''


def test_adb_bundle_runs_executor_runner_and_imports_as_device_rows(et_export, tmp_path):
    import json
    import sys
    import tarfile

    from toolkit.bundle.merge import import_results
    from toolkit.bundle.pack import AdbTarget, make_bundle

    binary = tmp_path / "executor_runner"
    binary.write_bytes(b"\x7fELF not a real binary: the fake adb never runs it")
    info = make_bundle(et_export, "android-mid", tmp_path / "phone.tar.gz", adb=AdbTarget.make("auto", binary))
    assert {i["format"] for i in info.items} == set(ET)  # executor_runner runs the .pte items only
    root = tmp_path / "b"
    with tarfile.open(info.path) as tar:
        tar.extractall(root, filter="data")
    log = tmp_path / "adb.log"
    capture = Path(__file__).parent / "data" / "device_output" / "executor_runner_mv2_xnnpack_docs.txt"
    adb = tmp_path / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable, log=str(log), capture=str(capture)))
    adb.chmod(0o755)
    ns: dict = {"__name__": "drv", "__file__": str(root / "adb_driver.py")}  # the bundle's own copy
    exec(compile((root / "adb_driver.py").read_text(), "adb_driver.py", "exec"), ns)
    out = tmp_path / "results.json"
    assert ns["main"](["--adb", str(adb), "--out", str(out), "--repeats", "3"]) == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    shells = [shlex.split(c[3]) for c in calls if c[2:3] == ["shell"]]
    runs = [w for w in shells if w[0].endswith("executor_runner")]
    assert len(runs) == 3 * len(info.items) and all(w[1] == "--model_path" and w[2].endswith(".pte") for w in runs)
    assert all(c[:2] == ["-s", "FAKE123"] for c in calls if c != ["devices"])
    results = json.loads(out.read_text())
    rows = results["rows"]
    assert {r["format"] for r in rows} == set(ET)
    assert all(r["measurement"] == "measured on device" and r["latency_ms"]["p50"] == pytest.approx(15.013292)
               and r["accuracy"] is None and any("latency only" in n for n in r["notes"]) for r in rows)
    report = import_results(out, tmp_path / "report")
    assert sum(r["measurement"] == "measured on device" for r in report["rows"]) == len(rows)


def test_adb_driver_without_a_phone_fails_in_one_line(et_export, tmp_path, capsys):
    import sys
    import tarfile

    from toolkit.bundle.pack import AdbTarget, make_bundle

    binary = tmp_path / "onnxruntime_perf_test"
    binary.write_bytes(b"\x7fELF")
    with pytest.raises(Exception, match="lists no onnxruntime format|holds"):  # the export has no .ort file
        make_bundle(et_export, "android-mid", tmp_path / "p.tar.gz", formats=["executorch"],
                    adb=AdbTarget.make(None, binary))
    runner = tmp_path / "executor_runner"
    runner.write_bytes(b"\x7fELF")
    info = make_bundle(et_export, "android-mid", tmp_path / "e.tar.gz", adb=AdbTarget.make(None, runner))
    with tarfile.open(info.path) as tar:
        tar.extractall(tmp_path / "b", filter="data")
    adb = tmp_path / "adb"
    adb.write_text(f"#!{sys.executable}\nprint('List of devices attached')\n")
    adb.chmod(0o755)
    ns: dict = {"__name__": "drv", "__file__": str(tmp_path / "b" / "adb_driver.py")}
    exec(compile((tmp_path / "b" / "adb_driver.py").read_text(), "adb_driver.py", "exec"), ns)
    assert ns["main"](["--adb", str(adb), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no Android device")
