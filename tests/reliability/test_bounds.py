"""Bounded input: YAML bombs, out-of-range profile values, non-finite hyper-parameters, an edited split.json, group
keys that read as the same name, and pipeline sections that would only fail after training. Each is refused in
one `error:` line with exit 2, quickly, before anything is written."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from rel_support import assert_untouched, check_error_line, snapshot

TRAIN = ["train", "--epochs", "1", "--device", "cpu", "--quiet"]


def _bomb(levels: int = 9, top: str = "") -> str:
    """The billion laughs: `levels` anchors, each a list of ten aliases of the one before (10^levels strings)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]")
    return top + "\n".join(lines) + "\n"


def _pipeline_bomb() -> str:
    body = _bomb().replace("\n", "\n  ")
    return f"train:\n  epochs: 1\n  data: digits\nbench:\n  budgets:\n  {body}"


BOMBS = {
    "groups": lambda e: ["specialize", e["run"], "--groups", e["file"](_bomb()), "--out", e["tmp"] / "spec",
                         "--epochs", "1", "--device", "cpu", "-q"],
    "profile": lambda e: ["devices", "show", e["file"](_bomb(top="name: bomb\n"))],
    "bench-profile": lambda e: ["bench", e["run"], "--devices", e["file"](_bomb()), "--report", e["tmp"] / "rep",
                                "-q"],
    "pipeline": lambda e: ["pipeline", e["file"](_pipeline_bomb()), "--out", e["tmp"] / "p", "-q"],
    "recursive-alias": lambda e: ["devices", "show", e["file"]("a: &a [1, *a]\n")],
}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_yaml_bomb_is_refused_quickly(kind, synthetic_run, tmp_path, cli):
    def file(text: str) -> Path:
        p = tmp_path / "bomb.yaml"
        p.write_text(text)
        return p

    argv = BOMBS[kind]({"run": synthetic_run, "tmp": tmp_path, "file": file})
    before = snapshot(tmp_path, synthetic_run)
    t0 = time.perf_counter()
    code, _, err = cli(*argv)
    assert time.perf_counter() - t0 < 20
    line = check_error_line(code, err, "alias")
    assert len(line) < 400 and line.count("lol") <= 1, line  # never the expanded value
    assert_untouched(before, snapshot(tmp_path, synthetic_run))


def test_oversized_yaml_is_refused_without_reading_it(tmp_path, cli):
    big = tmp_path / "big.yaml"
    with big.open("w") as fh:
        fh.write("name: x\ndescription: '")
        fh.write("x" * (5 << 20))
        fh.write("'\n")
    code, _, err = cli("devices", "show", big)
    check_error_line(code, err, "more than a config may be")


def test_bounds_leave_ordinary_yaml_alone():
    """Anchors used the ordinary way (a shared default block) still load."""
    from toolkit.io import parse_yaml

    data = parse_yaml("base: &b {lr: 0.1, epochs: 3}\na: *b\nb: {<<: *b, epochs: 4}\n", "test")
    assert data["a"] == {"lr": 0.1, "epochs": 3} and data["b"] == {"lr": 0.1, "epochs": 4}


# ---- device profiles: bounds in the schema --------------------------------------------------------------------------

def _profile(tmp_path: Path, edit) -> Path:
    from toolkit.devices import devices_dir

    doc = yaml.safe_load((devices_dir() / "jetson-orin-nano.yaml").read_text())
    edit(doc)
    p = tmp_path / "dev.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


PROFILE_CASES = {
    "threads-2^40": (lambda d: d.update(threads=2 ** 40), "threads"),
    "peak-infinite": (lambda d: d["peak"].update(fp32_gflops=float("inf")), "fp32_gflops"),
    "peak-nan": (lambda d: d["peak"].update(int8_gops=float("nan")), "int8_gops"),
    "bandwidth-infinite": (lambda d: d["peak"].update(memory_bandwidth_gbs=float("inf")), "memory_bandwidth_gbs"),
    "peak-absurd": (lambda d: d["peak"].update(fp16_gflops=1e30), "fp16_gflops"),
    "batch-10^9": (lambda d: d.update(batch_sizes=[1, 10 ** 9]), "batch_sizes"),
    "batch-repeated": (lambda d: d.update(batch_sizes=[8, 8]), "batch_sizes"),
    "memory-absurd": (lambda d: d.update(memory_mb=10 ** 15), "memory_mb"),
    "budget-infinite": (lambda d: d["budgets"].update(latency_p50_ms=float("inf")), "latency_p50_ms"),
}


@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_profile_values_out_of_bounds(case, tmp_path, cli):
    edit, says = PROFILE_CASES[case]
    code, _, err = cli("devices", "show", _profile(tmp_path, edit))
    check_error_line(code, err, says)


def test_shipped_profiles_fit_the_bounds():
    from toolkit.devices import list_profiles, load_profile

    assert all(load_profile(n).name == n for n in list_profiles())


# ---- non-finite numbers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--lr", "--weight-decay", "--warmup-epochs"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_hyper_parameters_are_refused(option, value, tmp_path, cli):
    code, _, err = cli(*TRAIN, option, value, "--out", tmp_path / "o")
    check_error_line(code, err, option)
    assert not (tmp_path / "o" / "run.json").exists()


