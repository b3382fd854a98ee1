"""`edgespec bench --remote` against a real OpenSSH server that the test starts on 127.0.0.1.

The server runs from the system's sshd with a host key, an authorized key and a config made in tmp_path; the client
uses a temporary ssh_config (alias, port, identity, known-hosts file in tmp_path) passed with --ssh-config, just as
a user's ~/.ssh/config would name a Jetson. The "device" python is a fresh venv with only numpy and onnxruntime.
Skipped, with the reason, only where no sshd is installed or it cannot start here (.ci/run installs OpenSSH).
"""

from __future__ import annotations

import getpass
import glob
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

try:  # rootdir-relative import (no __init__.py in tests/integration) ...
    from test_bundle_device import device_python, digits_export
except ImportError:  # ... or as a package, should one be added
    from .test_bundle_device import device_python, digits_export

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
ALIAS = "edgespec-test-device"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path


def _client_config(d: Path, port: int, key: Path) -> Path:
    cfg = d / "ssh_config"
    cfg.write_text(f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
                   f"  IdentityFile {key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
                   f"  UserKnownHostsFile {d / 'known_hosts'}\n  LogLevel ERROR\n")
    return cfg


@pytest.fixture
def ssh_server(tmp_path):
    """(alias, ssh_config path, directory) of a running sshd on a free loopback port."""
    if not os.path.isfile(SSHD) or not all(shutil.which(t) for t in ("ssh", "scp", "ssh-keygen")):
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server openssh-client)")
    d = tmp_path / "ssh"
    d.mkdir(mode=0o700)
    host_key, client_key = _keygen(d / "host_key"), _keygen(d / "client_key")
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"PidFile {d / 'sshd.pid'}\nSubsystem sftp internal-sftp\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    check = subprocess.run([SSHD, "-t", "-f", str(d / "sshd_config")], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"sshd cannot run here: {check.stderr.strip()[-300:]}")
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.skip(f"sshd exited at start: {(d / 'sshd.log').read_text()[-300:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.skip("sshd did not listen within 15 s")
                time.sleep(0.1)
        yield ALIAS, _client_config(d, port, client_key), d
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _leftovers() -> set[str]:
    return set(glob.glob(os.path.join(os.environ.get("TMPDIR", "/tmp"), "edgespec-bundle.*")))


def test_bench_remote_runs_the_bundle_over_ssh_and_merges(ssh_server, digits_run, tmp_path_factory, tmp_path, cli):
    alias, cfg, _ = ssh_server
    export = digits_export(digits_run, tmp_path_factory)
    device_py = device_python(tmp_path_factory)
    before = _leftovers()
    report = tmp_path / "report"
    code, out, err = cli("bench", export, "--remote", alias, "--device", "raspberry-pi-5", "--ssh-config", cfg,
                         "--allow-other-hardware",  # localhost is no Raspberry Pi 5
                         "--remote-python", device_py, "--report", report, "--runs", "20", "--warmup", "2",
                         "--time-limit", "0.2", "-q")
    assert code == 0, err
    label = "measured on other hardware"  # the bundle's run.py saw that this is not a Raspberry Pi 5
    assert label in out
    data = json.loads((report / "report.json").read_text())
    rows = [r for r in data["rows"] if r["measurement"] == label]
    assert {r["model"] for r in rows} == {"digits", "digits-low"}
    assert all(r["device"] == "raspberry-pi-5" and r["accuracy"] > 0.5 and r["latency_ms"]["p50"] > 0 for r in rows)
    raw = json.loads((report / "results-raspberry-pi-5.json").read_text())  # the device's own file is kept
    assert raw["device_facts"]["runtime"] == "onnxruntime" and len(raw["rows"]) == 2
    assert label in (report / "report.md").read_text()
    assert _leftovers() <= before  # the work directory on the device was removed


def test_a_key_the_device_does_not_accept_fails_at_once_without_a_password_prompt(ssh_server, tmp_path):
    from toolkit.bundle.remote import Remote, run_bundle_remote
    from toolkit.errors import UserError

    alias, cfg, d = ssh_server
    other = _keygen(d / "other_key")
    bad_cfg = _client_config(tmp_path, int(cfg.read_text().split("Port ")[1].split()[0]), other)
    (tmp_path / "b.tar.gz").write_bytes(b"x")
    t0 = time.monotonic()
    with pytest.raises(UserError, match=f"cannot reach {alias} over SSH"):
        run_bundle_remote(tmp_path / "b.tar.gz", Remote(alias, ssh_config=bad_cfg), tmp_path / "r.json")
    assert time.monotonic() - t0 < 30 and not (tmp_path / "r.json").exists()


def test_an_unreachable_device_is_one_clear_line(tmp_path, cli):
    from toolkit.bundle.remote import Remote, run_bundle_remote
    from toolkit.errors import UserError

    if not shutil.which("ssh"):
        pytest.skip("no OpenSSH client installed")
    cfg = _client_config(tmp_path, _free_port(), tmp_path / "no-key")  # nothing listens there
    (tmp_path / "b.tar.gz").write_bytes(b"x")
    with pytest.raises(UserError, match=f"cannot reach {ALIAS} over SSH") as exc:
        run_bundle_remote(tmp_path / "b.tar.gz", Remote(ALIAS, ssh_config=cfg), tmp_path / "r.json")
    assert "\n" not in str(exc.value)
    code, _, err = cli("bench", tmp_path, "--remote", "-oProxyCommand=touch x", "--device", "host-cpu")
    assert code == 2 and "USER@HOST" in err and err.count("\n") == 1 and not (Path.cwd() / "x").exists()
