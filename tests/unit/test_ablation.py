"""benchmarks/scripts/ablation.py: the bookkeeping that decides what the specialization table says; one tiny run."""

from __future__ import annotations

import json
import math

import pytest


def _load_script(name: str):
    """A study script of benchmarks/scripts/ (not a package module: scripts are not shipped)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"edgespec_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ablation = _load_script("ablation")


def test_random_groups_match_semantic_sizes_and_partition_the_classes():
    classes = [f"c{i}" for i in range(12)]
    semantic = {"a": classes[:5], "b": classes[5:9], "c": classes[9:]}
    groups = ablation.random_groups(semantic, classes, seed=0)
    assert [len(g) for g in groups.values()] == [5, 4, 3]
    flat = [c for g in groups.values() for c in g]
    assert sorted(flat) == sorted(classes)
    assert groups == ablation.random_groups(semantic, classes, seed=0)
    assert groups != ablation.random_groups(semantic, classes, seed=1)


def test_pooled_weights_groups_by_their_images():
    assert ablation.pooled([(10, 1.0), (30, 0.5)]) == pytest.approx(0.625)
    assert math.isnan(ablation.pooled([]))


def test_synthetic_specs_with_options_in_any_order_are_the_same_data():
    assert ablation._canonical("synthetic:noise=1.0,groups=8") == ablation._canonical("synthetic:groups=8,noise=1.0")
    assert ablation._canonical("synthetic:noise=1.0") != ablation._canonical("synthetic:noise=2.0")
    assert ablation._canonical("digits") == "digits"


def _seed(seed: int, closed: float, spec: float, control: float) -> dict:
    acc = {"generalist open (semantic)": closed - 0.02, "generalist closed (semantic)": closed,
           "generalist open (random)": 0.9, "generalist closed (random)": 0.95}
    acc.update({name: (control if kind == "all" else spec) for name, kind, _ in ablation.METHODS})
    return {"seed": seed, "accuracy": acc, "generalist_fit": {"train": 0.8, "test": 0.78},
            "semantic_is_true_grouping": seed == 0, "steps": {n: 40 for n, _, _ in ablation.METHODS},
            "kept_start": {n: 0.5 for n, _, _ in ablation.METHODS}}


def test_summary_gains_are_against_the_closed_set_generalist_of_the_same_seed():
    results = {"synthetic": [_seed(0, 0.80, 0.83, 0.81), _seed(1, 0.70, 0.72, 0.71)]}
    rows, summary = ablation.summarize(results)
    s = summary["synthetic"]
    assert s["extract + BN conversion"]["gain_mean"] == pytest.approx(2.5)  # (3 + 2) / 2 points
    assert s["generalist +ft (control)"]["gain_mean"] == pytest.approx(1.0)
    assert s["extract + BN, random groups"]["gain_mean"] == pytest.approx((0.83 - 0.95 + 0.72 - 0.95) / 2 * 100)
    assert s["_true_groups"] == 1
    text = ablation.table(rows, summary, 2, "smallcnn-w4")
    control = next(line for line in text.splitlines() if line.startswith("| generalist +ft (control)"))
    assert "+1.00" in control and "40, 0.50" in control
    closed = next(line for line in text.splitlines() if line.startswith("| generalist closed (semantic)"))
    assert "40," not in closed  # no steps for a model that was not fine-tuned
    assert "train 80.00" in text and "true groups in 1/2 seeds" in text


def test_unknown_model_is_refused_before_any_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        ablation.main(["--model", "nosuchnet", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "smallcnn-w4" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_tiny_run_prints_the_control_and_caches_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ablation, "METHODS", list(ablation.METHODS))
    monkeypatch.setattr(ablation, "DATA", dict(ablation.DATA))
    methods = ["generalist +ft (control)", "extract + BN conversion"]
    argv = ["--data", "digits", "--seeds", "0", "--model", "smallcnn-w4", "--gen-epochs", "1", "--epochs", "1",
            "--control-epochs", "2", "--out", str(tmp_path), "--methods", *methods]
    assert ablation.main(argv) == 0
    out = capsys.readouterr().out
    assert "| generalist +ft (control) |" in out and "| extract + BN conversion |" in out
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["model"] == "smallcnn-w4" and saved["control_epochs"] == 2 and saved["generalist_epochs"] == 1
    run = saved["runs"]["digits"][0]
    # the control sees every class for 2 epochs, each specialist one group for 1 epoch
    assert run["steps"]["generalist +ft (control)"] > 2 * run["steps"]["extract + BN conversion"]
    assert 0 <= run["generalist_fit"]["train"] <= 1
    assert (tmp_path / "digits" / "smallcnn-w4-e1" / "seed0" / "generalist" / "run.json").is_file()
