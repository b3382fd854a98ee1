#!/usr/bin/env python3
"""edgespec Android driver: `python3 adb_driver.py --out results.json` at the top of an unpacked `--adb` bundle, on
the computer the phone is plugged into. Phones do not run Python: this script stays on the computer, pushes the
artifacts and the runtime's own benchmark binary with `adb`, runs the binary on the phone, parses what it prints
and writes the rows (`measured on device`) for `edgespec bench --import results.json`.

Binaries (neither ships in a Python wheel; build them for the phone, arm64-v8a):
- ExecuTorch's `executor_runner` (or `xnn_executor_runner`): `.pte` items. It prints the total of
  `--num_executions` runs ("Model executed successfully N time(s) in X ms."); the driver runs it `--repeats` times
  and the row's p50 is over those per-invocation means (per-iteration lines, printed by newer runners, are used
  when present).
- ONNX Runtime's `onnxruntime_perf_test`: `.ort`/`.onnx` items, `-m times -r N -I`, its P50/P90/P99 lines.
Both feed the binary its own generated inputs (all ones / random), so the rows are latency only: neither binary
writes the model's outputs in a form this driver reads back, and accuracy is not measured on the phone.

Standard library only, Python 3.8+. Every argument given to `adb shell` is quoted (shlex); `adb devices` is checked
first; no device, no binary or an output this driver cannot read fails with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import re
import shlex
import statistics
import subprocess
import sys

RESULTS_SCHEMA = "edgespec.device-results/1"
MEASUREMENT = "measured on device"
REMOTE_DIR = "/data/local/tmp/edgespec"
KINDS = {"executor_runner": "executorch", "xnn_executor_runner": "executorch", "onnxruntime_perf_test": "onnxruntime"}
SUFFIXES = {"executorch": (".pte",), "onnxruntime": (".ort", ".onnx")}


class DriverError(Exception):
    """Bad input or an unreadable result: one line, exit code 2."""


# -- adb --------------------------------------------------------------------------------------------------------

def parse_devices(text):
    """`adb devices` output -> {serial: state} ('device', 'unauthorized', 'offline', ...)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*")):
            continue
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def choose_serial(devices, wanted):
    ready = [s for s, st in devices.items() if st == "device"]
    if wanted in (None, "", "auto"):
        if len(ready) == 1:
            return ready[0]
        if not ready:
            raise DriverError("no Android device in `adb devices`" + (f" (found: {devices})" if devices else "")
                              + "; plug the phone in, enable USB debugging and accept the prompt")
        raise DriverError(f"several devices attached ({', '.join(ready)}); pass --serial SERIAL")
    if devices.get(wanted) != "device":
        state = devices.get(wanted)
        raise DriverError(f"device {wanted} is {state}" if state else
                          f"device {wanted} is not in `adb devices` (attached: {', '.join(devices) or 'none'})")
    return wanted


def shell_argv(adb, serial, words):
    """adb -s SERIAL shell 'w1 w2 ...': the phone's shell sees one command line of shlex-quoted words."""
    return [adb, "-s", serial, "shell", " ".join(shlex.quote(str(w)) for w in words)]


def runner_kind(binary):
    name = os.path.basename(binary)
    for stem, kind in KINDS.items():
        if name == stem or name.startswith(stem + "."):
            return kind
    raise DriverError(f"unknown runner binary {name!r}: use ExecuTorch's executor_runner (or xnn_executor_runner) "
                      "or ONNX Runtime's onnxruntime_perf_test")


def executor_runner_command(binary, model, executions, threads):
    return [binary, "--model_path", model, "--num_executions", str(executions), "--cpu_threads", str(threads)]


def perf_test_command(binary, model, runs, threads, provider):
    return [binary, "-m", "times", "-r", str(runs), "-I", "-x", str(threads), "-e", provider, model]


# -- parsing -------------------------------------------------------------------------------------------------------

_ET_TOTAL = re.compile(r"Model executed successfully (\d+) time\(s\) in ([0-9.]+) ms")
_ET_ITER = re.compile(r"Iteration \d+ of \d+: ([0-9.]+) ms")
_ET_LOAD = re.compile(r"Model loaded in ([0-9.]+) ms")
_ORT = {"mean_ms": re.compile(r"Average (?:inference )?time cost:\s*([0-9.eE+-]+) ms"),
        "runs": re.compile(r"Total (?:inference requests|iterations):\s*(\d+)"),
        "session_s": re.compile(r"Session creation time cost:\s*([0-9.eE+-]+) s")}
