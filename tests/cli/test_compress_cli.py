"""`edgespec compress`: one clean line and exit 2 for bad input; a run that evaluate and export take like any."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("args, fragment", [
    (["--macs-ratio", "1.5"], "--macs-ratio"),
    (["--macs-ratio", "0"], "--macs-ratio"),
    (["--param-ratio", "-0.2"], "--param-ratio"),
    (["--macs-ratio", "0.5", "--param-ratio", "0.5"], "not both"),
    (["--teacher", "nobody"], "--teacher"),
])
def test_bad_options_are_one_line_exit_2(cli, synthetic_run, tmp_path, args, fragment):
    code, _, err = cli("compress", synthetic_run, "--out", tmp_path / "c", *args, "--quiet")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "c" / "run.json").exists()


def test_missing_foreign_and_detection_runs_are_refused(cli, tmp_path):
    code, _, err = cli("compress", tmp_path / "nope", "--out", tmp_path / "c", "--quiet")
    assert code == 2 and "run directory not found" in err, err
    (tmp_path / "plain").mkdir()
    code, _, err = cli("compress", tmp_path / "plain", "--out", tmp_path / "c", "--quiet")
    assert code == 2 and "not an edgespec run" in err, err
    det = tmp_path / "det"
    det.mkdir()
    (det / "run.json").write_text(json.dumps({"task": "detect", "kind": "train"}))
    code, _, err = cli("compress", det, "--out", tmp_path / "c", "--quiet")
    assert code == 2 and "detection run" in err and len(err.strip().splitlines()) == 1, err


def test_compress_then_evaluate_and_a_second_write_needs_resume(cli, synthetic_run, tmp_path):
    out = tmp_path / "c"
    args = ["compress", synthetic_run, "--out", out, "--param-ratio", "0.5", "--epochs", "1", "--no-distill",
            "--importance", "group-norm", "--device", "cpu", "--quiet"]
    code, stdout, err = cli(*args)
    assert code == 0, err
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "compress" and info["compression"]["distillation"] is None
    assert info["compression"]["params_ratio"] <= 0.55 and "params" in stdout
    code, stdout, err = cli("evaluate", out, "--device", "cpu")
    assert code == 0 and "compress" in stdout, err
    code, _, err = cli(*args)
    assert code == 2 and "--resume" in err, err
    code, _, err = cli(*args, "--resume")
    assert code == 0, err
