"""Compression (methods.md 4): structured pruning keeps the outputs' meaning, shrinks the graph and the file,
distils with the stated loss, and resumes to the same result."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from toolkit.compress import CompressConfig, compress_run, distillation_loss
from toolkit.errors import UserError
from toolkit.runs import Run

CFG = {"macs_ratio": 0.33, "steps": 2, "epochs": 2, "device": "cpu", "batch_size": 32}


@pytest.fixture(scope="module")
def compressed(synthetic_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "c33"
    result = compress_run(synthetic_run, out, CompressConfig(**CFG))
    return out, result


def test_output_shape_class_order_and_lineage(compressed, synthetic_run):
    out, result = compressed
    run, parent = Run.open(out), Run.open(synthetic_run)
    assert run.kind == "compress" and run.complete
    assert run.classes == parent.classes and run.class_ids == parent.class_ids
    assert run.info["parent"]["run"] == str(synthetic_run.resolve())
    from toolkit.io import sha256_file

    assert run.info["parent"]["checkpoint_sha256"] == sha256_file(parent.checkpoint_path("best"))
    model = run.model()
    x = torch.randn(5, 3, 16, 16)
    assert model(x).shape == (5, len(parent.classes))
    # class order: the compressed model still names the test images right in the parent's output order (9 classes:
    # a permuted order would score near 0.11)
    parent_top1 = json.loads((synthetic_run / "eval-test.json").read_text())["top1"]
    assert result["test"]["top1"] >= min(0.6, parent_top1 - 0.1), (result["test"]["top1"], parent_top1)


def test_channels_are_multiples_of_round_to_and_macs_near_the_target(compressed, synthetic_run):
    from toolkit.compress.prune import count

    out, result = compressed
    model = Run.open(out).model()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs), [c.out_channels for c in convs]
    parent = Run.open(synthetic_run).model()
    assert sum(c.out_channels for c in convs) < sum(m.out_channels for m in parent.modules()
                                                    if isinstance(m, nn.Conv2d))
    macs, params = count(model, (3, 16, 16))
    base_macs, base_params = count(parent, (3, 16, 16))
    facts = Run.open(out).info["compression"]
    assert (facts["macs_after"], facts["params_after"]) == (macs, params)
    assert (facts["macs_before"], facts["params_before"]) == (base_macs, base_params)
    assert 0.2 <= macs / base_macs <= 0.33 * 1.1, macs / base_macs
    assert facts["steps"] == 2 and facts["distillation"]["teacher"] == "specialist"
    steps = {r["step"] for r in json.loads((out / "metrics.json").read_text())}
    assert steps == {1, 2}


def test_onnx_export_passes_parity_and_is_smaller_by_the_params_ratio(compressed, synthetic_run, tmp_path):
    from exporters import export_run

    out, _ = compressed
    small = export_run(out, ["onnx"], tmp_path / "small", parity_images=64)[0]
    full = export_run(synthetic_run, ["onnx"], tmp_path / "full", parity_images=64)[0]
    assert small["parity"]["passed"] and small["role"] == "specialist"
    ratio = Run.open(out).info["compression"]["params_ratio"]
    size_ratio = small["size_bytes"] / full["size_bytes"]
    assert size_ratio == pytest.approx(ratio, abs=0.08), (size_ratio, ratio)


def test_distillation_loss_is_the_formula_on_known_logits():
    s = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]])
    t = torch.tensor([[1.0, 0.0, -2.0], [0.5, 0.5, 2.5]])
    y = torch.tensor([0, 2])
    a, temp = 0.6, 3.0

    def softmax(v):
        e = np.exp(v - v.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    sn, tn = s.double().numpy(), t.double().numpy()
    ce = -np.mean(np.log(softmax(sn)[np.arange(2), y.numpy()]))
    pt, ps = softmax(tn / temp), softmax(sn / temp)
    kl = np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1))
    want = (1 - a) * ce + a * temp ** 2 * kl
    assert distillation_loss(s, t, y, a, temp).item() == pytest.approx(want, rel=1e-5)
    assert distillation_loss(s, None, y, a, temp).item() == pytest.approx(ce, rel=1e-5)
    assert distillation_loss(s, s, y, 1.0, temp).item() == pytest.approx(0.0, abs=1e-6)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("stop_at", [2, 3])  # mid-step (after epoch 1), and between steps (before step 2's pruning)
def test_an_interrupted_compress_resumes_to_the_same_result(compressed, synthetic_run, tmp_path, monkeypatch, stop_at):
    import toolkit.compress.distill as distill

    ref, ref_result = compressed
    real, calls = distill.finetune_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop_at:
            raise _Stop
        return real(*args, **kwargs)

    monkeypatch.setattr(distill, "finetune_epoch", interrupted)
    out = tmp_path / "c33"
    with pytest.raises(_Stop):
        compress_run(synthetic_run, out, CompressConfig(**CFG))
    monkeypatch.setattr(distill, "finetune_epoch", real)
    with pytest.raises(UserError, match="--resume"):
        compress_run(synthetic_run, out, CompressConfig(**CFG))
    result = compress_run(synthetic_run, out, CompressConfig(**CFG), resume=True)
    assert result["history"] == ref_result["history"] or all(
        a["val_acc"] == b["val_acc"] and math.isclose(a["train_loss"], b["train_loss"], abs_tol=1e-6)
        for a, b in zip(result["history"], ref_result["history"], strict=True))
    wa = torch.load(ref / "checkpoints" / "best.pt", weights_only=True)
    wb = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert wa["meta"]["layers"] == wb["meta"]["layers"]
    for k, v in wa["model"].items():
        torch.testing.assert_close(wb["model"][k], v, atol=1e-6, rtol=1e-5)
    assert result["test"]["top1"] == ref_result["test"]["top1"]


class _Rigid(nn.Module):
    """A reshape that hard-codes its channel count: Torch-Pruning cannot follow it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fixed = _View(32)
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc(self.fixed(self.pool(self.conv2(torch.relu(self.conv1(x))))))


class _View(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x):
        return x.reshape(x.shape[0], self.n)


def test_a_model_pruning_breaks_is_refused_naming_the_layer():
    from toolkit.compress.prune import prune_to

    model = _Rigid()
    base = sum(p.numel() for p in model.parameters())
    with pytest.raises(UserError, match=r"at layer fixed .*compress another architecture"):
        prune_to(model, (3, 8, 8), target="params", ratio=0.4, base=base, importance="group-norm", round_to=8,
                 arch="rigid", num_classes=3)


def test_an_untraceable_architecture_is_refused_naming_where():
    from toolkit.compress.prune import make_pruner
    from toolkit.models import create_model

    model = create_model("shufflenet_v2_x0_5", 4, 3, 32)
    with pytest.raises(UserError, match=r"Torch-Pruning cannot trace shufflenet_v2_x0_5: .* after layer \S+"):
        make_pruner(model, (3, 32, 32), "taylor", 8, "shufflenet_v2_x0_5")


def test_config_refuses_two_targets_and_defaults_to_a_third_of_the_macs():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not both"):
        CompressConfig(macs_ratio=0.5, param_ratio=0.5)
    assert CompressConfig().target == ("macs", 0.33)
    assert CompressConfig(param_ratio=0.4).target == ("params", 0.4)
