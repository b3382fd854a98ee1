"""Recommendations: the fastest artifact of a group's lineage within the accuracy drop, against the generalist fp32."""

from __future__ import annotations

import pytest

from benchmarks.recommend import recommendations, recommendations_markdown


def _row(model, role, fmt, precision, p50, acc=None, closed=None, paired=None, group="g"):
    return {"model": model, "role": role, "group": None if role == "generalist" else group, "format": fmt,
            "precision": precision, "device": "host-cpu", "measurement": "measured on host", "batch_size": 1,
            "latency_ms": {"p50": p50}, "accuracy": acc, "generalist_accuracy_closed": closed, "macs": 10,
            "params": 5, **({"speedup_paired": {"speedup": paired}} if paired else {})}


def test_the_fastest_artifact_within_the_drop_is_recommended_with_its_speedup_over_fp32():
    rows = [_row("gen", "generalist", "onnx", "fp32", 1.0, acc=0.9),
            _row("gen", "generalist", "onnx-int8", "int8", 0.8, acc=0.9),
            _row("spec", "specialist", "onnx", "fp32", 1.0, acc=0.95, closed=0.95, paired=1.0),
            _row("spec-c", "specialist", "onnx", "fp32", 0.4, acc=0.945, closed=0.95, paired=2.5),
            _row("spec-c", "specialist", "onnx-int8", "int8", 0.1, acc=0.90, closed=0.95, paired=8.0)]
    parents = {"gen": "gen", "spec": "gen", "spec-c": "gen"}
    (rec,) = recommendations(rows, parents, 0.01)
    assert (rec["model"], rec["format"]) == ("spec-c", "onnx")  # int8 copy is faster but 5 pt below
    assert rec["speedup_vs_generalist_fp32"] == pytest.approx(2.5)
    assert rec["accuracy_change"] == pytest.approx(-0.005)
    (loose,) = recommendations(rows, parents, 0.06)
    assert (loose["model"], loose["format"]) == ("spec-c", "onnx-int8")
    assert loose["speedup_vs_generalist_fp32"] == pytest.approx(8.0 * 1.0 / 0.8)  # paired x the generalist's ratio
    assert "spec-c" in "\n".join(recommendations_markdown([rec]))


def test_no_qualifying_artifact_says_why():
    rows = [_row("gen", "generalist", "onnx", "fp32", 1.0, acc=0.9),
            _row("spec-c", "specialist", "onnx", "fp32", 0.4, acc=0.80, closed=0.95, paired=2.5)]
    rows[0]["latency_ms"]["p50"] = 1.0
    (rec,) = recommendations(rows, {"gen": "gen", "spec-c": "gen"}, 0.01)
    # the generalist itself qualifies at its closed-set accuracy
    assert rec["model"] == "gen" and rec["speedup_vs_generalist_fp32"] == pytest.approx(1.0)
    (none,) = recommendations([rows[1]], {"spec-c": "gen"}, 0.01)
    assert none["model"] is None and "no generalist" in none["reason"]


def test_a_speedup_within_the_noise_floor_never_wins_the_recommendation():
    def paired(spec_p50, gen_p50, resolved):
        return {"speedup": gen_p50 / spec_p50, "specialist_p50_ms": spec_p50, "generalist_p50_ms": gen_p50,
                "resolved": resolved}

    rows = [_row("gen", "generalist", "onnx", "fp32", 1.0, acc=0.9),
            _row("spec", "specialist", "onnx", "fp32", 0.7, acc=0.95, closed=0.95),  # same size, 1.4x by noise
            _row("spec-c", "specialist", "onnx", "fp32", 0.8, acc=0.95, closed=0.95)]  # pruned, 1.25x for real
    rows[1]["speedup_paired"] = paired(0.7, 0.98, resolved=False)
    rows[2]["speedup_paired"] = paired(0.8, 1.0, resolved=True)
    (rec,) = recommendations(rows, {"gen": "gen", "spec": "gen", "spec-c": "gen"}, 0.01)
    assert rec["model"] == "spec-c" and rec["speedup_resolved"] is True
    assert rec["speedup_vs_generalist_fp32"] == pytest.approx(rec["generalist_fp32_p50_ms"] / rec["p50_ms"])
    rows[2]["speedup_paired"]["resolved"] = False  # neither clears the floor: no timing evidence, first of equals
    (rec,) = recommendations(rows, {"gen": "gen", "spec": "gen", "spec-c": "gen"}, 0.01)
    assert "~" in "\n".join(recommendations_markdown([rec])) and rec["speedup_resolved"] is False
