"""Resume as users expect, and no run left 'running' after an error: `train --out DIR --resume` reads the run's
recorded config, flags given with it may only extend epochs, a finished run resumes to nothing, a diverging loss
stops the run with a clear error, and a failure after training marks the run failed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rel_support import assert_untouched, check_error_line, snapshot

TINY = ["--data", "synthetic:groups=2,classes=2,per_class=12", "--device", "cpu", "--batch-size", "16"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A 2-epoch run trained with non-default flags (lr, seed, weight decay), which a resume must not need again."""
    from toolkit.cli.main import main

    out = tmp_path_factory.mktemp("resume") / "run"
    code = main(["train", *TINY, "--epochs", "2", "--lr", "0.01", "--seed", "3", "--weight-decay", "0.001",
                 "--out", str(out), "--quiet"])
    assert code == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    return shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))


def _info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def test_resume_needs_no_flags_and_a_finished_run_resumes_to_nothing(finished, tmp_path, cli, caplog):
    run = _copy(finished, tmp_path)
    before = _info(run)
    with caplog.at_level("INFO"):
        code, out, err = cli("train", "--out", run, "--resume", "--device", "cpu")
    assert code == 0, err
    logged = caplog.text + out + err
    assert "3/2" not in logged and "all 2 epochs" in logged
    after = _info(run)
    assert after["config"] == before["config"] and after["status"] == "complete"
    assert len(json.loads((run / "metrics.json").read_text())) == 2


def test_resume_extends_epochs(finished, tmp_path, cli):
    run = _copy(finished, tmp_path)
    code, _, err = cli("train", "--out", run, "--resume", "--epochs", "3", "--quiet")
    assert code == 0, err
    info = _info(run)
    assert info["config"]["epochs"] == 3 and info["config"]["lr"] == 0.01 and info["status"] == "complete"
    history = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]


@pytest.mark.parametrize("flags, names", [(["--lr", "0.5"], "--lr"), (["--seed", "4"], "--seed"),
                                          (["--model", "resnet18"], "--model"), (["--epochs", "1"], "--epochs"),
                                          (["--batch-size", "8"], "--batch-size"),
                                          (["--data", "digits"], "--data")])
def test_resume_refuses_other_changes_naming_the_flag(flags, names, finished, tmp_path, cli):
    run = _copy(finished, tmp_path)
    before = snapshot(run)
    code, _, err = cli("train", "--out", run, "--resume", *flags, "--quiet")
    line = check_error_line(code, err, names)
    assert "--epochs" in line  # says what may change
    assert_untouched(before, snapshot(run))


def test_resume_accepts_the_recorded_values_repeated(finished, tmp_path, cli):
    run = _copy(finished, tmp_path)
    code, _, err = cli("train", "--out", run, "--resume", *TINY, "--lr", "0.01", "--epochs", "2", "--quiet")
    assert code == 0, err


def test_diverging_loss_stops_the_run_and_it_is_not_complete(tmp_path, cli):
    out = tmp_path / "run"
    code, _, err = cli("train", *TINY, "--epochs", "2", "--optimizer", "sgd", "--lr", "1e30", "--warmup-epochs", "0",
                       "--out", out, "--quiet")
    check_error_line(code, err, "diverged")
    info = _info(out)
    assert info["status"] == "failed" and "diverged" in info["error"]
    assert not (out / "checkpoints" / "best.pt").exists()
    code, _, err = cli("export", out, "--formats", "onnx", "--out", tmp_path / "exp", "-q")
    check_error_line(code, err, "not complete")


def test_an_error_after_training_marks_the_run_failed(tmp_path, cli, monkeypatch):
    """2000 classes once crashed the confusion plot after training and left the run 'running' for good."""
    import toolkit.train.loop as loop

    def crash(*a, **k):
        raise RuntimeError("the plot could not be drawn")

    monkeypatch.setattr(loop, "evaluate_run", crash)
    out = tmp_path / "run"
    code, _, err = cli("train", *TINY, "--epochs", "1", "--out", out, "--quiet")
    assert code == 1 and "Traceback (most recent" not in err and len(err.splitlines()) == 1, err
    info = _info(out)
    assert info["status"] == "failed" and "plot" in info["error"]
    monkeypatch.undo()
    code, _, err = cli("train", "--out", out, "--resume", "--quiet")  # the failed run resumes and completes
    assert code == 0, err
    assert _info(out)["status"] == "complete"


def test_confusion_plot_of_2000_classes_is_scaled(tmp_path):
    import numpy as np
    from PIL import Image

    from toolkit.evaluate import _plot_confusion

    n = 2000
    cm = np.zeros((n, n), dtype=np.int64)
    cm[np.arange(n), np.arange(n)] = 1
    _plot_confusion(cm, [f"c{i}" for i in range(n)], tmp_path / "confusion-test.png")
    with Image.open(tmp_path / "confusion-test.png") as im:
        assert max(im.size) <= 16 * 110


def test_refused_resume_does_not_mark_another_run(finished, tmp_path, cli):
    """A command refused before it owns the directory never writes the run's status."""
    run = _copy(finished, tmp_path)
    before = snapshot(run)
    code, _, err = cli("train", *TINY, "--epochs", "2", "--out", run, "--quiet")  # no --resume
    check_error_line(code, err, "different run")
    assert_untouched(before, snapshot(run))
