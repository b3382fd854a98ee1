"""The timing harness, the FLOP/byte estimate, accuracy against the generalist, and a real bench on digits."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from benchmarks.accuracy import generalist_on_group, logits_of
from benchmarks.estimate import count_onnx, roofline, traffic_bytes
from benchmarks.timing import TimingConfig, make_batch, resolved_against, summarize, time_calls
from toolkit.devices import load_profile


def test_summarize_matches_numpy():
    times = [0.001, 0.002, 0.003, 0.004, 0.010]
    s = summarize(times, batch_size=4)
    ms = np.array(times) * 1e3
    assert s["latency_ms"]["p50"] == pytest.approx(np.percentile(ms, 50))
    assert s["latency_ms"]["p99"] == pytest.approx(np.percentile(ms, 99))
    assert s["latency_ms"]["mean"] == pytest.approx(ms.mean())
    assert s["latency_ms"]["std"] == pytest.approx(ms.std())
    assert s["throughput_ips"] == pytest.approx(4 * 1000 / 3.0)


def test_time_calls_stops_at_count_or_time_limit():
    calls = []
    times = time_calls(lambda: calls.append(1), TimingConfig(warmup=3, warmup_s=0, runs=25, min_runs=5,
                                                             time_limit_s=10))
    assert len(times) == 25 and len(calls) == 28  # warm-up runs are not timed
    t0 = time.perf_counter()
    times = time_calls(lambda: time.sleep(0.01), TimingConfig(warmup=0, runs=10_000, min_runs=3, time_limit_s=0.1))
    assert 3 <= len(times) < 30 and time.perf_counter() - t0 < 1.0
    assert min(times) >= 0.009


def test_warm_up_lasts_its_time_as_well_as_its_count(monkeypatch):
    """A fresh runtime session runs its first tens of milliseconds slow, so warm-up lasts warmup_s too: with a clock
    that advances 1 ms per call, 50 ms of warm-up are 50 untimed calls, not the 3 of `warmup`, and in a paired timing
    both sides warm up in turn."""
    from benchmarks import timing

    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def call(log, name):
        def fn():
            now[0] += 1e-3
            log.append(name)
        return fn

    log: list[str] = []
    times = time_calls(call(log, "a"), TimingConfig(warmup=3, warmup_s=0.05, runs=20, min_runs=5, time_limit_s=10))
    assert len(times) == 20 and len(log) - len(times) == 50
    log.clear()
    time_calls(call(log, "a"), TimingConfig(warmup=80, warmup_s=0.05, runs=20, time_limit_s=10))
    assert len(log) - 20 == 80  # the count still holds when it is the longer of the two
    log.clear()
    timing.time_paired(call(log, "a"), call(log, "b"), TimingConfig(warmup=1, warmup_s=0.04, runs=20,
                                                                    time_limit_s=10), block=10)
    assert log[:40] == ["a", "b"] * 20  # 40 ms of warm-up, alternating, before the first timed block


def test_make_batch_repeats_real_images():
    imgs = np.arange(3 * 2, dtype=np.float32).reshape(3, 1, 1, 2)
    b = make_batch(imgs, 7)
    assert b.shape == (7, 1, 1, 2) and np.array_equal(b[3], imgs[0])


def test_generalist_closed_and_open_set():
    # generalist over 4 classes; the group is generalist classes [2, 0]; labels are positions in the group
    logits = np.array([[1, 0, 5, 9],    # true pos 0 (class 2): closed argmax over [2,0] -> 2 right; open -> 3 wrong
                       [6, 0, 1, 0],    # true pos 1 (class 0): closed right; open right
                       [0, 0, 1, 2]],   # true pos 1 (class 0): closed -> class 2 wrong; open -> 3 wrong
                      dtype=np.float32)
    closed, open_ = generalist_on_group(logits, np.array([0, 1, 1]), [0, 1, 2, 3], [2, 0])
    assert closed == pytest.approx(2 / 3) and open_ == pytest.approx(1 / 3)


class _FixedBatch:
    fixed_batch = 4

    def run(self, x):
        assert len(x) == 4
        return x.reshape(len(x), -1)[:, :3]


def test_logits_pads_a_fixed_batch_model():
    x = np.random.default_rng(0).normal(size=(10, 1, 1, 3)).astype(np.float32)
    out = logits_of(_FixedBatch(), x, 32)
    assert out.shape == (10, 3) and np.allclose(out, x.reshape(10, 3))


# -- on real artifacts -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def export_dir(digits_run, tmp_path_factory):
    """The digits generalist and a 1-epoch specialist on digits 0-2, exported as ONNX fp32."""
    from exporters import export_runs
    from toolkit.runs import Run
    from toolkit.specialize import SpecializeConfig, specialize_group

    root = tmp_path_factory.mktemp("bench")
    spec = root / "low"
    specialize_group(Run.open(digits_run), "low", ["0", "1", "2"], spec, SpecializeConfig(epochs=1, device="cpu"))
    export_runs([digits_run, spec], ["onnx"], root / "export", parity_images=64)
    return root / "export"


@pytest.fixture(scope="module")
def bench_report(export_dir, tmp_path_factory):
    from benchmarks import BenchConfig, bench

    out = tmp_path_factory.mktemp("report")
    cfg = BenchConfig(devices=["host-cpu", "jetson-orin-nano"], formats=["onnx", "tensorrt-fp16"],
                      timing=TimingConfig(warmup=2, runs=30, time_limit_s=0.3))
    return bench(export_dir, out, cfg), out


def test_the_speedup_cell_is_the_ratio_of_the_paired_p50s_shown_beside_it(bench_report):
    from benchmarks.report import TABLE_HEAD

    rep, out = bench_report
    line = next(ln for ln in (out / "report.md").read_text().splitlines()
                if ln.startswith("| low | specialist") and "| onnx |" in ln)
    cells = dict(zip(TABLE_HEAD, (c.strip() for c in line.strip("|").split("|")), strict=True))
    mine, gen = (float(v) for v in cells["paired p50 ms: this / generalist"].split(" / "))
    speedup = float(cells["speedup (paired p50 ratio)"].split("x")[0])
    assert speedup == pytest.approx(gen / mine, rel=0.01)  # 4 significant digits each: within 1%


def test_onnx_flops_match_torch_flop_counter(digits_run, export_dir):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from toolkit.runs import Run

    model = Run.open(digits_run).model().eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 1, 8, 8))
    counted = count_onnx(export_dir / "digits.onnx", 1)
    # torch counts matmul/conv FLOPs only; the graph count adds one per output element of other ops
    assert 2 * counted["macs"] == fc.get_total_flops()
    assert counted["flops"] >= 2 * counted["macs"]
    assert count_onnx(export_dir / "digits.onnx", 8)["macs"] == 8 * counted["macs"]


def test_roofline_is_the_slower_of_compute_and_memory(export_dir):
    peak = load_profile("jetson-orin-nano").peak
    counts = count_onnx(export_dir / "digits.onnx", 1)
    est = roofline(counts, "fp16", peak)
    assert est["latency_ms"] == pytest.approx(max(counts["flops"] / 10000e9, traffic_bytes(counts, "fp16") /
                                                  68e9) * 1e3)
    assert traffic_bytes(counts, "int8") < traffic_bytes(counts, "fp16") < traffic_bytes(counts, "fp32")
    trt = roofline(counts, "fp16", peak, "tensorrt")  # plus the runtime's floor: a call and a launch per kernel
    assert counts["kernels"] >= 3 and trt["overhead_ms"] == pytest.approx(0.02 + 0.002 * counts["kernels"])
    assert trt["latency_ms"] == pytest.approx(est["latency_ms"] + trt["overhead_ms"]) and trt["overhead_source"]


def test_bench_rows_measured_and_estimated(bench_report):
    from benchmarks import validate_report

    rep, out = bench_report
    assert validate_report(rep) == []
    rows = {(r["model"], r["device"], r["format"]): r for r in rep["rows"]}
    assert set(rows) == {("digits", "host-cpu", "onnx"), ("low", "host-cpu", "onnx"),
                         ("digits", "jetson-orin-nano", "tensorrt-fp16"), ("low", "jetson-orin-nano", "tensorrt-fp16")}
    gen, spec = rows[("digits", "host-cpu", "onnx")], rows[("low", "host-cpu", "onnx")]
    assert gen["measurement"] == spec["measurement"] == "measured on host"
    assert gen["latency_ms"]["p50"] > 0 and len(gen["batches"]) == 2  # host-cpu times batch 1 and 32
    paired = spec["speedup_paired"]  # timed side by side with the generalist, not the ratio of two rows' timings
    assert paired["rounds"] >= 2 and paired["calls_per_round"] == 10
    assert paired["specialist_p50_ms"] > 0 and paired["generalist_p50_ms"] > 0
    assert spec["speedup_vs_generalist"] == paired["speedup"] == pytest.approx(
        paired["generalist_p50_ms"] / paired["specialist_p50_ms"])
    assert spec["speedup_resolved"] is paired["resolved"] and "speedup_paired" not in gen
    lo, hi = spec["speedup_ci"]
    assert lo <= spec["speedup_vs_generalist"] <= hi and spec["speedup_ci"] == paired["speedup_ci"]
    aa = rep["aa_noise"]["host-cpu"]["digits/onnx"]  # the generalist against a second session of itself
    assert aa["aa_floor"] == paired["aa_floor"] >= 1.0 and aa["resolved"] is False
    assert paired["resolved"] is resolved_against(paired["speedup_ci"], aa["aa_floor"])
    assert "A/A noise floor" in (out / "report.md").read_text()
    assert spec["size_ratio_vs_generalist"] == pytest.approx(spec["size_bytes"] / gen["size_bytes"])
    assert 0 <= spec["generalist_accuracy_open"] <= spec["generalist_accuracy_closed"] <= 1
    assert spec["images"] < gen["images"]  # the group's test images only
    est = rows[("low", "jetson-orin-nano", "tensorrt-fp16")]
    assert est["measurement"] == "estimate" and est["latency_ms"]["p99"] is None
    assert est["estimate"]["flops"] > 0 and est["size_bytes"] is None
    assert rep["devices"]["jetson-orin-nano"]["peak"]["source"]
    assert all(k in rep["methods"] for k in ("latency", "accuracy", "estimate", "peak memory"))
    md = (out / "report.md").read_text()
    assert "preprocessing" in md.lower() and "estimate" in md


def test_accuracy_matches_pytorch_on_the_same_images(bench_report, digits_run):
    from toolkit.evaluate import evaluate_run
    from toolkit.runs import Run

    rep, _ = bench_report
    gen = next(r for r in rep["rows"] if r["model"] == "digits" and r["device"] == "host-cpu")
    torch_acc = evaluate_run(Run.open(digits_run), save=False)
    assert gen["images"] == torch_acc["images"]
    assert gen["accuracy"] == pytest.approx(torch_acc["top1"], abs=1 / gen["images"] + 1e-9)


def test_report_json_p50_is_the_markdown_p50(bench_report):
    from benchmarks.report import TABLE_HEAD, fmt_ms

    _, out = bench_report
    data = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    for r in data["rows"]:
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {r['model']} | ") and f"| {r['format']} |" in ln
                    and md.rfind("### " + r["device"], 0, md.find(ln)) >= 0
                    and md.rfind("### ", 0, md.find(ln)) == md.rfind("### " + r["device"], 0, md.find(ln)))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[TABLE_HEAD.index("p50 ms")] == fmt_ms(r["latency_ms"]["p50"])


def test_tampered_artifact_is_refused(export_dir, tmp_path):
    import shutil

    from benchmarks import BenchConfig, bench
    from toolkit.errors import IntegrityError

    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    data = bytearray((copy / "low.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "low.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="low.onnx"):
        bench(copy, tmp_path / "report", BenchConfig(timing=TimingConfig(runs=2, warmup=0, min_runs=1)))
    assert not (tmp_path / "report" / "report.json").exists()


def test_pytorch_runtime_profile_measures_the_checkpoint(export_dir, tmp_path):
    import yaml

    from benchmarks import BenchConfig, bench

    profile = {"name": "torch-cpu", "description": "the run's checkpoint through PyTorch", "runtime": "pytorch",
               "formats": ["pytorch"], "threads": 1, "batch_sizes": [4], "match": {"host": True}}
    path = tmp_path / "torch-cpu.yaml"
    path.write_text(yaml.safe_dump(profile))
    rep = bench(export_dir, tmp_path / "r", BenchConfig(devices=[str(path)],
                                                        timing=TimingConfig(warmup=1, runs=5, time_limit_s=0.1)))
    rows = {r["model"]: r for r in rep["rows"]}
    assert set(rows) == {"digits", "low"}
    assert all(r["measurement"] == "measured on host" and r["batch_size"] == 4 for r in rows.values())
    onnx_gen = next(r for r in rep["rows"] if r["model"] == "digits")
    assert onnx_gen["accuracy"] is not None and rows["low"]["generalist_accuracy_closed"] is not None


def test_unknown_formats_and_budgets_are_refused():
    from pydantic import ValidationError

    from benchmarks import BenchConfig

    with pytest.raises(ValidationError, match="unknown format"):
        BenchConfig(formats=["onnx-int4"])
    with pytest.raises(ValidationError, match="unknown budget"):
        BenchConfig(budgets={"p50": 1.0})


def test_serve_status_per_profile(monkeypatch):
    import importlib

    b = importlib.import_module("benchmarks.bench")  # the module, not the `bench` function the package exports
    monkeypatch.setattr(b, "device_tree_model", lambda: "")
    assert b.serve_status(load_profile("host-cpu")) == ("measured on host", "")
    where, why = b.serve_status(load_profile("raspberry-pi-5"))
    assert where is None and "not a raspberry-pi-5" in why
    monkeypatch.setattr(b, "device_tree_model", lambda: "Raspberry Pi 5 Model B Rev 1.0")
    assert b.serve_status(load_profile("raspberry-pi-5")) == ("measured on device", "")
    assert b.serve_status(load_profile("android-mid"))[0] is None  # never the host: measured through a bundle
    import torch

    if not torch.cuda.is_available():
        assert b.serve_status(load_profile("gpu-server")) == (None, "this host has no CUDA GPU")
