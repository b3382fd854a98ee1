"""Compressing a YOLO detector: the split-free rewrite computes what the original did, pruning keeps the head's
outputs (box channels and one score per class, in order) at <= 0.5 of the MACs, and a compressed run (tiny: 32 px,
1 epoch) is an ordinary detection run: it evaluates (mAP50-95), exports to ONNX through the parity check, and a
second write needs --resume."""

from __future__ import annotations

import importlib.util
import json

import pytest

from toolkit.errors import UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason="needs the detect extra (ultralytics)")


@pytest.fixture
def yolo11n(ultra):
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel("yolo11n.yaml", nc=3, verbose=False).eval()


@pytest.mark.slow
def test_rewrite_is_exact_and_pruning_keeps_the_head_outputs(yolo11n):
    import torch

    from toolkit.compress.prune import count
    from toolkit.detect.compress import prunable, prune_detector, raw_outputs
    from toolkit.detect.layers import SplitFreeC2f

    x = torch.rand(2, 3, 32, 32)
    before = raw_outputs(yolo11n, x)
    model = prunable(yolo11n, 32)
    assert sum(isinstance(m, SplitFreeC2f) for m in model.modules()) == 9  # 8 C3k2 + 1 C2PSA in yolo11n
    assert torch.equal(raw_outputs(model, x), before) or (raw_outputs(model, x) - before).abs().max() < 1e-5
    base = count(model, (3, 32, 32))
    reached = prune_detector(model, 32, target="macs", ratio=0.5, base=base[0], round_to=8, arch="yolo11n")
    assert reached["macs"] <= 0.5 * base[0] and reached["macs"] == count(model, (3, 32, 32))[0]
    head = model.model[-1]
    assert [s[-1].out_channels for s in head.cv3] == [3, 3, 3]  # the class convs: one channel per class
    assert [s[-1].out_channels for s in head.cv2] == [4 * head.reg_max] * 3
    assert tuple(raw_outputs(model, x).shape) == tuple(before.shape)
    assert any(s[-1].in_channels < 64 for s in head.cv3)  # the class branch's inner width was pruned


def test_a_rewritten_checkpoint_passes_the_pickle_check(yolo11n, tmp_path):
    from toolkit.detect.compress import prunable
    from toolkit.detect.offline import load_weights
    from toolkit.detect.specialize import save_ultralytics

    path = save_ultralytics(prunable(yolo11n, 64), tmp_path / "weights" / "p.pt", {})
    assert type(load_weights(path, tmp_path).model[2]).__name__ == "SplitFreeC2f"


@pytest.fixture(scope="module")
def det_runs(tmp_path_factory):
    from toolkit.detect.synth import synth_detect
    from toolkit.detect.train import DetectTrainConfig, train_detect

    root = tmp_path_factory.mktemp("detc")
    data = synth_detect(root / "data", train=16, val=8, size=32)
    gen = root / "gen"
    train_detect(DetectTrainConfig(data=str(data), model="yolo11n.yaml", epochs=1, batch=8, device="cpu"), gen)
    return {"root": root, "gen": gen}


@pytest.mark.slow
def test_compress_a_detector_then_evaluate_and_export(det_runs, cli, tmp_path):
    out = tmp_path / "c"
    args = ["compress", det_runs["gen"], "--out", out, "--macs-ratio", "0.5", "--epochs", "1", "--device", "cpu",
            "--quiet"]
    code, stdout, err = cli(*args)
    assert code == 0, err
    info = json.loads((out / "run.json").read_text())
    c = info["compression"]
    assert info["task"] == "detect" and info["kind"] == "compress" and info["status"] == "complete"
    assert c["macs_ratio"] <= 0.5 and c["macs_after"] < c["macs_before"] and "mAP50-95" in stdout
    assert info["parent"]["run"] == str(det_runs["gen"].resolve()) and info["classes"] == json.loads(
        (det_runs["gen"] / "run.json").read_text())["classes"]
    code, stdout, err = cli("evaluate", out, "--device", "cpu")
    assert code == 0 and "mAP50-95" in stdout, err
    code, stdout, err = cli("export", out, "--out", tmp_path / "exp", "--formats", "onnx", "--quiet")
    assert code == 0, err
    entry = json.loads((tmp_path / "exp" / "manifest.json").read_text())["artifacts"][0]
    assert entry["role"] == "specialist" and entry["parity"]["passed"]
    code, _, err = cli(*args)
    assert code == 2 and "already holds a finished run" in err, err


