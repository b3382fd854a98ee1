"""One table of bad inputs across every command: each is exit 2, one line on stderr naming the problem and a fix,
no traceback, and every file that existed before is untouched (hash and mtime), nothing new is created.

Images of mixed modes (a grayscale or RGBA image among RGB ones) are refused; `--data imagefolder-rgb:PATH`
(or `imagefolder-gray:PATH`) is the explicit permission to convert every image on load.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from PIL import Image
from rel_support import check_error_line, image_folder, read_only, snapshot


@dataclass
class Env:
    """Where a case builds its inputs; `watch` lists what must stay untouched besides `tmp`."""

    tmp: Path
    request: pytest.FixtureRequest
    watch: list[Path] = field(default_factory=list)

    @property
    def digits_run(self) -> Path:
        run = self.request.getfixturevalue("digits_run")
        self.watch.append(run)
        return run

    def run_copy(self, name: str = "run") -> Path:
        dst = self.tmp / name
        shutil.copytree(self.digits_run, dst, ignore=shutil.ignore_patterns(".lock"))
        return dst

    @property
    def export_dir(self) -> Path:
        exp = self.request.getfixturevalue("digits_export")
        self.watch.append(exp)
        return exp

    def export_copy(self, name: str = "exp") -> Path:
        dst = self.tmp / name
        shutil.copytree(self.export_dir, dst)
        return dst

    def folder(self, name: str = "imgs", **kw) -> Path:
        return image_folder(self.tmp / name, **kw)

    def file(self, name: str, data: bytes | str) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return p


@dataclass(frozen=True)
class Bad:
    id: str
    argv: Callable[[Env], list]
    says: str  # what the one line must name


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _unlink(path: Path) -> Path:
    path.unlink()
    return path


def _torch_file(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _edit_json(path: Path, fn) -> Path:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
    return path


class _Evil:
    """Unpickling this runs code: a checkpoint that carries it must be refused, never executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _evil_checkpoint(env: Env) -> Path:
    path = env.tmp / "evil.pt"
    torch.save({"model": _Evil(env.tmp.parent / f"{env.tmp.name}-pwned")}, path)
    return path


def _gray_among_rgb(env: Env) -> Path:
    root = env.folder()
    Image.new("L", (10, 10), 128).save(root / "a" / "gray.png")
    return root


def _rgba_among_rgb(env: Env) -> Path:
    root = env.folder()
    Image.new("RGBA", (10, 10), (1, 2, 3, 4)).save(root / "b" / "alpha.png")
    return root


def _other_models_checkpoint(env: Env) -> Path:
    """A run whose best.pt was swapped for another run's (3-channel synthetic) checkpoint."""
    run = env.run_copy()
    other = env.request.getfixturevalue("synthetic_run")
    env.watch.append(other)
    shutil.copy(other / "checkpoints" / "best.pt", run / "checkpoints" / "best.pt")
    return run


def _out_file(env: Env) -> Path:
    return env.file("occupied", "a file, not a directory")


def _foreign_dir(env: Env) -> Path:
    env.file("foreign/notes.txt", "someone else's work")
    return env.tmp / "foreign"


TRAIN = ["train", "--epochs", "1", "--device", "cpu", "--quiet"]

