"""A property: any sequence of edgespec commands whose --out directories overlap (the same folder, one inside
another, a folder that already holds another command's output) never removes or changes a file edgespec did not
create. Kept cheap: a handful of examples of tiny commands (partition, data synth-detect, bench --import)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

#: The user's files, placed where the commands' outputs go: beside them, inside a dataset folder, hidden.
USER_FILES = {"a/notes.txt": "mine", "a/images/train/cat.png": "a photo", "a/b/.draft.tmp": "draft",
              "a/b/report-notes.md": "review", "b/keep.yaml": "k: 1", "a/labels/README": "how I label"}
DIRS = ["a", "a/b", "b", "a/images"]


def _results(path: Path) -> Path:
    from benchmarks.schema import Measurement, empty_row
    from toolkit.bundle.merge import RESULTS_SCHEMA

    row = empty_row("m", "generalist", None, "onnx", "fp32", "host-cpu", Measurement.DEVICE, 1)
    row.update(accuracy=0.5, latency_ms={"p50": 1.0, "p90": 1.0, "p99": 1.0, "mean": 1.0, "std": 0.0})
    path.write_text(json.dumps({"schema": RESULTS_SCHEMA, "device": "host-cpu", "measured": "2026-01-01",
                                "rows": [row]}))
    return path


def _command(kind: str, out: Path, run: Path, results: Path) -> list[str]:
    return {
        "partition": ["partition", run, "--out", out / "groups.yaml", "--groups", "2", "--method", "random", "-q"],
        "synth": ["data", "synth-detect", "--out", out, "--train", "10", "--val", "5", "--size", "32", "-q"],
        "synth-overwrite": ["data", "synth-detect", "--out", out, "--train", "10", "--val", "5", "--size", "32",
                            "--overwrite", "-q"],
        "import": ["bench", "--import", results, "--report", out, "-q"],
    }[kind]


def _digest(root: Path) -> dict[str, str]:
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() if (root / rel).is_file() else "MISSING"
            for rel in USER_FILES}


STEPS = st.lists(st.tuples(st.sampled_from(["partition", "synth", "synth-overwrite", "import"]),
                           st.sampled_from(DIRS)), min_size=2, max_size=4)


@pytest.fixture(scope="module")
def run(synthetic_run) -> Path:
    return synthetic_run


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS)
@example(steps=[("import", "a"), ("synth-overwrite", "a")])  # --overwrite once removed images/ whole
@example(steps=[("synth", "a/b"), ("partition", "a/b"), ("synth-overwrite", "a/b"), ("synth", "a")])
def test_overlapping_outputs_never_remove_a_users_file(steps, run):
    from toolkit.cli.main import main

    root = Path(tempfile.mkdtemp(prefix="never-removes-"))
    try:
        for rel, text in USER_FILES.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        expected = _digest(root)
        results = _results(root / "results.json")
        for kind, rel in steps:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                code = main([str(a) for a in _command(kind, root / rel, run, results)])
            assert code in (0, 2), (kind, rel, err.getvalue())  # done, or refused as bad input; never a crash
            assert "Traceback" not in err.getvalue()
            assert _digest(root) == expected, f"after {kind} --out {rel}: {err.getvalue()}"
    finally:
        shutil.rmtree(root, ignore_errors=True)