_ORT_PCT = re.compile(r"(Min|Max|P50|P90|P95|P99|P999) Latency(?: is|:)\s*([0-9.eE+-]+)\s*(s|sec|ms)?")


def parse_executor_runner(text):
    """What executor_runner printed -> {'runs', 'total_ms', 'mean_ms', 'iterations_ms', 'load_ms'}."""
    m = _ET_TOTAL.search(text)
    if m is None:
        raise DriverError("executor_runner printed no 'Model executed successfully N time(s) in X ms.' line: an "
                          "older runner without timing, or the run failed; use a runner built from ExecuTorch 0.4 "
                          "or later (last line: " + _last(text) + ")")
    runs, total = int(m.group(1)), float(m.group(2))
    load = _ET_LOAD.search(text)
    return {"runs": runs, "total_ms": total, "mean_ms": total / max(runs, 1),
            "iterations_ms": [float(v) for v in _ET_ITER.findall(text)],
            "load_ms": float(load.group(1)) if load else None}


def parse_perf_test(text):
    """What onnxruntime_perf_test printed -> {'mean_ms', 'runs', 'session_s', 'p50_ms', ...} (latencies in ms)."""
    out = {}
    for key, rx in _ORT.items():
        m = rx.search(text)
        if m:
            out[key] = int(m.group(1)) if key == "runs" else float(m.group(1))
    if "mean_ms" not in out:
        raise DriverError("onnxruntime_perf_test printed no 'Average (inference) time cost' line: the run failed or "
                          "this is not its output (last line: " + _last(text) + ")")
    for name, value, unit in _ORT_PCT.findall(text):
        out[f"{name.lower()}_ms"] = float(value) * (1.0 if unit == "ms" else 1e3)
    return out


def _last(text):
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return repr(lines[-1][:160]) if lines else "nothing"


