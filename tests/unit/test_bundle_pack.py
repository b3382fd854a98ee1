"""Bundles: deterministic archives, what they hold, a runner that refuses tampered files before running anything,
and a runner that imports nothing but the standard library, numpy and the device runtime."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from toolkit.bundle import make_bundle, safe_extract
from toolkit.bundle.pack import RUNNER_DIR
from toolkit.errors import IntegrityError, UserError


def _tiny_onnx(path: Path, classes: int, seed: int) -> None:
    """A Flatten+Gemm classifier over 1x8x8 inputs, dynamic batch: an export without training anything."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((64, classes)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("Gemm", ["flat", "W", "B"],
                                                                                    ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def _entry(export: Path, model: str, role: str, group: str | None, class_ids: list[int], fmt: str = "onnx"):
    from exporters.formats import FORMATS
    from toolkit.io import sha256_file

    path = export / f"{model}{FORMATS[fmt].suffix}"
    _tiny_onnx(path, len(class_ids), seed=len(class_ids))
    return {"name": f"{model}-{fmt}", "model": model, "role": role, "group": group, "run": str(export / "no-run"),
            "format": fmt, "precision": FORMATS[fmt].precision, "path": path.name, "sha256": sha256_file(path),
            "size_bytes": path.stat().st_size, "input_name": "input", "input_shape": [-1, 1, 8, 8],
            "output_name": "logits", "opset": 17, "classes": [str(c) for c in class_ids], "class_ids": class_ids,
            "mean": [0.3], "std": [0.4], "files": []}


@pytest.fixture
def tiny_export(tmp_path) -> Path:
    from exporters.manifest import write_manifest

    export = tmp_path / "export"
    export.mkdir()
    write_manifest(export, [_entry(export, "gen", "generalist", None, list(range(10))),
                            _entry(export, "spec-a", "specialist", "a", [1, 3, 5])])
    return export


@pytest.fixture
def tiny_trt_export(tmp_path) -> Path:
    """The files TensorRT profiles bundle: the fp16 ONNX each tensorrt-fp16 engine is built from (strongly typed)."""
    from exporters.manifest import write_manifest

    export = tmp_path / "trt-export"
    export.mkdir()
    write_manifest(export, [_entry(export, "gen", "generalist", None, list(range(10)), "onnx-fp16"),
                            _entry(export, "spec-a", "specialist", "a", [1, 3, 5], "onnx-fp16")])
    return export


def _run(bundle_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "run.py", *args], cwd=bundle_dir, capture_output=True, text=True,
                          timeout=300)


def test_bundle_is_deterministic_and_holds_what_the_profile_deploys(tiny_export, tmp_path):
    a = make_bundle(tiny_export, "raspberry-pi-5", tmp_path / "a.tar.gz", samples=0)
    b = make_bundle(tiny_export, "raspberry-pi-5", tmp_path / "b.tar.gz", samples=0)
    assert a.sha256 == b.sha256  # same export, same bytes
    assert a.device == "raspberry-pi-5" and [i["name"] for i in a.items] == ["gen-onnx", "spec-a-onnx"]
    with tarfile.open(a.path) as tar:
        names = tar.getnames()
        assert names == sorted(names)
        assert {m.mtime for m in tar.getmembers()} == {315532800}
        assert {"run.py", "bundle.json", "manifest.json", "artifacts/gen.onnx", "edgespec_runner/timing.py"} \
            <= set(names)
        meta = json.loads(tar.extractfile("bundle.json").read())
    assert meta["device"] == "raspberry-pi-5" and meta["runtime"] == "onnxruntime"
    assert meta["settings"]["threads"] == 4 and meta["settings"]["batch_sizes"] == [1]
    assert set(meta["files"]) == set(names) - {"bundle.json"}
    spec = next(i for i in meta["items"] if i["role"] == "specialist")
    assert spec["generalist"] == "gen" and spec["class_ids"] == [1, 3, 5]


def test_profiles_that_cannot_take_the_export_are_refused(tiny_export, tmp_path):
    with pytest.raises(UserError, match="export ort first"):
        make_bundle(tiny_export, "android-mid", tmp_path / "b.tar.gz", samples=0)
    with pytest.raises(UserError, match="does not deploy onnx-fp16"):
        make_bundle(tiny_export, "raspberry-pi-5", tmp_path / "b.tar.gz", formats=["onnx-fp16"], samples=0)
    with pytest.raises(UserError, match=r"\.tar\.gz"):
        make_bundle(tiny_export, "raspberry-pi-5", tmp_path / "b.zip", samples=0)