@pytest.mark.parametrize("section", ["train: {lr: .nan}", "specialize: {weight_decay: .inf}",
                                     "compress: {warmup_epochs: .inf}", "bench: {timing: {time_limit_s: .inf}}"])
def test_non_finite_numbers_in_a_pipeline_are_refused(section, tmp_path, cli):
    config = tmp_path / "p.yaml"
    config.write_text(section + "\n")
    code, _, err = cli("pipeline", config, "--out", tmp_path / "p", "-q")
    check_error_line(code, err, "finite")
    assert not (tmp_path / "p").exists()


# ---- pipeline: every section is checked before the first stage ------------------------------------------------------

PIPELINE_LATE = {
    "options-formats-collision": ("export: {formats: [onnx], options: {formats: [ort]}}", "formats"),
    "options-out-dir-collision": ("export: {formats: [onnx], options: {out_dir: /tmp}}", "out_dir"),
    "options-unknown": ("export: {formats: [onnx], options: {opsett: 20}}", "opsett"),
    "options-out-of-range": ("export: {formats: [onnx], options: {opset: 99}}", "opset"),
    "options-unused-by-formats": ("export: {formats: [onnx], options: {calib_count: 8}}", "calib-count"),
    "unknown-format": ("export: {formats: [onnx, tflite]}", "tflite"),
    "unknown-device": ("bench: {devices: [host-cpu, jetson-nanoo]}", "jetson-nanoo"),
}


@pytest.mark.parametrize("case", sorted(PIPELINE_LATE))
def test_pipeline_sections_fail_before_training(case, tmp_path, cli):
    section, says = PIPELINE_LATE[case]
    config = tmp_path / "p.yaml"
    config.write_text("train: {data: 'synthetic:groups=2,classes=2,per_class=20', epochs: 1}\n" + section + "\n")
    out = tmp_path / "runs"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    before = snapshot(out)
    t0 = time.perf_counter()
    code, _, err = cli("pipeline", config, "--out", out, "-q")
    check_error_line(code, err, says)
    assert time.perf_counter() - t0 < 15, "it trained before refusing"
    assert_untouched(before, snapshot(out))
    assert not (out / "generalist").exists()


# ---- split.json: disjoint parts, indices in range ----------------------------------------------------------------

def _overlap(s):
    s["train"].append(s["test"][0])


SPLIT_EDITS = {
    "test-overlaps-train": (_overlap, "both train and test"),
    "val-overlaps-test": (lambda s: s["val"].append(s["test"][-1]), "both val and test"),
    "index-out-of-range": (lambda s: s["test"].append(10 ** 6), "not an index"),
    "index-negative": (lambda s: s["test"].append(-1), "not an index"),
    "index-not-an-integer": (lambda s: s["train"].append("3"), "not an index"),
    "index-a-float": (lambda s: s["train"].append(2.5), "not an index"),
    "index-twice": (lambda s: s["test"].append(s["test"][0]), "twice"),
}


@pytest.mark.parametrize("case", sorted(SPLIT_EDITS))
def test_edited_split_is_refused(case, digits_run, tmp_path, cli):
    edit, says = SPLIT_EDITS[case]
    run = shutil.copytree(digits_run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    split = json.loads((run / "split.json").read_text())
    edit(split)
    (run / "split.json").write_text(json.dumps(split))
    before = snapshot(run)
    classes = ",".join(json.loads((run / "run.json").read_text())["classes"][:2])
    for argv in (["evaluate", run, "--device", "cpu", "-q"],
                 ["export", run, "--formats", "onnx", "--out", tmp_path / "exp", "-q"],
                 ["data", "synth-target", run, "--out", tmp_path / "target", "--classes", classes, "-q"]):
        code, _, err = cli(*argv)
        check_error_line(code, err, says)
    assert_untouched(before, snapshot(run))
    assert not (tmp_path / "exp" / "manifest.json").exists() and not (tmp_path / "target" / "target.json").exists()


# ---- groups: keys that read as the same name ----------------------------------------------------------------------

@pytest.mark.parametrize("text", ['1: [hstripes-nw, hstripes-ne]\n"1": [vstripes-nw, vstripes-ne]\n',
                                  'g: [hstripes-nw, hstripes-ne]\n"g": [vstripes-nw, vstripes-ne]\n',
                                  'yes: [hstripes-nw, hstripes-ne]\nTrue: [vstripes-nw, vstripes-ne]\n'])
def test_group_keys_equal_as_text_are_refused(text, synthetic_run, tmp_path, cli):
    groups = tmp_path / "groups.yaml"
    groups.write_text(text)
    before = snapshot(tmp_path, synthetic_run)
    code, _, err = cli("specialize", synthetic_run, "--groups", groups, "--out", tmp_path / "spec", "--epochs", "1",
                       "--device", "cpu", "-q")
    check_error_line(code, err, "defined twice")
    assert_untouched(before, snapshot(tmp_path, synthetic_run))


def test_check_groups_refuses_keys_equal_as_text():
    """Groups built in code (a pipeline's partition.named, a mapping from elsewhere) meet the same rule."""
    from toolkit.errors import UserError
    from toolkit.specialize.groups import check_groups

    with pytest.raises(UserError, match="defined twice"):
        check_groups({1: ["a", "b"], "1": ["c", "d"]}, ["a", "b", "c", "d"], "groups")
