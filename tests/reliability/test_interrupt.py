"""Interruption: SIGKILL at seeded random points of train, specialize, export and bench, then a rerun, ends where an
uninterrupted run ends (CPU, fixed seeds); no half-written file is ever visible under its final name; Ctrl-C and
SIGTERM stop with one line saying how to continue; a second writer to the same directory is refused.

Each chain runs the command, kills it after a random fraction of the uninterrupted run's wall time, checks every
visible file, and repeats with the rerun command (`--resume` where the command has it) before a final rerun.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from rel_support import check_error_line, popen_edgespec, run_edgespec

pytestmark = pytest.mark.slow
SYNTH = "synthetic:groups=2,classes=2,per_class=40"
TRAIN = ["train", "--data", SYNTH, "--epochs", "4", "--batch-size", "32", "--device", "cpu", "--quiet"]


# ---- what "nothing half-written" means, per file type -----------------------------------------------------------

def check_file(path: Path) -> None:
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".tar.gz") else path.suffix
    if suffix == ".json":
        json.loads(path.read_text())
    elif suffix in (".yaml", ".yml"):
        yaml.safe_load(path.read_text())
    elif suffix == ".csv":
        rows = list(csv.reader(path.read_text().splitlines()))
        assert rows and len({len(r) for r in rows}) == 1, f"ragged CSV {path}"
    elif suffix == ".pt":
        torch.load(path, map_location="cpu", weights_only=True)
    elif suffix == ".onnx":
        import onnx

        onnx.checker.check_model(onnx.load(str(path)))
    elif suffix == ".png":
        from PIL import Image

        with Image.open(path) as im:
            im.load()
    elif suffix in (".md", ".html", ".xml"):
        text = path.read_text()
        assert text.strip(), f"empty {path}"
        if suffix == ".xml":
            import xml.etree.ElementTree as ET

            ET.fromstring(text)
    elif suffix == ".tar.gz":
        import tarfile

        with tarfile.open(path) as tar:
            tar.getmembers()


def assert_nothing_half_written(root: Path) -> int:
    """Every file under a final name parses; temporaries are hidden (a leading dot). Returns files checked."""
    checked = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        assert not path.name.endswith(".tmp"), f"temporary file under a visible name: {path}"
        try:
            check_file(path)
        except Exception as exc:  # noqa: BLE001 - any failure to parse is a half-written file
            raise AssertionError(f"half-written {path}: {type(exc).__name__}: {exc}") from None
        checked += 1
    return checked


def timed(*args) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = run_edgespec(*args)
    return proc, time.monotonic() - t0


EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@pytest.fixture(scope="module")
def startup() -> float:
    """Seconds from interpreter start to edgespec's main(): a signal before that meets Python's defaults."""
    proc, seconds = timed_python("import sys, toolkit.cli.main; print('torch' in sys.modules)")
    assert proc.stdout.strip() == "False", "the CLI imports torch before main(): slow start, long Ctrl-C window"
    return seconds


def timed_python(code: str) -> tuple[subprocess.CompletedProcess, float]:
    import sys

    from rel_support import ENV

    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - t0


def test_the_cli_starts_without_importing_torch(startup):
    assert startup < 30


def kill_chain(first: list, rerun: list, out: Path, seconds: float, seed: int, signals: list,
               started=None) -> list[str]:
    """Start `first`, stop it with signals[0] at a random point, rerun `rerun` and stop it with signals[1], ...;
    then let `rerun` finish. SIGINT/SIGTERM must end in one line with the way to continue: they are sent a random
    moment after `started()` says the work is under way (a signal before main() meets Python's defaults)."""
    rng = random.Random(seed)
    notes = []
    for i, sig in enumerate(signals):
        for attempt in range(4):  # the first run must be cut: on a fast moment of a shared host it can finish
            proc = popen_edgespec(*(first if i == 0 else rerun))  # inside the drawn delay, so draw shorter ones
            t0 = time.monotonic()
            shrink = 0.4 ** attempt
            if sig in EXIT and started is not None:
                while proc.poll() is None and not started():
                    time.sleep(0.02)
                delay = rng.uniform(0.0, 0.15) * seconds * shrink
            else:
                delay = rng.uniform(0.25, 0.95) * seconds * shrink
            try:
                proc.wait(timeout=delay)
                notes.append(f"finished before {sig.name}")
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
                notes.append(f"{sig.name} at {time.monotonic() - t0:.1f}s")
            if i > 0 or not notes[-1].startswith("finished") or attempt == 3:
                break
            proc.communicate(timeout=120)
            shutil.rmtree(out, ignore_errors=True)  # edgespec's own output of this test: start the first run again
            notes.pop()
        _, err = proc.communicate(timeout=120)
        try:
            if sig in EXIT and proc.returncode != 0:
                hint = "--resume" if "--resume" in map(str, rerun) else "rerun the same command"
                check_error_line(proc.returncode, err, hint, expect_code=EXIT[sig])
            if out.exists():
                assert_nothing_half_written(out)
        except AssertionError as exc:
            raise AssertionError(f"after {notes}: {exc}") from None
    assert not notes[0].startswith("finished"), f"the first run was never interrupted: {notes}"
    final = run_edgespec(*rerun)
    assert final.returncode == 0, f"rerun after {notes} failed: {final.stderr[-1500:]}"
    assert_nothing_half_written(out)
    return notes


# ---- train -------------------------------------------------------------------------------------------------------

def _history(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())


def assert_same_run(a: Path, b: Path) -> None:
    ha, hb = _history(a), _history(b)
    assert [r["epoch"] for r in ha] == [r["epoch"] for r in hb]
    for ra, rb in zip(ha, hb, strict=True):
        assert ra["val_acc"] == rb["val_acc"]
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=1e-6)
    top1 = [json.loads((r / "eval-test.json").read_text())["top1"] for r in (a, b)]
    assert top1[0] == top1[1]
    wa = torch.load(a / "checkpoints" / "best.pt", weights_only=True)["model"]
    wb = torch.load(b / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=1e-5)
    assert json.loads((b / "run.json").read_text())["status"] == "complete"


