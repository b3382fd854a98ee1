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


@pytest.fixture(scope="session")
def assert_head_slice():
    """check(spec, gen, positions, x): `spec`'s logits are `gen`'s at `positions`, everything extraction controls
    compared bit for bit: the backbone's features, the head's rows, and each logit as a reduction of its own.

    Through the model's own Linear the logits are bit-exact only where the CPU's fp32 GEMM gives an output row the
    same bits whatever the other rows are. MKL's AVX-512 kernels (Xeon) do; its AVX2 kernels (AMD EPYC) sum a row
    in an order that depends on its position in the tile (permuting W's rows changed logits by ~5e-6). So that
    last comparison is bit-exact where this BLAS is, and within 1e-5 elsewhere. Returns whether it was bit-exact.
    """
    import torch
    import torch.nn.functional as F

    from toolkit.models import get_head

    def per_output(f, head):  # one reduction per (image, class): no GEMM tiling, the same bits at any position
        return (f.unsqueeze(1) * head.weight.unsqueeze(0)).sum(-1) + head.bias

    def check(spec, gen, positions, x) -> bool:
        feats = {}
        hooks = [get_head(m).register_forward_pre_hook(lambda _m, args, k=k: feats.__setitem__(k, args[0]))
                 for k, m in (("spec", spec), ("gen", gen))]
        try:
            with torch.no_grad():
                sub, full = spec.eval()(x), gen.eval()(x)[:, positions]
        finally:
            for h in hooks:
                h.remove()
        hs, hg = get_head(spec), get_head(gen)
        assert sub.shape == (len(x), len(positions))
        assert torch.equal(feats["spec"], feats["gen"]), "the backbone changed"
        assert torch.equal(hs.weight, hg.weight[positions]) and torch.equal(hs.bias, hg.bias[positions])
        with torch.no_grad():
            assert torch.equal(per_output(feats["spec"], hs), per_output(feats["gen"], hg)[:, positions])
            f = feats["gen"]
            blas_exact = torch.equal(F.linear(f, hg.weight[positions], hg.bias[positions]),
                                     F.linear(f, hg.weight, hg.bias)[:, positions])
        if blas_exact:
            assert torch.equal(sub, full)
        else:
            diff = (sub - full).abs().max().item()
            assert diff <= 1e-5, diff
        return blas_exact

    return check


@pytest.fixture
def killed_in_epoch(monkeypatch):
    """`with killed_in_epoch(2): train(...)`: the training loop's train_one_epoch raises KeyboardInterrupt on its
    2nd call inside the block, which must end in that interrupt; the real function is back afterwards."""
    import contextlib

    import toolkit.train.loop as loop

    @contextlib.contextmanager
    def cut(epoch: int = 2):
        real, calls = loop.train_one_epoch, []

        def dies(*args, **kwargs):
            calls.append(1)
            if len(calls) == epoch:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(loop, "train_one_epoch", dies)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(loop, "train_one_epoch", real)
    return cut
