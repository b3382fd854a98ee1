"""Signals: a storm of Ctrl-C during `train` ends in one line and exit 130 (the handler itself never throws),
SIGTERM during `export` is exit 143 even when a library wraps the interrupt in its own error, and an interrupted
`data synth-detect` finishes when rerun, as its message says."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from rel_support import popen_edgespec

SYNTH = "synthetic:groups=2,classes=2,per_class=40"


def _one_error_line(err: str, says: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err


def test_ctrl_c_storm_during_train(tmp_path):
    """Three SIGINTs 10 ms apart once training has started: exit 130, one line, the run not left 'running'."""
    for attempt in range(1):
        out = tmp_path / f"run{attempt}"
        proc = popen_edgespec("train", "--data", SYNTH, "--epochs", "50", "--batch-size", "8", "--device", "cpu",
                              "--quiet", "--out", out)
        deadline = time.monotonic() + 120
        while not (out / "run.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05 * attempt)
        for _ in range(3):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.01)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, (proc.returncode, err)
        _one_error_line(err, "--resume")
        assert json.loads((out / "run.json").read_text())["status"] == "interrupted"


def test_repeated_signals_raise_once():
    from toolkit.cli import main as cli_main

    cli_main._TERMINATED.clear()
    with pytest.raises(KeyboardInterrupt):
        cli_main._raise_terminated(signal.SIGINT, None)
    cli_main._raise_terminated(signal.SIGINT, None)  # while unwinding: recorded, not raised
    cli_main._raise_terminated(signal.SIGTERM, None)
    assert cli_main._TERMINATED == [signal.SIGINT, signal.SIGINT, signal.SIGTERM]
    cli_main._TERMINATED.clear()


def test_sigterm_wrapped_by_a_library_is_still_143(digits_run, tmp_path, cli, monkeypatch):
    """A library that catches the KeyboardInterrupt and raises its own error must not turn SIGTERM into an
    internal error (exit 1)."""
    import exporters.export as export_mod

    def wrapping(*a, **k):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            raise RuntimeError("Failed to export the model") from None

    monkeypatch.setattr(export_mod, "_publish", wrapping)
    code, _, err = cli("export", digits_run, "--formats", "onnx", "--out", tmp_path / "exp", "--quiet")
    assert code == 143, err
    _one_error_line(err, "terminated (SIGTERM)")


def test_sigterm_during_export_exits_143(digits_run, tmp_path):
    out = tmp_path / "exp"
    proc = popen_edgespec("export", digits_run, "--formats", "onnx,onnx-fp16", "--out", out, "--quiet")
    deadline = time.monotonic() + 120
    while not (out / ".lock").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the export finished before the signal arrived")
    assert proc.returncode == 143, (proc.returncode, err)
    _one_error_line(err, "terminated (SIGTERM)")
    assert not [p for p in out.glob("*.onnx")] or (out / "manifest.json").is_file()


def test_synth_detect_rerun_after_ctrl_c_finishes(tmp_path, cli, monkeypatch):
    import toolkit.detect.synth as synth

    real, written = synth.write_bytes, []

    def interrupted(path, data):
        written.append(path)
        if len(written) == 7:
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(synth, "write_bytes", interrupted)
    out = tmp_path / "det"
    args = ("data", "synth-detect", "--out", out, "--train", "12", "--val", "5", "--quiet")
    code, _, err = cli(*args)
    assert code == 130
    _one_error_line(err, "rerun the same command")
    monkeypatch.undo()
    code, _, err = cli(*args)
    assert code == 0, err
    assert len(list((out / "images" / "train").glob("*.png"))) == 12 and (out / "data.yaml").is_file()
    assert not (out / synth.UNFINISHED).exists()


def test_synth_detect_never_takes_over_a_users_dataset(tmp_path, cli):
    """Files named like synth-detect's, without its marker, are a user's YOLO data: refused, untouched."""
    out = tmp_path / "mine"
    (out / "images" / "train").mkdir(parents=True)
    (out / "images" / "train" / "00000.png").write_bytes(b"my image")
    code, _, err = cli("data", "synth-detect", "--out", out, "--train", "12", "--val", "5", "--quiet")
    assert code == 2 and "not empty" in err
    assert (out / "images" / "train" / "00000.png").read_bytes() == b"my image"