def _in_process(*args) -> tuple[int, str]:
    """`edgespec ARGS` in this process (a second writer costs no interpreter start); returns (code, stderr)."""
    import contextlib
    import io

    from toolkit.cli.main import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory):
    """An uninterrupted training in a subprocess; while it runs, a second writer to its directory is refused."""
    out = tmp_path_factory.mktemp("interrupt") / "ref"
    t0 = time.monotonic()
    proc = popen_edgespec(*TRAIN, "--out", out)
    while not (out / "run.json").is_file() and proc.poll() is None:
        time.sleep(0.02)
    second = _in_process(*TRAIN, "--out", out, "--resume") if proc.poll() is None else None
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    return out, time.monotonic() - t0, second


def test_second_process_writing_to_a_run_directory_is_refused(train_reference):
    _, _, second = train_reference
    if second is None or second[0] == 0:
        pytest.skip("the first training finished before the second started")
    check_error_line(*second, "another edgespec process")


def test_train_stopped_at_random_points_resumes_to_the_same_result(train_reference, tmp_path):
    ref, seconds, _ = train_reference
    out = tmp_path / "cut"
    notes = kill_chain([*TRAIN, "--out", out], [*TRAIN, "--out", out, "--resume"], out, seconds, seed=11,
                       signals=[signal.SIGINT, signal.SIGKILL],
                       started=lambda: (out / "checkpoints" / "last.pt").is_file())
    assert_same_run(ref, out)
    print("train:", notes)


# ---- specialize ---------------------------------------------------------------------------------------------------

GROUPS = "g1: [hstripes-nw, hstripes-ne]\ng2: [vstripes-nw, vstripes-ne]\n"


def _specialize_args(parent: Path, groups: Path, out: Path) -> list:
    return ["specialize", parent, "--groups", groups, "--out", out, "--epochs", "2", "--batch-size", "16",
            "--device", "cpu", "--quiet"]


def test_specialize_stopped_at_random_points_resumes_to_the_same_result(train_reference, tmp_path):
    parent, _, _ = train_reference
    groups = tmp_path / "groups.yaml"
    groups.write_text(GROUPS)
    ref, seconds = timed(*_specialize_args(parent, groups, tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "cut"
    args = _specialize_args(parent, groups, out)
    notes = kill_chain(args, [*args, "--resume"], out, seconds, seed=23, signals=[signal.SIGTERM, signal.SIGKILL],
                       started=lambda: (out / "g1" / "run.json").is_file())

    for g in ("g1", "g2"):
        assert_same_run(tmp_path / "ref" / g, out / g)
    print("specialize:", notes)


# ---- export and bench ---------------------------------------------------------------------------------------------

def _export_args(run: Path, out: Path) -> list:
    return ["export", run, "--out", out, "--formats", "onnx,onnx-int8", "--parity-images", "64", "--calib-count",
            "64", "--quiet"]


def _manifest(out: Path) -> dict[str, dict]:
    from exporters.manifest import load_manifest, verify_all

    verify_all(out)  # every listed file matches its hash
    return {a["name"]: a for a in load_manifest(out)["artifacts"]}


@pytest.fixture(scope="module")
def export_reference(train_reference, tmp_path_factory):
    run, _, _ = train_reference
    out = tmp_path_factory.mktemp("interrupt") / "export-ref"
    proc, seconds = timed(*_export_args(run, out))
    assert proc.returncode == 0, proc.stderr
    return out, seconds


def test_export_killed_at_random_points_reruns_to_the_same_artifacts(train_reference, export_reference, tmp_path):
    run, _, _ = train_reference
    ref, seconds = export_reference
    out = tmp_path / "cut"
    notes = kill_chain(_export_args(run, out), _export_args(run, out), out, seconds, seed=37,
                       signals=[signal.SIGTERM, signal.SIGKILL], started=lambda: any(out.glob(".edgespec-work-*")))
    assert not list(out.glob(".edgespec-work-*")), "work directories of killed exports are left behind"
    a, b = _manifest(ref), _manifest(out)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name]["sha256"] == b[name]["sha256"], f"{name} differs from the uninterrupted export"
        assert a[name]["parity"]["accuracy"] == b[name]["parity"]["accuracy"]
    print("export:", notes)


def _bench_args(export: Path, report: Path) -> list:
    return ["bench", export, "--report", report, "--runs", "20", "--warmup", "2", "--time-limit", "0.1",
            "--max-images", "64", "--quiet"]


def _rows(report: Path) -> list[tuple]:
    rows = json.loads((report / "report.json").read_text())["rows"]
    return sorted((r["model"], r["format"], r["device"], r["measurement"], r["accuracy"], r["artifact_sha256"])
                  for r in rows)


def test_bench_killed_at_random_points_reruns_to_the_same_report(export_reference, tmp_path):
    export, _ = export_reference
    ref, seconds = timed(*_bench_args(export, tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "cut"
    notes = kill_chain(_bench_args(export, out), _bench_args(export, out), out, seconds, seed=41,
                       signals=[signal.SIGINT, signal.SIGKILL], started=lambda: (out / ".lock").is_file())
    assert _rows(tmp_path / "ref") == _rows(out)
    print("bench:", notes)


# ---- a second writer to the same directory, for every command that writes one --------------------------------

@pytest.mark.parametrize("command", ["specialize", "export", "bench", "pipeline"])
def test_second_writer_is_refused_while_the_directory_is_locked(command, synthetic_run, tmp_path, cli):
    from toolkit.io import DirLock

    out = tmp_path / "out"
    groups = tmp_path / "groups.yaml"
    groups.write_text("g: [hstripes-nw, hstripes-ne, hstripes-sw]\n")
    args = {
        "specialize": ["specialize", synthetic_run, "--groups", groups, "--group", "g", "--out", out, "--epochs", "1",
                       "--device", "cpu", "--quiet"],
        "export": ["export", synthetic_run, "--out", out, "--formats", "onnx", "--quiet"],
        "bench": ["bench", synthetic_run, "--report", out, "--quiet"],
        "pipeline": ["pipeline", "--out", out, "--quiet"],
    }[command]
    with DirLock(out):  # another process's lock: flock locks belong to the open file, not the process
        before = {p.name for p in out.iterdir()}
        code, _, err = cli(*args)
        check_error_line(code, err, "another edgespec process")
        assert {p.name for p in out.iterdir()} == before


def test_a_run_killed_before_its_run_json_resumes_afresh(tmp_path, cli):
    """A kill between split.json and run.json (the first files a run writes) must not make the directory unusable."""
    out = tmp_path / "early"
    out.mkdir()
    (out / "split.json").write_text("{}")
    (out / "classes.json").write_text("[]")
    (out / ".run.json.x1.edgespec.tmp").write_text("{")
    args = ["train", "--data", "synthetic:groups=2,classes=2,per_class=20", "--epochs", "1", "--device", "cpu",
            "--quiet", "--out", out]
    code, _, err = cli(*args, "--resume")
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    assert json.loads((out / "split.json").read_text())["train"]  # rewritten, not the leftover
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("not ours")
    code, _, err = cli(*args[:-1], tmp_path / "foreign", "--resume")
    check_error_line(code, err, "not empty")


# ---- the end of a finished command ----------------------------------------------------------------------------------

def test_a_sigterm_after_the_command_finished_does_not_kill_it():
    """CI saw exit -15 with no message: SIGTERM landed in the seconds of interpreter teardown after a specialize had
    written everything. The console script ignores SIGTERM once the command is done."""
    proc, _ = timed_python("import os, signal, sys\nfrom toolkit.cli.main import main\n"
                           "code = main(['models'], exiting=True)\nos.kill(os.getpid(), signal.SIGTERM)\n"
                           "print('after SIGTERM', flush=True)\nsys.exit(code)")
    assert proc.returncode == 0, proc.stderr
    assert "smallcnn" in proc.stdout and proc.stdout.rstrip().endswith("after SIGTERM")


@pytest.mark.parametrize(("argv", "code", "out"), [(["models"], 0, "smallcnn"),
                                                    (["train", "--data", "nosuch"], 2, "error: ")])
def test_the_console_script_exits_with_its_code_and_flushed_output_without_teardown(tmp_path, argv, code, out):
    flag = tmp_path / "teardown-ran"
    proc, _ = timed_python(f"import atexit, sys\natexit.register(lambda: open({str(flag)!r}, 'w').close())\n"
                           f"sys.argv = ['edgespec', *{argv!r}]\nfrom toolkit.cli.main import run\nrun()")
    assert proc.returncode == code, proc.stderr
    assert out in (proc.stdout if code == 0 else proc.stderr)
    assert not flag.exists(), "the interpreter's teardown ran (seconds with torch loaded, and a SIGTERM window)"


# ---- compress -----------------------------------------------------------------------------------------------------

def _compress_args(run: Path, out: Path) -> list:
    return ["compress", run, "--out", out, "--macs-ratio", "0.4", "--steps", "2", "--epochs", "2", "--batch-size",
            "16", "--device", "cpu", "--quiet"]


def test_compress_killed_at_random_points_resumes_to_the_same_result(train_reference, tmp_path):
    run, _, _ = train_reference
    ref, seconds = timed(*_compress_args(run, tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "cut"
    args = _compress_args(run, out)
    notes = kill_chain(args, [*args, "--resume"], out, seconds, seed=53, signals=[signal.SIGKILL, signal.SIGKILL])
    ha, hb = _history(tmp_path / "ref"), _history(out)
    assert [(r["step"], r["epoch"], r["macs"], r["val_acc"]) for r in ha] == \
        [(r["step"], r["epoch"], r["macs"], r["val_acc"]) for r in hb]
    wa = torch.load(tmp_path / "ref" / "checkpoints" / "best.pt", weights_only=True)
    wb = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert wa["meta"]["layers"] == wb["meta"]["layers"]
    for k in wa["model"]:
        torch.testing.assert_close(wa["model"][k], wb["model"][k], atol=1e-6, rtol=1e-5)
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    print("compress:", notes)
