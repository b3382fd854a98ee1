"""Detection specialists resume like detection training: `edgespec detect specialize --resume` and
`edgespec specialize DETECT_RUN --resume` continue an interrupted specialist from its last.pt, skip finished groups,
and refuse (one line, exit 2) when there is nothing to resume, when the run differs (parent, group, options, parent
checkpoint) or is finished; without --resume an interrupted specialist is refused, never overwritten.

One tiny generalist (YOLO11n, 64 px synthetic images, 1 epoch); the specialists are interrupted by an Ultralytics
callback that raises, as in test_detect_runs."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from toolkit.errors import UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason="needs the detect extra (ultralytics)")

INTERRUPTED = "holds an interrupted run; pass --resume or choose another --out"


class Interrupted(Exception):
    """Stands in for a kill."""


def _stop_after_first_epoch(trainer):
    if trainer.epoch == 0:
        raise Interrupted


def _stop_at_start(trainer):
    raise Interrupted


def _files(d: Path) -> dict[str, bytes]:
    """Every file's bytes except Ultralytics' label caches (no run is touched by a refusal)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="module")
def det(ultra, tmp_path_factory, yolo_with) -> dict:
    import torch

    from toolkit.detect import specialize, train
    from toolkit.detect.specialize import specialize_detect
    from toolkit.detect.synth import synth_detect
    from toolkit.detect.train import DetectTrainConfig, train_detect

    root = tmp_path_factory.mktemp("detspec")
    data = synth_detect(root / "data", train=16, val=8)
    gen = root / "gen"
    train_detect(DetectTrainConfig(data=str(data), model="yolo11n.yaml", epochs=1, batch=8, device="cpu"), gen)
    veh = root / "veh"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(specialize, "yolo", yolo_with(specialize.yolo, {"on_fit_epoch_end": _stop_after_first_epoch}))
        with pytest.raises(Interrupted):
            specialize_detect(gen, "vehicles", veh, epochs=2, device="cpu")
    snapshot = root / "veh-interrupted"  # the interrupted state, for the refusal tests
    shutil.copytree(veh, snapshot, symlinks=True)

    # a second generalist (a copy) whose checkpoint changes after a specialist of it was interrupted
    gen_b, signs_b = root / "gen-b", root / "signs-b"
    shutil.copytree(gen, gen_b, symlinks=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(specialize, "yolo", yolo_with(specialize.yolo, {"on_train_start": _stop_at_start}))
        with pytest.raises(Interrupted):
            specialize_detect(gen_b, "signs", signs_b, epochs=1, device="cpu")
    ckpt = torch.load(gen_b / "weights" / "best.pt", weights_only=False)
    torch.save({**ckpt, "date": "changed"}, gen_b / "weights" / "best.pt")
    return {"root": root, "data": data, "gen": gen, "veh": veh, "snapshot": snapshot, "gen_b": gen_b,
            "signs_b": signs_b, "interrupted": json.loads((veh / "run.json").read_text()),
            "rows_interrupted": (veh / "ultra" / "train" / "results.csv").read_text().splitlines(),
            "train": train}


@pytest.fixture(scope="module")
def resumed(det, yolo_with) -> dict:
    """`edgespec detect specialize ... --resume` on the interrupted specialist."""
    from toolkit.cli.main import main

    seen: dict = {}
    train = det["train"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "yolo", yolo_with(train.yolo, {"on_train_start": lambda t: seen.update(
            start_epoch=t.start_epoch)}))
        code = main(["detect", "specialize", str(det["gen"]), "--group", "vehicles", "--out", str(det["veh"]),
                     "--epochs", "2", "--device", "cpu", "--resume", "--quiet"])
    assert code == 0
    return {"seen": seen, "info": json.loads((det["veh"] / "run.json").read_text())}


def test_resume_continues_the_interrupted_specialist(det, resumed):
    from toolkit.io import sha256_file

    assert det["interrupted"]["status"] == "running" and len(det["rows_interrupted"]) == 2  # header + epoch 1
    assert resumed["seen"]["start_epoch"] == 1  # Ultralytics resumed from last.pt, not from the extracted start
    info = resumed["info"]
    assert info["status"] == "complete" and info["metrics"]["epochs"] == 2 and len(info["resumed"]) == 1
    rows = (det["veh"] / "ultra" / "train" / "results.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"] and rows[:2] == det["rows_interrupted"]
    assert info["extraction_check"]["exact"] and info["extraction_check"] == det["interrupted"]["extraction_check"]
    assert info["parent"]["checkpoint_sha256"] == sha256_file(det["gen"] / "weights" / "best.pt")
    assert info["parent"]["lineage"] == [str(det["gen"])] and info["classes"] == ["car", "truck", "bus"]
    assert (det["veh"] / "weights" / "best.pt").is_file() and (det["veh"] / "weights" / "last.pt").is_file()
    assert 0.0 <= info["metrics"]["val"]["map50_95"] <= info["metrics"]["val"]["map50"] <= 1.0


@pytest.mark.parametrize("case", ["no-resume-flag", "other-epochs", "other-group", "other-generalist",
                                  "parent-changed", "nothing", "finished", "finished-no-flag"])
def test_refusals_are_one_line_and_touch_nothing(det, resumed, cli, tmp_path, case):
    out = tmp_path / "run"
    if case in ("no-resume-flag", "other-epochs", "other-group", "other-generalist"):
        shutil.copytree(det["snapshot"], out, symlinks=True)
    run, group, epochs, flags = det["gen"], "vehicles", 2, ["--resume"]
    if case == "no-resume-flag":
        flags = []
    elif case == "other-epochs":
        epochs = 3
    elif case == "other-group":
        group = "signs"
    elif case == "other-generalist":
        run = det["gen_b"]
    elif case == "parent-changed":
        run, group, epochs, out = det["gen_b"], "signs", 1, det["signs_b"]
    elif case in ("finished", "finished-no-flag"):
        out = det["veh"]
        flags = [] if case == "finished-no-flag" else flags
    before = _files(out) if out.exists() else None
    code, _, err = cli("detect", "specialize", run, "--group", group, "--out", out, "--epochs", epochs,
                       "--device", "cpu", "--quiet", *flags)
    want = {"no-resume-flag": INTERRUPTED, "other-epochs": "interrupted specialist with other epochs",
            "other-group": "other group", "other-generalist": "other generalist, parent",
            "parent-changed": "changed since", "nothing": "nothing to resume",
            "finished": "finished run; nothing to resume", "finished-no-flag": "already holds a finished run"}[case]
    assert code == 2 and want in err and len(err.strip().splitlines()) == 1, err
    assert (_files(out) if out.exists() else None) == before


def test_the_generic_command_resumes_a_detection_specialist_too(det, resumed, cli, tmp_path):
    """`edgespec specialize RUN --group G --resume` reaches the same checks (it used to refuse --resume)."""
    out = tmp_path / "run"
    shutil.copytree(det["snapshot"], out, symlinks=True)
    code, _, err = cli("specialize", det["gen"], "--group", "vehicles", "--out", out, "--epochs", 3, "--resume",
                       "--quiet")
    assert code == 2 and "other epochs" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli("specialize", det["gen"], "--group", "vehicles", "--out", out, "--epochs", 2, "--quiet")
    assert code == 2 and INTERRUPTED in err, err


def test_a_foreign_directory_is_refused(det, tmp_path):
    from toolkit.detect.specialize import specialize_detect

    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="holds no edgespec run"):
        specialize_detect(det["gen"], "vehicles", tmp_path, epochs=1, device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_all_groups_resume_skips_the_finished_group(det, cli, tmp_path, monkeypatch, yolo_with):
    from toolkit.detect import specialize

    groups = tmp_path / "groups.yaml"
    groups.write_text("vehicles: [car, truck, bus]\nsigns: [plus, cross, star]\n")
    out = tmp_path / "all"
    args = ["specialize", det["gen"], "--groups", groups, "--out", out, "--epochs", 1, "--device", "cpu", "--quiet"]

    def stop_signs(trainer):
        if "signs" in Path(trainer.save_dir).parts:
            raise Interrupted

    with monkeypatch.context() as mp:
        mp.setattr(specialize, "yolo", yolo_with(specialize.yolo, {"on_train_start": stop_signs}))
        code, _, err = cli(*args)  # the CLI turns the exception into one line
    assert code not in (0, 2) and "Interrupted" in err, err
    veh_info = json.loads((out / "vehicles" / "run.json").read_text())
    assert veh_info["status"] == "complete" and json.loads((out / "signs" / "run.json").read_text())["status"] \
        == "running"
    finished = _files(out / "vehicles")
    code, _, err = cli(*args)  # without --resume: refused at the first group, nothing trained
    assert code == 2 and "already holds a finished run" in err and len(err.strip().splitlines()) == 1, err
    code, text, err = cli(*args, "--resume")
    assert code == 0, err
    assert f"vehicles: {out / 'vehicles'} (finished earlier, skipped)" in text and f"signs: {out / 'signs'} val" in text
    assert _files(out / "vehicles") == finished  # not retrained, not rewritten
    signs = json.loads((out / "signs" / "run.json").read_text())
    assert signs["status"] == "complete" and signs["metrics"]["epochs"] == 1 and len(signs["resumed"]) == 1
    assert signs["classes"] == ["plus", "cross", "star"] and signs["extraction_check"]["exact"]
    code, _, err = cli(*args, "--resume")  # every group finished
    assert code == 2 and "nothing to resume" in err and len(err.strip().splitlines()) == 1, err


def test_resume_of_a_run_killed_before_its_run_json_starts_afresh(det, tmp_path):
    """Killed while deriving its data (a .lock and data/ only): --resume starts the specialist from the extraction."""
    from toolkit.detect.specialize import specialize_detect

    out = tmp_path / "early"
    (out / "data" / "images").mkdir(parents=True)
    (out / ".lock").touch()
    info = specialize_detect(det["gen"], "signs", out, epochs=1, device="cpu", resume=True)
    assert info["status"] == "complete" and info["metrics"]["epochs"] == 1 and "resumed" not in info
    assert info["extraction_check"]["exact"] and info["classes"] == ["plus", "cross", "star"]
