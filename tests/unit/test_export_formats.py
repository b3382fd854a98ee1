"""The formats table: parsing, build order, option validation, requirements. No model is exported here."""

from __future__ import annotations

import pytest

from exporters import formats as F
from exporters.builders import BUILDERS
from toolkit.errors import UserError


def test_every_format_has_a_builder_a_tolerance_and_a_known_source():
    assert set(BUILDERS) == set(F.FORMATS)
    for fmt in F.FORMATS.values():
        assert fmt.precision in F.TOLERANCES
        assert fmt.source is None or fmt.source in F.FORMATS
        assert set(fmt.options) <= set(F.ExportOptions.model_fields)
    suffixes = [f.suffix for f in F.FORMATS.values()]
    assert len(set(suffixes)) == len(suffixes)


def test_formats_table_agrees_with_device_profiles_runtimes():
    devices = pytest.importorskip("toolkit.devices")
    for runtime, names in devices.RUNTIME_FORMATS.items():
        for name in names:
            if name in F.FORMATS:
                assert F.FORMATS[name].runtime == runtime


def test_parse_formats_orders_and_dedups():
    assert F.parse_formats("ort, onnx,ONNX") == ["onnx", "ort"]
    assert F.parse_formats(["onnx-int8", "onnx-fp16"]) == ["onnx-fp16", "onnx-int8"]


@pytest.mark.parametrize("bad, hint", [("onnx-int4", "onnx-int8"), ("tensorrt", "tensorrt-fp16"), ("onx", "onnx")])
def test_unknown_format_suggests_a_close_name(bad, hint):
    with pytest.raises(UserError, match="did you mean") as info:
        F.parse_formats(f"onnx,{bad}")
    assert repr(hint) in str(info.value)


def test_empty_format_list_is_an_error():
    with pytest.raises(UserError, match="no export format"):
        F.parse_formats(" , ")


def test_build_order_adds_sources_first():
    assert F.build_order(["tensorrt-int8"]) == ["onnx", "onnx-int8", "tensorrt-int8"]
    assert F.build_order(["ort"]) == ["onnx", "ort"]


def test_option_for_no_requested_format_is_refused():
    F.check_options(["onnx-int8"], F.ExportOptions(calib_count=8))
    with pytest.raises(UserError, match="calib-count applies to onnx-int8"):
        F.check_options(["onnx", "ort"], F.ExportOptions(calib_count=8))
    with pytest.raises(UserError, match="max-batch"):
        F.check_options(["onnx-int8"], F.ExportOptions(max_batch=8))
    F.check_options(["onnx"], F.ExportOptions())  # defaults are never "set by the user"


def test_batch_range_must_be_ordered():
    with pytest.raises(ValueError, match="min_batch <= opt_batch <= max_batch"):
        F.ExportOptions(opt_batch=8, max_batch=4)


def test_tensorrt_requirement_error_says_where_to_build(monkeypatch):
    real = F.importlib.util.find_spec
    monkeypatch.setattr(F.importlib.util, "find_spec", lambda name: None if name == "tensorrt" else real(name))
    with pytest.raises(UserError) as info:
        F.check_requirements(["onnx", "tensorrt-fp16", "tensorrt-int8"])
    msg = str(info.value)
    assert "tensorrt-fp16, tensorrt-int8" in msg and "--formats onnx-fp16,onnx-int8" in msg
    assert "edgespec bundle" in msg and "trtexec" in msg and "\n" not in msg
    F.check_requirements(["onnx", "onnx-fp16", "onnx-int8", "ort"])  # the CPU formats build here


def _profile(tmp_path, runtime: str, formats: list[str], batch_sizes: list[int]):
    import yaml

    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump({"schema": "edgespec.device/1", "name": "dev", "description": "test device",
                                    "runtime": runtime, "formats": formats, "batch_sizes": batch_sizes}))
    return str(path)


def test_device_profile_supplies_formats_and_batch_range(tmp_path):
    pytest.importorskip("toolkit.devices")
    from exporters.export import resolve_formats

    trt = _profile(tmp_path, "tensorrt", ["tensorrt-int8", "tensorrt-fp16"], [1, 4, 8])
    # the int8 engine is built from symmetric QDQ: the tensorrt recipe (exporters/int8_recipes.py)
    assert resolve_formats(None, trt, {}) == (["tensorrt-fp16", "tensorrt-int8"],
                                              {"opt_batch": 1, "max_batch": 8, "int8_recipe": "tensorrt"})
    assert resolve_formats("tensorrt-fp16", trt, {"max_batch": 16})[1] == {"opt_batch": 1, "max_batch": 16}
    with pytest.raises(UserError, match="does not deploy onnx"):
        resolve_formats("onnx,tensorrt-fp16", trt, {})
    ort = _profile(tmp_path, "onnxruntime", ["ort", "onnx-int8"], [1])
    from exporters.ort_mobile import host_ort_platform

    # no ISA in the profile: the .ort file is optimised for this host's CPU (amd64 on x86)
    assert resolve_formats(None, ort, {}) == (["onnx-int8", "ort"], {"ort_platform": host_ort_platform()})
    with pytest.raises(UserError, match="--formats"):
        resolve_formats(None, None, {})
