"""The fp16 overflow guard on a model built to overflow: a large activation (|x| ~ 2e5) normalised away again.

Plain fp16 turns that activation into inf and the normalisation into garbage; the guarded file keeps the
overflowing ops in float32 behind Casts and passes the fp16 parity tolerance. Observable on this host because the
overflowing tensor passes through a Flatten, which ONNX Runtime's CPU provider runs on float16 data as stored: it
computes Mul, Abs, ReduceMax and Div of fp16 graphs in fp32 (casts inserted around them, and removed between
consecutive ones), so without a native fp16 op in between the overflow would stay hidden on this host although a
strongly typed GPU engine would show it. The guard itself reads ranges from the fp32 graph against 65504 directly.
"""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from exporters.formats import TOLERANCES
from exporters.fp16 import convert_fp16
from exporters.fp16_guard import FP16_MAX, guard_file, run_as_stored, unsafe_tensors
from exporters.parity import ParityData, parity_check, run_onnxruntime


class Overflows(nn.Module):
    """conv -> x 40000 (two Muls by 200: no constant above the converter's 1e4 clamp) -> flatten -> / max |y|."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (self.conv(x) * 200.0 * 200.0).flatten(1)
        y = y / (y.abs().amax(dim=1, keepdim=True) + 1e-3)
        return self.fc(y)


class Tame(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _export(model: nn.Module, path, x: torch.Tensor) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), x, str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}}, opset_version=20, dynamo=False)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    calib = torch.randn(32, 1, 8, 8, generator=g) * 3
    test = torch.randn(64, 1, 8, 8, generator=g) * 3
    return calib, test


def _parity(model: nn.Module, path, test: torch.Tensor, stored: bool = True) -> dict:
    """fp16 parity; `stored`: every activation held in its declared type, as a strongly typed engine holds it."""
    with torch.no_grad():
        ref = model(test).numpy()
    pdata = ParityData(test.numpy(), ref.argmax(1), ref)
    run = run_as_stored if stored else run_onnxruntime
    return parity_check(run(path, test.numpy(), "input"), pdata, TOLERANCES["fp16"], "fp16")


def test_guarded_fp16_passes_parity_where_plain_fp16_fails(tmp_path, data):
    torch.manual_seed(0)
    model = Overflows().eval()
    calib, test = data
    with torch.no_grad():
        assert (model.conv(test) * 4e4).abs().max() > FP16_MAX  # the model does overflow fp16
    _export(model, tmp_path / "m.onnx", calib)

    plain = convert_fp16(tmp_path / "m.onnx", tmp_path / "plain.fp16.onnx")
    assert "fp16_guard" not in plain
    bad = _parity(model, tmp_path / "plain.fp16.onnx", test)
    assert not bad["passed"], bad

    info = convert_fp16(tmp_path / "m.onnx", tmp_path / "guarded.fp16.onnx", guard_images=calib.numpy())
    facts = info["fp16_guard"]
    kept = {k["op"] for k in facts["kept_fp32"]}
    assert {"Mul", "Abs", "ReduceMax", "Div"} <= kept and "Conv" not in kept and "Gemm" not in kept
    assert all(k["reason"] == "overflow" for k in facts["kept_fp32"]) and facts["largest_activation_abs"] > FP16_MAX
    good = _parity(model, tmp_path / "guarded.fp16.onnx", test)
    assert good["passed"], good

    # explicit Casts around the kept ops; the rest is float16 (the strongly typed engine's precision)
    half = onnx.load(str(tmp_path / "guarded.fp16.onnx"))
    ops = [n.op_type for n in half.graph.node]
    assert ops.count("Cast") >= 4
    conv_w = next(i for i in half.graph.initializer if i.name.endswith("conv.weight"))
    assert conv_w.data_type == onnx.TensorProto.FLOAT16


def test_a_tame_model_keeps_everything_in_fp16(tmp_path, data):
    torch.manual_seed(0)
    model = Tame().eval()
    calib, test = data
    _export(model, tmp_path / "t.onnx", calib)
    info = convert_fp16(tmp_path / "t.onnx", tmp_path / "t.fp16.onnx", guard_images=calib.numpy())
    assert info["fp16_guard"]["kept_fp32"] == [] and info["fp16_guard"]["activations_checked"] >= 3
    assert _parity(model, tmp_path / "t.fp16.onnx", test)["passed"]


def test_ranges_are_judged_against_fp16_limits_directly(tmp_path, data):
    torch.manual_seed(0)
    _export(Overflows(), tmp_path / "m.onnx", data[0])
    _, keep, facts = guard_file(tmp_path / "m.onnx", data[0].numpy(), "input")
    assert keep and set(facts["unsafe_tensors"].values()) == {"overflow"}
    assert unsafe_tensors({"a": {"max_abs": 40000.0}, "b": {"max_abs": 30000.0}, "c": {"max_abs": 1e-6},
                           "d": {"max_abs": 0.0}, "e": {"max_abs": float("inf")}}) == {
        "a": "overflow", "c": "underflow", "e": "overflow"}
    assert unsafe_tensors({"b": {"max_abs": 30000.0}}, headroom=4.0) == {"b": "overflow"}
