"""What the device is: runtime version, OS and JetPack release, CPU and GPU, power mode (where readable).

Standard library only; every probe is best-effort and records None rather than failing the run.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().rstrip(b"\0").decode("utf-8", "replace").strip()
    except OSError:
        return None


def _cmd(args, timeout=20):
    exe = shutil.which(args[0]) or (args[0] if os.path.isabs(args[0]) and os.access(args[0], os.X_OK) else None)
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def os_release():
    text = _read("/etc/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return f"{platform.system()} {platform.release()}"


def jetpack():
    """L4T from /etc/nv_tegra_release and the nvidia-jetpack package version, where either exists."""
    l4t = _read("/etc/nv_tegra_release")
    pkg = _cmd(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    if not l4t and not pkg:
        return None
    return {"l4t": l4t.splitlines()[0].lstrip("# ").strip() if l4t else None, "nvidia_jetpack": pkg}


def cpu_name():
    text = _read("/proc/cpuinfo") or ""
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Hardware", "Model", "CPU part") and value.strip():
            found.setdefault(key, value.strip())
    for key in ("model name", "Model", "Hardware"):
        if key in found:
            return found[key]
    if "CPU part" in found:
        return f"{platform.machine()} (CPU part {found['CPU part']})"
    return platform.processor() or platform.machine()


def power_mode():
    """`nvpmodel -q` on Jetson ('NV Power Mode: MAXN' and the mode number)."""
    out = _cmd(["nvpmodel", "-q"])
    if not out:
        return None
    return " ".join(line.strip() for line in out.splitlines() if line.strip())


def gpu_name():
    out = _cmd(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    if out:
        return out.splitlines()[0].strip()
    model = _read("/proc/device-tree/model")
    if model and ("Jetson" in model or "Orin" in model or "Xavier" in model):
        return f"{model} (integrated GPU)"
    return None


def device_facts(runtime, runtime_version, providers=None):
    """Facts recorded with every result, so a figure can be traced to the device and software it came from."""
    import numpy

    return {
        "runtime": runtime,
        "runtime_version": runtime_version,
        "execution_providers": providers,
        "os_release": os_release(),
        "kernel": platform.release(),
        "jetpack": jetpack(),
        "device_tree_model": _read("/proc/device-tree/model"),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gpu": gpu_name(),
        "power_mode": power_mode(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }
