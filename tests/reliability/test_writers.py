"""Every writer of a directory takes its lock (evaluate writes a run's eval files), a reader that publishes (bench)
checks the hashes again before it writes, and a local path handed to scp can never read as HOST:PATH."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from rel_support import assert_untouched, check_error_line, snapshot


def test_evaluate_is_refused_while_another_process_holds_the_run(digits_run, tmp_path, cli):
    from toolkit.io import DirLock

    run = shutil.copytree(digits_run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    before = snapshot(run)
    with DirLock(run):  # another process training (or evaluating) the run
        code, _, err = cli("evaluate", run, "--device", "cpu", "-q")
    check_error_line(code, err, "another edgespec process")
    assert_untouched(before, snapshot(run))
    code, _, err = cli("evaluate", run, "--device", "cpu", "-q")  # once it is free
    assert code == 0, err


def test_bench_refuses_to_publish_rows_of_an_export_that_changed_meanwhile(digits_export, tmp_path, cli, monkeypatch):
    import hashlib

    import benchmarks.recommend as rec

    exp = shutil.copytree(digits_export, tmp_path / "exp")
    report = tmp_path / "rep"
    report.mkdir()
    (report / "report.md").write_text("the earlier report")
    real = rec.recommendations

    def re_export(*a, **k):  # another process re-exports while bench measures
        manifest = json.loads((exp / "manifest.json").read_text())
        entry = manifest["artifacts"][0]
        data = bytearray((exp / entry["path"]).read_bytes())
        data[-1] ^= 1
        (exp / entry["path"]).write_bytes(bytes(data))
        entry["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
        (exp / "manifest.json").write_text(json.dumps(manifest))
        return real(*a, **k)

    monkeypatch.setattr(rec, "recommendations", re_export)
    before = snapshot(report)
    code, _, err = cli("bench", exp, "--report", report, "--devices", "host-cpu", "--runs", "5", "-q")
    check_error_line(code, err, "changed while bench ran")
    assert_untouched(before, snapshot(report))


def test_scp_gets_local_paths_that_cannot_read_as_remote(tmp_path, monkeypatch):
    from toolkit.bundle.remote import Remote

    monkeypatch.chdir(tmp_path)
    seen: list[list[str]] = []
    remote = Remote("user@device")
    monkeypatch.setattr(remote, "_run", lambda argv, what, timeout=120.0: (seen.append(argv),
                                                                           subprocess.CompletedProcess(argv, 0, "",
                                                                                                       ""))[1])
    remote.put(Path("evil:host/b.tar.gz"), "/tmp/x")
    remote.get("/tmp/x/results.json", Path("rep:dir/results.json"))
    put_src, get_dst = seen[0][-2], seen[1][-1]
    assert put_src == str(tmp_path / "evil:host" / "b.tar.gz") and put_src.startswith("/")
    assert get_dst == str(tmp_path / "rep:dir" / "results.json") and get_dst.startswith("/")
