#!/usr/bin/env python3
"""edgespec on-device runner: `python3 run.py --out results.json` at the top of an unpacked bundle.

Needs only Python 3.8+, numpy and the device's runtime (onnxruntime, or TensorRT's Python bindings with
cuda-python or pycuda): no torch, no edgespec. Every file the bundle lists is checked against its sha256
before anything runs; a mismatch is refused. Latency and accuracy are measured the way `edgespec bench`
measures them (edgespec_runner/timing.py is a copy of its harness) and written as report rows marked
`measured on device`, with the device's facts, for `edgespec bench --import results.json`.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLE_SCHEMA = "edgespec.bundle/1"
RESULTS_SCHEMA = "edgespec.device-results/1"
MEASUREMENT = "measured on device"
OTHER_HARDWARE = "measured on other hardware"  # --allow-other-hardware on a machine the profile does not match


class BundleError(Exception):
    """The bundle is incomplete or was changed after it was built: nothing is run."""


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_bundle(root):
    path = os.path.join(root, "bundle.json")
    try:
        with open(path, encoding="utf-8") as fh:
            bundle = json.load(fh)
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {path} ({exc}); unpack the whole bundle and run run.py from its top") from None
    if not isinstance(bundle, dict) or bundle.get("schema") != BUNDLE_SCHEMA:
        raise BundleError(f"{path} is not an {BUNDLE_SCHEMA} file; rebuild the bundle with `edgespec bundle`")
    return bundle


def verify(root, bundle):
    """Check every listed file against its sha256; raises BundleError naming each bad file. Runs nothing."""
    bad = []
    for rel, digest in sorted(bundle["files"].items()):
        path = os.path.join(root, rel)
        if rel.startswith("/") or ".." in rel.split("/"):
            bad.append(f"{rel} (unsafe path)")
        elif not os.path.isfile(path) or os.path.islink(path):
            bad.append(f"{rel} (missing)")
        elif sha256_file(path) != digest:
            bad.append(f"{rel} (sha256 mismatch)")
    if bad:
        raise BundleError(f"refusing to run: {len(bad)} file(s) do not match the bundle's sha256 list: "
                          f"{', '.join(bad)}; the bundle was changed or damaged: copy it again")


def read_verified(root, rel, digest):
    """The file's bytes, hashed again after reading so what runs is exactly what was verified."""
    with open(os.path.join(root, rel), "rb") as fh:
        data = fh.read()
    if sha256_bytes(data) != digest:
        raise BundleError(f"refusing to run: {rel} changed after it was verified")
    return data


def load_samples(root, bundle):
    import io

    import numpy as np

    out = {}
    for key, s in bundle.get("samples", {}).items():
        x = np.load(io.BytesIO(read_verified(root, s["x"], bundle["files"][s["x"]])), allow_pickle=False)
        y = np.load(io.BytesIO(read_verified(root, s["y"], bundle["files"][s["y"]])), allow_pickle=False)
        out[key] = {"x": x.astype(np.float32, copy=False), "y": y.astype(np.int64), "class_ids": s["class_ids"]}
    return out


def accuracy(runner, sample, item, batch):
    """Open-set (argmax over all outputs) and closed-set (argmax over the sample's classes) top-1, as class ids."""
    import numpy as np

    x, y = sample["x"], sample["y"]
    ids = np.asarray(item["class_ids"], dtype=np.int64)
    pos = {int(c): i for i, c in enumerate(item["class_ids"])}
    subset = [c for c in sample["class_ids"] if int(c) in pos]
    cols = np.asarray([pos[int(c)] for c in subset], dtype=np.int64)
    open_hits = closed_hits = 0
    for start in range(0, len(x), batch):
        xb = x[start:start + batch]
        n = len(xb)
        if getattr(runner, "fixed_batch", None) and n < runner.fixed_batch:  # pad a fixed-batch model's last batch
            xb = np.concatenate([xb, np.repeat(xb[-1:], runner.fixed_batch - n, axis=0)])
        logits = np.asarray(runner.run(np.ascontiguousarray(xb, dtype=np.float32)), dtype=np.float32)[:n]
        yb = y[start:start + n]
        open_hits += int((ids[logits.argmax(1)] == yb).sum())
        closed_hits += int((np.asarray(subset)[logits[:, cols].argmax(1)] == yb).sum()) if len(cols) else 0
    n = max(1, len(x))
    return {"open": open_hits / n, "closed": closed_hits / n, "images": int(len(x))}


