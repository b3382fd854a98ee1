"""Specialist runs end to end: run.json contract, gradual chains, suppress/head-first hooks, the comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.errors import UserError
from toolkit.evaluate import eval_loader, evaluate_run, predict
from toolkit.io import sha256_file
from toolkit.runs import Run
from toolkit.specialize import SpecializeConfig, specialize
from toolkit.specialize.compare import specialists_vs_generalist, to_markdown, write_comparison

FAST = {"epochs": 1, "device": "cpu", "seed": 0}


@pytest.fixture(scope="module")
def chain(digits_run, tmp_path_factory):
    """generalist -> odd5 (extract) -> pair (extract, --from odd5), one epoch each."""
    out = tmp_path_factory.mktemp("chain")
    specialize(digits_run, {"odd5": ["9", "3", "5", "7", "1"]}, out / "s1", SpecializeConfig(**FAST), single=True)
    specialize(digits_run, {"pair": ["5", "3"]}, out / "s2", SpecializeConfig(**FAST), from_run=out / "s1",
               single=True)
    return Run.open(digits_run), Run.open(out / "s1"), Run.open(out / "s2")


def test_specialist_run_json_follows_the_contract(chain):
    gen, s1, _ = chain
    info = s1.info
    assert info["kind"] == "specialize" and info["status"] == "complete"
    assert info["group"] == "odd5" and info["init"] == "extract" and info["bn_convert"] is True
    assert info["class_ids"] == [9, 3, 5, 7, 1] and info["classes"] == ["9", "3", "5", "7", "1"]
    assert info["arch"]["num_classes"] == 5 and info["data"] == gen.info["data"]
    parent = info["parent"]
    assert parent["run"] == str(gen.path.resolve()) and parent["kind"] == "train"
    assert parent["checkpoint_sha256"] == sha256_file(gen.checkpoint_path("best"))
    assert parent["lineage"] == [str(gen.path.resolve())]
    assert (s1.path / "split.json").read_text() == (gen.path / "split.json").read_text()


def test_gradual_chain_records_its_lineage_and_narrows_classes(chain):
    gen, s1, s2 = chain
    parent = s2.info["parent"]
    assert parent["run"] == str(s1.path.resolve()) and parent["kind"] == "specialize"
    assert parent["lineage"] == [str(gen.path.resolve()), str(s1.path.resolve())]
    assert parent["checkpoint_sha256"] == sha256_file(s1.checkpoint_path("best"))
    assert s2.class_ids == [5, 3] and set(s2.class_ids) < set(s1.class_ids) < set(gen.class_ids)
    assert s2.model()(torch.zeros(2, 1, 8, 8)).shape == (2, 2)


def test_specialists_evaluate_and_their_outputs_follow_class_ids(chain):
    gen, s1, _ = chain
    result = evaluate_run(s1, save=False)
    assert result["images"] == int(np.isin(gen.data().source.labels[gen.data().indices("test")], s1.class_ids).sum())
    assert result["top1"] > 0.8
    # one gentle epoch from an extraction: predictions still agree with the generalist's closed-set ones,
    # which they would not if outputs were in another order than class_ids
    dev = torch.device("cpu")
    s_logits, _ = predict(s1.model(), eval_loader(s1.data(), "test"), dev)
    g_logits, _ = predict(gen.model(), eval_loader(gen.data().restrict(s1.class_ids), "test"), dev)
    closed = g_logits[:, s1.class_ids].argmax(1)
    assert (s_logits.argmax(1) == closed).mean() > 0.9


def test_from_must_hold_the_groups_classes(chain, synthetic_run, tmp_path):
    gen, s1, _ = chain
    with pytest.raises(UserError, match="subset"):
        specialize(gen.path, {"x": ["5", "2"]}, tmp_path / "x", SpecializeConfig(**FAST), from_run=s1.path)
    with pytest.raises(UserError, match="takes a specialist"):
        specialize(gen.path, {"x": ["5", "2"]}, tmp_path / "x", SpecializeConfig(**FAST), from_run=synthetic_run)
    assert not (tmp_path / "x").exists()


def test_bad_specialize_options_fail_before_anything_is_written(digits_run, tmp_path):
    cfg = SpecializeConfig(**{**FAST, "init": "head-first", "head_epochs": 1})
    with pytest.raises(UserError, match="--head-epochs"):
        specialize(digits_run, {"g": ["1", "7"]}, tmp_path / "a", cfg)
    with pytest.raises(UserError, match="exactly one group"):
        specialize(digits_run, {"g": ["1", "7"], "h": ["3", "8"]}, tmp_path / "b", SpecializeConfig(**FAST),
                   single=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_suppress_saves_the_group_outputs_and_resumes_from_the_full_head(digits_run, tmp_path):
    cfg = SpecializeConfig(**{**FAST, "init": "suppress"})
    specialize(digits_run, {"g": ["4", "9", "7"]}, tmp_path, cfg)
    run = Run.open(tmp_path / "g")
    ckpt = run.checkpoint("last")
    assert ckpt["model"]["fc.weight"].shape[0] == 3 and ckpt["train_model"]["fc.weight"].shape[0] == 10
    assert run.model()(torch.zeros(1, 1, 8, 8)).shape == (1, 3)
    assert evaluate_run(run, save=False)["top1"] > 0.8
    with pytest.raises(UserError, match="--resume"):
        specialize(digits_run, {"g": ["4", "9", "7"]}, tmp_path, cfg)
    specialize(digits_run, {"g": ["4", "9", "7"]}, tmp_path, cfg, resume=True)  # loads train_model


def test_head_only_epochs_leave_the_backbone_untouched(digits_run, tmp_path):
    from toolkit.runs import new_run_info
    from toolkit.specialize.extract import with_new_head
    from toolkit.train.loop import FitHooks, fit

    gen = Run.open(digits_run)
    bundle = gen.data().restrict([2, 6])
    model = with_new_head(gen.model(), 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = SpecializeConfig(**FAST, head_lr_mult=10.0)
    info = new_run_info("specialize", cfg.model_dump(), bundle, dict(gen.info["arch"], num_classes=2))
    fit(model, bundle, cfg, tmp_path / "hf", info, hooks=FitHooks(head_only_epochs=1))
    after = Run.open(tmp_path / "hf").checkpoint("last")["model"]
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["fc.bias", "fc.weight"]


def test_compare_reports_open_closed_and_each_specialist(chain, tmp_path):
    gen, s1, s2 = chain
    result = specialists_vs_generalist(gen.path, [s1.path, s2.path])
    assert [g["group"] for g in result["groups"]] == ["odd5", "pair"]
    for g, s in zip(result["groups"], (s1, s2), strict=True):
        assert g["generalist_closed"] >= g["generalist_open"]
        spec = g["specialists"][0]
        assert spec["accuracy"] == pytest.approx(evaluate_run(s, save=False)["top1"])
        assert spec["gain_vs_closed"] == pytest.approx(spec["accuracy"] - g["generalist_closed"])
    assert result["groups"][1]["specialists"][0]["descends_from_generalist"]
    js, md = write_comparison(result, tmp_path / "cmp")
    assert js.is_file() and "| odd5 | 5 |" in md.read_text() and to_markdown(result) == md.read_text()
    with pytest.raises(UserError, match="not a specialist"):
        specialists_vs_generalist(gen.path, [gen.path])
    with pytest.raises(UserError, match="generalist run first"):
        specialists_vs_generalist(s1.path, [s2.path])


def test_keep_start_keeps_the_extraction_when_fine_tuning_validates_worse(digits_run, tmp_path, assert_head_slice):
    gen = Run.open(digits_run)
    bad = {**FAST, "lr": 1.0, "bn_convert": False}  # a learning rate that wrecks the model in one epoch
    specialize(digits_run, {"g": ["8", "3"]}, tmp_path / "keep", SpecializeConfig(**bad))
    specialize(digits_run, {"g": ["8", "3"]}, tmp_path / "free", SpecializeConfig(**bad, keep_start=False))
    keep, free = Run.open(tmp_path / "keep" / "g"), Run.open(tmp_path / "free" / "g")
    x = torch.stack([keep.data().dataset("test")[i][0] for i in range(20)])
    assert_head_slice(keep.model(), gen.model(), [8, 3], x)  # best.pt is the untouched extraction
    with torch.no_grad():
        assert not torch.allclose(free.model()(x), gen.model()(x)[:, [8, 3]], atol=1e-3)
    assert keep.checkpoint("best")["epoch"] == 0 and free.checkpoint("best")["epoch"] == 1
