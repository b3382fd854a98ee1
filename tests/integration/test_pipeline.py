"""`edgespec pipeline`: every stage once, then skipped when unchanged; a changed section reruns what depends on it."""

from __future__ import annotations

import json

import pytest
import yaml

from toolkit.errors import UserError
from toolkit.pipeline import DEFAULT_CONFIG, load_config, run_pipeline

TINY = {
    "train": {"data": "digits", "epochs": 2, "device": "cpu"},
    "partition": {"method": "random", "groups": 2, "limit": 1},
    "specialize": {"epochs": 1, "device": "cpu"},
    "compress": {"epochs": 1, "device": "cpu"},
    "export": {"formats": ["onnx"], "options": {"parity_images": 64}},
    "bench": {"devices": ["host-cpu", "jetson-orin-nano"], "formats": ["onnx", "tensorrt-fp16"],
              "timing": {"warmup": 2, "runs": 20, "time_limit_s": 0.2}},
}


def _run(cfg: dict, tmp_path, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    events: list[tuple[str, str]] = []
    result = run_pipeline(path, tmp_path / "runs", on_stage=lambda s, status, _: events.append((s, status)))
    return result, dict(events)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    return tmp, *_run(TINY, tmp)


def test_all_stages_run_and_write_the_reports(first):
    tmp, result, events = first
    assert events == {s: "done" for s in ("train", "partition", "specialize", "compress", "export", "bench")}
    out = tmp / "runs"
    for name in ("report.json", "report.md", "report.html", "junit.xml"):
        assert (out / "report" / name).is_file()
    rows = result["report"]["rows"]
    specs = [r for r in rows if r["role"] == "specialist"]
    assert {r["device"] for r in specs} == {"host-cpu", "jetson-orin-nano"}  # one group (limit 1), two devices
    host = next(r for r in specs if r["device"] == "host-cpu")
    assert host["measurement"] == "measured on host" and host["speedup_vs_generalist"] > 0
    assert host["generalist_accuracy_closed"] is not None
    assert next(r for r in specs if r["device"] == "jetson-orin-nano")["measurement"] == "estimate"
    md = (out / "report" / "report.md").read_text()
    assert "jetson-orin-nano — estimate" in md and "host-cpu — measured on host" in md


def test_unchanged_stages_are_skipped(first):
    tmp, _, _ = first
    before = (tmp / "runs" / "report" / "report.json").read_bytes()
    _, events = _run(TINY, tmp)
    assert set(events.values()) == {"unchanged, skipped"}
    assert (tmp / "runs" / "report" / "report.json").read_bytes() == before


def test_a_changed_section_reruns_it_and_what_depends_on_it(first):
    tmp, _, _ = first
    changed = json.loads(json.dumps(TINY))
    changed["bench"]["timing"]["runs"] = 15
    _, events = _run(changed, tmp)
    assert events["train"] == events["export"] == "unchanged, skipped" and events["bench"] == "done"
    changed["specialize"]["lr"] = 5e-4
    _, events = _run(changed, tmp)
    assert events["partition"] == "unchanged, skipped"
    assert events["specialize"] == events["export"] == events["bench"] == "done"
    state = json.loads((tmp / "runs" / "pipeline.json").read_text())
    assert all(state["stages"][s]["status"] == "complete" for s in state["stages"])


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 2}\nbenchmark: {}\n")
    with pytest.raises(UserError, match="unknown key 'benchmark'"):
        load_config(bad)
    bad.write_text("train: {epochs: none}\n")
    with pytest.raises(UserError, match="train.epochs"):
        load_config(bad)
    bad.write_text("bench: {devices: [host-cpu], timing: {runz: 3}}\n")
    with pytest.raises(UserError, match="bench"):
        load_config(bad)
    cfg, where = load_config(None)
    assert where == "the embedded default" and cfg.train.data == "digits"
    assert yaml.safe_load(DEFAULT_CONFIG)["export"]["formats"] == ["onnx", "onnx-fp16", "onnx-int8", "ort"]