def make_runner(root, bundle, item, batch_sizes, threads, engine_cache):
    from edgespec_runner import runtimes

    data = read_verified(root, item["path"], item["sha256"])
    if bundle["runtime"] == "tensorrt":
        profile = bundle.get("profile") or {}  # DLA core from the device profile (AGX Orin), GPU otherwise
        return runtimes.TrtRunner(os.path.join(root, item["path"]), data, item, item["precision"],
                                  max(batch_sizes), engine_cache, profile.get("dla_core"),
                                  profile.get("dla_gpu_fallback", True))
    return runtimes.OrtRunner(data, threads, bundle["settings"]["providers"])


def measure_item(root, bundle, item, samples, cfg, batch_sizes, threads, engine_cache):
    """Time one artifact and measure its accuracy on its samples; returns the raw result."""
    import numpy as np
    from edgespec_runner import timing

    own = samples.get(item.get("sample") or "")
    if own is not None:
        images = own["x"]
    else:  # a latency-only bundle (built with --samples 0): seeded random inputs of the right shape
        images = np.random.default_rng(0).standard_normal((8, *item["input_shape"][1:])).astype(np.float32)
    runner, result = timing.measure(lambda: make_runner(root, bundle, item, batch_sizes, threads, engine_cache),
                                    images, batch_sizes, cfg)
    eval_batch = runner.fixed_batch or max(batch_sizes)
    result["accuracy"] = accuracy(runner, own, item, eval_batch) if own is not None else None
    result["groups"] = {g: accuracy(runner, samples[key], item, eval_batch)
                        for g, key in sorted(item.get("group_samples", {}).items()) if key in samples}
    timing.finish_memory(result)
    result["runtime_version"] = runner.version
    result["providers"] = list(runner.providers)
    result["build"] = runner.build
    del runner
    gc.collect()
    return result


def new_row(bundle, item, batch_size, threads):
    """A row in the report format of benchmarks/rows.py (one per artifact and device; `batches` per batch size)."""
    return {
        "model": item["model"], "role": item["role"], "group": item["group"], "format": item["format"],
        "precision": item["precision"], "device": bundle["device"], "measurement": "unavailable", "accuracy": None,
        "generalist_accuracy_closed": None, "generalist_accuracy_open": None, "latency_ms": None,
        "throughput_ips": None, "batch_size": batch_size, "size_bytes": item["size_bytes"], "peak_rss_mb": None,
        "first_inference_ms": None, "speedup_vs_generalist": None, "size_ratio_vs_generalist": None,
        "accuracy_change_vs_generalist": None, "images": None, "artifact_sha256": item["sha256"], "notes": [],
        "how": {}, "batches": [], "threads": threads, "runtime": bundle["runtime"], "macs": item.get("macs"),
        "params": item.get("params"),
    }


def row_for(bundle, item, result, error, batch_sizes, threads, measurement=MEASUREMENT):
    row = new_row(bundle, item, batch_sizes[0], threads)
    if error is not None:
        row["notes"].append(f"could not run on the device: {error}")
        return row
    if item["format"] != item["source_format"]:
        row["notes"].append(f"engine built on the device from the {item['source_format']} file {item['path']}")
    row["measurement"] = measurement
    batches = result["batches"]
    row["batches"] = batches
    if batches:
        first = batches[0]
        row["batch_size"] = first["batch_size"]
        row["latency_ms"] = {k: first["latency_ms"][k] for k in ("p50", "p90", "p99", "mean", "std")}
        row["throughput_ips"] = first["throughput_ips"]
        row["runs"] = first["runs"]
    if result["skipped_batch_sizes"]:
        row["notes"].append(f"batch sizes {result['skipped_batch_sizes']} skipped: the model has a fixed batch")
    for key in ("first_inference_ms", "load_ms", "peak_rss_mb", "rss_delta_mb"):
        row[key] = result[key]
    acc = result.get("accuracy")
    if acc is not None:
        row["accuracy"], row["images"] = acc["open"], acc["images"]
    else:
        row["notes"].append("latency-only bundle (no test samples): timed on seeded random inputs, no accuracy")
    build = result.get("build")
    if build:
        row["engine_build"] = build
        if build.get("engine_cache") and os.path.isfile(build["engine_cache"]):
            row["engine_size_bytes"] = os.path.getsize(build["engine_cache"])
        row["notes"].append("engine from this device's cache" if build["cached"]
                            else f"engine built on this device in {build['build_s']:.1f} s")
    row["notes"].append(f"{bundle['runtime']} {result['runtime_version']} ({', '.join(result['providers'])})")
    row["how"] = {"latency": measurement, "accuracy": measurement + ", same runtime, the bundle's test sample",
                  "size": "file size from the manifest, sha256 verified on the device"}
    return row


