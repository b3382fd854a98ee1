"""Shared fixtures: small runs trained once per test session (seconds on a CPU)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def _train(out: Path, **overrides):
    from toolkit.train import TrainConfig, train

    cfg = TrainConfig(**{"epochs": 4, "seed": 0, "device": "cpu", **overrides})
    train(cfg, out)
    return out


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """A smallcnn generalist on digits (10 classes, 8x8 grayscale), ~3 s to train."""
    return _train(tmp_path_factory.mktemp("runs") / "digits", data="digits")


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    """A smallcnn generalist on small synthetic data: 3 groups x 3 classes, 16x16 RGB."""
    return _train(tmp_path_factory.mktemp("runs") / "synthetic", data="synthetic:groups=3,per_class=60", epochs=4)


@pytest.fixture(scope="session")
def ultra(tmp_path_factory) -> Path:
    """Ultralytics configured offline with its settings in a temporary directory (detection tests)."""
    from toolkit.detect.offline import ultralytics_env

    d = tmp_path_factory.mktemp("ultra")
    ultralytics_env(d)
    return d


@pytest.fixture(scope="session")
def yolo_with():
    """wrap(real, callbacks): a `yolo(run_dir, model)` factory like `real` whose models carry extra Ultralytics
    callbacks (detection tests interrupt or observe training with them)."""
    def wrap(real, callbacks: dict):
        def wrapped(run_dir, model):
            m = real(run_dir, model)
            for event, fn in callbacks.items():
                m.add_callback(event, fn)
            return m
        return wrapped

    return wrap


@pytest.fixture
def cli(capsys):
    """Run `edgespec ARGS` in-process; returns (exit_code, stdout, stderr)."""
    from toolkit.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