CASES = [
    # train: options
    Bad("train-epochs-0", lambda e: [*TRAIN, "--epochs", "0", "--out", e.tmp / "o"], "--epochs"),
    Bad("train-epochs-negative", lambda e: [*TRAIN, "--epochs", "-3", "--out", e.tmp / "o"], "--epochs"),
    Bad("train-epochs-not-a-number", lambda e: [*TRAIN, "--epochs", "ten", "--out", e.tmp / "o"], "--epochs"),
    Bad("train-batch-0", lambda e: [*TRAIN, "--batch-size", "0", "--out", e.tmp / "o"], "--batch-size"),
    Bad("train-batch-negative", lambda e: [*TRAIN, "--batch-size", "-8", "--out", e.tmp / "o"], "--batch-size"),
    Bad("train-lr-negative", lambda e: [*TRAIN, "--lr", "-0.1", "--out", e.tmp / "o"], "--lr"),
    Bad("train-image-size-0", lambda e: [*TRAIN, "--image-size", "0", "--out", e.tmp / "o"], "--image-size"),
    Bad("train-unknown-model", lambda e: [*TRAIN, "--model", "resnet181", "--out", e.tmp / "o"], "resnet181"),
    Bad("train-unknown-optimizer", lambda e: [*TRAIN, "--optimizer", "adam", "--out", e.tmp / "o"], "--optimizer"),
    Bad("train-unknown-device", lambda e: [*TRAIN, "--device", "tpu", "--out", e.tmp / "o"], "--device"),
    Bad("train-unknown-dataset", lambda e: [*TRAIN, "--data", "digitz", "--out", e.tmp / "o"], "digitz"),
    Bad("train-unknown-torchvision", lambda e: [*TRAIN, "--data", "torchvision:CIFAR11", "--out", e.tmp / "o"],
        "CIFAR11"),
    Bad("train-torchvision-not-downloaded",
        lambda e: [*TRAIN, "--data", f"torchvision:MNIST:{e.tmp / 'nothing'}", "--out", e.tmp / "o"], "--download"),
    Bad("train-synthetic-option-not-a-number",
        lambda e: [*TRAIN, "--data", "synthetic:noise=loud", "--out", e.tmp / "o"], "noise"),
    Bad("train-synthetic-option-out-of-range",
        lambda e: [*TRAIN, "--data", "synthetic:groups=99", "--out", e.tmp / "o"], "groups"),
    # train: data on disk
    Bad("data-missing-folder", lambda e: [*TRAIN, "--data", f"imagefolder:{e.tmp / 'nope'}", "--out", e.tmp / "o"],
        "not found"),
    Bad("data-not-a-folder", lambda e: [*TRAIN, "--data", f"imagefolder:{e.file('x.txt', 'x')}", "--out",
                                        e.tmp / "o"], "not a directory"),
    Bad("data-empty-folder", lambda e: [*TRAIN, "--data", f"imagefolder:{_mkdir(e.tmp / 'empty')}", "--out",
                                        e.tmp / "o"], "no class folders"),
    Bad("data-class-folder-without-images",
        lambda e: [*TRAIN, "--data", f"imagefolder:{_mkdir(e.folder() / 'c').parent}", "--out", e.tmp / "o"],
        "holds no images"),
    Bad("data-one-class", lambda e: [*TRAIN, "--data", f"imagefolder:{e.folder(classes=('a',))}", "--out",
                                     e.tmp / "o"], "at least two"),
    Bad("data-truncated-image",
        lambda e: [*TRAIN, "--data", f"imagefolder:{_truncate(e.folder() / 'a' / '3.png').parent.parent}",
                   "--out", e.tmp / "o"], "3.png"),
    Bad("data-not-an-image",
        lambda e: [*TRAIN, "--data", f"imagefolder:{e.folder()}", "--out", e.tmp / "o",
                   e.file("imgs/b/notes.jpg", "plain text, not a JPEG") and "--quiet"], "notes.jpg"),
    Bad("data-gray-among-rgb", lambda e: [*TRAIN, "--data", f"imagefolder:{_gray_among_rgb(e)}", "--out",
                                          e.tmp / "o"], "imagefolder-rgb"),
    Bad("data-rgba-among-rgb", lambda e: [*TRAIN, "--data", f"imagefolder:{_rgba_among_rgb(e)}", "--out",
                                          e.tmp / "o"], "alpha"),
    # train: starting weights
    Bad("weights-missing", lambda e: [*TRAIN, "--weights", e.tmp / "none.pt", "--out", e.tmp / "o"], "not found"),
    Bad("weights-foreign-dict", lambda e: [*TRAIN, "--weights", _torch_file(e.tmp / "f.pt", {"epoch": 3}), "--out",
                                           e.tmp / "o"], "state_dict"),
    Bad("weights-truncated", lambda e: [*TRAIN, "--weights", _truncate(shutil.copy(
        e.digits_run / "checkpoints" / "best.pt", e.tmp / "t.pt")), "--out", e.tmp / "o"], "cannot be loaded"),
    Bad("weights-pickled-code", lambda e: [*TRAIN, "--weights", _evil_checkpoint(e), "--out", e.tmp / "o"],
        "cannot be loaded"),
    Bad("weights-other-architecture", lambda e: [*TRAIN, "--data", "synthetic:groups=2,per_class=20", "--weights",
                                                 e.digits_run / "checkpoints" / "best.pt", "--out", e.tmp / "o"],
        "does not fit"),
    # train: output directory
    Bad("out-is-a-file", lambda e: [*TRAIN, "--out", _out_file(e)], "not a directory"),
    Bad("out-holds-a-different-run", lambda e: [*TRAIN, "--data", "synthetic:groups=2", "--out", e.digits_run,
                                                "--resume"], "different run"),
    Bad("out-holds-this-run-without-resume", lambda e: [*TRAIN, "--epochs", "4", "--seed", "0", "--out",
                                                        e.run_copy()], "--resume"),
    Bad("out-holds-foreign-files", lambda e: [*TRAIN, "--out", _foreign_dir(e)], "not empty"),
    # evaluate
    Bad("evaluate-missing-run", lambda e: ["evaluate", e.tmp / "nowhere"], "not found"),
    Bad("evaluate-not-a-run", lambda e: ["evaluate", e.folder()], "not an edgespec run"),
    Bad("evaluate-run-json-garbage", lambda e: ["evaluate", _write(e.run_copy() / "run.json", "{ nope").parent],
        "not valid JSON"),
    Bad("evaluate-run-json-truncated-keys", lambda e: ["evaluate", _edit_json(
        e.run_copy() / "run.json", lambda d: d.pop("arch")).parent], "arch"),
    Bad("evaluate-split-tampered", lambda e: ["evaluate", _edit_json(
        e.run_copy() / "split.json", lambda d: d.update(test="all")).parent], "split"),
    Bad("evaluate-checkpoint-truncated", lambda e: ["evaluate", _truncate(
        e.run_copy() / "checkpoints" / "best.pt").parent.parent], "best.pt"),
    Bad("evaluate-checkpoint-missing", lambda e: ["evaluate", _unlink(e.run_copy() / "checkpoints" / "best.pt").parent
                                                              .parent], "best.pt"),
    Bad("evaluate-checkpoint-of-another-model", lambda e: ["evaluate", _other_models_checkpoint(e)], "best.pt"),
    Bad("evaluate-unknown-checkpoint", lambda e: ["evaluate", e.digits_run, "--checkpoint", "newest"], "newest"),
    Bad("evaluate-unknown-split", lambda e: ["evaluate", e.digits_run, "--split", "holdout"], "holdout"),
    # the CLI itself
    Bad("unknown-command", lambda e: ["trian"], "trian"),
    Bad("models-extra-argument", lambda e: ["models", "resnet"], "resnet"),
]


