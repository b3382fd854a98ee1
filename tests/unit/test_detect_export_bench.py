"""Detection runs through the generic `edgespec export` and `edgespec bench`: formats, parity, manifest, report rows,
and the mAP the bench computes (checked on hand-made outputs whose answer is known)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason="needs the detect extra (ultralytics)")


# -- mAP on known outputs ----------------------------------------------------------------------------------------

def _labels() -> list[np.ndarray]:
    """Two 64 px images: class, x1, y1, x2, y2 in input pixels."""
    return [np.array([[0, 4, 4, 24, 24], [1, 30, 30, 60, 50]], np.float32),
            np.array([[2, 10, 20, 40, 44]], np.float32)]


def _outputs(labels: list[np.ndarray], nc: int, shift: float = 0.0, cls_of=lambda c: c,
             anchors: int = 84) -> np.ndarray:
    """Raw outputs [N, 4 + nc, anchors]: one anchor per label (cx, cy, w, h; score 0.9 at `cls_of(class)`)."""
    out = np.zeros((len(labels), 4 + nc, anchors), np.float32)
    out[:, 2:4] = 1.0  # background anchors: tiny boxes with zero scores
    for i, lab in enumerate(labels):
        for j, (c, x1, y1, x2, y2) in enumerate(lab):
            out[i, :4, j] = [(x1 + x2) / 2 + shift, (y1 + y2) / 2, x2 - x1, y2 - y1]
            out[i, 4 + cls_of(int(c)), j] = 0.9
    return out


#: AP of a perfect detector under Ultralytics' interpolation (101 points, the curve ends at recall 1 + 0.01): 0.995
PERFECT = pytest.approx({"map50_95": 0.995, "map50": 0.995})


def test_map_is_perfect_for_exact_boxes_and_drops_with_shift_or_wrong_class(ultra):
    from toolkit.detect.metrics import det_map

    labels = _labels()
    assert det_map(_outputs(labels, 3), labels) == PERFECT
    shifted = det_map(_outputs(labels, 3, shift=3.0), labels)  # IoU 0.74 / 0.82 / 0.82: hits up to 0.70 / 0.80
    assert shifted["map50"] == pytest.approx(0.995) and shifted["map50_95"] == pytest.approx(0.995 * (5 + 7 + 7) / 30)
    wrong = det_map(_outputs(labels, 3, cls_of=lambda c: (c + 1) % 3), labels)
    assert wrong == {"map50_95": 0.0, "map50": 0.0}
    assert det_map(_outputs(labels, 3), [np.zeros((0, 5), np.float32)] * 2) == {"map50_95": None, "map50": None}


def test_duplicate_boxes_count_once(ultra):
    from toolkit.detect.metrics import _match

    gt = np.array([[0, 0, 0, 10, 10]], np.float32)
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    tp = _match(np.array([0, 0]), boxes, gt)
    assert tp[0].all() and not tp[1].any()


def test_generalist_closed_and_open_set(ultra):
    """Generalist of 6 classes; the group is its classes [4, 1, 3] (label positions 0, 1, 2). Every box scores 0.9
    at its own class, and the first image's class-0 object scores 0.95 at class 5, outside the group."""
    from toolkit.detect.metrics import DetectSet, generalist_on_group

    labels = _labels()
    group = [4, 1, 3]
    out = _outputs(labels, 6, cls_of=lambda c: group[c])
    out[0, 4 + 5, 0] = 0.95
    dset = DetectSet("run", np.zeros((2, 3, 64, 64), np.float32), labels, group, 2)
    closed, open_ = generalist_on_group(out, dset, list(range(6)))
    assert closed == PERFECT  # class 5 is not among the group's channels
    assert open_["map50_95"] == pytest.approx(0.995 * 2 / 3)  # that object is lost: AP 0 for its class
    assert generalist_on_group(out, DetectSet("run", None, labels, [7], 2), list(range(6))) == (None, None)


