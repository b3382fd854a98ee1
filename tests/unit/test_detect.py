"""Detection building blocks without training: head slicing, label remapping, data files, synthetic data, CLI errors.

Every test goes through toolkit.detect.offline first, so Ultralytics is imported offline with its settings in a
temporary directory."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from toolkit.errors import UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None,
                                reason="needs the detect extra (ultralytics)")


def _randomized(cfg: str, nc: int, seed: int = 0):
    """A YOLO DetectionModel with random (non-default) weights, BN statistics and class biases, fp16-representable
    like an Ultralytics checkpoint."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(cfg, nc=nc, verbose=False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-3, 3)
    return model.half().float().eval()


@pytest.mark.parametrize("cfg", ["yolo11n.yaml", "yolo26n.yaml"])  # one-to-many head; end-to-end (one2one) head
def test_sliced_head_equals_generalist_at_group_channels(ultra, cfg, tmp_path):
    import torch

    from toolkit.detect.offline import load_weights
    from toolkit.detect.specialize import raw_head_outputs, save_ultralytics, slice_detect

    gen = _randomized(cfg, nc=9)
    keep = [5, 3, 4]  # any order: outputs follow it
    spec = slice_detect(gen, keep, ["bus", "car", "truck"])
    head = spec.model[-1]
    assert head.nc == 3 and head.no == 3 + 4 * head.reg_max and spec.yaml["nc"] == 3
    assert spec.names == {0: "bus", 1: "car", 2: "truck"}
    assert gen.model[-1].nc == 9  # the generalist is untouched
    saved = load_weights(save_ultralytics(spec, tmp_path / "weights" / "init.pt", {}), run_dir=ultra)
    x = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    a = raw_head_outputs(gen, x)
    for model in (spec, saved):
        b = raw_head_outputs(model, x)
        assert torch.equal(a["boxes"], b["boxes"])
        assert torch.equal(a["scores"][:, keep], b["scores"])
        assert b["scores"].shape == (16, 3, 84)
    if cfg.startswith("yolo26"):
        assert spec.model[-1].one2one_cv3[0][-1].out_channels == 3


def test_slice_rejects_bad_class_ids(ultra):
    from toolkit.detect.specialize import slice_detect

    gen = _randomized("yolo11n.yaml", nc=4)
    for keep in ([], [0, 0], [4], [-1]):
        with pytest.raises(UserError):
            slice_detect(gen, keep, ["x"] * len(keep))


def test_remap_labels_keeps_group_lines_renumbered():
    from toolkit.detect.dataset import remap_labels

    text = "3 0.5 0.5 0.1 0.2\n0 0.1 0.1 0.1 0.1\n\n5 0.2 0.3 0.4 0.5\n4 0.1 0.2 0.1 0.1 0.3 0.3\n"
    assert remap_labels(text, {3: 0, 4: 1, 5: 2}) == "0 0.5 0.5 0.1 0.2\n2 0.2 0.3 0.4 0.5\n1 0.1 0.2 0.1 0.1 0.3 0.3\n"
    assert remap_labels(text, {7: 0}) == ""
    assert remap_labels("5 0.2 0.3 0.4 0.5\n", {5: 8}) == "8 0.2 0.3 0.4 0.5\n"  # back to generalist ids
    with pytest.raises(UserError, match="class id"):
        remap_labels("car 0.1 0.1 0.1 0.1\n", {0: 0})


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from toolkit.detect.synth import synth_detect

    return synth_detect(tmp_path_factory.mktemp("synth") / "d", train=12, val=6)


def test_synth_is_deterministic_and_labels_are_valid(tiny_data, tmp_path):
    from toolkit.detect.synth import CLASSES, synth_detect

    again = synth_detect(tmp_path / "again", train=12, val=6)
    other = synth_detect(tmp_path / "other", train=12, val=6, seed=1)
    root, root2 = tiny_data.parent, again.parent
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.suffix in (".png", ".txt"))
    assert len(files) == 2 * 18
    assert all((root / f).read_bytes() == (root2 / f).read_bytes() for f in files)
    assert any((root / f).read_bytes() != (other.parent / f).read_bytes() for f in files)
    for lab in root.glob("labels/*/*.txt"):
        for line in lab.read_text().splitlines():
            c, x, y, w, h = line.split()
            assert 0 <= int(c) < len(CLASSES)
            x, y, w, h = map(float, (x, y, w, h))
            assert 0 <= x - w / 2 and x + w / 2 <= 1 and 0 <= y - h / 2 and y + h / 2 <= 1 and w > 0 and h > 0