@pytest.fixture(scope="session")
def digits_export(digits_run, tmp_path_factory) -> Path:
    """digits_run exported to ONNX fp32 once (in process)."""
    from exporters import export_runs

    out = tmp_path_factory.mktemp("exports") / "digits"
    export_runs([digits_run], "onnx", out, parity_images=64)
    return out


def _ids(cases):
    return [c.id for c in cases]


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_bad_input(case: Bad, tmp_path, request, cli):
    env = Env(tmp_path / "case", request)
    env.tmp.mkdir()
    argv = case.argv(env)
    assert argv, "case builder returned no command"
    before = snapshot(env.tmp, *env.watch)
    code, _, err = cli(*argv)
    check_error_line(code, err, case.says)
    assert snapshot(env.tmp, *env.watch) == before, "a failed command changed files"
    assert not (env.tmp.parent / f"{env.tmp.name}-pwned").exists(), "a checkpoint ran pickled code"


def test_read_only_output_directory(tmp_path, cli):
    with read_only(tmp_path / "ro") as ro:
        before = snapshot(ro)
        code, _, err = cli(*TRAIN, "--out", ro / "run")
        check_error_line(code, err, "permission denied")
        code, _, err = cli(*TRAIN, "--out", ro)
        check_error_line(code, err, str(ro))
        assert snapshot(ro) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_gpu(tmp_path, cli):
    code, _, err = cli(*TRAIN[:-3], "--device", "cuda", "--quiet", "--out", tmp_path / "o")
    check_error_line(code, err, "--device cuda")
    assert not (tmp_path / "o").exists()


def test_mixed_modes_convert_only_when_asked(tmp_path):
    """imagefolder-rgb: is the explicit permission: the same folder then loads, as 3-channel images."""
    from toolkit.data import load_source

    root = image_folder(tmp_path / "imgs")
    Image.new("RGBA", (10, 10), (1, 2, 3, 4)).save(root / "b" / "alpha.png")
    Image.new("L", (10, 10), 7).save(root / "a" / "gray.png")
    src = load_source(f"imagefolder-rgb:{root}")
    assert src.channels == 3 and src.spec == f"imagefolder-rgb:{root}"
    gray = load_source(f"imagefolder-gray:{root}")
    assert gray.channels == 1
    all_gray = image_folder(tmp_path / "g", mode="L")
    assert load_source(f"imagefolder:{all_gray}").channels == 1  # one mode throughout: nothing to refuse


def test_the_table_is_big_enough():
    assert len({c.id for c in CASES}) == len(CASES) >= 30
