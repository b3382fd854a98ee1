"""`edgespec bench --remote USER@HOST --device PROFILE`: copy a bundle over SSH, run it there, fetch and merge.

ssh and scp run as argument lists (never through a local shell); the one command line the remote shell sees is
built from fixed words and shlex.quote'd values. Hosts, users, ports and keys come from the user's SSH
configuration (~/.ssh/config, or --ssh-config); BatchMode=yes means a missing key fails at once instead of
prompting for a password. The bundle is unpacked on the device by safe_extract.py, copied alongside it.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EdgespecError, UserError

log = logging.getLogger(__name__)

SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=15",
               "-o", "ServerAliveCountMax=4")
_HOST = re.compile(r"^(?:[A-Za-z0-9._][A-Za-z0-9._+-]*@)?[A-Za-z0-9_][A-Za-z0-9._-]*$")
_REMOTE_DIR = re.compile(r"^/[A-Za-z0-9._/-]+$")
SAFE_EXTRACT = Path(__file__).resolve().parent / "safe_extract.py"


class RemoteError(EdgespecError):
    """The device was reached but the bundle failed there."""


def check_host(host: str) -> str:
    """USER@HOST or an alias from the SSH config; anything else (options, spaces, shell characters) is refused."""
    if not _HOST.fullmatch(host or ""):
        raise UserError(f"--remote {host!r} is not USER@HOST or a host alias from your SSH config (letters, digits, "
                        "'.', '_', '-'; no options or spaces)")
    return host


@dataclass
class Remote:
    host: str
    ssh_config: Path | None = None
    python: str = "python3"
    timeout_s: float = 3600.0
    extra: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_host(self.host)
        if self.ssh_config is not None and not Path(self.ssh_config).is_file():
            raise UserError(f"--ssh-config {self.ssh_config} not found; pass an ssh_config file or leave it out to "
                            "use ~/.ssh/config")
        if not self.python or self.python.startswith("-") or "\n" in self.python:
            raise UserError(f"--remote-python {self.python!r} must be a program name or path on the device")

    def _config(self) -> list[str]:
        return ["-F", str(self.ssh_config)] if self.ssh_config else []

    def ssh_argv(self, words: list[list[str]]) -> list[str]:
        """ssh ... HOST 'a b && c d': each word quoted, commands joined with &&."""
        command = " && ".join(" ".join(shlex.quote(w) for w in cmd) for cmd in words)
        return ["ssh", *self._config(), *SSH_OPTIONS, self.host, command]

    def scp_argv(self, src: str, dst: str) -> list[str]:
        return ["scp", "-q", *self._config(), *SSH_OPTIONS, src, dst]

    def _run(self, argv: list[str], what: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        log.info("%s", what)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise UserError(f"{argv[0]} is not installed here; install the OpenSSH client") from None
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{what} on {self.host} took longer than {timeout:.0f} s; check the device") from None
        if proc.returncode == 255:
            tail = _last_line(proc.stderr)
            raise UserError(f"cannot reach {self.host} over SSH ({tail}); check the host in your SSH config and "
                            "that your key is loaded (no password prompts: BatchMode=yes)")
        return proc

    def mkdtemp(self) -> str:
        proc = self._run(self.ssh_argv([["mktemp", "-d", "-t", "edgespec-bundle.XXXXXX"]]), "creating a work dir")
        path = proc.stdout.strip()
        if proc.returncode != 0 or not _REMOTE_DIR.fullmatch(path):
            raise RemoteError(f"could not create a temporary directory on {self.host}: "
                              f"{_last_line(proc.stderr) or path!r}")
        return path

    def put(self, local: Path, remote_dir: str) -> None:
        proc = self._run(self.scp_argv(_local(local), f"{self.host}:{remote_dir}/{local.name}"),
                         f"copying {local.name}", timeout=self.timeout_s)
        if proc.returncode != 0:
            raise RemoteError(f"copying {local.name} to {self.host} failed: {_last_line(proc.stderr)}")

    def get(self, remote_path: str, local: Path) -> None:
        proc = self._run(self.scp_argv(f"{self.host}:{remote_path}", _local(local)), "fetching results")
        if proc.returncode != 0:
            raise RemoteError(f"fetching {remote_path} from {self.host} failed: {_last_line(proc.stderr)}")

    def cleanup(self, remote_dir: str) -> None:
        try:
            self._run(self.ssh_argv([["rm", "-rf", "--", remote_dir]]), "removing the work dir")
        except EdgespecError as exc:  # the figures are already here; a leftover temp dir is not a failure
            log.warning("could not remove %s on %s: %s", remote_dir, self.host, exc)


def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def run_bundle_remote(bundle: str | Path, remote: Remote, results_out: str | Path, runner_args: list[str] | None = None,
                      keep: bool = False) -> Path:
    """Copy `bundle` to the device, unpack it safely, run `run.py --out results.json`, fetch the results."""
    bundle, results_out = Path(bundle), Path(results_out)
    if not bundle.is_file():
        raise UserError(f"bundle not found: {bundle}; build one with `edgespec bundle`")
    work = remote.mkdtemp()
    try:
        remote.put(bundle, work)
        remote.put(SAFE_EXTRACT, work)
        py = remote.python
        argv = remote.ssh_argv([
            ["cd", work],
            [py, "safe_extract.py", bundle.name, "bundle"],
            ["cd", "bundle"],
            [py, "run.py", "--out", f"{work}/results.json", *(runner_args or [])],
        ])
        proc = remote._run(argv, f"running the bundle on {remote.host}", timeout=remote.timeout_s)
        for line in proc.stderr.strip().splitlines()[-20:]:
            log.info("[%s] %s", remote.host, line)
        if proc.returncode == 2:
            raise UserError(f"the bundle refused to run on {remote.host}: {_last_line(proc.stderr)}")
        if proc.returncode != 0:
            raise RemoteError(f"the bundle failed on {remote.host} (exit {proc.returncode}): "
                              f"{_last_line(proc.stderr) or _last_line(proc.stdout)}")
        results_out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=results_out.parent, prefix=".fetch-") as tmp:
            fetched = Path(tmp) / "results.json"
            remote.get(f"{work}/results.json", fetched)
            fetched.replace(results_out)  # same directory: atomic
    finally:
        if not keep:
            remote.cleanup(work)
    return results_out


def bench_remote(export_dir: str | Path, profile: str, remote: Remote, report_dir: str | Path,
                 formats: list[str] | None = None, samples: int | None = None,
                 runner_args: list[str] | None = None, keep: bool = False) -> dict[str, Any]:
    """Bundle `export_dir` for `profile`, run it on the device, keep its results.json in REPORT_DIR and merge it."""
    from .merge import import_results
    from .pack import DEFAULT_SAMPLES, make_bundle

    report_dir = Path(report_dir)
    with tempfile.TemporaryDirectory(prefix="edgespec-bundle-") as tmp:
        info = make_bundle(export_dir, profile, Path(tmp) / "bundle.tar.gz", formats,
                           DEFAULT_SAMPLES if samples is None else samples)
        results = run_bundle_remote(info.path, remote, report_dir / f"results-{info.device}.json", runner_args, keep)
    return import_results(results, report_dir)


def _local(path: str | Path) -> str:
    """A local path as scp must get it: absolute, so that `a:b/results.json` can never read as HOST:PATH."""
    return str(Path(path).absolute())
