"""Detection pipeline end to end on tiny synthetic data: generalist -> vehicles (frozen layers) -> cars (gradual),
export and bench (the generic commands and their detect aliases). The whole pipeline runs once per session through
the CLI in a child process whose working directory and HOME are empty temporary folders and whose sockets refuse
to connect, so the tests can check that nothing is written outside the run directories and that Ultralytics never
reaches for the network."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason="needs the detect extra (ultralytics)")

GUARD = """
import json, os, socket, sys
LOG = os.environ["EDGESPEC_TEST_NETLOG"]
def _deny(*args, **kwargs):
    with open(LOG, "a") as fh:
        fh.write(repr(args[:2]) + "\\n")
    raise OSError("network disabled by the test")
socket.socket.connect = _deny
socket.create_connection = _deny
socket.getaddrinfo = _deny
from toolkit.cli.main import main
import time
for args in json.loads(sys.argv[1]):
    t0 = time.perf_counter()
    code = main(args)
    print(f"{time.perf_counter() - t0:.1f} s: edgespec {' '.join(args[:2])}", file=sys.stderr)
    if code:
        sys.exit(code)
"""


@pytest.fixture(scope="session")
def det(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("detect")
    cwd, home = root / "cwd", root / "home"
    cwd.mkdir()
    home.mkdir()
    p = {k: root / k for k in ("data", "gen", "veh", "cars", "exp", "rep")}
    (root / "groups.yaml").write_text("vehicles: [car, truck, bus]\ncars: [car]\n")
    commands = [
        ["data", "synth-detect", "--out", p["data"], "--train", 64, "--val", 24, "--quiet"],
        ["train", "--task", "detect", "--data", p["data"] / "data.yaml", "--model", "yolo11n.yaml", "--epochs", 1,
         "--batch-size", 16, "--device", "cpu", "--out", p["gen"], "--quiet"],
        ["detect", "specialize", p["gen"], "--group", "vehicles", "--out", p["veh"], "--epochs", 1, "--freeze", 10,
         "--quiet"],
        # the generic command dispatches a detection run to the YOLO specialists
        ["specialize", p["gen"], "--group", "cars", "--groups", root / "groups.yaml", "--from", p["veh"],
         "--out", p["cars"], "--epochs", 1, "--quiet"],
        ["detect", "export", p["gen"], p["veh"], "--out", p["exp"], "--quiet"],
        ["export", p["cars"], "--formats", "onnx", "--out", p["exp"], "--quiet"],  # merged into the same manifest
        ["detect", "bench", p["veh"], p["cars"], "--export", p["exp"], "--report", p["rep"], "--quiet"],
    ]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("YOLO_", "XDG_", "MPLCONFIGDIR", "PYTEST_"))}
    env.update(HOME=str(home), EDGESPEC_TEST_NETLOG=str(root / "net.log"))
    args = json.dumps([[str(a) for a in c] for c in commands])
    proc = subprocess.run([sys.executable, "-c", GUARD, args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(proc.stderr)  # per-command times, shown with -s
    return {**p, "root": root, "cwd": cwd, "home": home, "stdout": proc.stdout}


def _files(d: Path) -> list[str]:
    return sorted(str(f.relative_to(d)) for f in d.rglob("*"))


def test_nothing_written_outside_the_runs_and_no_network(det):
    assert _files(det["cwd"]) == []
    assert _files(det["home"]) == []
    net = det["root"] / "net.log"
    assert not net.exists(), net.read_text()
    # Ultralytics' settings live inside the first detection run of the process
    assert (det["gen"] / "ultra" / "config" / "Ultralytics" / "settings.json").is_file()


def test_runs_record_task_classes_and_lineage(det):
    gen = json.loads((det["gen"] / "run.json").read_text())
    veh = json.loads((det["veh"] / "run.json").read_text())
    cars = json.loads((det["cars"] / "run.json").read_text())
    assert gen["task"] == veh["task"] == "detect" and gen["status"] == veh["status"] == cars["status"] == "complete"
    assert veh["classes"] == ["car", "truck", "bus"] and veh["class_ids"] == [3, 4, 5]
    assert cars["classes"] == ["car"] and cars["class_ids"] == [3]
    assert cars["parent"]["lineage"] == [str(det["gen"]), str(det["veh"])]
    assert veh["parent"]["lineage"] == [str(det["gen"])]
    assert veh["extraction_check"]["exact"] and cars["extraction_check"]["exact"]
    assert veh["config"]["freeze"] == 10 and cars["config"]["freeze"] is None


@pytest.fixture
def one_thread():
    """What Ultralytics leaves torch with on two cores; exactness must not depend on it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _raw(weights: Path, x):
    from toolkit.detect.offline import load_weights
    from toolkit.detect.specialize import raw_head_outputs

    return raw_head_outputs(load_weights(weights), x)


