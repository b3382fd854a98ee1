"""Trust nothing edgespec did not make: static checks over the whole code base, plus the behaviour behind them.

- checkpoints load with torch.load(..., weights_only=True); no pickle/marshal/np.load(allow_pickle=True)
- YAML loads with safe_load or a SafeLoader subclass
- no shell: no shell=True, os.system, os.popen; subprocess argv is a list, never a string
- archives unpack only through toolkit/bundle/safe_extract.py; no eval/exec
"""

from __future__ import annotations

import ast
import io
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("toolkit", "exporters", "benchmarks")
SAFE_EXTRACT = "toolkit/bundle/safe_extract.py"
# yaml.load calls whose Loader is a SafeLoader subclass built by a function (checked at run time below).
YAML_LOADER_FACTORIES = {("toolkit/io.py", "_strict_loader")}


def _sources() -> list[tuple[str, ast.Module]]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if ".venv" in path.parts:
                continue
            rel = path.relative_to(ROOT).as_posix()
            out.append((rel, ast.parse(path.read_text(encoding="utf-8"), filename=rel)))
    return out


SOURCES = _sources()


def _name(node: ast.AST) -> str:
    """Dotted name of a call target: 'torch.load', 'subprocess.run', 'os.system', 'load'."""
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _calls(sources):
    for rel, tree in sources:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                yield rel, node, _name(node.func)


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _where(rel: str, node: ast.AST) -> str:
    return f"{rel}:{node.lineno}"


def torch_load_without_weights_only(sources) -> list[str]:
    return [_where(rel, c) for rel, c, n in _calls(sources)
            if n.endswith("torch.load") and not _is_true(_kw(c, "weights_only"))]


def pickle_loading(sources) -> list[str]:
    return [_where(rel, c) for rel, c, n in _calls(sources)
            if n in ("pickle.load", "pickle.loads", "marshal.load", "marshal.loads", "dill.load", "joblib.load",
                     "shelve.open")
            or (n.endswith(("np.load", "numpy.load")) and _is_true(_kw(c, "allow_pickle")))]


def unsafe_yaml(sources) -> list[str]:
    bad = []
    for rel, c, n in _calls(sources):
        if n in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all", "yaml.full_load_all"):
            bad.append(_where(rel, c))
        elif n == "yaml.load":
            loader = _kw(c, "Loader") or (c.args[1] if len(c.args) > 1 else None)
            ok = loader is not None and (
                (isinstance(loader, ast.Attribute | ast.Name) and _name(loader).split(".")[-1] in
                 ("SafeLoader", "CSafeLoader"))
                or (isinstance(loader, ast.Call) and (rel, _name(loader.func)) in YAML_LOADER_FACTORIES))
            if not ok:
                bad.append(_where(rel, c))
    for rel, tree in sources:  # the unsafe loaders named anywhere (e.g. Loader=yaml.Loader)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _name(node) in ("yaml.Loader", "yaml.FullLoader",
                                                                    "yaml.UnsafeLoader", "yaml.CLoader"):
                bad.append(_where(rel, node))
    return bad