def test_load_data_reads_names_and_groups(tiny_data):
    from toolkit.detect.dataset import load_data

    d = load_data(tiny_data)
    assert d.names[:3] == ["circle", "square", "triangle"] and len(d.names) == 9
    assert d.groups["vehicles"] == ["car", "truck", "bus"]
    assert len(d.image_files("train")) == 12 and len(d.image_files("val")) == 6


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.pop("val"), "missing 'val:'"),
    (lambda d: d.update(names=["a", "a"]), "duplicate"),
    (lambda d: d.update(nc=3), "nc is 3"),
    (lambda d: d.update(train="nowhere"), "does not exist"),
    (lambda d: d.update(groups={"g": ["circel"]}), "did you mean 'circle'"),
    (lambda d: d.update(groups={"g": []}), "empty"),
])
def test_load_data_errors_say_what_to_fix(tiny_data, tmp_path, edit, message):
    import yaml

    from toolkit.detect.dataset import load_data

    doc = yaml.safe_load(tiny_data.read_text())
    edit(doc)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=message):
        load_data(bad)
    with pytest.raises(UserError, match="not found"):
        load_data(tmp_path / "missing.yaml")


def test_derived_dataset_symlinks_and_counts(tiny_data, tmp_path):
    from toolkit.detect.dataset import derive_dataset, label_path, load_data

    src = load_data(tiny_data)
    path, counts = derive_dataset(src, [8, 6], ["star", "plus"], tmp_path / "signs")
    d = load_data(path)
    assert d.names == ["star", "plus"]
    for split in ("train", "val"):
        imgs = d.image_files(split)
        assert len(imgs) == counts[split] > 0
        assert all(p.is_symlink() and p.resolve().parent == src.root / "images" / split for p in imgs)
        for p in imgs:
            orig = [line.split() for line in label_path(p.resolve()).read_text().splitlines()]
            want = [[{"8": "0", "6": "1"}[c], *rest] for c, *rest in orig if c in ("8", "6")]
            assert [line.split() for line in label_path(p).read_text().splitlines()] == want
    assert not any(p.is_file() and not p.is_symlink() for p in (tmp_path / "signs" / "images").rglob("*.png"))


def test_offline_settings(ultra):
    from ultralytics.utils import AUTOINSTALL, ONLINE, SETTINGS, USER_CONFIG_DIR

    assert ONLINE is False and AUTOINSTALL is False
    assert SETTINGS["sync"] is False
    assert (USER_CONFIG_DIR / "Arial.ttf").exists()  # answers Ultralytics' font check without a download
    assert Path.home() not in USER_CONFIG_DIR.parents  # inside the first edgespec run dir of this process


def test_cli_errors_are_one_line_exit_2(cli, tiny_data, tmp_path):
    code, _, err = cli("train", "--task", "detect", "--data", "digits", "--out", tmp_path / "r")
    assert code == 2 and "DATA.yaml" in err
    code, _, err = cli("train", "--task", "detect", "--data", tiny_data, "--model", tmp_path / "yolo11n.pt",
                       "--out", tmp_path / "r")
    assert code == 2 and "never downloads" in err and not (tmp_path / "yolo11n.pt").exists()
    code, _, err = cli("train", "--task", "segment", "--data", tiny_data, "--out", tmp_path / "r")
    assert code == 2 and "segment" in err
    code, _, err = cli("detect", "specialize", tmp_path, "--group", "vehicles", "--out", tmp_path / "s")
    assert code == 2 and "not an edgespec run" in err
    code, _, err = cli("data", "synth-detect", "--out", tmp_path / "d", "--size", "50")
    assert code == 2 and "multiple of 32" in err
    code, _, err = cli("data", "synth-detect", "--out", tiny_data.parent)
    assert code == 2 and "--overwrite" in err
    assert all(len(e.strip().splitlines()) == 1 for e in [err])
