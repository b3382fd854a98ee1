import numpy as np
import pytest
from PIL import Image

from toolkit.data import load_source, make_split, prepare
from toolkit.errors import UserError


def test_digits_is_embedded_and_split_is_stratified_and_seeded():
    b1 = prepare("digits", seed=3)
    b2 = prepare("digits", seed=3)
    b3 = prepare("digits", seed=4)
    assert b1.split["test"] == b2.split["test"]
    assert b1.split["test"] != b3.split["test"]
    parts = [set(b1.split[s]) for s in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(len(p) for p in parts) == 1797
    test_labels = b1.source.labels[b1.split["test"]]
    assert set(np.bincount(test_labels)) <= {26, 27, 28}  # every class present, in proportion
    x, y = b1.dataset("test")[0]
    assert tuple(x.shape) == (1, 8, 8)


def test_synthetic_is_deterministic_and_grouped():
    a = load_source("synthetic:groups=3,classes=2,per_class=20")
    b = load_source("synthetic:groups=3,classes=2,per_class=20")
    assert np.array_equal(a.images, b.images)
    assert len(a.classes) == 6 and len(a.groups) == 3
    assert all(len(v) == 2 for v in a.groups.values())
    c = load_source("synthetic:groups=3,classes=2,per_class=20,seed=1")
    assert not np.array_equal(a.images, c.images)


def test_synthetic_groups_are_more_alike_within_than_between():
    s = load_source("synthetic:groups=3,classes=3,per_class=40,noise=0")
    # Phase-free description of each class: its mean amplitude spectrum per colour channel.
    spec = np.abs(np.fft.fft2(s.images.astype(float) / 255, axes=(1, 2))).reshape(len(s.images), -1)
    means = np.stack([spec[s.labels == k].mean(0) for k in range(9)])
    d = np.linalg.norm(means[:, None] - means[None], axis=-1)
    group = np.repeat(np.arange(3), 3)
    same = d[(group[:, None] == group[None]) & ~np.eye(9, dtype=bool)].mean()
    other = d[group[:, None] != group[None]].mean()
    assert same < other


def test_restrict_remaps_labels_and_round_trips():
    b = prepare("digits")
    r = b.restrict([7, 2, 5])
    ds = r.dataset("test")
    raw = b.source.labels[ds.indices]
    assert set(raw) == {7, 2, 5}
    assert [r.class_ids[p] for p in ds.labels] == list(raw)
    assert r.classes == ["7", "2", "5"]


def _folder(root, classes=("cat", "dog", "owl"), n=8, size=12, mode="RGB"):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).convert(mode).save(root / c / f"{i}.png")
    return root


def test_imagefolder_split_saved_as_files(tmp_path):
    _folder(tmp_path / "imgs")
    b = prepare(f"imagefolder:{tmp_path / 'imgs'}", seed=0)
    assert b.classes == ["cat", "dog", "owl"]
    assert b.source.size == (12, 12) and b.source.channels == 3
    assert len(b.split["train"]) + len(b.split["val"]) + len(b.split["test"]) == 24


def test_imagefolder_uses_predefined_split(tmp_path):
    for s in ("train", "test"):
        _folder(tmp_path / "d" / s, n=6 if s == "train" else 3)
    src = load_source(f"imagefolder:{tmp_path / 'd'}")
    split = make_split(src, seed=0)
    assert len(split["test"]) == 9
    assert all(src.files[i].startswith("test/") for i in split["test"])
    assert all(src.files[i].startswith("train/") for i in split["train"] + split["val"])


@pytest.mark.parametrize("spec, fragment", [
    ("imagefolder:/definitely/missing", "not found"),
    ("nosuch", "unknown dataset"),
    ("synthetic:groups=99", "out of range"),
    ("synthetic:colour=red", "unknown synthetic option"),
    ("torchvision:CIFAR11", "did you mean"),
])
def test_bad_specs_are_user_errors(spec, fragment):
    with pytest.raises(UserError, match=fragment):
        load_source(spec)


def test_single_class_and_unreadable_images_are_rejected(tmp_path):
    _folder(tmp_path / "one", classes=("only",))
    with pytest.raises(UserError, match="at least two"):
        load_source(f"imagefolder:{tmp_path / 'one'}")
    root = _folder(tmp_path / "bad")
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match="cannot read image"):
        load_source(f"imagefolder:{root}")


def test_changed_data_is_refused_by_the_saved_split(tmp_path):
    root = _folder(tmp_path / "imgs")
    b = prepare(f"imagefolder:{root}")
    (root / "owl" / "0.png").unlink()
    with pytest.raises(UserError, match="changed"):
        prepare(f"imagefolder:{root}", split=b.split)


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from toolkit.io import write_json

    mask = os.umask(0o022)
    try:
        path = write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not list(tmp_path.glob(".*.tmp"))
