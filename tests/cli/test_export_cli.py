"""`edgespec export`: results on stdout, bad input as one line on stderr with exit code 2."""

from __future__ import annotations

from exporters import load_manifest, verify_all


def test_export_writes_artifacts_and_manifest(cli, digits_run, tmp_path):
    out = tmp_path / "out"
    (out / ".edgespec-work-killed").mkdir(parents=True)  # left by an export that was killed
    (out / ".manifest.json.abc.edgespec.tmp").write_text("{")  # and a killed atomic write
    code, stdout, err = cli("export", digits_run, "--formats", "onnx,ort", "--out", out, "--no-simplify", "--quiet")
    assert code == 0, err
    assert not list(out.glob(".edgespec-work-*")) and not list(out.glob(".*.edgespec.tmp"))
    assert "digits.onnx" in stdout and "digits.ort" in stdout and "manifest:" in stdout
    manifest = load_manifest(out)
    assert [a["format"] for a in manifest["artifacts"]] == ["onnx", "ort"]
    assert manifest["artifacts"][0]["built"]["details"]["simplified"] is False
    assert len(verify_all(out)) == 2


def test_int8_options_reach_the_calibration(cli, digits_run, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli("export", digits_run, "--formats", "onnx-int8", "--out", out, "--calib-count", "24",
                       "--calib-method", "percentile", "--quiet")
    assert code == 0, err
    calib = load_manifest(out)["artifacts"][0]["calibration"]
    assert calib["images"] == 24 and calib["method"] == "percentile"


def test_unknown_format_suggests_and_exits_2(cli, digits_run, tmp_path):
    code, _, err = cli("export", digits_run, "--formats", "onnx,onnx-int4", "--out", tmp_path / "o")
    assert code == 2 and "did you mean 'onnx-int8'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_bad_options_exit_2(cli, digits_run, tmp_path):
    code, _, err = cli("export", digits_run, "--formats", "onnx", "--out", tmp_path / "o", "--calib-count", "8")
    assert code == 2 and "calib-count applies to onnx-int8" in err
    code, _, err = cli("export", digits_run, "--formats", "onnx-int8", "--out", tmp_path / "o", "--calib-method",
                       "median")
    assert code == 2 and "calib-method" in err
    code, _, err = cli("export", tmp_path / "nope", "--formats", "onnx", "--out", tmp_path / "o")
    assert code == 2 and "run directory not found" in err


def test_tensorrt_without_it_says_where_to_build(cli, digits_run, tmp_path, monkeypatch):
    monkeypatch.setattr("exporters.formats._cuda_available", lambda: False)
    code, _, err = cli("export", digits_run, "--formats", "tensorrt-fp16", "--out", tmp_path / "o")
    assert code == 2 and "edgespec bundle" in err and "trtexec --onnx=" in err