def shell_commands(sources) -> list[str]:
    bad = []
    for rel, c, n in _calls(sources):
        if n in ("os.system", "os.popen", "os.execl", "os.execlp", "os.spawnl", "commands.getoutput",
                 "subprocess.getoutput", "subprocess.getstatusoutput"):
            bad.append(f"{_where(rel, c)} {n}")
        elif n.split(".")[-1] in ("run", "Popen", "call", "check_call", "check_output") and (
                n.startswith("subprocess") or n == "Popen"):
            shell = _kw(c, "shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                bad.append(f"{_where(rel, c)} shell=")
            argv = c.args[0] if c.args else _kw(c, "args")
            if isinstance(argv, ast.Constant | ast.JoinedStr | ast.BinOp):
                bad.append(f"{_where(rel, c)} command given as a string")
    return bad


def code_execution_and_raw_unpacking(sources) -> list[str]:
    bad = []
    for rel, c, n in _calls(sources):
        if isinstance(c.func, ast.Name) and n in ("eval", "exec", "compile", "__import__"):
            bad.append(f"{_where(rel, c)} {n}")
        archive_call = n.endswith(("extractall", "unpack_archive")) or (
            n.endswith(".extract") and any(w in n.lower() for w in ("tar", "zip")))
        if archive_call and rel != SAFE_EXTRACT:
            bad.append(f"{_where(rel, c)} {n}")
    return bad


RULES = {f.__name__: f for f in (torch_load_without_weights_only, pickle_loading, unsafe_yaml, shell_commands,
                                 code_execution_and_raw_unpacking)}
VIOLATIONS = {
    "torch_load_without_weights_only": "import torch\nx = torch.load(p)\ny = torch.load(p, weights_only=False)\n",
    "pickle_loading": "import pickle, numpy as np\npickle.loads(b)\nnp.load(f, allow_pickle=True)\n",
    "unsafe_yaml": "import yaml\nyaml.load(t)\nyaml.load(t, Loader=yaml.Loader)\nyaml.full_load(t)\n",
    "shell_commands": "import os, subprocess\nos.system(c)\nsubprocess.run(c, shell=True)\nsubprocess.run(f'ls {d}')\n",
    "code_execution_and_raw_unpacking": "eval(s)\nexec(s)\ntar.extractall(d)\nshutil.unpack_archive(a, d)\n",
}


def test_the_scan_sees_the_code_base():
    names = {rel for rel, _ in SOURCES}
    assert "toolkit/checkpoint.py" in names and len(names) > 20
    assert any(n == "torch.load" for _, _, n in _calls(SOURCES))


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_code_base_follows(rule):
    found = RULES[rule](SOURCES)
    assert not found, f"{rule}: {found}"


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_catches_what_it_forbids(rule):
    snippet = VIOLATIONS[rule]
    found = RULES[rule]([("snippet.py", ast.parse(snippet))])
    lines = {f.split()[0] for f in found}  # every violating line is found
    expected = {f"snippet.py:{i}" for i, ln in enumerate(snippet.splitlines(), 1) if not ln.startswith("import")}
    assert lines == expected, found


def test_yaml_loader_factories_are_safe_loaders():
    import importlib

    import yaml

    for rel, func in YAML_LOADER_FACTORIES:
        module = importlib.import_module(rel.removesuffix(".py").replace("/", "."))
        loader = getattr(module, func)()
        assert issubclass(loader, yaml.SafeLoader), f"{rel}:{func} returns {loader}"


# ---- the behaviour behind the rules ------------------------------------------------------------------------------

def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _special(name: str, kind) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


@pytest.mark.parametrize("members", [
    [_file("../escape.txt")],
    [_file("/tmp/edgespec-abs-escape.txt")],
    [_file("ok/../../escape.txt")],
    [_link("ln", "../../etc"), _file("ln/passwd")],
    [_link("ln", "/etc/passwd")],
    [_link("hard", "/etc/passwd", tarfile.LNKTYPE)],
    [_special("fifo", tarfile.FIFOTYPE)],
    [_special("dev", tarfile.CHRTYPE)],
], ids=["dotdot", "absolute", "nested-dotdot", "symlink-dir-escape", "symlink-absolute", "hardlink-outside", "fifo",
        "device"])
def test_unsafe_archives_are_refused_before_anything_is_written(tmp_path, members):
    from toolkit.bundle.safe_extract import UnsafeArchiveError, safe_extract
    from toolkit.errors import UserError

    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(_tar([_file("readme.txt", b"first"), *members]))
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, dest)
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)
    assert not (dest / "readme.txt").exists()  # checked before anything is written
    assert not (tmp_path / "a" / "escape.txt").exists() and not (tmp_path / "a" / "b" / "escape.txt").exists()
    assert not Path("/tmp/edgespec-abs-escape.txt").exists()


def test_a_safe_archive_unpacks(tmp_path):
    from toolkit.bundle.safe_extract import safe_extract

    archive = tmp_path / "b.tar.gz"
    archive.write_bytes(_tar([_file("run.py", b"print(1)"), _file("models/m.onnx", b"onnx"),
                              _link("latest", "models/m.onnx")]))
    files = safe_extract(archive, tmp_path / "dest")
    assert sorted(files) == ["models/m.onnx", "run.py"]
    assert (tmp_path / "dest" / "latest").read_bytes() == b"onnx"


@pytest.mark.parametrize("host", ["-oProxyCommand=touch /tmp/x", "host; rm -rf /", "a b", "$(id)", "host\nnext", ""])
def test_remote_hosts_that_could_become_options_or_shell_are_refused(host):
    from toolkit.bundle.remote import check_host
    from toolkit.errors import UserError

    with pytest.raises(UserError):
        check_host(host)


def test_the_remote_command_line_quotes_every_value():
    import shlex

    from toolkit.bundle.remote import Remote

    evil = "results $(touch /tmp/pwned); `id`.json"
    argv = Remote("user@device").ssh_argv([["cd", "/tmp/w 1"], ["python3", "run.py", "--out", evil]])
    assert argv[0] == "ssh" and isinstance(argv, list)
    remote_line = argv[-1]
    assert shlex.split(remote_line) == ["cd", "/tmp/w 1", "&&", "python3", "run.py", "--out", evil]


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_yolo_checkpoints_are_checked_before_ultralytics_unpickles_them(tmp_path):
    """Ultralytics loads .pt files with weights_only=False; edgespec lets through only pickles of layer classes."""
    import importlib.util

    import torch

    if importlib.util.find_spec("ultralytics") is None:  # not importorskip: the first import must see our settings
        pytest.skip("ultralytics is not installed")

    from toolkit.detect.offline import check_pickle, ultralytics_env, yolo
    from toolkit.errors import UserError

    ultralytics_env(tmp_path)  # keep Ultralytics' settings inside tmp_path
    from ultralytics.nn.tasks import DetectionModel

    genuine = tmp_path / "genuine.pt"
    torch.save({"model": DetectionModel("yolo11n.yaml", nc=2, verbose=False), "epoch": -1}, genuine)
    check_pickle(genuine)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Evil(marker), "epoch": -1}, evil)
    with pytest.raises(UserError, match="could run code"):
        yolo(tmp_path, evil)
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable"):
        check_pickle(tmp_path / "junk.pt")
