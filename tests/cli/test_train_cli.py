"""`edgespec train/evaluate/models`: bad input is one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--model", "resnet181"], "did you mean 'resnet18'"),
    (["--data", "digitz"], "did you mean 'digits'"),
    (["--data", "imagefolder:/no/such/dir"], "not found"),
    (["--optimizer", "adam"], "--optimizer"),
    (["--device", "tpu"], "--device"),
    (["--pretrained", "--model", "smallcnn"], "no pretrained weights"),
])
def test_bad_train_options(tmp_path, cli, args, fragment):
    out = tmp_path / "run"
    code, _, err = cli("train", *args, "--out", out, "--quiet")
    assert code == 2
    assert fragment in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_foreign_checkpoint_and_not_a_run(tmp_path, cli):
    foreign = tmp_path / "foreign.pt"
    torch.save({"some": "dict", "epoch": 3}, foreign)
    code, _, err = cli("train", "--weights", foreign, "--out", tmp_path / "r", "--quiet")
    assert code == 2 and "state_dict" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    code, _, err = cli("train", "--weights", junk, "--out", tmp_path / "r2", "--quiet")
    assert code == 2 and "cannot be loaded" in err
    code, _, err = cli("evaluate", tmp_path)
    assert code == 2 and "not an edgespec run" in err


def test_existing_different_run_is_refused(digits_run, cli, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in digits_run.rglob("*") if p.is_file()}
    code, _, err = cli("train", "--data", "synthetic", "--out", digits_run, "--quiet", "--resume")
    assert code == 2 and "different run" in err
    after = {p: p.stat().st_mtime_ns for p in digits_run.rglob("*") if p.is_file()}
    assert before == after


def test_weights_start_from_a_checkpoint(digits_run, cli, tmp_path):
    code, out, err = cli("train", "--weights", digits_run / "checkpoints" / "best.pt", "--epochs", "1",
                         "--out", tmp_path / "ft", "--quiet", "--device", "cpu")
    assert code == 0, err
    assert "test top-1" in out


def test_models_lists_the_required_names(cli):
    code, out, _ = cli("models")
    assert code == 0
    for name in ["mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet50", "efficientnet_b0",
                 "shufflenet_v2_x1_0", "smallcnn"]:
        assert name in out