def test_parity_tolerances():
    from exporters.detect import detect_parity

    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.uniform(0, 64, (3, 4, 84)), rng.uniform(0, 1, (3, 3, 84))], 1).astype(np.float32)
    assert detect_parity(ref, ref.copy(), 3)["passed"]
    off = ref.copy()
    off[:, :4] += 0.1  # 0.1 px: within fp16's tolerance, not fp32's
    assert not detect_parity(ref, off, 3)["passed"] and detect_parity(ref, off, 3, "fp16")["passed"]
    off[1, 5, 7] += 0.05
    bad = detect_parity(ref, off, 3, "fp16")
    assert not bad["passed"] and any("score" in f for f in bad["failures"])
    assert not detect_parity(ref, ref[:, :6], 3)["passed"]


# -- a tiny trained generalist and specialist, exported and benched --------------------------------------------------

@pytest.fixture(scope="module")
def det(tmp_path_factory, ultra) -> dict[str, Path]:
    from toolkit.cli.main import main

    root = tmp_path_factory.mktemp("detexp")
    p = {k: root / k for k in ("data", "gen", "veh", "exp", "rep")}
    for args in (["data", "synth-detect", "--out", p["data"], "--train", 32, "--val", 12, "--quiet"],
                 ["train", "--task", "detect", "--data", p["data"] / "data.yaml", "--model", "yolo11n.yaml",
                  "--epochs", 1, "--batch-size", 16, "--device", "cpu", "--out", p["gen"], "--quiet"],
                 ["detect", "specialize", p["gen"], "--group", "vehicles", "--out", p["veh"], "--epochs", 1,
                  "--quiet"],
                 ["export", p["gen"], p["veh"], "--formats", "onnx,onnx-fp16,ort", "--out", p["exp"], "--quiet"],
                 ["bench", p["exp"], "--devices", "host-cpu,jetson-orin-nano", "--report", p["rep"], "--runs", 5,
                  "--warmup", 1, "--time-limit", 0.2, "--quiet"]):
        assert main([str(a) for a in args]) == 0, args
    return {**p, "root": root}


def test_export_manifest_entries(det):
    from exporters.manifest import load_manifest, verify_artifact

    arts = {a["name"]: a for a in load_manifest(det["exp"])["artifacts"]}
    assert set(arts) == {f"{m}-{f}" for m in ("gen", "veh") for f in ("onnx", "onnx-fp16", "ort")}
    for a in arts.values():
        assert a["task"] == "detect" and a["parity"]["passed"] and a["input_shape"] == [-1, 3, 64, 64]
        assert a["input_name"] == "images" and a["output_name"] == "output0"
        verify_artifact(det["exp"], a)  # sha256 and identity (edgespec metadata inside the file)
    veh = arts["veh-onnx"]
    assert veh["role"] == "specialist" and veh["group"] == "vehicles" and veh["class_ids"] == [3, 4, 5]
    assert arts["gen-onnx"]["parity"]["boxes_max_abs_px"] <= 1e-2
    assert arts["veh-onnx-fp16"]["parity"]["tolerance"]["scores_atol"] == 1e-2
    assert 0.45 < arts["gen-onnx-fp16"]["size_bytes"] / arts["gen-onnx"]["size_bytes"] < 0.55
    assert [f["kind"] for f in arts["veh-ort"]["files"]] == ["required_operators"]


def test_onnx_has_dynamic_batch_and_static_size(det):
    from benchmarks.estimate import count_onnx
    from exporters.detect import letterbox_images, onnx_outputs, torch_outputs

    path = det["exp"] / "veh.onnx"
    c1, c4 = count_onnx(path, 1), count_onnx(path, 4)
    assert c1["nodes_without_shape"] == 0 and c1["flops"] > 0 and c4["flops"] == 4 * c1["flops"]
    from ultralytics.utils.torch_utils import get_flops

    from toolkit.detect.offline import load_weights

    # the estimate's FLOPs (counted in the graph) agree with Ultralytics' GFLOPs of the same model within 5%
    assert c1["flops"] / 1e9 == pytest.approx(get_flops(load_weights(det["veh"] / "weights" / "best.pt"), 64), rel=0.05)
    files = sorted((det["veh"] / "data" / "images" / "val").iterdir())[:3]
    x = letterbox_images(files, 64)
    got, _, _ = onnx_outputs(path, x, batch=3)
    assert got.shape == (3, 4 + 3, 84)
    assert np.abs(got - torch_outputs(det["veh"] / "weights" / "best.pt", x)).max() < 1e-2