def test_detection_artifacts_are_left_out_and_a_detection_only_export_is_refused(tiny_export, tmp_path):
    from exporters.manifest import load_manifest, write_manifest

    entries = load_manifest(tiny_export)["artifacts"]
    det = {**_entry(tiny_export, "yolo", "generalist", None, [0, 1]), "task": "detect"}
    write_manifest(tiny_export, [*entries, det])
    info = make_bundle(tiny_export, "raspberry-pi-5", tmp_path / "mixed.tar.gz", samples=0)
    assert [i["name"] for i in info.items] == ["gen-onnx", "spec-a-onnx"]  # the detector is not shipped
    only = tmp_path / "only"
    only.mkdir()
    write_manifest(only, [{**_entry(only, "yolo", "generalist", None, [0, 1]), "task": "detect"}])
    with pytest.raises(UserError, match="bundles measure classifiers only"):
        make_bundle(only, "raspberry-pi-5", tmp_path / "d.tar.gz", samples=0)


def test_tensorrt_profiles_ship_the_onnx_the_engine_is_built_from(tiny_export, tiny_trt_export, tmp_path):
    info = make_bundle(tiny_trt_export, "jetson-orin-nano", tmp_path / "j.tar.gz", samples=0)
    fmts = {(i["model"], i["format"], i["source_format"], i["precision"]) for i in info.items}
    assert fmts == {("gen", "tensorrt-fp16", "onnx-fp16", "fp16"), ("spec-a", "tensorrt-fp16", "onnx-fp16", "fp16")}
    with pytest.raises(UserError, match="export onnx-fp16 or onnx-int8 first"):  # fp32 ONNX builds no fp16 engine
        make_bundle(tiny_export, "jetson-orin-nano", tmp_path / "k.tar.gz", samples=0)


def test_a_changed_export_is_not_bundled(tiny_export, tmp_path):
    (tiny_export / "gen.onnx").write_bytes((tiny_export / "gen.onnx").read_bytes() + b"\0")
    with pytest.raises(IntegrityError):
        make_bundle(tiny_export, "raspberry-pi-5", tmp_path / "b.tar.gz", samples=0)
    assert not (tmp_path / "b.tar.gz").exists()


def test_runner_measures_a_latency_only_bundle(tiny_export, tmp_path):
    info = make_bundle(tiny_export, "raspberry-pi-5", tmp_path / "b.tar.gz", samples=0)
    safe_extract(info.path, tmp_path / "b")
    proc = _run(tmp_path / "b", "--out", "results.json", "--warmup", "1", "--runs", "5", "--time-limit", "0.05",
                "--batch-sizes", "1,4", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert res["schema"] == "edgespec.device-results/1" and res["device"] == "raspberry-pi-5"
    assert res["device_facts"]["runtime"] == "onnxruntime" and res["device_facts"]["os_release"]
    rows = {r["model"]: r for r in res["rows"]}
    assert set(rows) == {"gen", "spec-a"}
    for r in rows.values():
        assert r["measurement"] == "measured on device" and r["accuracy"] is None
        assert [b["batch_size"] for b in r["batches"]] == [1, 4] and all(b["runs"] == 5 for b in r["batches"])
        assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] and r["peak_rss_mb"] > 0
    assert rows["spec-a"]["speedup_vs_generalist"] == pytest.approx(
        rows["gen"]["latency_ms"]["p50"] / rows["spec-a"]["latency_ms"]["p50"])


@pytest.mark.parametrize("victim", ["artifacts/gen.onnx", "edgespec_runner/runtimes.py"])
def test_tampered_files_are_refused_before_anything_runs(tiny_export, tmp_path, victim):
    info = make_bundle(tiny_export, "raspberry-pi-5", tmp_path / "b.tar.gz", samples=0)
    root = tmp_path / "b"
    safe_extract(info.path, root)
    marker = tmp_path / "tampered-code-ran"
    if victim.endswith(".py"):  # tampered runner code that would leave a trace if it were ever imported
        (root / victim).write_text(f"open({str(marker)!r}, 'w').close()\n" + (root / victim).read_text())
    else:
        data = bytearray((root / victim).read_bytes())
        data[-1] ^= 0xFF
        (root / victim).write_bytes(bytes(data))
    proc = _run(root, "--out", "results.json")
    assert proc.returncode == 2
    assert f"{victim} (sha256 mismatch)" in proc.stderr and "refusing to run" in proc.stderr
    assert "measuring" not in proc.stderr and not (root / "results.json").exists() and not marker.exists()
    proc = _run(root, "--verify-only")
    assert proc.returncode == 2


