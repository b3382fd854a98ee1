"""Helpers for the reliability suite: file-tree snapshots, bad image folders, read-only directories, subprocesses."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
ENV.pop("EDGESPEC_DEBUG", None)


def assert_untouched(before: dict[str, object], after: dict[str, object]) -> None:
    """Nothing that existed changed or vanished; the only thing allowed to appear is a directory holding at most a
    lock file (a command takes the output directory's lock before it may look at what it would write)."""
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"a failed command changed or removed {changed}"
    new = sorted(k for k in after if k not in before)
    assert all(after[k] == "dir" for k in new), f"a failed command wrote {[k for k in new if after[k] != 'dir']}"


def snapshot(*roots: Path) -> dict[str, object]:
    """Every file (hash, size, mtime) and directory under `roots`: equal snapshots mean nothing was touched.

    `.lock` files are left out: a command takes the directory lock before it may look inside, so a refused
    command can leave an empty lock file behind (it never holds data).
    """
    snap: dict[str, object] = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            snap[str(root)] = None
            continue
        paths = [root, *root.rglob("*")] if root.is_dir() else [root]
        for p in paths:
            if p.name == ".lock":
                continue
            if p.is_symlink():
                snap[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                snap[str(p)] = "dir"
            elif not p.is_file():  # a FIFO or device: reading it would block; its presence is what counts
                snap[str(p)] = "special"
            else:
                st = p.stat()
                snap[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns)
    return snap


def image_folder(root: Path, classes=("a", "b"), n: int = 8, size: int = 10, mode: str = "RGB", seed: int = 0) -> Path:
    """A tiny class-per-folder dataset of random PNGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / c / f"{i}.png")
    return root


@contextlib.contextmanager
def read_only(path: Path):
    """Make `path` unwritable even for root (chattr +i), or by permissions for other users; skip if neither works."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        ok = chattr and subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode == 0
        if not ok:
            pytest.skip("running as root without chattr +i: cannot make a read-only directory")
        try:
            yield path
        finally:
            subprocess.run([chattr, "-i", str(path)], capture_output=True)
    else:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


def edgespec_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "toolkit", *(str(a) for a in args)]


def run_edgespec(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(edgespec_cmd(*args), env=ENV, capture_output=True, text=True, timeout=timeout)


def popen_edgespec(*args: object) -> subprocess.Popen:
    return subprocess.Popen(edgespec_cmd(*args), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# How a one-line message points at the fix: after a semicolon, a usage hint, or a list of what is allowed.
FIX_HINTS = ("; ", "(see 'edgespec", "did you mean", " should ", " must ", "(allowed: ", "expected ", "choose ",
             "give ", "pass ")


def check_error_line(code: int, err: str, fragment: str, expect_code: int = 2) -> str:
    """Exit code, exactly one 'error:' line on stderr naming the problem and a fix, no traceback."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == expect_code, f"exit {code}, stderr: {err!r}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert fragment.lower() in line.lower(), f"{fragment!r} not in {line!r}"
    assert any(hint in line for hint in FIX_HINTS), f"no fix in {line!r}"
    return line