@pytest.mark.parametrize("child,parent,keep", [("veh", "gen", [3, 4, 5]), ("cars", "veh", [0])])
def test_extracted_head_equals_parent_at_group_channels_exactly(det, child, parent, keep, one_thread):
    import torch

    from exporters.detect import letterbox_images
    from toolkit.detect.dataset import load_data

    files = load_data(det["data"] / "data.yaml").image_files("val")[:16]  # batch 16: see head_difference
    x = torch.from_numpy(letterbox_images(files, 64))
    a = _raw(det[parent] / "weights" / "best.pt", x)
    b = _raw(det[child] / "weights" / "init.pt", x)
    assert torch.equal(a["boxes"], b["boxes"])
    assert torch.equal(a["scores"][:, keep], b["scores"])
    assert b["scores"].shape[1] == len(keep) and a["scores"].shape[1] > len(keep)
    # decoded outputs: the same boxes, the same sigmoid scores at the group's channels
    assert torch.equal(a["decoded"][:, :4], b["decoded"][:, :4])
    assert torch.equal(a["decoded"][:, 4:][:, keep], b["decoded"][:, 4:])


def test_derived_dataset_links_images_and_remaps_labels(det):
    from toolkit.detect.dataset import label_path, load_data

    src = load_data(det["data"] / "data.yaml")
    veh = load_data(det["veh"] / "data" / "data.yaml")
    assert veh.names == ["car", "truck", "bus"]
    for split in ("train", "val"):
        images = veh.image_files(split)
        assert images
        for img in images:
            assert img.is_symlink()
            original = img.resolve()
            assert original.parent.parent.parent == src.root / "images" or original.is_relative_to(src.root)
            want = [f"{int(line.split()[0]) - 3} {' '.join(line.split()[1:])}"
                    for line in label_path(original).read_text().splitlines() if int(line.split()[0]) in (3, 4, 5)]
            assert label_path(img).read_text().splitlines() == want
    kept = {p.resolve().name for p in veh.image_files("val")}
    with_vehicles = {p.name for p in src.image_files("val")
                     if any(int(line.split()[0]) in (3, 4, 5) for line in label_path(p).read_text().splitlines())}
    assert kept == with_vehicles


def test_frozen_layers_did_not_move(det):
    from toolkit.detect.offline import load_weights

    init = load_weights(det["veh"] / "weights" / "init.pt")
    best = load_weights(det["veh"] / "weights" / "last.pt")
    a, b = init.state_dict(), best.state_dict()
    frozen = [k for k in a if k.startswith("model.0.") and k.endswith("conv.weight")]
    moving = [k for k in a if k.startswith("model.22.") and k.endswith("conv.weight")]
    assert frozen and moving
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in frozen)
    assert any(not np.array_equal(a[k].numpy(), b[k].numpy()) for k in moving)


def test_onnx_matches_pytorch_and_manifest(det):
    from exporters.detect import TOLERANCE, letterbox_images, onnx_outputs, torch_outputs
    from exporters.manifest import load_manifest, verify_artifact
    from toolkit.detect.dataset import load_data

    manifest = load_manifest(det["exp"])
    by_model = {a["model"]: a for a in manifest["artifacts"]}
    assert set(by_model) == {"gen", "veh", "cars"}
    veh = by_model["veh"]
    assert veh["task"] == "detect" and veh["role"] == "specialist" and veh["group"] == "vehicles"
    assert veh["classes"] == ["car", "truck", "bus"] and veh["class_ids"] == [3, 4, 5]
    assert veh["parity"]["passed"] and by_model["gen"]["role"] == "generalist"
    path = verify_artifact(det["exp"], veh)
    files = load_data(det["veh"] / "data" / "data.yaml").image_files("val")[:4]
    x = letterbox_images(files, 64)
    got, _, _ = onnx_outputs(path, x)
    ref = torch_outputs(det["veh"] / "weights" / "best.pt", x)
    assert got.shape == ref.shape == (len(files), 4 + 3, 84)  # 8x8 + 4x4 + 2x2 anchors at 64 px
    assert np.abs(got[:, :4] - ref[:, :4]).max() <= TOLERANCE["fp32"]["boxes_atol_px"]
    assert np.abs(got[:, 4:] - ref[:, 4:]).max() <= TOLERANCE["fp32"]["scores_atol"]


def test_bench_report_rows(det):
    from benchmarks.report import validate_report

    report = json.loads((det["rep"] / "report.json").read_text())
    assert validate_report(report) == []
    rows = {r["model"]: r for r in report["rows"]}
    assert len(report["rows"]) == 3 and set(rows) == {"gen", "veh", "cars"}
    for r in rows.values():
        assert r["task"] == "detect" and r["format"] == "onnx" and r["device"] == "host-cpu"
        assert r["measurement"] == "measured on host" and r["latency_ms"]["p50"] > 0
        assert 0.0 <= r["accuracy"] <= r["map50"] <= 1.0
    for name, group in (("veh", "vehicles"), ("cars", "cars")):
        r = rows[name]
        assert r["group"] == group and r["generalist_model"] == "gen"  # cars: closed set of the generalist, not veh
        assert 0.0 <= r["generalist_accuracy_closed"] <= 1.0 and 0.0 <= r["generalist_accuracy_open"] <= 1.0
        assert r["images"] == len(list((det[name] / "data" / "images" / "val").iterdir()))
        assert r["speedup_vs_generalist"] > 0 and r["size_ratio_vs_generalist"] <= 1.0
    assert "| veh | specialist | vehicles | onnx |" in (det["rep"] / "report.md").read_text()
