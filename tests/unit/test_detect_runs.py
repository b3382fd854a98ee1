"""Detection runs: --resume after an interruption, evaluate (mAP50-95, mAP50, per-class AP), and nothing written
outside the run directories (source dataset, working directory, HOME).

One tiny generalist (YOLO11n, 64 px synthetic images, 2 epochs) is interrupted after its first epoch, resumed, then
specialized (1 epoch); everything runs with HOME and the working directory set to empty temporary folders."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from toolkit.errors import UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason="needs the detect extra (ultralytics)")


class Interrupted(Exception):
    """Stands in for a kill after the first epoch was saved."""


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in root.rglob("*")}


def _cfg(data: Path, **kw):
    from toolkit.detect.train import DetectTrainConfig

    return DetectTrainConfig(**{"data": str(data), "model": "yolo11n.yaml", "epochs": 2, "batch": 8, "device": "cpu",
                                **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, yolo_with) -> dict:
    from toolkit.detect import train
    from toolkit.detect.specialize import specialize_detect
    from toolkit.detect.synth import synth_detect
    from toolkit.detect.train import train_detect

    root = tmp_path_factory.mktemp("detruns")
    home, cwd = root / "home", root / "cwd"
    home.mkdir()
    cwd.mkdir()
    data = synth_detect(root / "data", train=16, val=8)
    other = synth_detect(root / "other", train=16, val=8, seed=1)
    before = _snapshot(data.parent)
    gen = root / "gen"
    seen: dict = {}

    def stop_after_first(trainer):
        if trainer.epoch == 0:
            raise Interrupted

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.chdir(cwd)
        mp.setattr(train, "yolo", yolo_with(train.yolo, {"on_fit_epoch_end": stop_after_first}))
        with pytest.raises(Interrupted):
            train_detect(_cfg(data), gen)
        interrupted = json.loads((gen / "run.json").read_text())
        results = gen / "ultra" / "train" / "results.csv"
        rows_interrupted = results.read_text().splitlines()
        # killed after epoch 2 was logged but before its last.pt was saved: resume trains epoch 2 again
        results.write_text(results.read_text() + "2," + rows_interrupted[1].split(",", 1)[1] + "\n")
        mp.setattr(train, "yolo", yolo_with(train.yolo, {"on_train_start": lambda t: seen.update(
            start_epoch=t.start_epoch)}))
        info = train_detect(_cfg(data), gen, resume=True)
        spec = specialize_detect(gen, "vehicles", root / "veh", epochs=1)
        (root / "groups.yaml").write_text("vehicles: [car, truck, bus]\ncars: [car]\n")
        cars = specialize_detect(gen, "cars", root / "cars", groups_file=root / "groups.yaml", source=root / "veh",
                                 epochs=1)
        mp.undo()
    return {"root": root, "home": home, "cwd": cwd, "data": data, "other": other, "before": before, "gen": gen,
            "info": info, "interrupted": interrupted, "rows_interrupted": rows_interrupted, "seen": seen,
            "spec": spec, "veh": root / "veh", "cars": root / "cars",
            "cars_info": cars}


def test_resume_continues_the_interrupted_training(runs):
    assert runs["interrupted"]["status"] == "running"
    assert len(runs["rows_interrupted"]) == 2  # header + epoch 1
    assert runs["seen"]["start_epoch"] == 1  # Ultralytics resumed from last.pt, not from scratch
    info = runs["info"]
    assert info["status"] == "complete" and info["metrics"]["epochs"] == 2 and len(info["resumed"]) == 1
    rows = (runs["gen"] / "ultra" / "train" / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[:2] == runs["rows_interrupted"]  # epoch 1 kept, epoch 2 once
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"] and rows[2] != "2," + rows[1].split(",", 1)[1]
    assert (runs["gen"] / "weights" / "best.pt").is_file() and (runs["gen"] / "weights" / "last.pt").is_file()
    assert 0.0 <= info["metrics"]["val"]["map50_95"] <= info["metrics"]["val"]["map50"] <= 1.0


def test_nothing_written_to_the_source_dataset_cwd_or_home(runs):
    assert _snapshot(runs["data"].parent) == runs["before"]
    assert not list(runs["data"].parent.glob("labels/*.cache"))
    assert list(runs["cwd"].iterdir()) == [] and list(runs["home"].iterdir()) == []
    # Ultralytics read the run's view: its label caches are inside the runs
    assert (runs["gen"] / "data" / "labels" / "train.cache").is_file()
    assert (runs["veh"] / "data" / "labels" / "train.cache").is_file()
    assert (runs["cars"] / "data" / "labels" / "train.cache").is_file()


def test_gradual_chain_from_a_specialist(runs):
    cars = runs["cars_info"]
    assert cars["status"] == "complete" and cars["classes"] == ["car"] and cars["class_ids"] == [3]
    assert cars["parent"]["lineage"] == [str(runs["gen"]), str(runs["veh"])]
    assert cars["extraction_check"]["exact"] and runs["spec"]["extraction_check"]["exact"]


def test_run_view_links_every_image_and_label(runs):
    from toolkit.detect.dataset import label_path, load_data

    src, view = load_data(runs["data"]), load_data(runs["gen"] / "data" / "data.yaml")
    assert view.names == src.names and view.groups == src.groups
    for split in ("train", "val"):
        links = view.image_files(split)
        assert sorted(p.resolve() for p in links) == src.image_files(split)
        assert all(p.is_symlink() and label_path(p).resolve() == label_path(p.resolve()) for p in links)
    assert runs["info"]["images"] == {"train": 16, "val": 8}


@pytest.mark.parametrize("case", ["no-run", "finished", "other-data", "other-epochs", "no-resume-flag"])
def test_bad_resume_is_one_line_exit_2(runs, cli, tmp_path, case):
    import shutil

    out = runs["gen"]
    data, epochs, flags = runs["data"], 2, ["--resume"]
    if case == "no-run":
        out = tmp_path / "none"
    elif case in ("other-data", "other-epochs", "no-resume-flag"):
        out = tmp_path / "interrupted"  # the finished run, marked interrupted again
        shutil.copytree(runs["gen"], out, symlinks=True)
        info = json.loads((out / "run.json").read_text())
        (out / "run.json").write_text(json.dumps({**info, "status": "running"}))
        data = runs["other"] if case == "other-data" else data
        epochs = 3 if case == "other-epochs" else epochs
        flags = [] if case == "no-resume-flag" else flags
    code, out_text, err = cli("train", "--task", "detect", "--data", data, "--model", "yolo11n.yaml", "--epochs",
                              epochs, "--batch-size", 8, "--device", "cpu", "--out", out, "--quiet", *flags)
    want = {"no-run": "nothing to resume", "finished": "finished run", "other-data": "other data",
            "other-epochs": "other epochs", "no-resume-flag": "pass --resume"}[case]
    assert code == 2 and want in err and len(err.strip().splitlines()) == 1, err


def test_foreign_directory_is_refused(tmp_path, runs):
    from toolkit.detect.train import train_detect

    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="holds no edgespec run"):
        train_detect(_cfg(runs["data"]), tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def _label_counts(data_yaml: Path, n: int) -> list[int]:
    from toolkit.detect.dataset import label_path, load_data

    counts = [0] * n
    for img in load_data(data_yaml).image_files("val"):
        lab = label_path(img)
        for line in (lab.read_text().splitlines() if lab.exists() else []):
            counts[int(line.split()[0])] += 1
    return counts


@pytest.mark.parametrize("which", ["gen", "veh", "cars"])
def test_evaluate_detection_run(runs, cli, which, monkeypatch):
    from toolkit.detect.evaluate import val_map

    monkeypatch.setenv("HOME", str(runs["home"]))
    run = runs[which]
    code, out, err = cli("evaluate", run, "--device", "cpu")
    assert code == 0, err
    result = json.loads((run / "eval-val.json").read_text())
    info = json.loads((run / "run.json").read_text())
    assert result["task"] == "detect" and result["split"] == "val" and result["classes"] == info["classes"]
    assert 0.0 <= result["map50_95"] <= result["map50"] <= 1.0
    assert f"mAP50-95 {result['map50_95']:.4f}" in out and f"on {result['images']} val images" in out
    counts = _label_counts(run / "data" / "data.yaml", len(info["classes"]))
    assert [result["per_class"][c]["instances"] for c in info["classes"]] == counts
    for c, n in zip(info["classes"], counts, strict=True):
        pc = result["per_class"][c]
        assert (pc["ap50_95"] is None) == (n == 0) and (n == 0 or 0.0 <= pc["ap50_95"] <= pc["ap50"] <= 1.0)
        assert c in out
    # the same figures as `edgespec detect bench` measures with Ultralytics' validator
    ref = val_map(run / "weights" / "best.pt", run / "data" / "data.yaml", 64, runs["root"] / "ref", which)
    assert result["map50_95"] == pytest.approx(ref["map50_95"], abs=1e-9)
    assert result["map50_multilabel"] == pytest.approx(ref["map50_multilabel"], abs=1e-9)
    assert list(runs["home"].iterdir()) == []


def test_evaluate_detection_errors(runs, cli):
    code, _, err = cli("evaluate", runs["gen"], "--split", "test")
    assert code == 2 and "no 'test' split" in err
    code, _, err = cli("evaluate", runs["gen"], "--checkpoint", "newest")
    assert code == 2 and "best or last" in err


def test_resume_after_training_ended_only_records(runs, tmp_path):
    """Killed after Ultralytics finished (last.pt stripped) but before run.json said so: --resume trains no more."""
    import shutil

    from toolkit.detect.train import train_detect

    out = tmp_path / "ended"
    shutil.copytree(runs["gen"], out, symlinks=True)
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "running", "metrics": None}))
    csv = (out / "ultra" / "train" / "results.csv").read_text()
    done = train_detect(_cfg(runs["data"]), out, resume=True)
    assert done["status"] == "complete" and done["metrics"]["epochs"] == 2
    assert (out / "ultra" / "train" / "results.csv").read_text() == csv
    assert 0.0 <= done["metrics"]["val"]["map50_95"] <= done["metrics"]["val"]["map50"] <= 1.0


def test_resume_from_a_cut_off_checkpoint_is_refused(runs, tmp_path):
    import shutil

    from toolkit.detect.train import train_detect

    out = tmp_path / "cut"
    shutil.copytree(runs["gen"], out, symlinks=True)
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "running"}))
    last = out / "ultra" / "train" / "weights" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(UserError, match="not a whole checkpoint"):
        train_detect(_cfg(runs["data"]), out, resume=True)


def test_evaluate_on_training_images(runs):
    from toolkit.detect.evaluate import evaluate_detect

    result = evaluate_detect(runs["gen"], "last", "train")
    assert result["images"] == 16 and result["checkpoint"] == "last"
    assert json.loads((runs["gen"] / "eval-train.json").read_text())["map50"] == result["map50"]
    assert sum(c["instances"] for c in result["per_class"].values()) == sum(
        len(p.read_text().splitlines()) for p in (runs["data"].parent / "labels" / "train").glob("*.txt"))