def test_runner_imports_only_the_standard_library_numpy_and_device_runtimes():
    allowed_third_party = {"numpy", "onnxruntime", "tensorrt", "cuda", "pycuda", "edgespec_runner"}
    relative_ok = {"safe_extract.py"}  # its one relative import is guarded: ImportError when run as a script
    stdlib = set(sys.stdlib_module_names)
    for path in sorted([*RUNNER_DIR.glob("*.py"), RUNNER_DIR.parent / "safe_extract.py"]):
        tree = ast.parse(path.read_text(), feature_version=(3, 8))  # JetPack 5 ships Python 3.8
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                top = name.split(".")[0]
                assert top in stdlib or top in allowed_third_party, f"{path.name} imports {name}"
            if isinstance(node, ast.ImportFrom) and path.name not in relative_ok:
                assert node.level == 0, f"{path.name} uses a relative import"


def test_engine_cache_key_depends_on_tensorrt_version_and_gpu():
    from toolkit.bundle.runner.runtimes import _shapes, engine_key

    base = engine_key("abc", "fp16", {"max": [8, 1, 8, 8]}, "10.3.0", "Orin (integrated GPU)")
    assert base == engine_key("abc", "fp16", {"max": [8, 1, 8, 8]}, "10.3.0", "Orin (integrated GPU)")
    assert base != engine_key("abc", "fp16", {"max": [8, 1, 8, 8]}, "10.4.0", "Orin (integrated GPU)")
    assert base != engine_key("abc", "fp16", {"max": [8, 1, 8, 8]}, "10.3.0", "NVIDIA A100")
    assert base != engine_key("abc", "int8", {"max": [8, 1, 8, 8]}, "10.3.0", "Orin (integrated GPU)")
    assert _shapes({"input_shape": [-1, 3, 32, 32]}, 8) == {"min": [1, 3, 32, 32], "opt": [8, 3, 32, 32],
                                                             "max": [8, 3, 32, 32]}
    assert _shapes({"input_shape": [2, 3, 32, 32]}, 8)["max"] == [2, 3, 32, 32]


def test_engines_are_built_once_per_tensorrt_version_and_gpu_then_cached(tmp_path, monkeypatch):
    """The on-device build path with TensorRT's builder stubbed (no GPU here): build time recorded, cache reused."""
    from toolkit.bundle.runner import runtimes

    built = []
    monkeypatch.setattr(runtimes, "trt_version_and_builder", lambda: ("api", "10.3.0"))
    monkeypatch.setattr(runtimes, "gpu_name", lambda: "Orin (integrated GPU)")
    monkeypatch.setattr(runtimes, "build_engine_api", lambda data, item, precision, shapes, *dla:
                        built.append((precision, shapes["max"])) or b"engine-bytes")
    item = {"sha256": "a" * 64, "input_shape": [-1, 1, 8, 8], "input_name": "input", "path": "artifacts/m.onnx"}
    path, facts = runtimes.engine_for("m.onnx", b"onnx", item, "fp16", 8, str(tmp_path))
    assert built == [("fp16", [8, 1, 8, 8])] and not facts["cached"] and facts["build_s"] >= 0
    assert facts["tensorrt_version"] == "10.3.0" and facts["gpu"] == "Orin (integrated GPU)"
    assert facts["tensorrt_major"] == 10 and "--stronglyTyped --noDataTransfers" in facts["trtexec"]
    assert "--fp16" not in facts["trtexec"] and facts["compute_capability"] == "8.7"
    assert Path(path).read_bytes() == b"engine-bytes" and not list(tmp_path.glob("*.tmp"))
    path2, facts2 = runtimes.engine_for("m.onnx", b"onnx", item, "fp16", 8, str(tmp_path))
    assert path2 == path and facts2["cached"] and facts2["build_s"] is None and len(built) == 1
    monkeypatch.setattr(runtimes, "gpu_name", lambda: "NVIDIA A100")
    path3, facts3 = runtimes.engine_for("m.onnx", b"onnx", item, "fp16", 8, str(tmp_path))
    assert path3 != path and not facts3["cached"] and len(built) == 2


