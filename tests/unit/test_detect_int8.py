"""Detection onnx-int8: the Detect head's decode stays float, and the artifact ships only behind its mAP gate."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason="needs the detect extra (ultralytics)")


@pytest.fixture(scope="module")
def det(tmp_path_factory, ultra) -> dict[str, Path]:
    """A 1-epoch yolo11n on 24 synthetic images, exported as onnx + onnx-int8 with the gate opened wide (the
    accepting branch; the default tolerance is measured on a trained model, see exporters.detect)."""
    from toolkit.cli.main import main

    root = tmp_path_factory.mktemp("detint8")
    p = {k: root / k for k in ("data", "gen", "exp")}
    for args in (["data", "synth-detect", "--out", p["data"], "--train", 24, "--val", 8, "--quiet"],
                 ["train", "--task", "detect", "--data", p["data"] / "data.yaml", "--model", "yolo11n.yaml",
                  "--epochs", 1, "--batch-size", 8, "--device", "cpu", "--out", p["gen"], "--quiet"]):
        assert main([str(a) for a in args]) == 0, args
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("exporters.detect_int8.INT8_MAX_MAP_DROP", 1.0)
        assert main(["export", str(p["gen"]), "--formats", "onnx,onnx-int8", "--out", str(p["exp"]),
                     "--calib-count", "16", "--quiet"]) == 0
    return p


def _weight_from_dq(proto, node) -> bool:
    producers = {o: n for n in proto.graph.node for o in n.output}
    w = producers.get(node.input[1])
    return w is not None and w.op_type == "DequantizeLinear"


def test_head_decode_is_kept_float(det):
    import onnx

    from exporters.detect_int8 import head_tail_nodes

    fp32 = onnx.load(str(det["exp"] / "gen.onnx"))
    tail = set(head_tail_nodes(fp32))
    by_name = {n.name: n for n in fp32.graph.node}
    ops = {by_name[t].op_type for t in tail}
    assert {"Sigmoid", "Softmax", "Conv", "Concat"} <= ops  # scores, DFL softmax and conv, the final concat
    prefix = "/" + next(iter(tail)).split("/")[1] + "/"
    assert all(t.startswith(prefix) for t in tail)
    producer = next(n for n in fp32.graph.node if fp32.graph.output[0].name in n.output)
    assert producer.name in tail
    assert sum(by_name[t].op_type == "Conv" for t in tail) == 1  # only the DFL conv; cv2/cv3 convs are quantized
    assert not any("/cv2." in t or "/cv3." in t for t in tail)

    int8 = onnx.load(str(det["exp"] / "gen.int8.onnx"))
    convs = [n for n in int8.graph.node if n.op_type == "Conv"]
    dfl = [n for n in convs if n.name in tail]
    assert len(dfl) == 1 and not _weight_from_dq(int8, dfl[0])  # float weights in the decode
    assert all(_weight_from_dq(int8, n) for n in convs if n.name not in tail)  # every other conv is int8
    decoded = {o for n in int8.graph.node if n.name in tail for o in n.output}
    assert decoded and not [n.name for n in int8.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in decoded]

    manifest = json.loads((det["exp"] / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["format"] == "onnx-int8")
    assert sorted(entry["built"]["details"]["float_nodes"]) == sorted(tail)
    assert entry["calibration"]["images"] == 16 and entry["calibration"]["split"] == "train"
    assert entry["built"]["details"]["activations"] == "uint8 asymmetric"  # ORT's fast CPU path


def test_gate_accepts_within_tolerance(det):
    manifest = json.loads((det["exp"] / "manifest.json").read_text())
    gate = next(a for a in manifest["artifacts"] if a["format"] == "onnx-int8")["parity"]
    assert gate["passed"] and gate["precision"] == "int8" and gate["images"] == 8
    assert gate["map50_95_drop"] == pytest.approx(gate["reference_map50_95"] - gate["map50_95"])
    assert gate["map50_95_drop"] <= gate["max_map50_95_drop"] == 1.0


def test_gate_figures_match_the_bench(det):
    """The gate measures with the bench's own mAP code on the run's validation images."""
    from exporters.detect import onnx_outputs
    from exporters.detect_int8 import int8_gate
    from toolkit.detect.metrics import det_map, load_detect_set

    dset = load_detect_set(str(det["gen"]))
    ref = det_map(onnx_outputs(det["exp"] / "gen.onnx", dset.x)[0], dset.labels)
    got = det_map(onnx_outputs(det["exp"] / "gen.int8.onnx", dset.x)[0], dset.labels)
    gate = int8_gate(det["gen"], det["exp"] / "gen.onnx", det["exp"] / "gen.int8.onnx", "x", max_drop=1.0)
    assert gate["reference_map50_95"] == ref["map50_95"] and gate["map50_95"] == got["map50_95"]
    assert np.isfinite(gate["map50_95_drop"])


def test_gate_refuses_beyond_tolerance(det, cli, tmp_path, monkeypatch):
    monkeypatch.setattr("exporters.detect_int8.INT8_MAX_MAP_DROP", -1.0)  # no int8 can be 1.0 better than fp32
    out = tmp_path / "refused"
    code, _, err = cli("export", str(det["gen"]), "--formats", "onnx,onnx-int8", "--out", str(out),
                       "--calib-count", "8", "--quiet")
    assert code == 1, err  # ExportCheckError: the export ran and its result failed the check
    line = err.strip()
    assert len(line.splitlines()) == 1 and "gen-onnx-int8 refused" in line and "allowed -1.0" in line
    assert "mAP50-95" in line and "nothing was written" in line
    assert not (out / "manifest.json").exists() and not list(out.glob("*.onnx"))


def test_tensorrt_int8_stays_refused(det, cli, tmp_path):
    code, _, err = cli("export", str(det["gen"]), "--formats", "tensorrt-int8", "--out", str(tmp_path / "t"))
    assert code == 2 and "not available for detection runs" in err and len(err.strip().splitlines()) == 1


def test_head_not_found_is_an_error():
    from onnx import TensorProto, helper

    from exporters.detect_int8 import head_tail_nodes
    from toolkit.errors import ExportCheckError

    graph = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"], name="sig")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ExportCheckError, match="cannot find the Detect head"):
        head_tail_nodes(helper.make_model(graph))
