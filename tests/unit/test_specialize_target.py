"""Specializing toward unlabelled target images (methods.md 2-3): the sampler, the proposed group, target BN,
resume, the run record, and the bad inputs refused with one line."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from toolkit.data.target import write_target
from toolkit.errors import UserError
from toolkit.runs import Run
from toolkit.specialize import SpecializeConfig, convert_batchnorm, specialize
from toolkit.specialize.bn import adapt_statistics, batchnorm_layers, target_statistics
from toolkit.specialize.target import ClusterSampler, load_target_images, penultimate, propose_group

FAST = {"epochs": 2, "device": "cpu", "seed": 0, "batch_size": 32}


def test_the_stream_follows_the_target_histogram_and_never_draws_zero_mass_clusters():
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 5, 400)
    clusters[clusters == 4] = 3  # cluster 4 has target mass but no training example
    hist = np.array([0.5, 0.0, 0.3, 0.1, 0.1])
    gen = torch.Generator().manual_seed(0)
    sampler = ClusterSampler(clusters, hist, 20000, gen)
    drawn = np.asarray(list(sampler))
    got = np.bincount(clusters[drawn], minlength=5) / len(drawn)
    expected = np.array([0.5, 0.0, 0.3, 0.1, 0.0]) / 0.9  # renormalised over clusters that have examples
    assert np.abs(got - expected).max() < 0.015
    assert got[1] == 0 and got[4] == 0
    members0 = np.flatnonzero(clusters == 0)  # uniform within a cluster
    per_member = np.bincount(drawn[np.isin(drawn, members0)], minlength=400)[members0]
    assert per_member.min() > 0 and per_member.std() / per_member.mean() < 0.25
    gen.manual_seed(0)
    again = np.asarray(list(sampler))
    assert np.array_equal(again, drawn)  # the loop's reseeded generator makes the stream resumable


@pytest.fixture(scope="module")
def site(synthetic_run, tmp_path_factory):
    """Two of the generalist's three groups, with a noise shift: 6 known classes."""
    run = Run.open(synthetic_run)
    groups = run.info["groups"]
    truth = groups["hstripes"] + groups["diagonal"]
    out = tmp_path_factory.mktemp("site")
    write_target(synthetic_run, out, truth, "noise", per_class=20, seed=0)
    return out, truth


def test_the_proposed_group_is_the_targets_classes(synthetic_run, site):
    out, truth = site
    run = Run.open(synthetic_run)
    x, fingerprint, n = load_target_images(out / "unlabeled", run)
    assert n == 60 and x.shape == (60, 3, 16, 16) and len(fingerprint) == 64
    assert sorted(p.parent.name for p in (out / "test").glob("*/*.png")) == sorted(truth * 10)
    _, logits = penultimate(run.model(), x)
    chosen, shares = propose_group(logits, run.classes, 0.05)
    # the fixture's 4-epoch generalist confuses some marks within a group, never the groups themselves
    assert set(chosen) <= set(truth) and len(chosen) >= 4
    assert {c.split("-")[0] for c in chosen} == {"hstripes", "diagonal"}
    assert abs(sum(shares.values()) - 1) < 1e-6


def test_propose_group_keeps_the_classes_over_the_share_in_order():
    classes = ["a", "b", "c", "d"]
    preds = np.array([0] * 50 + [2] * 30 + [3] * 19 + [1])  # b: 1%, under a 2% share
    logits = np.eye(4)[preds]
    assert propose_group(logits, classes, 0.02)[0] == ["a", "c", "d"]
    assert propose_group(logits, classes, 0.01)[0] == ["a", "c", "d", "b"]
    with pytest.raises(UserError, match="needs two"):
        propose_group(logits, classes, 0.4)


def test_target_bn_keeps_eval_outputs_and_moves_statistics_to_the_target(synthetic_run, site):
    run = Run.open(synthetic_run)
    x, _, _ = load_target_images(site[0] / "unlabeled", run)
    model = run.model().eval()
    converted = copy.deepcopy(model)
    batches = [x[i:i + 16] for i in range(0, len(x), 16)]
    stats = target_statistics(model, batches)
    assert convert_batchnorm(converted, batches) == len(batchnorm_layers(model)) > 0
    converted.eval()
    with torch.no_grad():
        assert (converted(x) - model(x)).abs().max().item() < 1e-4
    name, bn = batchnorm_layers(converted)[0]
    assert torch.allclose(bn.running_mean, stats[name][0].float(), atol=1e-6)
    assert not torch.allclose(bn.running_mean, dict(batchnorm_layers(model))[name].running_mean, atol=1e-3)


def test_adabn_moves_statistics_and_eval_outputs_to_the_target_and_leaves_the_model_alone(synthetic_run, site):
    run = Run.open(synthetic_run)
    x, _, _ = load_target_images(site[0] / "unlabeled", run)
    model = run.model().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = adapt_statistics(model, [x[i:i + 16] for i in range(0, len(x), 16)])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is not touched
    assert not adapted.training
    (name, bn), (_, bn0) = batchnorm_layers(adapted)[0], batchnorm_layers(model)[0]
    inp = x.to(torch.float64)  # the first BN layer's input, by the model's own stem
    seen = {}
    handle = dict(model.named_modules())[name].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        model(inp.float())
    handle.remove()
    first = seen["x"].to(torch.float64)
    batch_means = torch.stack([first[i:i + 16].mean((0, 2, 3)) for i in range(0, len(x), 16)])
    assert torch.allclose(bn.running_mean.double(), batch_means.mean(0), atol=1e-5)  # the target's own mean
    assert torch.equal(bn.weight, bn0.weight) and torch.equal(bn.bias, bn0.bias)  # affine kept
    with torch.no_grad():
        assert (adapted(x) - model(x)).abs().max().item() > 1e-3  # unlike DAFT, eval outputs move


