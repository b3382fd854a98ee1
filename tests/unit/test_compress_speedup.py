"""`--target-speedup`: the search prunes until the injected measure says the model is S times faster, records what it
tried, and a speedup no candidate reaches is one UserError saying what was reached (nothing written). The host
measure (benchmarks/speedup.py) times two ONNX fp32 exports side by side; profiles it cannot serve are refused."""

from __future__ import annotations

import json

import pytest

from toolkit.errors import UserError


def _by_macs(cap: float = 100.0, power: float = 0.7):
    """A deterministic stand-in for timing: speedup = (MACs ratio) ** -power, at most `cap`."""
    from toolkit.compress.prune import count

    calls = []

    def measure(parent, pruned, chw):
        s = min(cap, (count(parent, chw)[0] / count(pruned, chw)[0]) ** power)
        calls.append(s)
        return {"speedup": s, "p50_parent_ms": 1.0, "p50_pruned_ms": 1.0 / s, "device": "fake",
                "measurement": "a stand-in"}

    measure.calls = calls
    return measure


def _cfg(**kw):
    from toolkit.compress import CompressConfig

    return CompressConfig(epochs=1, importance="group-norm", distill=False, device="cpu", **kw)


def test_target_speedup_searches_until_the_measure_is_reached(synthetic_run, tmp_path):
    from toolkit.compress import compress_run

    measure = _by_macs()
    res = compress_run(synthetic_run, tmp_path / "c", _cfg(target_speedup=1.6), measure=measure)
    c = res["compression"]
    assert c["target"] == "speedup" and c["measured_speedup"] >= 1.6 and c["speedup_device"] == "fake"
    search = c["speedup_search"]
    assert search["measured"]["speedup"] >= 1.6 and all(t["speedup"] < 1.6 for t in search["tried"][:-1])
    assert c["macs_ratio"] == pytest.approx(search["macs_ratio"], abs=0.05)  # the compression pruned to that ratio
    info = json.loads((tmp_path / "c" / "run.json").read_text())
    assert info["config"]["target_speedup"] == 1.6 and info["config"]["macs_ratio"] is None  # what the user asked
    assert info["compression"]["measured_speedup"] == c["measured_speedup"]


def test_an_unreachable_speedup_says_what_was_reached(synthetic_run, tmp_path, monkeypatch):
    from toolkit.compress import compress_run

    monkeypatch.setattr("toolkit.compress.target.MAX_TRIES", 2)  # each candidate is a pruning: keep the test short
    reached = r"--target-speedup 20 not reached on fake: .* measured 2\.50x .*2 candidates timed"
    with pytest.raises(UserError, match=reached):
        compress_run(synthetic_run, tmp_path / "c", _cfg(target_speedup=20), measure=_by_macs(cap=2.5))
    assert not (tmp_path / "c").exists()


def test_target_speedup_needs_a_measure_and_excludes_ratios(synthetic_run, tmp_path):
    from toolkit.compress import compress

    with pytest.raises(UserError, match="needs a way to time models"):
        compress([synthetic_run], tmp_path / "c", _cfg(target_speedup=2))
    with pytest.raises(ValueError, match="not both"):
        _cfg(target_speedup=2, macs_ratio=0.5)


@pytest.mark.parametrize("args, fragment", [
    (["--target-speedup", "2", "--speedup-device", "jetson-orin-nano"], "cannot be measured here"),
    (["--speedup-device", "host-cpu"], "goes with --target-speedup"),
    (["--target-speedup", "0.5"], "--target-speedup"),
    (["--target-speedup", "2", "--macs-ratio", "0.5"], "not both"),
])
def test_bad_speedup_options_are_one_line_exit_2(cli, synthetic_run, tmp_path, args, fragment):
    code, _, err = cli("compress", synthetic_run, "--out", tmp_path / "c", *args, "--quiet")
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_host_measure_times_two_exports_side_by_side():
    import torch
    from torch import nn

    from benchmarks.speedup import paired_speedup
    from benchmarks.timing import TimingConfig

    def net(width: int) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4)).eval()

    measure = paired_speedup("host-cpu", TimingConfig(warmup=2, runs=60, min_runs=20, time_limit_s=0.5))
    m = measure(net(96), net(8), (3, 32, 32))
    assert m["device"] == "host-cpu" and m["rounds"] >= 2 and "measured on host" in m["measurement"]
    assert m["speedup"] == pytest.approx(m["p50_parent_ms"] / m["p50_pruned_ms"])
    assert m["speedup"] > 1.5  # ~100x fewer MACs in the second conv: faster even on a busy host