def link_generalist(rows, results, bundle):
    """Specialists get the generalist's closed/open accuracy on the same images, speedup, size ratio and accuracy
    change against it: same device, format and batch size, as benchmarks.rows.fill_comparisons does."""
    items = {(i["model"], i["format"]): i for i in bundle["items"]}
    by_key = {(r["model"], r["format"]): r for r in rows}
    for r in rows:
        if r["role"] != "specialist":
            continue
        g_model = items[(r["model"], r["format"])].get("generalist")
        g_item, gen = items.get((g_model, r["format"])), by_key.get((g_model, r["format"]))
        if g_item is None or gen is None:
            r["notes"].append("no generalist artifact of this format in the bundle to compare with")
            continue
        acc = ((results.get(g_item["name"]) or {}).get("groups") or {}).get(r["model"])
        if acc:
            r["generalist_accuracy_closed"], r["generalist_accuracy_open"] = acc["closed"], acc["open"]
        p, gp = (r["latency_ms"] or {}).get("p50"), (gen["latency_ms"] or {}).get("p50")
        if p and gp and gen["measurement"] == r["measurement"] and gen["batch_size"] == r["batch_size"]:
            r["speedup_vs_generalist"] = gp / p
        if r["size_bytes"] and gen["size_bytes"]:
            r["size_ratio_vs_generalist"] = r["size_bytes"] / gen["size_bytes"]
        if r["accuracy"] is not None and r["generalist_accuracy_closed"] is not None:
            r["accuracy_change_vs_generalist"] = r["accuracy"] - r["generalist_accuracy_closed"]
        r["generalist_model"] = g_model


def parse_args(argv):
    p = argparse.ArgumentParser(description="Run an edgespec bundle on this device and write results.json.")
    p.add_argument("--out", default="results.json", help="where to write the results (default results.json)")
    p.add_argument("--warmup", type=int, help="untimed runs after the first inference")
    p.add_argument("--warmup-time", type=float, help="seconds of untimed runs at least (default: the bundle's)")
    p.add_argument("--runs", type=int, help="timed runs per batch size (at most)")
    p.add_argument("--min-runs", type=int, help="timed runs even past the time limit")
    p.add_argument("--time-limit", type=float, help="seconds of timing per batch size (once min-runs)")
    p.add_argument("--batch-sizes", help="comma-separated batch sizes (default: the profile's)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: the profile's, else all cores)")
    p.add_argument("--only", action="append", help="run only this artifact name (repeatable)")
    p.add_argument("--engine-cache", default=os.path.join(os.path.expanduser("~"), ".cache", "edgespec", "engines"),
                   help="where TensorRT engines built on this device are kept")
    p.add_argument("--verify-only", action="store_true", help="check the hashes and exit")
    p.add_argument("--allow-other-hardware", action="store_true",
                   help="measure on a machine the profile's match rules do not recognise; rows are labelled "
                        f"'{OTHER_HARDWARE}', never '{MEASUREMENT}'")
    return p.parse_args(argv)


