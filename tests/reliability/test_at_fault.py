"""Input at fault, reported as such (exit 2, one line), not as an internal error or a hang: another model's last.pt,
a FIFO or a non-UTF-8 name among the images, 16-bit and huge images, a missing optional package; and a full disk
says so (exit 1)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rel_support import assert_untouched, check_error_line, image_folder, snapshot

TRAIN = ["train", "--epochs", "1", "--device", "cpu", "--quiet"]


@pytest.fixture
def alarm():
    """Fail a test that hangs (a FIFO read blocks forever) instead of hanging the suite."""
    def fire(*_):
        raise TimeoutError("the command hung")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _train_on(folder: Path, tmp_path: Path, cli, *extra) -> tuple[int, str]:
    before = snapshot(folder)
    code, _, err = cli(*TRAIN, "--data", f"imagefolder:{folder}", "--out", tmp_path / "o", *extra)
    assert_untouched(before, snapshot(folder))
    assert not (tmp_path / "o" / "run.json").exists()
    return code, err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_named_png_is_refused_not_read(tmp_path, cli, alarm):
    root = image_folder(tmp_path / "imgs")
    os.mkfifo(root / "a" / "stuck.png")
    code, err = _train_on(root, tmp_path, cli)
    check_error_line(code, err, "not a regular file")


def test_folder_named_png_is_refused(tmp_path, cli):
    root = image_folder(tmp_path / "imgs")
    (root / "b" / "odd.png").mkdir()
    code, err = _train_on(root, tmp_path, cli)
    check_error_line(code, err, "not a regular file")


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses non-UTF-8 names itself")
def test_non_utf8_file_name_is_refused(tmp_path, cli):
    root = image_folder(tmp_path / "imgs")
    name = os.path.join(os.fsencode(root / "a"), b"caf\xe9.png")
    shutil.copy(root / "a" / "0.png", os.fsdecode(name))
    code, err = _train_on(root, tmp_path, cli)
    check_error_line(code, err, "not UTF-8")


def test_16_bit_png_is_refused_not_clipped(tmp_path, cli):
    root = image_folder(tmp_path / "imgs", mode="L")
    Image.fromarray(np.full((10, 10), 40000, dtype=np.uint16)).save(root / "a" / "deep.png")
    with Image.open(root / "a" / "deep.png") as im:
        assert im.mode.startswith("I")
    for spec in ("imagefolder", "imagefolder-gray"):
        before = snapshot(root)
        code, _, err = cli(*TRAIN, "--data", f"{spec}:{root}", "--out", tmp_path / "o")
        check_error_line(code, err, "8 bits")
        assert_untouched(before, snapshot(root))


def test_image_with_a_huge_side_is_refused_before_decoding(tmp_path, cli):
    root = image_folder(tmp_path / "imgs")
    Image.new("RGB", (20000, 4)).save(root / "a" / "wide.png")
    code, err = _train_on(root, tmp_path, cli)
    check_error_line(code, err, "larger than edgespec reads")


def test_large_images_need_an_explicit_image_size(tmp_path, cli):
    root = image_folder(tmp_path / "imgs")
    for c in ("a", "b"):
        for i in range(8):
            Image.new("RGB", (5000, 4), (i, 0, 0)).save(root / c / f"{i}.png")
    code, err = _train_on(root, tmp_path, cli)
    check_error_line(code, err, "--image-size")


def test_last_pt_of_another_model_is_refused(digits_run, synthetic_run, tmp_path, cli):
    run = shutil.copytree(digits_run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    shutil.copy(synthetic_run / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    info = json.loads((run / "run.json").read_text())
    info["status"] = "interrupted"
    (run / "run.json").write_text(json.dumps(info))
    before = snapshot(run)
    code, _, err = cli("train", "--out", run, "--resume", "--epochs", "5", "--device", "cpu", "--quiet")
    check_error_line(code, err, "another model")
    assert_untouched(before, snapshot(run))


def test_last_pt_without_resume_state_is_refused(digits_run, tmp_path, cli):
    import torch

    run = shutil.copytree(digits_run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    del ckpt["optimizer"]
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    before = snapshot(run)
    code, _, err = cli("train", "--out", run, "--resume", "--epochs", "5", "--device", "cpu", "--quiet")
    check_error_line(code, err, "optimizer")
    assert_untouched(before, snapshot(run))


def test_missing_ultralytics_names_the_extra(tmp_path, cli, monkeypatch):
    from toolkit.detect.synth import synth_detect

    data = synth_detect(tmp_path / "det", train=10, val=5)
    for mod in [m for m in sys.modules if m == "ultralytics" or m.startswith("ultralytics.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import ultralytics -> ModuleNotFoundError
    code, _, err = cli("train", "--task", "detect", "--data", data, "--epochs", "1", "--device", "cpu",
                       "--out", tmp_path / "d", "--quiet")
    line = check_error_line(code, err, "pip install -e '.[detect]'")
    assert "internal error" not in line


def test_full_disk_while_training_says_so(tmp_path, cli, monkeypatch):
    """torch's zip writer reports ENOSPC as RuntimeError('... file write failed'): it must still read as a full
    disk, and the run must not stay 'running'."""
    import torch

    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "o"
    code, _, err = cli(*TRAIN, "--data", "synthetic:groups=2,classes=2,per_class=12", "--out", out)
    line = check_error_line(code, err, "no space left on device", expect_code=1)
    assert "internal error" not in line
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    assert not [p for p in out.rglob("*.tmp")], "a temporary of the failed write was left"


def test_full_disk_on_a_plain_write_names_the_file(tmp_path, cli, monkeypatch):
    from toolkit import io as tio

    real = tio.os.replace

    def full(src, dst, *a, **k):
        if str(dst).endswith("groups.yaml"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(tio.os, "replace", full)
    from toolkit.cli.errors import one_line

    msg, code = one_line(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "groups.yaml")))
    assert code == 1 and msg.startswith("no space left on device writing") and "groups.yaml" in msg


@pytest.mark.parametrize("edit", [lambda i: i.update(classes=5), lambda i: i.update(class_ids=["0", "1"]),
                                  lambda i: i["preprocess"].pop("mean"), lambda i: i.update(arch="smallcnn"),
                                  lambda i: i.update(class_ids=i["class_ids"][:3])],
                         ids=["classes-a-number", "class-ids-text", "no-mean", "arch-a-string", "ids-too-few"])
def test_run_file_of_the_wrong_shape(edit, digits_run, tmp_path, cli):
    run = shutil.copytree(digits_run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    info = json.loads((run / "run.json").read_text())
    edit(info)
    (run / "run.json").write_text(json.dumps(info))
    before = snapshot(run)
    for argv in (["evaluate", run, "--device", "cpu", "-q"],
                 ["export", run, "--formats", "onnx", "--out", tmp_path / "exp", "-q"]):
        code, _, err = cli(*argv)
        check_error_line(code, err, "run.json")
    assert_untouched(before, snapshot(run))
