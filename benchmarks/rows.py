"""Building report rows: measured (timing + accuracy through the runtime), estimated, or unavailable."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import benchmarks.accuracy as acc
from exporters.formats import FORMATS, precision_of
from toolkit.devices import DeviceProfile
from toolkit.progress import Reporter

from .estimate import count_onnx, host_peak, roofline
from .runtimes import make_runner
from .schema import Measurement, empty_row
from .scoring import scorer_for
from .timing import finish_memory, make_batch, measure, noise_floor, resolved_against, time_paired

log = logging.getLogger(__name__)


def new_row(entry: dict[str, Any], fmt: str, precision: str, device: str, measurement: str,
            batch_size: int) -> dict[str, Any]:
    return {**_row(entry, fmt, precision, device, measurement, batch_size), **scorer_for(entry).row_fields}


def _row(entry: dict[str, Any], fmt: str, precision: str, device: str, measurement: str,
         batch_size: int) -> dict[str, Any]:
    row = empty_row(entry["model"], entry["role"], entry.get("group"), fmt, precision, device, measurement,
                    batch_size)
    row.update(macs=entry.get("macs"), params=entry.get("params"))  # per image; None where not counted
    if entry.get("compression"):
        row["compression"] = entry["compression"]
    return row


class Bencher:
    def __init__(self, export_dir: Path, entries: list[dict[str, Any]], parents: dict[str, str | None], cfg,
                 reporter: Reporter):
        self.export_dir = export_dir
        self.entries = entries
        self.parents = parents
        self.cfg = cfg
        self.reporter = reporter
        self.rows: list[dict[str, Any]] = []
        #: device -> "generalist/format" -> the generalist timed against a second session of itself
        self.aa_noise: dict[str, dict[str, Any]] = {}
        self._sets: dict[str, Any] = {}
        self._gen_acc: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._gen_extra: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.models = list(dict.fromkeys(e["model"] for e in entries))  # manifest order: generalists first

    # -- helpers ------------------------------------------------------------------------------------------------
    def artifact(self, model: str, fmt: str) -> dict[str, Any] | None:
        return next((e for e in self.entries if e["model"] == model and e["format"] == fmt), None)

    def any_entry(self, model: str) -> dict[str, Any]:
        return next(e for e in self.entries if e["model"] == model)

    def eval_set(self, entry: dict[str, Any]) -> Any:
        """The images an artifact is scored on (its task's scorer says which: a classifier's test split, a
        detector's validation images), loaded once per run."""
        if entry["run"] not in self._sets:
            self._sets[entry["run"]] = scorer_for(entry).load(entry["run"], self.cfg.max_images)
        return self._sets[entry["run"]]

    def runner(self, profile: DeviceProfile, fmt: str, path: Path | None, entry: dict[str, Any]):
        return make_runner(fmt, path, entry.get("run"), profile.thread_count, profile.execution_providers,
                           cuda=profile.match.cuda, engine_key=entry.get("engine_key"))

    def formats_for(self, profile: DeviceProfile) -> list[str]:
        return [f for f in profile.formats if self.cfg.formats is None or f in self.cfg.formats]

    def device_info(self, profile: DeviceProfile, where: str | None, why: str) -> dict[str, Any]:
        threads = profile.thread_count
        if where is not None:
            how = (f"{where}: {profile.runtime}" + (f" ({', '.join(profile.execution_providers)})" if
                                                    profile.runtime == "onnxruntime" else "")
                   + f", {threads} threads, batch sizes {profile.batch_sizes}")
            measurement = where
        elif profile.peak is not None:
            how = (f"estimate (not measured: {why}): roofline lower bound from counted FLOPs and bytes against "
                   f"published peaks — {profile.peak.source.strip()}")
            measurement = Measurement.ESTIMATE
        else:
            how = f"unavailable: {why}, and the profile has no peak figures to estimate from"
            measurement = Measurement.UNAVAILABLE
        missing = [f for f in self.formats_for(profile) if f != "pytorch"
                   and not any(e["format"] == f for e in self.entries)]
        if where is not None and missing:
            how += f"; not in the export, so not measured: {', '.join(missing)}"
        info = {"description": profile.description, "measurement": measurement, "reason": why or None, "how": how,
                "runtime": profile.runtime, "execution_providers": profile.execution_providers, "threads": threads,
                "batch_sizes": profile.batch_sizes, "formats": self.formats_for(profile),
                "memory_mb": profile.memory_mb, "peak": profile.peak.model_dump() if profile.peak else None,
                "budgets": profile.budgets.model_dump()}
        if where == Measurement.HOST and profile.peak is None and not profile.match.cuda:  # this CPU, measured
            info["derived_peak"] = host_peak(threads)
        return info

    # -- measured ----------------------------------------------------------------------------------------------
    def measure_profile(self, profile: DeviceProfile, where: str) -> None:
        todo = [(m, f) for m in self.models for f in self.formats_for(profile)
                if f == "pytorch" or self.artifact(m, f) is not None]
        with self.reporter.task(f"bench {profile.name}", total=len(todo), unit="artifact") as task:
            for model, fmt in todo:
                self.rows.append(self.measure_one(profile, where, model, fmt))
                task.advance(1, model=model, format=fmt)
        self.pair_profile(profile)

    def pair_profile(self, profile: DeviceProfile) -> None:
        """Each specialist timed side by side with its generalist (same format, first batch size, the specialist's
        test images): the speedup in the report, robust to load that changes between the two rows' timings."""
        mine = {(r["model"], r["format"]): r for r in self.rows if r["device"] == profile.name}
        pairs = [(r, mine[(self.parents.get(m), f)]) for (m, f), r in mine.items()
                 if r["role"] == "specialist" and f != "pytorch" and (self.parents.get(m), f) in mine]
        if not pairs:
            return
        with self.reporter.task(f"paired timing {profile.name}", total=len(pairs), unit="pair") as task:
            for row, gen in pairs:
                key = f"{gen['model']}/{gen['format']}"
                if key not in self.aa_noise.setdefault(profile.name, {}):  # the A/A floor, once per format
                    self.aa_noise[profile.name][key] = self.pair_one(profile, gen, gen)
                row["speedup_paired"] = self.pair_one(profile, row, gen, self.aa_noise[profile.name][key])
                task.advance(1, model=row["model"], format=row["format"])

    def pair_one(self, profile: DeviceProfile, row: dict[str, Any], gen: dict[str, Any],
                 aa: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """`row`'s artifact timed side by side with `gen`'s (a second session of the same file when row is gen:
        the A/A pair). Resolved only when the speedup's interval excludes the A/A floor `aa`; without a floor (no
        A/A pair could be timed), the sign test and MIN_EFFECT decide."""
        spec_e, gen_e = self.artifact(row["model"], row["format"]), self.artifact(gen["model"], gen["format"])
        tests = self.eval_set(spec_e)
        if tests.x is None:
            return None
        spec_r, gen_r = (self.runner(profile, e["format"], self.export_dir / e["path"], e) for e in (spec_e, gen_e))
        bs = row["batch_size"]
        if any(r.fixed_batch not in (None, bs) for r in (spec_r, gen_r)):
            return None
        x = make_batch(tests.x, bs)
        res = time_paired(lambda: spec_r.run(x), lambda: gen_r.run(x), self.cfg.timing)
        floor = noise_floor(res["ratio_ci"]) if aa is None and row is gen else aa and aa["aa_floor"]
        resolved = resolved_against(res["ratio_ci"], floor) if floor else res["resolved"]
        return {"batch_size": bs, "rounds": res["rounds"], "calls_per_round": res["calls_per_round"],
                "specialist_p50_ms": res["p50_a_ms"],
                "generalist_p50_ms": res["p50_b_ms"], "speedup": res["ratio"], "speedup_ci": res["ratio_ci"],
                "aa_floor": floor, "sign_test_resolved": res["resolved"],
                "generalist_slower_rounds": res["b_slower_rounds"], "z": res["z"], "resolved": resolved}

    def measure_one(self, profile: DeviceProfile, where: str, model: str, fmt: str) -> dict[str, Any]:
        entry = self.artifact(model, fmt) or {**self.any_entry(model), "format": "pytorch", "precision": "fp32"}
        path = self.export_dir / entry["path"] if fmt != "pytorch" else None
        threads = profile.thread_count
        row = new_row(entry, fmt, entry["precision"], profile.name, where, profile.batch_sizes[0])
        tests = self.eval_set(entry)
        images = tests.x if tests.x is not None else None
        if images is None:
            import numpy as np

            shape = [d if d > 0 else 1 for d in entry["input_shape"][1:]]
            images = np.zeros([1, *shape], np.float32)
            row["notes"].append(f"{tests.error}; timed on zero inputs, accuracy not measured")
        log.info("%s: %s %s", profile.name, model, fmt)
        runner, timing = measure(lambda: self.runner(profile, fmt, path, entry), images, profile.batch_sizes,
                                 self.cfg.timing)
        if tests.x is not None:
            values, notes = scorer_for(entry).score(acc.logits_of(runner, tests.x, max(profile.batch_sizes)), tests)
            row.update(values, images=tests.images)
            row["notes"] += notes
        if entry["role"] == "generalist":
            self._generalist_on_groups(runner, entry, fmt, profile)
        finish_memory(timing)
        del runner
        self._fill_timing(row, timing, entry, fmt, threads, profile)
        return row

    def _generalist_on_groups(self, runner, gen: dict[str, Any], fmt: str, profile: DeviceProfile) -> None:
        """Closed/open-set accuracy of this generalist artifact on each of its specialists' test images."""
        for model, parent in self.parents.items():
            if parent != gen["model"] or model == gen["model"]:
                continue
            spec = self.any_entry(model)
            tests = self.eval_set(spec)
            if tests.x is None:
                continue
            outputs = acc.logits_of(runner, tests.x, max(profile.batch_sizes))
            closed, open_, extra = scorer_for(spec).generalist_on_group(outputs, tests, gen["class_ids"])
            key = (profile.name, fmt, model)
            self._gen_acc[key] = (closed, open_)
            if extra:
                self._gen_extra[key] = extra

    def _fill_timing(self, row, timing, entry, fmt, threads, profile) -> None:
        batches = timing["batches"]
        row["batches"] = batches
        if batches:
            first = batches[0]
            row["batch_size"] = first["batch_size"]
            row["latency_ms"] = {k: first["latency_ms"][k] for k in ("p50", "p90", "p99", "mean", "std")}
            row["throughput_ips"] = first["throughput_ips"]
            row["runs"] = first["runs"]
        if timing["skipped_batch_sizes"]:
            row["notes"].append(f"batch sizes {timing['skipped_batch_sizes']} skipped: the model has a fixed batch")
        row["first_inference_ms"] = timing["first_inference_ms"]
        row["load_ms"] = timing["load_ms"]
        row["peak_rss_mb"] = timing["peak_rss_mb"]
        row["rss_delta_mb"] = timing["rss_delta_mb"]
        row["size_bytes"] = entry.get("size_bytes") if fmt != "pytorch" else None
        row["artifact_sha256"] = entry.get("sha256") if fmt != "pytorch" else entry.get("source_checkpoint_sha256")
        row["threads"] = threads
        row["runtime"] = FORMATS[fmt].runtime if fmt in FORMATS else profile.runtime  # the format's own runtime
        row["how"] = {"latency": row["measurement"], "accuracy": row["measurement"] + ", same runtime",
                      "size": "file size from the manifest" if fmt != "pytorch" else "checkpoint, not measured"}
        if fmt == "pytorch":
            row["notes"].append("pytorch: the run's checkpoint in eval mode, not an exported file")

    # -- estimated ---------------------------------------------------------------------------------------------
    def estimate_profile(self, profile: DeviceProfile, why: str) -> None:
        for model in self.models:
            for fmt in self.formats_for(profile):
                self.rows.append(self.estimate_one(profile, why, model, fmt))

    def estimate_one(self, profile: DeviceProfile, why: str, model: str, fmt: str) -> dict[str, Any]:
        entry = self.artifact(model, fmt)
        precision = entry["precision"] if entry else precision_of(fmt)
        base = entry or self.any_entry(model)
        onnx = self.artifact(model, "onnx") or next(
            (e for e in self.entries if e["model"] == model and e["path"].endswith(".onnx")), None)
        kind = Measurement.ESTIMATE if profile.peak is not None and onnx is not None else Measurement.UNAVAILABLE
        scorer = scorer_for(base)
        refused = scorer.estimate_refused(precision)
        row = new_row(base, fmt, precision, profile.name, Measurement.UNAVAILABLE if refused else kind,
                      profile.batch_sizes[0])
        if refused:
            row["notes"].append(refused)
            return row
        if entry:
            row["size_bytes"], row["artifact_sha256"] = entry["size_bytes"], entry["sha256"]
        else:
            row["notes"].append(f"{fmt} not built here ({why}); estimated from the {onnx['format'] if onnx else '?'} "
                                "graph" if kind == Measurement.ESTIMATE else f"{fmt} not built here")
        if kind == Measurement.ESTIMATE:
            row["notes"] += scorer.estimate_notes()
        if kind == Measurement.UNAVAILABLE:
            row["notes"].append(f"unavailable: {why}" + ("" if profile.peak else "; the profile has no peak figures"))
            return row
        for bs in profile.batch_sizes:
            est = roofline(count_onnx(self.export_dir / onnx["path"], bs), precision, profile.peak, profile.runtime)
            if est is None:
                row["measurement"] = Measurement.UNAVAILABLE
                row["notes"].append(f"the profile gives no peak compute for {precision}")
                return row
            row["batches"].append({"batch_size": bs, "latency_ms": {"p50": est["latency_ms"]},
                                   "throughput_ips": bs * 1e3 / est["latency_ms"], "estimate": est})
        first = row["batches"][0]
        row["latency_ms"] = {"p50": first["latency_ms"]["p50"], "p90": None, "p99": None, "mean": None, "std": None}
        row["throughput_ips"] = first["throughput_ips"]
        row["estimate"] = first["estimate"]
        row["how"] = {"latency": "estimate: roofline lower bound, " + first["estimate"]["bound"] + "-bound, plus "
                      f"{first['estimate']['overhead_ms']:.3g} ms of runtime overhead "
                      f"({first['estimate']['overhead_source']})",
                      "size": "file size from the manifest" if entry else "not built"}
        return row

    def fill_proxies(self) -> None:
        """Estimate rows take the accuracy measured here for the same model and precision, labelled as a proxy."""
        gen_acc = self._gen_acc
        for row in self.rows:
            if row["measurement"] in Measurement.MEASURED:
                closed_open = gen_acc.get((row["device"], row["format"], row["model"]))
                if closed_open:
                    row["generalist_accuracy_closed"], row["generalist_accuracy_open"] = closed_open
                    row.update(self._gen_extra.get((row["device"], row["format"], row["model"]), {}))
                continue
            src = next((r for r in self.rows if r["model"] == row["model"] and r["precision"] == row["precision"]
                        and r["measurement"].startswith("measured") and r["accuracy"] is not None), None)
            if src is None:
                continue
            row["accuracy"], row["images"] = src["accuracy"], src["images"]
            if "map50" in src:
                row["map50"] = src["map50"]
            closed_open = gen_acc.get((src["device"], src["format"], row["model"]))
            if closed_open:
                row["generalist_accuracy_closed"], row["generalist_accuracy_open"] = closed_open
                row.update(self._gen_extra.get((src["device"], src["format"], row["model"]), {}))
            row["how"]["accuracy"] = f"proxy: {src['format']} {src['measurement']} ({src['device']})"
            row["how"]["accuracy_proxy"] = True
            row["notes"].append(f"accuracy is a proxy: {src['precision']} accuracy measured with {src['format']} on "
                                f"{src['device']}")


def speedup_resolved(row: dict[str, Any], gen: dict[str, Any]) -> bool | None:
    """Whether a measured speedup is more than timing spread: the faster model's p90 is below the slower one's p50
    (their p50-p90 ranges do not overlap). None for estimates, whose ratio is arithmetic, not timing."""
    if row["measurement"] not in Measurement.TIMED:
        return None
    a, b = row["latency_ms"], gen["latency_ms"]
    if a.get("p90") is None or b.get("p90") is None:
        return None
    fast, slow = (a, b) if a["p50"] <= b["p50"] else (b, a)
    return fast["p90"] < slow["p50"]


def fill_comparisons(rows: list[dict[str, Any]], parents: dict[str, str | None]) -> None:
    """Speedup, size ratio and accuracy change of each specialist against its generalist, same device/format."""
    index = {(r["model"], r["device"], r["format"]): r for r in rows}
    for row in rows:
        if row["role"] != "specialist":
            continue
        gen = index.get((parents.get(row["model"]), row["device"], row["format"]))
        if gen is None:
            row["notes"].append("no generalist artifact of this format to compare with")
            continue
        p, gp = (row["latency_ms"] or {}).get("p50"), (gen["latency_ms"] or {}).get("p50")
        paired = row.get("speedup_paired")
        if paired:  # timed side by side: the figure to trust
            row["speedup_vs_generalist"], row["speedup_resolved"] = paired["speedup"], paired["resolved"]
            row["speedup_ci"] = paired.get("speedup_ci")
        elif p and gp and gen["measurement"] == row["measurement"] and gen["batch_size"] == row["batch_size"]:
            row["speedup_vs_generalist"] = gp / p
            row["speedup_resolved"] = speedup_resolved(row, gen)
        if row["size_bytes"] and gen["size_bytes"]:
            row["size_ratio_vs_generalist"] = row["size_bytes"] / gen["size_bytes"]
        if row["accuracy"] is not None and row["generalist_accuracy_closed"] is not None:
            row["accuracy_change_vs_generalist"] = row["accuracy"] - row["generalist_accuracy_closed"]
        row["generalist_model"] = gen["model"]


#: A row is flagged slower than its fp32 file only beyond this margin: two rows timed apart differ by a few per
#: cent on a quiet host (the A/A floor in report.json says how much on this one).
SLOWER_MARGIN = 0.05


def flag_slower_than_fp32(rows: list[dict[str, Any]]) -> None:
    """Mark every measured row of another format (int8, fp16, ort, ...) whose p50 is above its model's fp32 file
    on the same device and batch size by more than SLOWER_MARGIN: a file that defeats its own purpose there."""
    from exporters.formats import CHECKPOINT_FORMAT, FORMATS

    from .schema import Measurement

    def key(r: dict[str, Any]) -> tuple:  # the fp32 file of the same model and runtime, timed the same way
        return r["model"], r["device"], r["batch_size"], r["measurement"], FORMATS[r["format"]].runtime

    reference = {key(r): r for r in rows if r["format"] in FORMATS and r["precision"] == "fp32"
                 and FORMATS[r["format"]].source is None and (r.get("latency_ms") or {}).get("p50")}
    for row in rows:
        ref = reference.get(key(row)) if row["format"] in FORMATS else None
        p50 = (row.get("latency_ms") or {}).get("p50")
        if ref is None or ref is row or row["format"] == CHECKPOINT_FORMAT or not p50 \
                or row["measurement"] not in Measurement.MEASURED:
            continue
        ratio = p50 / ref["latency_ms"]["p50"]
        if ratio > 1 + SLOWER_MARGIN:
            row["slower_than_fp32"] = {"fp32_format": ref["format"], "fp32_p50_ms": ref["latency_ms"]["p50"],
                                       "ratio": ratio}
            row["notes"].append(f"slower than its fp32 file ({ref['format']}) on this device: p50 {ratio:.2f}x "
                                "(flagged beyond +5%)")


BELOW_MEASURED = "is below what"


def flag_estimates_below_measured(rows: list[dict[str, Any]], devices: dict[str, dict[str, Any]]) -> None:
    """Mark every estimate that beats a measurement of the same model, precision and batch size on a faster device
    (a peak, published or the host's derived floor, at least the estimated device's), and scale that measurement by
    the ratio of the peaks: a roofline bound below what a faster device really took misses a cost both pay, and the
    scaled figure is the better guide. (Against a slower device a lower estimate is expected, and scaling a CPU's
    figure to a GPU by peaks says nothing.) Idempotent (`bench --import` runs it again)."""
    from .estimate import peak_for

    measured = [r for r in rows if r["measurement"] in Measurement.TIMED and (r.get("latency_ms") or {}).get("p50")]
    for row in rows:
        row.pop("below_measurement", None)
        row["notes"] = [n for n in row.get("notes", []) if BELOW_MEASURED not in n]
        p50 = (row.get("latency_ms") or {}).get("p50")
        own = peak_for(devices.get(row["device"], {}), row["precision"])
        if row["measurement"] != Measurement.ESTIMATE or not p50 or own is None:
            continue
        candidates = []
        same = (row["model"], row["precision"], row["batch_size"])
        for m in measured:
            peak = peak_for(devices.get(m["device"], {}), m["precision"])
            faster = peak is not None and peak >= own
            if faster and m["device"] != row["device"] and m["latency_ms"]["p50"] > p50 and \
                    (m["model"], m["precision"], m["batch_size"]) == same:
                candidates.append((m["latency_ms"]["p50"] * peak / own, m, peak))
        if not candidates:
            continue
        scaled, m, peak = max(candidates, key=lambda c: c[2])  # the device of greatest peak: the strongest evidence
        derived = "" if devices[m["device"]].get("peak") else " (its derived floor)"
        row["below_measurement"] = {"device": m["device"], "format": m["format"], "p50_ms": m["latency_ms"]["p50"],
                                    "peak_ratio": peak / own, "scaled_p50_ms": scaled}
        row["notes"].append(
            f"{row['model']} {row['format']}: the estimate {p50:.3g} ms {BELOW_MEASURED} {m['device']} measured "
            f"({m['format']}, {m['latency_ms']['p50']:.3g} ms) with {peak / own:.2f}x this device's peak{derived}"
            + ", a faster device; scaled by the peaks that measurement gives "
            f"~{scaled:.3g} ms here: the roofline misses costs both pay, read it as a floor")


def report_header(export_dir: Path, manifest: dict[str, Any], cfg, host: dict[str, Any]) -> dict[str, Any]:
    from toolkit import __version__
    from toolkit.io import sha256_file
    from toolkit.runs import now

    from .report import REPORT_SCHEMA

    try:
        from exporters.manifest import package_versions

        packages = package_versions()
    except ImportError:  # pragma: no cover
        packages = {}
    return {"schema": REPORT_SCHEMA, "created": now(), "edgespec_version": __version__, "host": host,
            "packages": packages,
            "source": {"path": str(export_dir.resolve()), "manifest_sha256": sha256_file(export_dir / "manifest.json"),
                       "artifacts": len(manifest["artifacts"])},
            "config": cfg.model_dump(), "timing": {**cfg.timing.model_dump(), "preprocessing_included": False}}