def _read_text(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def hardware_mismatch(match):
    """Why this machine is not the profile's device by its `match` rules (None: it is, or no rule says)."""
    model_wanted = match.get("device_tree_model")
    if model_wanted:
        model = _read_text("/proc/device-tree/model")
        if model is None or model_wanted not in model:
            return (f"this machine's device-tree model is {model!r}, the profile expects one containing "
                    f"{model_wanted!r}")
    if match.get("cuda") and not (os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvhost-ctrl-gpu")):
        return "the profile needs a CUDA GPU and this machine shows none (/dev/nvidia0)"
    return None


def check_hardware(bundle, allow_other):
    """The measurement label rows get here: refused (BundleError) on hardware the profile does not match."""
    why = hardware_mismatch((bundle.get("profile") or {}).get("match") or {})
    if why is None:
        return MEASUREMENT
    if not allow_other:
        raise BundleError(f"this bundle is for {bundle['device']}: {why}; run it there, or pass "
                          f"--allow-other-hardware to measure here anyway (rows then say '{OTHER_HARDWARE}')")
    print(f"warning: {why}; rows are labelled '{OTHER_HARDWARE}'", file=sys.stderr)
    return OTHER_HARDWARE


def check_args(args):
    """Everything the arguments can get wrong, before minutes of measuring that would then be lost."""
    out = os.path.abspath(args.out)
    parent = os.path.dirname(out)
    if os.path.isdir(out):
        raise BundleError(f"--out {args.out} is a directory; give a file name, e.g. "
                          f"{os.path.join(args.out, 'results.json')}")
    if not os.path.isdir(parent):
        raise BundleError(f"--out {args.out}: folder {parent} does not exist; create it or choose another --out")
    if not os.access(parent, os.W_OK):
        raise BundleError(f"--out {args.out}: folder {parent} is not writable; choose another --out")
    for name in ("warmup", "runs", "min_runs", "threads"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            raise BundleError(f"--{name.replace('_', '-')} {value} is out of range; give a positive integer")
    if args.time_limit is not None and not (0 < args.time_limit < float("inf")):
        raise BundleError(f"--time-limit {args.time_limit} must be a finite number of seconds > 0")
    if args.warmup_time is not None and not (0 <= args.warmup_time <= 60):
        raise BundleError(f"--warmup-time {args.warmup_time} must be between 0 and 60 seconds")


def settings(bundle, args):
    from edgespec_runner import timing

    s = dict(bundle["settings"])
    s.setdefault("warmup_s", timing.WARMUP_S)  # bundles packed before the time-based warm-up
    over = {"warmup": args.warmup, "runs": args.runs, "min_runs": args.min_runs, "time_limit_s": args.time_limit,
            "warmup_s": args.warmup_time}
    cfg = timing.TimingConfig(**{k: (v if v is not None else s[k]) for k, v in over.items()})
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else list(s["batch_sizes"])
    if not batch_sizes or min(batch_sizes) < 1:
        raise BundleError("--batch-sizes must list positive integers, e.g. 1,8")
    threads = args.threads or s.get("threads") or os.cpu_count() or 1
    return cfg, batch_sizes, threads


def write_json_atomic(path, obj):
    path = os.path.abspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    root = HERE
    try:
        check_args(args)
        bundle = load_bundle(root)
        verify(root, bundle)  # before anything is imported from the bundle or run
        if args.verify_only:
            print(f"ok: {len(bundle['files'])} files match their sha256")
            return 0
        sys.path.insert(0, root)
        from edgespec_runner import facts, timing

        measurement = check_hardware(bundle, args.allow_other_hardware)
        cfg, batch_sizes, threads = settings(bundle, args)
        samples = load_samples(root, bundle)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    items = [i for i in bundle["items"] if not args.only or i["name"] in args.only]
    if not items:
        print(f"error: no artifact named {args.only}; choose from {[i['name'] for i in bundle['items']]}",
              file=sys.stderr)
        return 2
    rows, results, errors = [], {}, []
    for item in items:
        print(f"measuring {item['name']} ({item['format']}) ...", file=sys.stderr, flush=True)
        try:
            result, error = measure_item(root, bundle, item, samples, cfg, batch_sizes, threads,
                                         args.engine_cache), None
            results[item["name"]] = result
        except BundleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001 - one artifact failing must not lose the others' figures
            result, error = None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
            errors.append({"artifact": item["name"], "error": error})
            print(f"  failed: {error}", file=sys.stderr)
        rows.append(row_for(bundle, item, result, error, batch_sizes, threads, measurement))
    link_generalist(rows, results, bundle)
    version = next((r["runtime_version"] for r in results.values()), None)
    providers = next((r["providers"] for r in results.values()), None)
    out = {
        "schema": RESULTS_SCHEMA,
        "device": bundle["device"],
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "bundle": {"sha256": sha256_file(os.path.join(root, "bundle.json")),
                   "edgespec_version": bundle.get("edgespec_version"), "export": bundle.get("export")},
        "device_facts": facts.device_facts(bundle["runtime"], version, providers),
        "timing": {"warmup": cfg.warmup, "warmup_s": cfg.warmup_s, "runs": cfg.runs, "min_runs": cfg.min_runs,
                   "time_limit_s": cfg.time_limit_s, "batch_sizes": batch_sizes, "threads": threads},
        "preprocessing": timing.PREPROCESSING_NOTE,
        "builds": {name: r["build"] for name, r in results.items() if r.get("build")},
        "errors": errors,
        "rows": rows,
    }
    try:
        write_json_atomic(args.out, out)
    except OSError as exc:
        print(f"error: cannot write {args.out} ({exc.strerror or exc}); free space or choose another --out",
              file=sys.stderr)
        return 1
    print(f"wrote {len(rows)} rows to {args.out}", file=sys.stderr)
    if not results:
        print(f"error: no artifact could run on this device: {errors[0]['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