def latency_from(kind, parsed_runs):
    """(latency_ms dict, runs, how) from one or more parsed invocations."""
    if kind == "onnxruntime":
        p = parsed_runs[-1]
        lat = {"p50": p.get("p50_ms"), "p90": p.get("p90_ms"), "p99": p.get("p99_ms"), "mean": p["mean_ms"],
               "std": None}
        how = "onnxruntime_perf_test's own percentiles (-m times)"
        if lat["p50"] is None:
            lat["p50"] = p["mean_ms"]
            how = "onnxruntime_perf_test printed no percentiles: p50 is its average"
        return lat, p.get("runs"), how
    iters = [v for p in parsed_runs for v in p["iterations_ms"]]
    values = iters or [p["mean_ms"] for p in parsed_runs]
    q = _quantiles(values)
    how = ("executor_runner's per-iteration times" if iters else
           f"p50 over {len(values)} invocations of executor_runner, each the mean of its --num_executions runs")
    return {"p50": q[50], "p90": q[90], "p99": q[99], "mean": statistics.fmean(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0}, sum(p["runs"] for p in parsed_runs), how


def _quantiles(values):
    s = sorted(values)

    def at(q):  # linear interpolation, as numpy.percentile's default
        pos = (len(s) - 1) * q / 100.0
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    return {q: at(q) for q in (50, 90, 99)}


@functools.lru_cache(maxsize=1)
def _run_module():
    """The bundle's run.py (next to this file in a bundle and in edgespec): the one runner-side row builder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "edgespec_bundle_run", os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row_for(bundle, item, kind, parsed_runs, binary, threads):
    lat, runs, how = latency_from(kind, parsed_runs)
    row = _run_module().new_row(bundle, item, 1, threads)
    row.update(measurement=MEASUREMENT, latency_ms=lat, throughput_ips=1e3 / lat["p50"] if lat["p50"] else None,
               runs=runs, runtime=kind, batches=[{"batch_size": 1, "latency_ms": lat, "runs": runs}])
    row["notes"] += [f"latency only: {os.path.basename(binary)} ran on its own generated inputs; accuracy not "
                     "measured on the phone", how]
    row["how"] = {"latency": f"{MEASUREMENT}: {how}", "accuracy": "not measured (latency only)",
                  "size": "file size from the manifest, sha256 verified before pushing"}
    return row


# -- driving ---------------------------------------------------------------------------------------------------------

def sha256_file(path):
    return _run_module().sha256_file(path)  # run.py's, the one that verified the bundle


class Adb:
    def __init__(self, adb, serial, timeout):
        self.adb, self.serial, self.timeout = adb, serial, timeout

    def run(self, argv, what):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise DriverError(f"{argv[0]} not found; install Android platform-tools or pass --adb PATH") from None
        except subprocess.TimeoutExpired:
            raise DriverError(f"{what} took longer than {self.timeout:.0f} s on the phone") from None
        if proc.returncode != 0:
            raise DriverError(f"{what} failed (exit {proc.returncode}): {_last(proc.stderr or proc.stdout)}")
        return proc.stdout + proc.stderr

    def shell(self, words, what):
        return self.run(shell_argv(self.adb, self.serial, words), what)

    def push(self, local, remote):
        self.run([self.adb, "-s", self.serial, "push", local, remote], f"adb push {os.path.basename(local)}")


def main(argv=None):
    p = argparse.ArgumentParser(description="Run an edgespec --adb bundle on an Android phone; write results.json.")
    p.add_argument("--out", default="results.json")
    p.add_argument("--serial", help="adb serial (default: the bundle's, else the only attached device)")
    p.add_argument("--adb", default="adb", help="the adb program")
    p.add_argument("--executions", type=int, default=50, help="executor_runner --num_executions per invocation")
    p.add_argument("--repeats", type=int, default=7, help="executor_runner invocations per artifact")
    p.add_argument("--runs", type=int, default=200, help="onnxruntime_perf_test -r")
    p.add_argument("--provider", default="xnnpack", help="onnxruntime_perf_test -e (xnnpack, cpu)")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    root = os.path.dirname(os.path.abspath(__file__))
    try:
        with open(os.path.join(root, "bundle.json"), encoding="utf-8") as fh:
            bundle = json.load(fh)
        for rel, digest in sorted(bundle["files"].items()):
            if sha256_file(os.path.join(root, rel)) != digest:
                raise DriverError(f"{rel} does not match the bundle's sha256; copy the bundle again")
        adb_cfg = bundle["adb"]
        binary = os.path.join(root, adb_cfg["binary"])
        kind = runner_kind(binary)
        threads = int(bundle["settings"].get("threads") or 4)
        probe = Adb(args.adb, "", args.timeout)
        serial = choose_serial(parse_devices(probe.run([args.adb, "devices"], "adb devices")),
                               args.serial or adb_cfg.get("serial"))
        adb = Adb(args.adb, serial, args.timeout)
        items = [i for i in bundle["items"] if i["path"].endswith(SUFFIXES[kind])]
        if not items:
            raise DriverError(f"the bundle holds no {'/'.join(SUFFIXES[kind])} artifact for {kind}")
        remote_bin = f"{REMOTE_DIR}/{os.path.basename(binary)}"
        adb.shell(["mkdir", "-p", REMOTE_DIR], "mkdir on the phone")
        adb.push(binary, remote_bin)
        adb.shell(["chmod", "755", remote_bin], "chmod on the phone")
        rows = []
        for item in items:
            remote_model = f"{REMOTE_DIR}/{os.path.basename(item['path'])}"
            adb.push(os.path.join(root, item["path"]), remote_model)
            print(f"running {item['name']} on {serial} ...", file=sys.stderr, flush=True)
            if kind == "executorch":
                cmd = executor_runner_command(remote_bin, remote_model, args.executions, threads)
                parsed = [parse_executor_runner(adb.shell(cmd, "executor_runner")) for _ in range(args.repeats)]
            else:
                cmd = perf_test_command(remote_bin, remote_model, args.runs, threads, args.provider)
                parsed = [parse_perf_test(adb.shell(cmd, "onnxruntime_perf_test"))]
            rows.append(row_for(bundle, item, kind, parsed, binary, threads))
        model = adb.shell(["getprop", "ro.product.model"], "getprop").strip()
        soc = adb.shell(["getprop", "ro.soc.model"], "getprop").strip()
        adb.shell(["rm", "-rf", REMOTE_DIR], "cleaning up on the phone")
    except DriverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = {"schema": RESULTS_SCHEMA, "device": bundle["device"],
           "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "bundle": {"sha256": sha256_file(os.path.join(root, "bundle.json")),
                      "edgespec_version": bundle.get("edgespec_version"), "export": bundle.get("export")},
           "device_facts": {"device_tree_model": model or None, "cpu": soc or None, "runtime": kind,
                            "runtime_version": os.path.basename(binary), "adb_serial": serial},
           "timing": {"threads": threads, "batch_sizes": [1]}, "errors": [], "rows": rows}
    tmp = f"{args.out}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, args.out)
    print(f"wrote {len(rows)} rows to {args.out}; then: edgespec bench --import {args.out} --report DIR",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