def test_bench_rows_in_the_shared_report(det):
    from benchmarks.report import validate_report

    report = json.loads((det["rep"] / "report.json").read_text())
    assert validate_report(report) == []
    assert "detection accuracy" in report["methods"]
    host = [r for r in report["rows"] if r["device"] == "host-cpu"]
    assert {(r["model"], r["format"]) for r in host} == {(m, f) for m in ("gen", "veh")
                                                         for f in ("onnx", "onnx-fp16", "ort")}
    n_val = len(list((det["veh"] / "data" / "images" / "val").iterdir()))
    for r in host:
        assert r["task"] == "detect" and r["measurement"] == "measured on host"
        assert 0.0 <= r["accuracy"] <= r["map50"] <= 1.0 and r["latency_ms"]["p50"] > 0
    for r in (r for r in host if r["role"] == "specialist"):
        assert r["images"] == n_val and r["speedup_vs_generalist"] > 0
        assert 0.0 <= r["generalist_accuracy_closed"] <= 1.0 and 0.0 <= r["generalist_accuracy_open"] <= 1.0
        assert r["generalist_map50_closed"] is not None
    jetson = {(r["model"], r["format"]): r for r in report["rows"] if r["device"] == "jetson-orin-nano"}
    fp16 = jetson[("veh", "tensorrt-fp16")]
    assert fp16["measurement"] == "estimate" and fp16["latency_ms"]["p50"] > 0 and fp16["estimate"]["flops"] > 0
    assert any("ONNX graph" in n for n in fp16["notes"]) and fp16["how"]["accuracy_proxy"]
    assert jetson[("veh", "tensorrt-int8")]["measurement"] == "unavailable"
    assert any(c["check"] == "latency_p50_ms" and c["passed"] is not None for c in report["budgets"])
    md = (det["rep"] / "report.md").read_text()
    assert "mAP50" in md and "| veh | specialist | vehicles | onnx |" in md


def test_refusals_are_one_line(det, cli, tmp_path):
    for fmt in ("tensorrt-int8",):  # onnx-int8 ships behind its mAP gate (tests/unit/test_detect_int8.py)
        code, _, err = cli("export", str(det["gen"]), "--formats", fmt, "--out", str(tmp_path / "x"))
        assert code == 2 and "not available for detection runs" in err and len(err.strip().splitlines()) == 1
    cls_run = tmp_path / "cls"
    cls_run.mkdir()
    (cls_run / "run.json").write_text(json.dumps({"format": "edgespec.run/1", "kind": "train"}))
    code, _, err = cli("export", str(det["gen"]), str(cls_run), "--formats", "onnx", "--out", str(tmp_path / "y"))
    assert code == 2 and "cannot be exported in one call" in err
    code, _, err = cli("detect", "bench", str(det["gen"]), "--report", str(tmp_path / "r"))
    assert code == 2 and "is a generalist" in err
    assert not (tmp_path / "x").exists()