@pytest.mark.parametrize("extra, fragment", [
    (["--distill"], "--distill is for classifiers"),
    (["--importance", "fisher"], "importance"),
    (["--target-speedup", "2"], "--target-speedup is for classifiers"),
    (["--macs-ratio", "1.2"], "--macs-ratio"),
])
def test_classifier_options_are_refused_for_detectors(det_runs, cli, tmp_path, extra, fragment):
    code, _, err = cli("compress", det_runs["gen"], "--out", tmp_path / "c", *extra, "--quiet")
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c").exists()


def test_an_untraceable_block_is_named(yolo11n, monkeypatch):
    """A pruning failure is one UserError naming where it happened (here: the split C2f left in place)."""
    from toolkit.detect import compress as dc

    monkeypatch.setattr("toolkit.detect.layers.replace_split_blocks", lambda m: 0)
    model = dc.prunable(yolo11n, 32)
    with pytest.raises(UserError, match=r"yolo11n.*(layer|after)"):
        dc.prune_detector(model, 32, target="macs", ratio=0.3, base=8_000_000, round_to=8, arch="yolo11n")


class Interrupted(Exception):
    """Stands in for a kill."""


def _stop_after_first_epoch(trainer):
    if trainer.epoch == 0:
        raise Interrupted


@pytest.mark.slow
def test_an_interrupted_compression_resumes_with_ultralytics_resume(det_runs, tmp_path, monkeypatch, yolo_with):
    """Killed after its first fine-tuning epoch: --resume continues that training (the pruned model, not the
    YAML's), and a compression without --resume is refused."""
    from toolkit.detect import offline, train
    from toolkit.detect.compress import DetectCompressConfig, compress_detect

    out, cfg = tmp_path / "c", DetectCompressConfig(epochs=2, device="cpu")
    real = offline.yolo
    monkeypatch.setattr(offline, "yolo", yolo_with(real, {"on_fit_epoch_end": _stop_after_first_epoch}))
    with pytest.raises(Interrupted):
        compress_detect(det_runs["gen"], out, cfg)
    monkeypatch.setattr(offline, "yolo", real)
    with pytest.raises(UserError, match="interrupted run; pass --resume"):
        compress_detect(det_runs["gen"], out, cfg)
    seen = {}
    monkeypatch.setattr(train, "yolo", yolo_with(train.yolo, {"on_train_start": lambda t: seen.update(
        start_epoch=t.start_epoch, params=sum(p.numel() for p in t.model.parameters()))}))
    res = compress_detect(det_runs["gen"], out, cfg, resume=True)
    assert seen["start_epoch"] == 1  # Ultralytics resumed after the first epoch
    pruned = offline.load_weights(out / "weights" / "step1-pruned.pt", out)
    assert seen["params"] == sum(p.numel() for p in pruned.parameters())  # the pruned model, not one rebuilt
    rows = (out / "ultra" / "step1" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + epochs 1 and 2: the second epoch trained after the resume
    assert res["compression"]["macs_ratio"] <= 0.5
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_taylor_importance_of_a_detector_comes_from_its_loss_on_the_runs_images_and_is_repeatable(det_runs):
    """Ultralytics' detection loss on the run's training images gives every prunable weight a gradient, the same
    ones when computed again (a resumed step prunes identically: the pruner itself is deterministic), and pruning
    with them keeps other channels than the weights' norm does."""
    import torch

    from toolkit.compress.prune import count
    from toolkit.detect.compress import detection_gradients, prunable, prune_detector
    from toolkit.detect.dataset import load_data, run_view
    from toolkit.detect.offline import load_weights
    from toolkit.detect.runs import open_detect_run

    gen, root = det_runs["gen"], det_runs["root"]
    view, _ = run_view(load_data(open_detect_run(gen)["data"]), root / "taylor-view")
    grads = detection_gradients(view, 32, 8, 2)

    def model():
        return prunable(load_weights(gen / "weights" / "best.pt", root), 32)

    first, again = model(), model()
    grads(first)
    grads(again)
    convs = [(n, m) for n, m in first.named_modules() if isinstance(m, torch.nn.Conv2d) and "dfl" not in n]  # fixed
    assert all(m.weight.grad is not None for _, m in convs)
    assert sum(float(m.weight.grad.abs().sum()) > 0 for _, m in convs) > len(convs) // 2
    assert all(torch.equal(m.weight.grad, again.get_submodule(n).weight.grad) for n, m in convs)

    def pruned(importance):
        m = model()
        prune_detector(m, 32, target="macs", ratio=0.9, base=count(m, (3, 32, 32))[0], round_to=8, arch="yolo11n",
                       importance=importance, gradients=grads if importance == "taylor" else None)
        return {k: v for k, v in m.state_dict().items() if k.endswith("conv.weight")}

    taylor, norm = pruned("taylor"), pruned("group-norm")
    assert any(taylor[k].shape != norm[k].shape or not torch.equal(taylor[k], norm[k]) for k in taylor)