def test_the_device_runner_speaks_both_tensorrt_versions(monkeypatch):
    """The runner reports the device's TensorRT and builds with the trtexec line for it (11: no precision flag)."""
    from toolkit.bundle.runner import runtimes

    item = {"input_name": "input", "path": "artifacts/m.fp16.onnx"}
    shapes = {"min": [1, 1, 8, 8], "opt": [8, 1, 8, 8], "max": [8, 1, 8, 8]}
    ten = runtimes.trtexec_build_argv("trtexec", "m.fp16.onnx", "e.engine", item, shapes, 10)
    eleven = runtimes.trtexec_build_argv("trtexec", "m.fp16.onnx", "e.engine", item, shapes, 11, dla_core=0)
    assert "--stronglyTyped" in ten and "--stronglyTyped" not in eleven and "--noDataTransfers" in eleven
    assert not {"--fp16", "--int8"} & set(ten + eleven) and "--useDLACore=0" in eleven
    assert runtimes.trt_major("100300") == 10 and runtimes.trt_major("11.4.1") == 11
    monkeypatch.setattr(runtimes, "trt_version_and_builder", lambda: ("api", "8.6.1"))
    with pytest.raises(runtimes.RunnerError, match="TensorRT 8.6.1.*10.x or 11.x"):
        runtimes.engine_for("m.onnx", b"onnx", {**item, "sha256": "a" * 64, "input_shape": [-1, 1, 8, 8]}, "fp16",
                            8, "/nonexistent")


def test_a_tensorrt_bundle_on_a_device_without_tensorrt_reports_unavailable_rows(tiny_trt_export, tmp_path):
    import importlib.util
    import shutil

    if importlib.util.find_spec("tensorrt") or shutil.which("trtexec"):
        pytest.skip("this host has TensorRT: the bundle would build engines here")
    info = make_bundle(tiny_trt_export, "jetson-orin-nano", tmp_path / "j.tar.gz", samples=0)
    safe_extract(info.path, tmp_path / "j")
    proc = _run(tmp_path / "j", "--out", "results.json")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no artifact could run on this device")
    res = json.loads((tmp_path / "j" / "results.json").read_text())
    assert [r["measurement"] for r in res["rows"]] == ["unavailable", "unavailable"]
    assert all("neither TensorRT" in r["notes"][0] for r in res["rows"]) and len(res["errors"]) == 2


def _report(export: Path, recs: list[dict] | None) -> Path:
    report = export / "report"
    report.mkdir(exist_ok=True)
    doc = {"rows": []} if recs is None else {"rows": [], "recommendations": recs}
    (report / "report.json").write_text(json.dumps(doc))
    return report


def test_recommended_bundle_packs_the_recommended_artifact_per_group_only(tiny_export, tmp_path, cli):
    from exporters.manifest import load_manifest, write_manifest

    entries = load_manifest(tiny_export)["artifacts"]
    write_manifest(tiny_export, [*entries, _entry(tiny_export, "spec-b", "specialist", "b", [0, 2])])
    _report(tiny_export, [
        {"device": "raspberry-pi-5", "group": "a", "model": "spec-a", "format": "onnx"},
        {"device": "raspberry-pi-5", "group": "b", "model": "gen", "format": "onnx"},  # the generalist won for b
        {"device": "host-cpu", "group": "b", "model": "spec-b", "format": "onnx"}])
    code, out, err = cli("bundle", tiny_export, "--device", "raspberry-pi-5", "--out", tmp_path / "r.tar.gz",
                         "--recommended", "--samples", "0", "--quiet")
    assert code == 0, err
    with tarfile.open(tmp_path / "r.tar.gz") as tar:
        meta = json.loads(tar.extractfile("bundle.json").read())
        assert "artifacts/spec-b.onnx" not in tar.getnames()
    assert sorted(i["name"] for i in meta["items"]) == ["gen-onnx", "spec-a-onnx"]


@pytest.mark.parametrize("recs, fragment", [
    (None, "has no recommendations table"),
    ([{"device": "raspberry-pi-5", "group": "a", "model": None, "reason": "no artifact within 1 pt"}],
     "recommends no artifact for raspberry-pi-5 (a: no artifact within 1 pt)"),
    ([{"device": "raspberry-pi-5", "group": "a", "model": "elsewhere", "format": "onnx"}], "elsewhere (onnx)"),
])
def test_recommended_bundle_refuses_a_report_without_a_recommendation(tiny_export, tmp_path, cli, recs, fragment):
    _report(tiny_export, recs)
    code, _, err = cli("bundle", tiny_export, "--device", "raspberry-pi-5", "--out", tmp_path / "r.tar.gz",
                       "--recommended", "--quiet")
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r.tar.gz").exists()