def test_bn_target_adapt_saves_adapted_checkpoints_and_resumes_from_the_unadapted_model(synthetic_run, site, tmp_path):
    cfg = SpecializeConfig(**FAST, target_images=str(site[0] / "unlabeled"), clusters=4, bn_target="adapt")
    specialize(synthetic_run, {"g": site[1]}, tmp_path / "a", cfg, single=True)
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)
    saved, trained = ckpt["model"], ckpt["train_model"]
    stats = [k for k in saved if k.endswith("running_mean")]
    assert stats and any(not torch.allclose(saved[k], trained[k]) for k in stats)  # statistics re-estimated
    weights = [k for k in saved if k.endswith("weight")]
    assert all(torch.equal(saved[k], trained[k]) for k in weights)  # the weights are the trained ones
    assert Run.open(tmp_path / "a").info["target"]["bn_target"] == "adapt"


def test_a_target_run_records_the_target_and_resumes_to_the_same_model(synthetic_run, site, tmp_path,
                                                                      killed_in_epoch):
    cfg = SpecializeConfig(**FAST, target_images=str(site[0] / "unlabeled"), clusters=4)
    groups = {"g": site[1]}
    specialize(synthetic_run, groups, tmp_path / "full", cfg, single=True)
    info = Run.open(tmp_path / "full").info
    target = info["target"]
    assert target["sampling"] == "importance" and target["bn_target"] == "adapt" and target["count"] == 60
    assert len(target["histogram"]) == 4 and abs(sum(target["histogram"]) - 1) < 1e-5
    assert info["config"]["target_images"] == cfg.target_images
    assert list((synthetic_run / "target-cache").glob("kmeans-k4-seed0-*.npz"))  # cached for the next specialist

    with killed_in_epoch(2):
        specialize(synthetic_run, groups, tmp_path / "cut", cfg, single=True)
    specialize(synthetic_run, groups, tmp_path / "cut", cfg, single=True, resume=True)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert Run.open(tmp_path / "cut").info["target"] == target


def test_the_cli_proposes_writes_and_prints_the_group(synthetic_run, site, tmp_path, cli):
    code, out, err = cli("specialize", synthetic_run, "--target-images", site[0] / "unlabeled", "--out",
                         tmp_path / "s", "--epochs", "1", "--clusters", "3", "--min-share", "0.05",
                         "--sampling", "uniform", "--bn-target", "group", "--device", "cpu", "-q")
    assert code == 0, err
    assert "proposed group" in out and (tmp_path / "s" / "groups.yaml").is_file()
    info = json.loads((tmp_path / "s" / "target" / "run.json").read_text())
    assert set(info["target"]["proposed_group"]) <= set(site[1]) and info["target"]["sampling"] == "uniform"
    assert info["classes"] == info["target"]["proposed_group"]
    assert "histogram" not in info["target"]  # uniform sampling needs no clusters


def _bad_folder(tmp_path, case: str):
    d = tmp_path / case
    d.mkdir()
    if case == "unreadable":
        (d / "a.png").write_bytes(b"not a png")
    elif case == "gray":
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(d / "a.png")
    elif case == "aspect":
        Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(d / "a.png")
    elif case == "few":
        for i in range(3):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(d / f"{i}.png")
    return d


@pytest.mark.parametrize(("case", "message"), [
    ("empty", "holds no images"), ("unreadable", "cannot read target image"), ("gray", "1 channel"),
    ("aspect", "the model takes 16x16"), ("few", "fewer than --clusters 8")])
def test_bad_target_folders_are_one_line_exit_2(synthetic_run, tmp_path, cli, case, message):
    code, _, err = cli("specialize", synthetic_run, "--target-images", _bad_folder(tmp_path, case), "--out",
                       tmp_path / "out", "--device", "cpu", "-q")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_one_class_proposal_and_misplaced_options_are_refused(synthetic_run, site, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    for f in sorted((site[0] / "test" / site[1][0]).glob("*.png")):
        shutil.copy(f, one / f.name)
    cfg = SpecializeConfig(**FAST, target_images=str(one), min_share=0.6, sampling="uniform")
    from toolkit.tasks import TASKS

    with pytest.raises(UserError, match="a specialist needs two"):
        TASKS["classify"].specialize(synthetic_run, tmp_path / "o", groups_file=None, group=None,
                                     options=cfg.model_dump(exclude_none=True), from_run=None, resume=False)
    with pytest.raises(UserError, match="--target-images is for classifiers"):
        TASKS["detect"].specialize(synthetic_run, tmp_path / "o", groups_file=None, group=None,
                                   options={"target_images": str(one)}, from_run=None, resume=False)
    with pytest.raises(ValueError, match="needs target_images"):
        SpecializeConfig(sampling="importance")


def test_target_keys_stay_out_of_the_dump_until_set():
    plain = SpecializeConfig().model_dump()
    assert not {"target_images", "sampling", "bn_target", "clusters", "min_share"} & set(plain)
    dumped = SpecializeConfig(target_images="site").model_dump()
    assert dumped["sampling"] == "importance" and dumped["bn_target"] == "adapt" and dumped["clusters"] == 8
    from toolkit.pipeline import config_class

    cfg = config_class("classify").model_validate({"specialize": {"target_images": "site", "epochs": 1}})
    assert cfg.specialize.target_images == "site"
