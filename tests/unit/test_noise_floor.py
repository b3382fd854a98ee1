"""One speedup per row, from the paired timing, with a 95% interval, judged against an A/A noise floor: a call
timed against itself comes out unresolved, a 2x-slower call resolved, and the interval brackets the p50 ratio."""

from __future__ import annotations

import time

import pytest

from benchmarks.timing import TimingConfig, noise_floor, ratio_ci, resolved_against, time_paired

CFG = TimingConfig(warmup=1, runs=60, time_limit_s=5)


def _work(ms: float):
    return lambda: time.sleep(ms / 1e3)


@pytest.fixture(scope="module")
def floor():
    aa = time_paired(_work(1.0), _work(1.0), CFG, block=5)
    assert aa["ratio_ci"][0] <= aa["ratio"] <= aa["ratio_ci"][1]
    return noise_floor(aa["ratio_ci"])


def test_an_a_a_pair_is_unresolved_against_the_floor(floor):
    again = time_paired(_work(1.0), _work(1.0), CFG, block=5)  # an independent A/A timing
    assert 1.0 <= floor < 1.5
    assert resolved_against(again["ratio_ci"], floor) is False


def test_a_2x_slower_call_is_resolved_and_the_interval_brackets_the_p50_ratio(floor):
    res = time_paired(_work(1.0), _work(2.0), CFG, block=5)
    lo, hi = res["ratio_ci"]
    assert lo <= res["ratio"] <= hi and lo > floor
    assert res["ratio"] == pytest.approx(res["p50_b_ms"] / res["p50_a_ms"], rel=0.01)
    assert resolved_against(res["ratio_ci"], floor) is True
    assert resolved_against([1 / hi, 1 / lo], floor) is True  # a clear speed-up the other way, too


def test_the_interval_is_seeded_and_widens_with_spread():
    steady = [[1.0, 1.0]] * 6
    b_steady = [[1.1, 1.1]] * 6
    assert ratio_ci(steady, b_steady, 1.1) == pytest.approx([1.1, 1.1])
    noisy = [[1.0], [1.3], [0.8], [1.1], [0.9], [1.2]]
    ci = ratio_ci(steady, noisy, 1.05)
    assert ci == ratio_ci(steady, noisy, 1.05) and ci[0] < 1.05 < ci[1]
    assert noise_floor([0.95, 1.02]) == pytest.approx(1 / 0.95) and noise_floor([1.01, 1.02]) == 1.02
