"""Training end to end: resume after SIGKILL, torchrun with two gloo processes, other data sources."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from toolkit.checkpoint import load_checkpoint
from toolkit.runs import Run

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
ARGS = ["--data", "synthetic:groups=2,classes=2,per_class=40", "--epochs", "5", "--device", "cpu", "--quiet"]


def _edgespec(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], env=ENV, capture_output=True, text=True,
                          timeout=300, **kw)


def _history(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    assert _edgespec("train", *ARGS, "--out", str(full)).returncode == 0

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", "train", *ARGS, "--out", str(cut)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        last = cut / "checkpoints" / "last.pt"
        if last.exists() and load_checkpoint(last)["epoch"] >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed; make the test run longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(cut / "checkpoints" / "last.pt")["epoch"]
    assert 2 <= killed_at < 5
    assert not Run.open(cut).complete

    again = _edgespec("train", *ARGS, "--out", str(cut))
    assert again.returncode == 2 and "--resume" in again.stderr  # refuses to overwrite silently
    resumed = _edgespec("train", *ARGS, "--out", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert Run.open(cut).complete
    h_full, h_cut = _history(full), _history(cut)
    assert [r["epoch"] for r in h_cut] == [1, 2, 3, 4, 5]
    for a, b in zip(h_full, h_cut, strict=True):  # CPU, fixed seeds: the same numbers, not just close ones
        assert a["val_acc"] == b["val_acc"] and a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
    eval_full = json.loads((full / "eval-test.json").read_text())
    eval_cut = json.loads((cut / "eval-test.json").read_text())
    assert eval_full["top1"] == eval_cut["top1"]
    assert not [p for p in cut.rglob("*") if p.name.endswith(".tmp") and not p.name.startswith(".")]


def test_a_kill_between_last_pt_and_the_metrics_files_resumes_to_the_full_history(tmp_path, cli):
    """last.pt is renamed into place before metrics.csv/json: a SIGKILL in between left the metrics an epoch behind,
    and a resume that found nothing left to train never rewrote them (seen in CI's random kill chain)."""
    out = tmp_path / "run"
    args = ["train", "--data", "synthetic:groups=2,classes=2,per_class=20", "--epochs", "2", "--device", "cpu",
            "--quiet", "--out", out]
    code, _, err = cli(*args)
    assert code == 0, err
    full = _history(out)
    assert [r["epoch"] for r in full] == [1, 2]
    # the state such a kill leaves: last.pt at epoch 2, metrics at epoch 1, no evaluation, run still running
    (out / "metrics.json").write_text(json.dumps(full[:1]))
    (out / "metrics.csv").write_text("\n".join((out / "metrics.csv").read_text().splitlines()[:2]) + "\n")
    (out / "eval-test.json").unlink()
    Run.open(out).update(status="running")
    code, _, err = cli(*args, "--resume")
    assert code == 0, err
    assert _history(out) == full == load_checkpoint(out / "checkpoints" / "last.pt")["history"]
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + len(full)
    assert Run.open(out).complete and (out / "eval-test.json").is_file()


def test_torchrun_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "toolkit", "train", *ARGS[:-3], "--epochs", "2", "--batch-size", "32", "--device", "cpu", "--quiet",
           "--out", str(out)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = Run.open(out)
    assert run.complete
    hist = _history(out)
    assert len(hist) == 2
    # both ranks' images are counted: one epoch sees the whole training split
    n_train = len(json.loads((out / "split.json").read_text())["train"])
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2 and n_train > 0
    assert hist[-1]["images_per_s"] > 0


def test_train_on_imagefolder_and_evaluate(tmp_path, cli):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for k, name in enumerate(["dark", "light"]):
        (root / name).mkdir(parents=True)
        for i in range(20):
            base = 60 if k == 0 else 190
            Image.fromarray(np.clip(rng.normal(base, 25, (10, 10, 3)), 0, 255).astype(np.uint8)).save(
                root / name / f"{i}.png")
    out = tmp_path / "run"
    code, stdout, err = cli("train", "--data", f"imagefolder:{root}", "--epochs", "3", "--device", "cpu",
                            "--quiet", "--out", out)
    assert code == 0, err
    assert "test top-1" in stdout
    code, stdout, _ = cli("evaluate", out, "--quiet")
    assert code == 0
    result = json.loads((out / "eval-test.json").read_text())
    assert f"top-1 {result['top1']:.4f}" in stdout
    n_test = len(json.loads((out / "split.json").read_text())["test"])
    assert sum(map(sum, result["confusion"])) == result["images"] == n_test
    assert (out / "confusion-test.png").stat().st_size > 0


def test_checkpoints_load_weights_only_and_rebuild_the_model(digits_run):
    ckpt = torch.load(digits_run / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["format"] == "edgespec.checkpoint/1"
    run = Run.open(digits_run)
    model = run.model()
    x = torch.randn(3, 1, 8, 8)
    assert model(x).shape == (3, 10)
    metrics_csv = (digits_run / "metrics.csv").read_text().splitlines()
    assert metrics_csv[0].startswith("epoch,train_loss,train_acc,val_loss,val_acc")
    assert len(metrics_csv) == 1 + len(json.loads((digits_run / "metrics.json").read_text()))
    config = json.loads((digits_run / "run.json").read_text())["config"]
    assert config["data"] == "digits" and config["model"] == "smallcnn"


def _write_idx(path: Path, array: np.ndarray) -> None:
    import struct

    magic = 0x0803 if array.ndim == 3 else 0x0801
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) +
                     array.astype(np.uint8).tobytes())


def test_torchvision_dataset_read_from_root_without_download(tmp_path, cli):
    """A tiny MNIST in torchvision's raw layout, so the real torchvision reader is exercised offline."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = np.arange(n) % 3
        images = (rng.random((n, 28, 28)) * 40 + labels[:, None, None] * 70).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    out = tmp_path / "run"
    code, stdout, err = cli("train", "--data", f"torchvision:MNIST:{tmp_path}", "--epochs", "2", "--device", "cpu",
                            "--quiet", "--out", out)
    assert code == 0, err
    split = json.loads((out / "split.json").read_text())
    assert split["test"] == list(range(60, 80))  # torchvision's own test set is kept as the test split
    code, _, err = cli("train", "--data", f"torchvision:MNIST:{tmp_path / 'empty'}", "--out", tmp_path / "r2")
    assert code == 2 and "--download" in err
