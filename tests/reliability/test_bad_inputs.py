"""One table of bad inputs across every command: each is exit 2, one line on stderr naming the problem and a fix,
no traceback, and every file that existed before is untouched (hash and mtime), nothing new is created.

Images of mixed modes (a grayscale or RGBA image among RGB ones) are refused; `--data imagefolder-rgb:PATH`
(or `imagefolder-gray:PATH`) is the explicit permission to convert every image on load.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from PIL import Image
from rel_support import assert_untouched, check_error_line, image_folder, read_only, snapshot


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

    @property
    def synthetic_run(self) -> Path:
        """3 groups x 3 classes: hstripes-nw/ne/sw, vstripes-..., diagonal-..."""
        run = self.request.getfixturevalue("synthetic_run")
        self.watch.append(run)
        return run

    def groups(self, text: str | bytes, name: str = "groups.yaml") -> Path:
        return self.file(name, text)

    def profile(self, edit, name: str = "dev.yaml") -> Path:
        """host-cpu's profile with `edit(doc)` applied, as a YAML file."""
        import yaml

        from toolkit.devices import devices_dir

        doc = yaml.safe_load((devices_dir() / "host-cpu.yaml").read_text())
        edit(doc)
        return self.file(name, yaml.safe_dump(doc))

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


def _flip_byte(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def _swap_artifact(exp: Path, data: bytes) -> Path:
    """Replace the ONNX file and write its new hash into the manifest, as a careless or hostile edit would."""
    import hashlib

    manifest = json.loads((exp / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    (exp / entry["path"]).write_bytes(data)
    entry.update(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    (exp / "manifest.json").write_text(json.dumps(manifest))
    return exp


def _other_models_onnx(env: Env) -> bytes:
    """An ONNX file of the same shape whose metadata names another checkpoint (another digits model)."""
    import onnx

    proto = onnx.load(str(env.export_dir / "digits.onnx"))
    for prop in proto.metadata_props:
        if prop.key == "source_checkpoint_sha256":
            prop.value = json.dumps("0" * 64)
    return proto.SerializeToString()


def _wrong_shape_onnx(env: Env) -> bytes:
    """The synthetic model (3x16x16 inputs) exported under the digits entry."""
    import torch.onnx

    from toolkit.runs import Run

    model = Run.open(env.synthetic_run).model().eval()
    path = env.tmp / "other.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 16, 16),), str(path), input_names=["input"],
                          output_names=["logits"], dynamo=False)
    data = path.read_bytes()
    path.unlink()
    return data


def _incomplete_run(env: Env) -> Path:
    return _edit_json(env.run_copy() / "run.json", lambda d: d.update(status="running")).parent


def _out_file(env: Env) -> Path:
    return env.file("occupied", "a file, not a directory")


def _foreign_dir(env: Env) -> Path:
    env.file("foreign/notes.txt", "someone else's work")
    return env.tmp / "foreign"


TRAIN = ["train", "--epochs", "1", "--device", "cpu", "--quiet"]


def SPEC(e: Env) -> list:  # noqa: N802 - reads like the TRAIN prefix it sits beside
    return ["specialize", e.synthetic_run, "--out", e.tmp / "spec", "--epochs", "1", "--device", "cpu", "--quiet"]


DETECT = ["train", "--task", "detect", "--epochs", "1", "--device", "cpu", "--quiet"]


def SPEC_OK(e: Env) -> list:  # noqa: N802 - with a valid groups file
    return [*SPEC(e), "--groups", e.groups("g: [hstripes-nw, hstripes-ne]\n")]

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
    # partition
    Bad("partition-unknown-method", lambda e: ["partition", e.synthetic_run, "--out", e.tmp / "g.yaml", "--method",
                                               "kmeans"], "kmeans"),
    Bad("partition-one-group", lambda e: ["partition", e.synthetic_run, "--out", e.tmp / "g.yaml", "--groups", "1"],
        "--groups 1"),
    Bad("partition-groups-and-size", lambda e: ["partition", e.synthetic_run, "--out", e.tmp / "g.yaml", "--groups",
                                                "2", "--group-size", "3"], "--group-size"),
    Bad("partition-not-a-run", lambda e: ["partition", e.folder(), "--out", e.tmp / "g.yaml"], "not an edgespec run"),
    # specialize: groups files and options
    Bad("groups-unknown-class", lambda e: [*SPEC(e), "--groups", e.groups("g: [hstripes-nw, zebra]\n")], "zebra"),
    Bad("groups-one-class-group", lambda e: [*SPEC(e), "--groups", e.groups("g: [hstripes-nw]\n")], "one class"),
    Bad("groups-empty-group", lambda e: [*SPEC(e), "--groups", e.groups("g: []\n")], "empty"),
    Bad("groups-defined-twice", lambda e: [*SPEC(e), "--groups", e.groups("g: [hstripes-nw, hstripes-ne]\n"
                                                                           "g: [vstripes-nw, vstripes-ne]\n")],
        "twice"),
    Bad("groups-not-yaml", lambda e: [*SPEC(e), "--groups", e.groups("g: [hstripes-nw, {\n")], "not valid YAML"),
    Bad("groups-not-text", lambda e: [*SPEC(e), "--groups", e.groups(b"\xff\xfe\x00garbage")], "UTF-8"),
    Bad("groups-missing", lambda e: [*SPEC(e), "--groups", e.tmp / "none.yaml"], "not found"),
    Bad("groups-yes-no-as-booleans", lambda e: [*SPEC(e), "--groups", e.groups("g: [yes, no]\n")], "quotes"),
    Bad("specialize-unknown-group", lambda e: [*SPEC_OK(e), "--group", "h"],
        "'h'"),
    Bad("specialize-unknown-init", lambda e: [*SPEC_OK(e), "--init",
                                              "distill"], "--init"),
    Bad("specialize-epochs-0", lambda e: [*SPEC_OK(e), "--epochs", "0"],
        "--epochs"),
    Bad("specialize-from-another-lineage", lambda e: [*SPEC_OK(e),
                                                      "--from", e.digits_run], "--from"),
    # compare
    Bad("compare-generalist-as-specialist", lambda e: ["compare", e.synthetic_run, e.synthetic_run, "--out",
                                                       e.tmp / "cmp"], "not a specialist"),
    Bad("compare-missing-specialist", lambda e: ["compare", e.synthetic_run, e.tmp / "gone", "--out", e.tmp / "cmp"],
        "not found"),
    # export
    Bad("export-unknown-format", lambda e: ["export", e.digits_run, "--out", e.tmp / "x", "--formats", "onxx"],
        "onxx"),
    Bad("export-unknown-device", lambda e: ["export", e.digits_run, "--out", e.tmp / "x", "--device", "jetson"],
        "jetson"),
    Bad("export-not-a-run", lambda e: ["export", e.folder(), "--out", e.tmp / "x", "--formats", "onnx"],
        "not an edgespec run"),
    Bad("export-opset-too-old", lambda e: ["export", e.digits_run, "--out", e.tmp / "x", "--formats", "onnx",
                                           "--opset", "7"], "opset"),
    Bad("export-truncated-checkpoint", lambda e: ["export", _truncate(e.run_copy() / "checkpoints" / "best.pt")
                                                  .parent.parent, "--out", e.tmp / "x", "--formats", "onnx"],
        "best.pt"),
    Bad("export-unfinished-run", lambda e: ["export", _incomplete_run(e), "--out", e.tmp / "x", "--formats", "onnx"],
        "not complete"),
    Bad("export-out-is-a-file", lambda e: ["export", e.digits_run, "--out", _out_file(e), "--formats", "onnx"],
        "occupied"),
    # bench: integrity of what it is about to run
    Bad("bench-tampered-artifact", lambda e: ["bench", _flip_byte(e.export_copy() / "digits.onnx").parent, "-q"],
        "manifest hash"),
    Bad("bench-missing-artifact", lambda e: ["bench", _unlink(e.export_copy() / "digits.onnx").parent, "-q"],
        "missing"),
    Bad("bench-manifest-garbage", lambda e: ["bench", _write(e.export_copy() / "manifest.json", "[1, 2").parent,
                                             "-q"], "manifest"),
    Bad("bench-corrupt-onnx-rehashed", lambda e: ["bench", _swap_artifact(e.export_copy(), b"\x08\x07junk"), "-q"],
        "not a loadable model"),
    Bad("bench-other-models-onnx-rehashed", lambda e: ["bench", _swap_artifact(e.export_copy(),
                                                                               _other_models_onnx(e)), "-q"],
        "another model"),
    Bad("bench-wrong-shape-onnx-rehashed", lambda e: ["bench", _swap_artifact(e.export_copy(),
                                                                              _wrong_shape_onnx(e)), "-q"],
        "another model"),
    Bad("bench-unknown-device", lambda e: ["bench", e.export_dir, "--devices", "jetson-nano", "-q"], "jetson-nano"),
    Bad("bench-unknown-format", lambda e: ["bench", e.export_dir, "--formats", "tflite", "-q"], "tflite"),
    Bad("bench-runs-0", lambda e: ["bench", e.export_dir, "--runs", "0", "-q"], "--runs"),
    Bad("bench-bad-budget", lambda e: ["bench", e.export_dir, "--budget", "latency=fast", "-q"], "--budget"),
    Bad("bench-neither-export-nor-run", lambda e: ["bench", e.folder(), "-q"], "neither"),
    Bad("bench-missing-baseline", lambda e: ["bench", e.export_dir, "--baseline", e.tmp / "old.json", "-q"],
        "baseline"),
    # device profiles
    Bad("devices-unknown-name", lambda e: ["devices", "show", "jetson-orin"], "jetson-orin"),
    Bad("profile-unknown-key", lambda e: ["devices", "show", e.profile(lambda d: d.update(thread=4))], "thread"),
    Bad("profile-nested-unknown-key", lambda e: ["devices", "show", e.profile(
        lambda d: d["budgets"].update(latency_ms=3))], "latency_ms"),
    Bad("profile-wrong-type", lambda e: ["devices", "show", e.profile(lambda d: d.update(batch_sizes="many"))],
        "batch_sizes"),
    Bad("profile-format-runtime-mismatch", lambda e: ["devices", "show", e.profile(
        lambda d: d.update(formats=["tensorrt-fp16"]))], "tensorrt-fp16"),
    Bad("profile-not-yaml", lambda e: ["devices", "show", e.file("dev.yaml", "name: [unclosed")], "YAML"),
    Bad("profile-missing-file", lambda e: ["devices", "show", e.tmp / "none.yaml"], "not found"),
    Bad("bench-bad-profile-path", lambda e: ["bench", e.export_dir, "--devices", e.profile(
        lambda d: d.update(threads=0)), "-q"], "threads"),
    # bundle
    Bad("bundle-tampered-artifact", lambda e: ["bundle", _flip_byte(e.export_copy() / "digits.onnx").parent,
                                               "--device", "host-cpu", "--out", e.tmp / "b.tar.gz", "-q"],
        "manifest hash"),
    Bad("bundle-other-models-onnx-rehashed", lambda e: ["bundle", _swap_artifact(e.export_copy(),
                                                                                 _other_models_onnx(e)),
                                                        "--device", "host-cpu", "--out", e.tmp / "b.tar.gz", "-q"],
        "another model"),
    Bad("bundle-not-a-tarball", lambda e: ["bundle", e.export_dir, "--device", "host-cpu", "--out", e.tmp / "b.zip",
                                           "-q"], ".tar.gz"),
    Bad("bundle-unknown-device", lambda e: ["bundle", e.export_dir, "--device", "pi5", "--out", e.tmp / "b.tar.gz",
                                            "-q"], "pi5"),
    # detection (Ultralytics YOLO): data files and weights are checked before Ultralytics sees them
    Bad("detect-data-not-yaml", lambda e: [*DETECT, "--data", e.file("d.yaml", "train: [\n"), "--out", e.tmp / "d"],
        "not valid YAML"),
    Bad("detect-data-missing", lambda e: [*DETECT, "--data", e.tmp / "none.yaml", "--out", e.tmp / "d"], "not found"),
    Bad("detect-data-duplicate-names", lambda e: [*DETECT, "--data", e.file("d.yaml", "train: .\nval: .\n"
                                                                             "names: [car, car]\n"), "--out",
                                                  e.tmp / "d"], "duplicate"),
    Bad("detect-data-missing-split", lambda e: [*DETECT, "--data", e.file("d.yaml", "train: .\nnames: [a, b]\n"),
                                                "--out", e.tmp / "d"], "val"),
    Bad("detect-weights-pickled-code", lambda e: [*DETECT, "--data", e.file("d.yaml", "train: .\nval: .\n"
                                                                             "names: [a, b]\n"), "--model",
                                                  _evil_checkpoint(e), "--out", e.tmp / "d"], "could run code"),
    Bad("detect-export-not-a-detection-run", lambda e: ["detect", "export", e.digits_run, "--out", e.tmp / "x", "-q"],
        "not a detection run"),
    # pipeline config
    Bad("pipeline-unknown-section", lambda e: ["pipeline", e.file("p.yaml", "train: {epochs: 1}\ntrian: {}\n"),
                                               "--out", e.tmp / "p", "-q"], "trian"),
    Bad("pipeline-unknown-key", lambda e: ["pipeline", e.file("p.yaml", "train: {epoch: 1}\n"), "--out", e.tmp / "p",
                                           "-q"], "epoch"),
    Bad("pipeline-wrong-type", lambda e: ["pipeline", e.file("p.yaml", "train: {epochs: -1}\n"), "--out",
                                          e.tmp / "p", "-q"], "epochs"),
    Bad("pipeline-not-yaml", lambda e: ["pipeline", e.file("p.yaml", "train: [\n"), "--out", e.tmp / "p", "-q"],
        "YAML"),
    Bad("pipeline-missing-config", lambda e: ["pipeline", e.tmp / "none.yaml", "--out", e.tmp / "p", "-q"],
        "not found"),
]


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
    assert_untouched(before, snapshot(env.tmp, *env.watch))
    assert not (env.tmp.parent / f"{env.tmp.name}-pwned").exists(), "a checkpoint ran pickled code"


def test_read_only_output_directory(tmp_path, cli, digits_run, digits_export):
    with read_only(tmp_path / "ro") as ro:
        before = snapshot(ro, digits_run, digits_export)
        for args in ([*TRAIN, "--out", ro / "run"], [*TRAIN, "--out", ro],
                     ["export", digits_run, "--out", ro / "exp", "--formats", "onnx", "-q"],
                     ["bench", digits_export, "--report", ro / "rep", "-q"],
                     ["partition", digits_run, "--out", ro / "groups.yaml", "--groups", "3", "-q"]):
            code, _, err = cli(*args)
            check_error_line(code, err, str(ro))
        assert snapshot(ro, digits_run, digits_export) == before


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
