"""The Android driver's parsing, on real output of executor_runner and onnxruntime_perf_test (tests/unit/data/
device_output/SOURCES.md says where each capture comes from), and its adb command lines' quoting."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from toolkit.bundle.runner import adb_driver as drv

DATA = Path(__file__).parent / "data" / "device_output"


def _read(name: str) -> str:
    return (DATA / name).read_text()


def test_every_capture_has_its_source_written_down():
    sources = _read("SOURCES.md")
    for f in DATA.glob("*.txt"):
        assert f"`{f.name}`" in sources


def test_executor_runner_timing_line():
    p = drv.parse_executor_runner(_read("executor_runner_mv2_xnnpack_docs.txt"))
    assert p["runs"] == 1 and p["total_ms"] == pytest.approx(15.013292) and p["mean_ms"] == pytest.approx(15.013292)
    assert p["iterations_ms"] == [] and p["load_ms"] is None
    lat, runs, how = drv.latency_from("executorch", [p, {**p, "mean_ms": 17.0, "runs": 1}, {**p, "mean_ms": 16.0}])
    assert lat["p50"] == pytest.approx(16.0) and runs == 3 and "invocations" in how


def test_old_executor_runner_without_timing_is_one_clear_error():
    with pytest.raises(drv.DriverError, match="no 'Model executed successfully N time"):
        drv.parse_executor_runner(_read("executor_runner_resnet18_issue1231.txt"))


def test_perf_test_percentiles_in_seconds_become_ms():
    p = drv.parse_perf_test(_read("onnxruntime_perf_test_issue17313.txt"))
    assert p["runs"] == 1000 and p["mean_ms"] == pytest.approx(58.8053)
    assert p["p50_ms"] == pytest.approx(58.7108) and p["p90_ms"] == pytest.approx(59.9845)
    assert p["p99_ms"] == pytest.approx(61.9517) and p["min_ms"] == pytest.approx(55.9777)
    lat, runs, how = drv.latency_from("onnxruntime", [p])
    assert lat["p50"] == pytest.approx(58.7108) and runs == 1000 and "percentiles" in how


def test_perf_test_without_percentiles_says_p50_is_the_average():
    p = drv.parse_perf_test(_read("onnxruntime_perf_test_pr2798.txt"))
    assert p["runs"] == 1 and p["mean_ms"] == pytest.approx(734.606) and p["session_s"] == pytest.approx(1.84149)
    lat, _, how = drv.latency_from("onnxruntime", [p])
    assert lat["p50"] == pytest.approx(734.606) and "average" in how


def test_output_of_the_other_binary_is_refused():
    with pytest.raises(drv.DriverError, match="Average"):
        drv.parse_perf_test(_read("executor_runner_mv2_xnnpack_docs.txt"))
    with pytest.raises(drv.DriverError):
        drv.parse_executor_runner(_read("onnxruntime_perf_test_issue17313.txt"))


def test_shell_arguments_are_quoted():
    nasty = "/data/local/tmp/edgespec/my model; rm -rf $HOME `id`.pte"
    argv = drv.shell_argv("adb", "R5CT1 23", drv.executor_runner_command("/data/local/tmp/x/executor_runner", nasty,
                                                                         50, 4))
    assert argv[:4] == ["adb", "-s", "R5CT1 23", "shell"] and len(argv) == 5  # serial is its own argv word
    assert shlex.split(argv[4]) == ["/data/local/tmp/x/executor_runner", "--model_path", nasty, "--num_executions",
                                    "50", "--cpu_threads", "4"]
    cmd = drv.perf_test_command("/d/onnxruntime_perf_test", "/d/a b.ort", 200, 4, "xnnpack")
    assert shlex.split(drv.shell_argv("adb", "s", cmd)[4]) == cmd


def test_devices_and_serial_choice():
    # `adb devices` layout (header, then serial<TAB>state); constructed here, not a capture
    text = "List of devices attached\nR5CT1\tdevice\nemulator-5554\tunauthorized\n\n"
    devices = drv.parse_devices(text)
    assert devices == {"R5CT1": "device", "emulator-5554": "unauthorized"}
    assert drv.choose_serial(devices, "auto") == "R5CT1"
    with pytest.raises(drv.DriverError, match="unauthorized"):
        drv.choose_serial(devices, "emulator-5554")
    with pytest.raises(drv.DriverError, match="no Android device"):
        drv.choose_serial(drv.parse_devices("List of devices attached\n\n"), None)
    with pytest.raises(drv.DriverError, match="several devices"):
        drv.choose_serial({"a": "device", "b": "device"}, None)


def test_unknown_binary_is_refused():
    assert drv.runner_kind("/x/xnn_executor_runner") == "executorch"
    assert drv.runner_kind("onnxruntime_perf_test") == "onnxruntime"
    with pytest.raises(drv.DriverError, match="unknown runner binary"):
        drv.runner_kind("/x/benchmark_model")


def test_bundle_cli_refuses_adb_without_a_usable_binary(cli, tmp_path):
    code, _, err = cli("bundle", tmp_path, "--device", "android-mid", "--out", tmp_path / "b.tar.gz", "--adb", "auto")
    assert code == 2 and err.strip().startswith("error:") and "--runner-binary" in err
    assert len(err.strip().splitlines()) == 1
    fake = tmp_path / "benchmark_model"
    fake.write_bytes(b"\x7fELF")
    code, _, err = cli("bundle", tmp_path, "--device", "android-mid", "--out", tmp_path / "b.tar.gz", "--adb", "auto",
                       "--runner-binary", fake)
    assert code == 2 and "unknown runner binary" in err
