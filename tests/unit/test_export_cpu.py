"""Every CPU format exported from a small trained digits model: parity, metadata, manifest, tampering, failures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from exporters import (
    CPU_FORMATS,
    FORMATS,
    builders,
    export_run,
    formats,
    load_manifest,
    read_metadata,
    verify_all,
    verify_artifact,
)
from toolkit.errors import ExportCheckError, IntegrityError, UserError
from toolkit.io import sha256_file

#: the CPU formats ONNX Runtime executes (ExecuTorch's .pte files: tests/unit/test_executorch.py)
ORT_CPU_FORMATS = tuple(f for f in CPU_FORMATS if FORMATS[f].runtime == "onnxruntime")


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("export") / "out"
    entries = export_run(digits_run, ",".join(ORT_CPU_FORMATS), out, calib_count=64, parity_images=200)
    return out, entries


@pytest.fixture(scope="module")
def test_batch(digits_run):
    """The run's test images and PyTorch's logits, computed here independently of exporters.parity."""
    import torch

    from toolkit.runs import Run

    run = Run.open(digits_run)
    ds = run.data().dataset("test")
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        ref = run.model()(x).numpy()
    return x.numpy(), ref, np.asarray([ds.label(i) for i in range(len(ds))])


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


def test_one_entry_per_format_and_files_in_place(exported):
    out, entries = exported
    assert [e["format"] for e in entries] == list(ORT_CPU_FORMATS)
    for e in entries:
        assert (out / e["path"]).is_file() and e["path"].endswith(FORMATS[e["format"]].suffix)
        assert e["name"] == f"digits-{e['format']}" and e["role"] == "generalist" and e["group"] is None
        assert e["input_shape"] == [-1, 1, 8, 8] and e["parity"]["passed"]
    assert not list(out.glob(".export-*")), "the work directory is removed"


@pytest.mark.parametrize("fmt", ORT_CPU_FORMATS)
def test_parity_within_the_stated_tolerance(exported, test_batch, fmt):
    out, entries = exported
    x, ref, labels = test_batch
    entry = next(e for e in entries if e["format"] == fmt)
    got = _logits(out / entry["path"], x)
    tol = FORMATS[fmt].tolerance
    if tol.atol is not None:
        np.testing.assert_allclose(got, ref, atol=tol.atol + tol.rtol * np.abs(ref).max(), rtol=0)
    agreement = (got.argmax(1) == ref.argmax(1)).mean()
    assert agreement >= tol.min_agreement
    if tol.max_accuracy_drop is not None:
        assert (ref.argmax(1) == labels).mean() - (got.argmax(1) == labels).mean() <= tol.max_accuracy_drop
    parity = entry["parity"]
    assert parity["images"] == 200 and parity["tolerance"] == tol.as_dict()
    assert 0 <= parity["max_abs_diff"] and parity["top1_agreement"] >= tol.min_agreement


def test_batch_axis_is_dynamic(exported, test_batch):
    out, _ = exported
    x, ref, _ = test_batch
    for name in ("digits.onnx", "digits.int8.onnx", "digits.ort"):
        one, seven = _logits(out / name, x[:1]), _logits(out / name, x[1:8])
        assert one.shape == (1, 10) and seven.shape == (7, 10)
    np.testing.assert_allclose(_logits(out / "digits.onnx", x[:1]), ref[:1], atol=1e-3)


def test_metadata_round_trip(exported, digits_run):
    from toolkit import __version__
    from toolkit.runs import Run

    out, entries = exported
    run = Run.open(digits_run)
    for e in entries:
        meta = read_metadata(out / e["path"])
        assert meta["classes"] == run.classes == e["classes"]
        assert meta["class_ids"] == run.class_ids == e["class_ids"]
        assert meta["mean"] == run.info["preprocess"]["mean"] and meta["std"] == run.info["preprocess"]["std"]
        assert meta["input_size"] == [8, 8] and meta["channels"] == 1
        assert meta["source_checkpoint_sha256"] == sha256_file(run.checkpoint_path("best"))
        assert meta["edgespec_version"] == __version__ and meta["model"] == "digits"
        assert meta["format"] == e["format"] and meta["precision"] == e["precision"]
    int8 = next(e for e in entries if e["format"] == "onnx-int8")
    assert read_metadata(out / int8["path"])["calibration_sha256"] == int8["calibration"]["sha256"]


def test_graphs_have_the_promised_precision(exported):
    import onnx

    from exporters.int8_recipes import host_isa

    out, entries = exported
    fp32 = onnx.load(str(out / "digits.onnx"))
    assert fp32.opset_import[0].version == 20
    assert fp32.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    half = onnx.load(str(out / "digits.fp16.onnx"))
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {t.data_type for t in half.graph.initializer if len(t.dims) > 1} == {onnx.TensorProto.FLOAT16}
    q = onnx.load(str(out / "digits.int8.onnx"))
    ops = [n.op_type for n in q.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert {(o.domain, o.version) for o in q.opset_import} == {("", 20)}, "only the opsets the graph uses"
    scales = {t.name: t for t in q.graph.initializer}
    per_channel = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and len(scales[n.input[1]].dims) == 1
                   and scales[n.input[1]].dims[0] > 1]
    assert per_channel, "conv weights are quantized per output channel"
    zero_points = [onnx.numpy_helper.to_array(scales[n.input[2]]) for n in q.graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in scales]
    # the recipe is this host's (exporters/int8_recipes.py); test_int8_recipes builds every recipe
    recipe = next(e for e in entries if e["format"] == "onnx-int8")["built"]["details"]["int8_recipe"]
    assert recipe["name"] == host_isa() and recipe["chosen_by"] == "this host's CPU flags"
    if recipe["activations"] == "S8":
        assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points), "symmetric int8"
    else:
        assert zero_points and all(z.dtype == np.uint8 for z in zero_points), "uint8 asymmetric"
    weights = [w for n in per_channel if n.input[0] in scales
               for w in [onnx.numpy_helper.to_array(scales[n.input[0]])] if w.dtype == np.int8]  # not int32 biases
    peak = max(np.abs(w.astype(int)).max() for w in weights)
    assert len(weights) == 4
    if recipe["reduce_range"]:  # weights in 7 bits: a u8 x s8 pair sum then fits the int16 of x86 without VNNI
        assert all(np.abs(w.astype(int)).max() <= 64 for w in weights)
        assert peak >= 48, "the 7-bit range is used, not wasted"
    else:
        assert peak > 64, "all 8 weight bits are used"


def test_manifest_lists_hashes_that_match_the_files(exported, digits_run):
    out, entries = exported
    manifest = load_manifest(out)
    assert manifest["schema"] == "edgespec.manifest/1" and manifest["packages"]["onnxruntime"]
    assert [a["name"] for a in manifest["artifacts"]] == [e["name"] for e in entries]
    for a in manifest["artifacts"]:
        assert sha256_file(out / a["path"]) == a["sha256"] and (out / a["path"]).stat().st_size == a["size_bytes"]
        assert a["run"] == str(Path(digits_run).resolve()) and a["built"]["packages"]["torch"]
        for f in a["files"]:
            assert sha256_file(out / f["path"]) == f["sha256"]
    ort = next(a for a in manifest["artifacts"] if a["format"] == "ort")
    config = (out / ort["files"][0]["path"]).read_text()
    assert "Conv" in config and "ai.onnx;" in config and str(out) not in config
    int8 = next(a for a in manifest["artifacts"] if a["format"] == "onnx-int8")
    assert int8["calibration"]["images"] == 64 and int8["calibration"]["method"] == "minmax"
    assert len(verify_all(out)) == len(entries)


@pytest.mark.parametrize("victim", ["digits.int8.onnx", "digits.required_operators.config"])
def test_tampered_file_is_detected(exported, tmp_path, victim):
    src, _ = exported
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    data = bytearray((out / victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / victim).write_bytes(bytes(data))
    manifest = load_manifest(out)
    owner = next(a for a in manifest["artifacts"] if victim in [a["path"]] + [f["path"] for f in a["files"]])
    with pytest.raises(IntegrityError, match=victim):
        verify_artifact(out, owner)
    (out / victim).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        verify_artifact(out, owner)


def test_calibration_hash_detects_changed_preprocessing(exported, digits_run):
    from exporters.quantize import calibration_is_current
    from toolkit.runs import Run

    _, entries = exported
    calib = next(e for e in entries if e["format"] == "onnx-int8")["calibration"]
    run = Run.open(digits_run)
    assert calibration_is_current(run, calib)
    run.info["preprocess"] = {**run.info["preprocess"], "mean": [0.0]}
    assert not calibration_is_current(run, calib)


def _snapshot(d: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in d.iterdir() if p.is_file() and p.name != ".lock"}


def test_failing_parity_leaves_nothing(exported, digits_run, tmp_path, monkeypatch):
    """A check that fails raises, writes no artifact, and leaves an earlier export untouched."""
    src, _ = exported
    out = tmp_path / "out"
    shutil.copytree(src, out)
    before = _snapshot(out)
    monkeypatch.setitem(formats.TOLERANCES, "int8", formats.Tolerance(None, 0.0, 1.01, None))
    with pytest.raises(ExportCheckError, match="digits-onnx-int8 failed its parity check"):
        export_run(digits_run, "onnx,onnx-int8", out, calib_count=16)
    assert _snapshot(out) == before and not list(out.glob(".export-*"))
    fresh = tmp_path / "fresh"
    with pytest.raises(ExportCheckError):
        export_run(digits_run, "onnx,onnx-int8", fresh, calib_count=16)
    assert not [p for p in fresh.iterdir() if p.name != ".lock"], "no file that looks valid"


def test_corrupted_weights_fail_the_check(digits_run, tmp_path, monkeypatch):
    import onnx

    real = builders.BUILDERS["onnx-fp16"]

    def corrupting(fmt, state):
        built = real(fmt, state)
        proto = onnx.load(str(built.path))
        biggest = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        arr = onnx.numpy_helper.to_array(biggest)
        biggest.CopyFrom(onnx.numpy_helper.from_array((-arr).astype(arr.dtype), biggest.name))
        onnx.save(proto, str(built.path))
        return built

    monkeypatch.setitem(builders.BUILDERS, "onnx-fp16", corrupting)
    with pytest.raises(ExportCheckError, match="onnx-fp16.*max abs logit diff"):
        export_run(digits_run, ["onnx-fp16"], tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.onnx"))


def test_runs_merge_into_one_manifest(exported, digits_run, synthetic_run, tmp_path):
    src, entries = exported
    out = tmp_path / "out"
    shutil.copytree(src, out)
    new = export_run(synthetic_run, "onnx", out, simplify=False)
    assert [e["name"] for e in new] == ["synthetic-onnx"] and new[0]["input_shape"] == [-1, 3, 16, 16]
    names = [a["name"] for a in load_manifest(out)["artifacts"]]
    assert sorted(names) == sorted([e["name"] for e in entries] + ["synthetic-onnx"])
    again = export_run(digits_run, "onnx", out)  # re-export replaces, never duplicates
    manifest = load_manifest(out)
    assert [a["name"] for a in manifest["artifacts"]].count("digits-onnx") == 1
    assert next(a for a in manifest["artifacts"] if a["name"] == "digits-onnx")["sha256"] == again[0]["sha256"]
    assert len(verify_all(out)) == len(names)


def test_same_model_name_from_another_run_is_refused(exported, digits_run, tmp_path):
    src, _ = exported
    out = tmp_path / "out"
    shutil.copytree(src, out)
    other = tmp_path / "elsewhere" / "digits"
    shutil.copytree(digits_run, other)
    with pytest.raises(UserError, match="already holds model 'digits'"):
        export_run(other, "onnx", out)


def test_incomplete_run_and_stray_options_are_refused(digits_run, tmp_path):
    with pytest.raises(UserError, match="calib-method applies to"):
        export_run(digits_run, "onnx", tmp_path / "a", calib_method="entropy")
    with pytest.raises(UserError, match="unknown option"):
        export_run(digits_run, "onnx", tmp_path / "a", colour="blue")
    run = tmp_path / "partial"
    shutil.copytree(digits_run, run)
    text = (run / "run.json").read_text().replace('"status": "complete"', '"status": "running"')
    (run / "run.json").write_text(text)
    with pytest.raises(UserError, match="not complete"):
        export_run(run, "onnx", tmp_path / "b")


def test_specialist_exports_with_its_group_and_own_calibration(exported, digits_run, tmp_path_factory):
    """A specialist (issue 3) exports like any run: its classes, generalist ids, group, and its own data."""
    spec = pytest.importorskip("toolkit.specialize")
    from exporters.quantize import calibration_is_current
    from toolkit.runs import Run

    run_dir = tmp_path_factory.mktemp("spec") / "evens"
    spec.specialize_group(Run.open(digits_run), "evens", ["0", "4", "6"], run_dir,
                          spec.SpecializeConfig(epochs=1, device="cpu", seed=0))
    out = tmp_path_factory.mktemp("spec-export")
    entries = export_run(run_dir, "onnx,onnx-int8", out, calib_count=64)
    run = Run.open(run_dir)
    for e in entries:
        assert e["role"] == "specialist" and e["group"] == "evens" and e["model"] == "evens"
        assert e["class_ids"] == [0, 4, 6] and e["input_shape"] == [-1, 1, 8, 8] and e["parity"]["passed"]
        assert read_metadata(out / e["path"])["class_ids"] == [0, 4, 6]
        assert e["parity"]["images"] == len(run.data().dataset("test"))
    calib = entries[1]["calibration"]
    generalist_calib = next(e for e in exported[1] if e["format"] == "onnx-int8")["calibration"]
    assert calib["sha256"] != generalist_calib["sha256"] and calibration_is_current(run, calib)
    assert _logits(out / "evens.onnx", np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 3)


def test_entropy_calibration_clips_ranges_that_minmax_keeps(exported, digits_run, tmp_path):
    """Same calibration images, another method: a different int8 model, and the method's settings recorded."""
    _, entries = exported
    minmax = next(e for e in entries if e["format"] == "onnx-int8")
    entropy = export_run(digits_run, "onnx-int8", tmp_path / "out", calib_count=64, calib_method="entropy",
                         parity_images=200)[0]
    assert entropy["calibration"]["sha256"] == minmax["calibration"]["sha256"]
    assert entropy["calibration"]["method"] == "entropy" and entropy["calibration"]["histogram_bins"] == 2048
    assert entropy["sha256"] != minmax["sha256"] and entropy["parity"]["passed"]
