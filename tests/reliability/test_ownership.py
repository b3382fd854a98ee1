"""Round two of reliability: edgespec removes only what it wrote, never writes over a run's own files, and
publishes a set of reports together or not at all."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from rel_support import assert_untouched, check_error_line, snapshot


def test_pipeline_refuses_a_users_earlier_run_in_its_output(tmp_path, cli):
    out = tmp_path / "runs"
    (out / "generalist" / "checkpoints").mkdir(parents=True)
    (out / "generalist" / "run.json").write_text('{"kind": "train"}')
    (out / "generalist" / "checkpoints" / "best.pt").write_bytes(b"user weights")
    (out / "generalist" / "NOTES.md").write_text("mine")
    before = snapshot(out)
    code, _, err = cli("pipeline", "--out", out, "--quiet")
    check_error_line(code, err, "not written by this pipeline")
    assert_untouched(before, snapshot(out))


def test_pipeline_config_typo_fails_before_any_file_is_touched(tmp_path, cli):
    out = tmp_path / "runs"
    (out / "export").mkdir(parents=True)
    (out / "export" / "DEPLOY-NOTES.md").write_text("mine")
    config = tmp_path / "p.yaml"
    config.write_text("train:\n  epochz: 3\n")
    before = snapshot(out)
    code, _, err = cli("pipeline", config, "--out", out, "--quiet")
    check_error_line(code, err, "epochz")
    assert_untouched(before, snapshot(out))


def test_pipeline_rerun_keeps_files_the_user_added_to_its_outputs(tmp_path, cli):
    out = tmp_path / "runs"
    config = tmp_path / "p.yaml"
    base = ("train: {data: 'synthetic:groups=2,classes=2,per_class=20', epochs: 1}\npartition: {groups: 2}\n"
            "specialize: {epochs: 1}\nbench: {devices: [host-cpu], timing: {runs: 20, time_limit_s: 0.05}}\n")
    config.write_text(base + "export: {formats: [onnx, onnx-fp16]}\n")
    code, _, err = cli("pipeline", config, "--out", out, "--quiet")
    assert code == 0, err
    (out / "export" / "DEPLOY-NOTES.md").write_text("mine")
    (out / "report" / "reviewed.txt").write_text("ok")
    config.write_text(base + "export: {formats: [onnx]}\n")
    code, _, err = cli("pipeline", config, "--out", out, "--quiet")
    assert code == 0, err
    assert (out / "export" / "DEPLOY-NOTES.md").read_text() == "mine"
    assert (out / "report" / "reviewed.txt").read_text() == "ok"
    assert not list((out / "export").glob("*.fp16.onnx")), "the earlier export's own files are replaced"


def test_export_keeps_a_users_dot_files_in_its_output(digits_run, tmp_path, cli):
    out = tmp_path / "export"
    (out / ".export-settings").mkdir(parents=True)
    (out / ".export-settings" / "a.json").write_text("{}")
    (out / ".draft.tmp").write_text("draft")
    (out / ".model.onnx.x1.edgespec.tmp").write_text("a killed export's temporary")
    code, _, err = cli("export", digits_run, "--formats", "onnx", "--out", out, "--quiet")
    assert code == 0, err
    assert (out / ".export-settings" / "a.json").read_text() == "{}"
    assert (out / ".draft.tmp").read_text() == "draft"
    assert not (out / ".model.onnx.x1.edgespec.tmp").exists()


@pytest.mark.parametrize("target", ["run.json", "checkpoints/best.pt", "split.json"])
def test_partition_never_writes_over_a_runs_own_files(digits_run, cli, target):
    before = snapshot(digits_run)
    code, _, err = cli("partition", digits_run, "--out", Path(digits_run) / target, "--groups", "2")
    check_error_line(code, err, "inside the run")
    assert_untouched(before, snapshot(digits_run))


def test_reports_are_published_together_or_not_at_all(tmp_path, monkeypatch):
    from toolkit import io as tio

    out = tmp_path / "report"
    out.mkdir()
    old = {n: f"old {n}" for n in ("report.json", "report.md", "report.html", "junit.xml")}
    for n, text in old.items():
        (out / n).write_text(text)
    real_fdopen, calls = os.fdopen, []

    def full_disk(fd, mode="r", *a, **k):
        calls.append(fd)
        if len(calls) == 3:  # the third file of the set does not fit
            os.close(fd)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fdopen(fd, mode, *a, **k)

    monkeypatch.setattr(tio.os, "fdopen", full_disk)
    with pytest.raises(OSError):
        tio.publish_together({out / n: f"new {n}" for n in old})
    assert {p.name: p.read_text() for p in out.iterdir()} == old  # the old set, whole, and no temporaries
    monkeypatch.setattr(tio.os, "fdopen", real_fdopen)
    tio.publish_together({out / n: f"new {n}" for n in old})
    assert {p.name: p.read_text() for p in out.iterdir()} == {n: f"new {n}" for n in old}