def test_detect_aliases(det, cli, tmp_path):
    code, out, _ = cli("detect", "export", str(det["veh"]), "--out", str(tmp_path / "e"), "--formats", "onnx")
    assert code == 0 and "veh.onnx" in out
    code, out, err = cli("detect", "bench", str(det["veh"]), "--export", str(det["exp"]), "--report",
                         str(tmp_path / "r"))
    assert code == 0, err
    rows = json.loads((tmp_path / "r" / "report.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"gen", "veh"} and "mAP50-95" in out


def test_tensorrt_fp16_through_a_fake_tensorrt(det, tmp_path, monkeypatch):
    """Wiring only (no TensorRT here): the engine is built from the detector's ONNX with a profile over the batch at
    the run's size, checked against PyTorch, and shipped with that ONNX and its trtexec line. Never a real build."""
    import importlib.util as iu
    import sys

    from exporters import export_runs
    from exporters import tensorrt as T
    from exporters.detect import onnx_outputs

    spec = iu.spec_from_file_location("trt_fakes", Path(__file__).with_name("test_export_tensorrt.py"))
    fakes = iu.module_from_spec(spec)
    spec.loader.exec_module(fakes)
    trt = fakes.fake_tensorrt("11.4.1")  # the 11.x surface: no precision flags exist there at all
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("exporters.formats.Format.missing", lambda self: [])  # as on a GPU host with TensorRT
    monkeypatch.setattr(T, "import_tensorrt", lambda check_gpu=True, hint="": trt)
    monkeypatch.setattr(T, "local_target", lambda trt: T.Target("11.4.1", "NVIDIA H200", "9.0"))
    monkeypatch.setattr(T, "run_engine", lambda path, images, i, o, b, key=None: onnx_outputs(
        Path(trt.calls["parsed"]), images)[0])
    entries = export_runs([det["veh"]], "tensorrt-fp16", tmp_path / "out", max_batch=8)
    assert [e["format"] for e in entries] == ["onnx-fp16", "tensorrt-fp16"]  # the source ONNX ships too
    engine = entries[1]
    assert trt.calls["parsed"].endswith("veh.fp16.onnx") and trt.calls["flags"] == set()  # strongly typed
    assert trt.calls["profiles"] == [("images", (1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64))]
    assert engine["parity"]["passed"] and engine["task"] == "detect" and engine["precision"] == "fp16"
    assert "--onnx=veh.fp16.onnx" in engine["trtexec"] and "--saveEngine=veh.fp16.engine" in engine["trtexec"]
    assert "--fp16" not in engine["trtexec"] and engine["engine_key"]["compute_capability"] == "9.0"
    assert (tmp_path / "out" / "veh.fp16.engine").read_bytes() == b"ENGINE11"


def test_classification_and_detection_share_one_manifest_and_report(det, digits_run, cli, tmp_path):
    import shutil

    from benchmarks.report import validate_report
    from exporters.manifest import load_manifest

    exp = tmp_path / "exp"
    shutil.copytree(det["exp"], exp)
    code, _, err = cli("export", str(digits_run), "--formats", "onnx", "--out", str(exp))
    assert code == 0, err
    tasks = {a["model"]: a.get("task") for a in load_manifest(exp)["artifacts"]}
    assert tasks == {"gen": "detect", "veh": "detect", "digits": None}
    code, _, err = cli("bench", str(exp), "--devices", "host-cpu", "--formats", "onnx", "--report", str(tmp_path / "r"),
                       "--runs", "3", "--warmup", "0", "--time-limit", "0.1")
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert validate_report(report) == []
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"gen", "veh", "digits"}
    assert "map50" not in rows["digits"] and rows["digits"]["accuracy"] > 0.5  # top-1 of a trained classifier
    assert rows["veh"]["metric"] == "mAP50-95" and rows["veh"]["generalist_model"] == "gen"


def test_fresh_process_export_and_bench_write_nothing_outside_their_directories(det, tmp_path):
    """A new process (Ultralytics not yet imported) with an empty HOME and working directory: export and bench keep
    Ultralytics' settings inside the output directories."""
    import os
    import subprocess
    import sys

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "XDG_", "MPLCONFIGDIR", "PYTEST_"))}
    env["HOME"] = str(home)
    commands = [["bench", str(det["exp"]), "--devices", "host-cpu", "--formats", "onnx", "--report",
                 str(tmp_path / "r"), "--runs", "3", "--warmup", "0", "--time-limit", "0.1", "-q"],
                ["export", str(det["veh"]), "--formats", "onnx", "--out", str(tmp_path / "e"), "-q"]]
    code = ("import json, sys\nfrom toolkit.cli.main import main\n"
            "sys.exit(max(main(a) or 0 for a in json.loads(sys.argv[1])))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(commands)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(home.rglob("*")) == [] and list(cwd.rglob("*")) == []
    assert (tmp_path / "r" / "ultra" / "config" / "Ultralytics" / "settings.json").is_file()  # the first user's
    assert (tmp_path / "e" / "veh.onnx").is_file()
    assert json.loads((tmp_path / "r" / "report.json").read_text())["rows"][0]["map50"] is not None
