"""On a CUDA GPU: training with mixed precision and channels_last, the methods.md invariants on the GPU, a specialist
trained there, and GPU latency measured through the host-gpu profile. Marked `gpu`; skipped where CUDA is absent.

On the GPU, cuDNN and cuBLAS pick kernels per shape, so equalities that are bit-exact on the CPU are checked within
1e-5 (fp32 logits) here, with TF32 off: PyTorch lets cuDNN convolutions round their inputs to TF32 (10-bit mantissa)
by default, and BN conversion's last-bit changes then came out as 4.4e-5 on an H200's logits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from toolkit.data import stack
from toolkit.runs import Run

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    from toolkit.train import TrainConfig, train

    out = tmp_path_factory.mktemp("cuda") / "digits"
    train(TrainConfig(data="digits", epochs=4, seed=0, device="cuda"), out)
    return out


def test_training_on_cuda_uses_amp_and_gives_a_cpu_loadable_checkpoint(cuda_run):
    run = Run.open(cuda_run)
    assert run.complete and run.info["config"]["device"] == "cuda" and run.info["config"]["amp"]
    history = json.loads((cuda_run / "metrics.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_acc"] > 0.8
    ckpt = torch.load(cuda_run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())
    # the checkpoint evaluated on the CPU agrees with the run's own (GPU) evaluation, image for image but a few
    from toolkit.evaluate import evaluate_run

    on_gpu = json.loads((cuda_run / "eval-test.json").read_text())
    on_cpu = evaluate_run(run, device="cpu")
    assert abs(on_cpu["top1"] - on_gpu["top1"]) * on_gpu["images"] <= 2


@pytest.fixture
def exact_fp32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_extraction_and_bn_conversion_hold_on_cuda(cuda_run, exact_fp32):
    from torch.utils.data import DataLoader

    from toolkit.specialize.bn import convert_batchnorm
    from toolkit.specialize.extract import extract

    run = Run.open(cuda_run)
    ids = [3, 5, 9]
    x, _ = stack(run.data().dataset("test"), 64)
    x = x.cuda()
    gen = run.model().cuda().eval()
    spec = extract(run.model(), ids).cuda().eval()
    with torch.no_grad():
        full, sub = gen(x), spec(x)
    assert (sub - full[:, ids]).abs().max().item() <= 1e-5

    converted = extract(run.model(), ids).cuda().eval()
    torch.manual_seed(0)
    loader = DataLoader(run.data().restrict(ids).dataset("train", train_transform=True), batch_size=64)
    assert convert_batchnorm(converted, loader, "cuda") == 3
    with torch.no_grad():
        assert (converted(x) - spec(x)).abs().max().item() <= 1e-5
    moved = (converted.features[0][1].running_mean - spec.features[0][1].running_mean).abs().max().item()
    assert moved > 1e-3


def test_specialist_on_cuda_and_gpu_latency_measured_on_host(cuda_run, tmp_path, cli):
    groups = tmp_path / "groups.yaml"
    groups.write_text("low: ['0', '1', '2', '3']\n")
    spec = tmp_path / "low"
    code, _, err = cli("specialize", cuda_run, "--groups", groups, "--group", "low", "--out", spec, "--epochs", "2",
                       "--device", "cuda", "--quiet")
    assert code == 0, err
    info = Run.open(spec).info
    assert info["config"]["device"] == "cuda" and info["class_ids"] == [0, 1, 2, 3]
    export = tmp_path / "export"
    code, _, err = cli("export", cuda_run, spec, "--formats", "onnx", "--out", export, "--quiet")
    assert code == 0, err
    report = tmp_path / "report"
    code, _, err = cli("bench", export, "--devices", "host-gpu", "--report", report, "--runs", "50", "--quiet")
    assert code == 0, err
    rows = json.loads((report / "report.json").read_text())["rows"]
    gpu = [r for r in rows if r["device"] == "host-gpu"]
    assert {r["model"] for r in gpu} >= {"digits", "low"}
    for r in gpu:
        assert r["measurement"] == "measured on host" and r["format"] == "pytorch" and r["batch_size"] == 1
        assert np.isfinite(r["latency_ms"]["p50"]) and 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
    low = next(r for r in gpu if r["model"] == "low")
    assert low["role"] == "specialist" and low["accuracy"] >= 0.8
    assert low["generalist_accuracy_closed"] is not None and low["speedup_vs_generalist"] > 0
    print({r["model"]: round(r["latency_ms"]["p50"], 4) for r in gpu}, "ms p50 on", torch.cuda.get_device_name())
