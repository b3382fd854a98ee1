"""Device-aware int8: the ISA a CPU reports picks the documented recipe, profiles name their ISA, the export
uses the target's recipe (TensorRT's symmetric one when an engine is built from the file), and each recipe's QDQ
file really has its activation type and weight range."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from exporters.export import resolve_formats
from exporters.formats import INT8_RECIPES, ISAS
from exporters.int8_recipes import RECIPES, choose, host_isa, isa_from_flags
from toolkit.devices import devices_dir, parse_profile
from toolkit.errors import UserError

# flags as /proc/cpuinfo lists them -> the family, and the recipe documented for it (activations, 7-bit weights)
CPUS = [
    ("x86_64", {"sse4_2", "avx2", "fma"}, "x86-avx2", ("U8", True)),
    ("x86_64", {"avx2", "avx512f", "avx512bw"}, "x86-avx512", ("U8", True)),
    ("x86_64", {"avx2", "avx_vnni"}, "x86-avx-vnni", ("U8", False)),
    ("x86_64", {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}, "x86-avx512-vnni", ("U8", False)),
    ("x86_64", {"avx2", "avx512_vnni", "amx_tile", "amx_int8"}, "x86-amx", ("U8", False)),
    ("aarch64", {"fp", "asimd", "asimddp"}, "arm-dotprod", ("S8", False)),
    ("aarch64", {"fp", "asimd"}, "arm-neon", ("S8", False)),
    ("x86_64", {"sse2"}, "generic", ("U8", True)),
    ("riscv64", set(), "generic", ("U8", True)),
]


@pytest.mark.parametrize("machine, flags, isa, recipe", CPUS)
def test_the_cpu_flags_pick_the_documented_recipe(machine, flags, isa, recipe):
    assert isa_from_flags(flags, machine) == isa
    assert (RECIPES[isa].activations, RECIPES[isa].reduce_range) == recipe
    assert RECIPES[isa].per_channel and RECIPES[isa].evidence


def test_tensorrt_keeps_symmetric_qdq_and_every_name_has_a_recipe():
    assert set(RECIPES) == set(INT8_RECIPES) == {*ISAS, "tensorrt"}
    assert RECIPES["tensorrt"].activations == "S8" and RECIPES["tensorrt"].symmetric_activations


def test_host_isa_reads_proc_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512bw avx512_vnni\n\n"
                    "processor\t: 1\nflags\t\t: fpu avx2\n")
    assert host_isa(info) == "x86-avx512-vnni"
    assert host_isa(tmp_path / "missing") == "generic"


def test_a_target_other_than_the_host_is_said_in_the_facts():
    recipe, facts = choose("arm-dotprod", host="x86-avx512-vnni")
    assert recipe.name == "arm-dotprod" and facts["host_isa"] == "x86-avx512-vnni"
    assert "not the target's" in facts["note"]
    _, same = choose(None, host="x86-avx2")
    assert same["name"] == "x86-avx2" and "note" not in same and same["chosen_by"] == "this host's CPU flags"
    _, alike = choose("x86-amx", host="x86-avx512-vnni")  # same settings: host timings do stand for the target
    assert "note" not in alike


def test_profiles_name_a_known_isa():
    data = yaml.safe_load((devices_dir() / "raspberry-pi-5.yaml").read_text())
    assert parse_profile(data, "pi.yaml").isa == "arm-dotprod"
    data["isa"] = "x86-sse"
    with pytest.raises(UserError, match="isa:"):
        parse_profile(data, "pi.yaml")


def test_export_takes_the_profile_isa_and_tensorrt_its_symmetric_recipe():
    assert resolve_formats(None, "raspberry-pi-5", {})[1]["int8_recipe"] == "arm-dotprod"
    assert "int8_recipe" not in resolve_formats("onnx-int8", None, {})[1]  # the builder reads the host's flags
    assert "int8_recipe" not in resolve_formats("onnx,ort", None, {})[1]  # no int8 file: no option to check
    assert resolve_formats("onnx-int8,tensorrt-int8", None, {})[1]["int8_recipe"] == "tensorrt"
    assert resolve_formats("onnx-int8", None, {"int8_recipe": "x86-avx2"})[1]["int8_recipe"] == "x86-avx2"
    with pytest.raises(UserError, match="TensorRT"):
        resolve_formats("tensorrt-int8", None, {"int8_recipe": "x86-avx2"})


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    import torch
    from torch import nn

    from exporters.onnx_export import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export_onnx(model, path, (3, 8, 8), 20, False, {"model": "tiny"})
    return path


@pytest.mark.parametrize("name", ["x86-avx2", "x86-avx512-vnni", "arm-dotprod", "tensorrt"])
def test_each_recipe_builds_its_activation_type_and_weight_range(tiny_onnx, tmp_path, name):
    import onnx

    from exporters.onnx_export import INPUT_NAME
    from exporters.quantize import CalibrationSet, quantize_int8

    recipe = RECIPES[name]
    calib = CalibrationSet(np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32),
                           {"method": "minmax"})
    details = quantize_int8(tiny_onnx, tmp_path / "q.onnx", calib, INPUT_NAME, recipe=recipe)
    q = onnx.load(str(tmp_path / "q.onnx"))
    init = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    zero_points = [init[n.input[2]] for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[2] in init]
    if recipe.symmetric_activations:
        assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points), "symmetric int8"
        assert details["activations"] == "int8 symmetric"
    else:
        assert zero_points and all(z.dtype == np.uint8 for z in zero_points), "uint8 activations"
        assert any(z.any() for z in zero_points), "asymmetric: a zero point away from 0"
        assert details["activations"] == "uint8 asymmetric"
    weights = [init[n.input[0]] for n in q.graph.node if n.op_type == "DequantizeLinear"
               and n.input[0] in init and init[n.input[0]].dtype == np.int8 and init[n.input[0]].ndim > 1]
    peak = max(int(np.abs(w.astype(int)).max()) for w in weights)
    assert len(weights) == 3
    if recipe.reduce_range:  # 7 bits: a u8 x s8 pair sum fits the int16 of x86 CPUs without VNNI
        assert 48 <= peak <= 64
    else:
        assert peak > 64, "all 8 bits used"


def test_the_ort_file_targets_the_profiles_cpu_else_this_hosts(monkeypatch):
    import platform


    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert resolve_formats("ort", None, {})[1]["ort_platform"] == "amd64"  # x86 host: no ARM-only fusions
    assert resolve_formats(None, "android-mid", {})[1]["ort_platform"] == "arm"  # arm-dotprod phone
    assert resolve_formats("ort", None, {"ort_platform": "arm"})[1]["ort_platform"] == "arm"  # the user's choice
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert resolve_formats("ort", None, {})[1]["ort_platform"] == "arm"
    assert "ort_platform" not in resolve_formats("onnx", None, {})[1]
