"""`edgespec partition/specialize/compare`: the workflow from the command line, and one-line errors."""

from __future__ import annotations

import inspect
import json

import pytest

from toolkit.runs import Run


@pytest.mark.parametrize("text, fragment", [
    ("odd: [1, 3, 5, 7, 91]", "unknown class '91'"),
    ("odd: []", "is empty"),
    ("odd: [1]", "one class"),
    ("odd: [1, 3, 1]", "listed twice"),
    ("odd: [1, 3]\nodd: [5, 7]", "defined twice"),
    ("odd: [1, 3", "not valid YAML"),
    ("- 1\n- 3", "must map group names"),
])
def test_bad_groups_files_are_one_line_exit_2(digits_run, tmp_path, cli, text, fragment):
    path = tmp_path / "groups.yaml"
    path.write_text(text)
    code, _, err = cli("specialize", digits_run, "--groups", path, "--out", tmp_path / "out", "--quiet")
    assert code == 2, err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--init", "slice"], "--init"),
    (["--epochs", "0"], "--epochs"),
    (["--group", "evn"], "did you mean 'even'"),
    (["--init", "head-first", "--epochs", "1"], "--head-epochs"),
    (["--from", "/no/such/run"], "not found"),
])
def test_bad_specialize_options(digits_run, tmp_path, cli, args, fragment):
    path = tmp_path / "groups.yaml"
    path.write_text("even: [0, 2, 4]\nodd: [1, 3, 5]\n")
    code, _, err = cli("specialize", digits_run, "--groups", path, "--out", tmp_path / "out", "--quiet", *args)
    assert code == 2, err
    assert fragment in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_partition_specialize_evaluate_compare(digits_run, tmp_path, cli):
    groups = tmp_path / "groups.yaml"
    code, out, err = cli("partition", digits_run, "--group-size", "5", "--out", groups, "--quiet")
    assert code == 0, err
    text = groups.read_text()
    assert text.startswith("# edgespec groups") and "wrote 2 groups" in out
    names = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert len(names) == 2

    code, out, err = cli("specialize", digits_run, "--groups", groups, "--group", names[1], "--out",
                         tmp_path / "one", "--epochs", "1", "--quiet")
    assert code == 0, err
    run = Run.open(tmp_path / "one")
    assert run.info["group"] == names[1] and len(run.class_ids) == 5

    code, out, err = cli("specialize", digits_run, "--groups", groups, "--out", tmp_path / "all", "--epochs", "1",
                         "--no-bn-convert", "--init", "new-head", "--quiet")
    assert code == 0, err
    for name in names:
        info = Run.open(tmp_path / "all" / name).info
        assert info["init"] == "new-head" and info["bn_convert"] is False
        assert info["config"]["head_lr_mult"] == 10.0  # a fresh head learns faster by default
    assert run.info["config"]["head_lr_mult"] == 1.0 and run.info["config"]["lr"] == 3e-4

    sub = tmp_path / "sub.yaml"
    sub.write_text(f"pair: [{run.classes[2]}, {run.classes[0]}]\n")
    code, out, err = cli("specialize", digits_run, "--groups", sub, "--from", tmp_path / "one", "--out",
                         tmp_path / "chain", "--epochs", "1", "--quiet")
    assert code == 0, err
    pair = Run.open(tmp_path / "chain" / "pair")
    assert pair.class_ids == [run.class_ids[2], run.class_ids[0]]
    assert pair.info["parent"]["lineage"] == [str(digits_run.resolve()), str((tmp_path / "one").resolve())]

    code, out, err = cli("evaluate", tmp_path / "one", "--quiet")
    assert code == 0 and "(specialize, 5 classes)" in out

    code, out, err = cli("compare", digits_run, tmp_path / "one", *(tmp_path / "all" / n for n in names),
                         "--out", tmp_path / "cmp", "--quiet")
    assert code == 0, err
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert sorted(g["group"] for g in result["groups"]) == sorted(names)
    assert sum(len(g["specialists"]) for g in result["groups"]) == 3
    assert "| gain vs closed |" in (tmp_path / "cmp" / "compare.md").read_text()

    code, _, err = cli("specialize", digits_run, "--groups", groups, "--group", names[1], "--out", tmp_path / "one",
                       "--epochs", "1", "--quiet")
    assert code == 2 and "--resume" in err


def test_partition_errors(digits_run, tmp_path, cli):
    code, _, err = cli("partition", digits_run, "--out", tmp_path / "g.yaml", "--quiet")
    assert code == 2 and "--groups K or --group-size N" in err
    code, _, err = cli("partition", digits_run, "--method", "confuse", "--groups", "2", "--out", tmp_path / "g.yaml")
    assert code == 2 and "did you mean 'confusion'" in err
    assert not (tmp_path / "g.yaml").exists()


def test_cli_defaults_are_the_configs():
    from toolkit.cli.specialize import specialize
    from toolkit.specialize import SpecializeConfig

    params = inspect.signature(specialize).parameters
    for name in ("init", "head_lr_mult", "head_epochs", "label_smoothing", "device", "bn_convert", "keep_start"):
        assert params[name].default == SpecializeConfig.model_fields[name].default, name
    for name in ("epochs", "lr", "batch_size", "seed"):  # None: the schema's default (detection runs have their own)
        assert params[name].default is None, name


def test_specialize_needs_a_groups_file_for_a_classifier(digits_run, tmp_path, cli):
    code, _, err = cli("specialize", digits_run, "--out", tmp_path / "out", "--quiet")
    assert code == 2 and "pass --groups FILE" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
