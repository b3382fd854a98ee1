"""Device profiles: every shipped profile validates; bad keys and types are errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from toolkit.devices import (
    RUNTIME_FORMATS,
    devices_dir,
    list_profiles,
    load_profile,
    parse_profile,
)
from toolkit.errors import UserError

REQUIRED = {"host-cpu", "gpu-server", "jetson-orin-nano", "jetson-agx-orin", "raspberry-pi-5", "android-mid"}


def _raw(name: str) -> dict:
    return yaml.safe_load((devices_dir() / f"{name}.yaml").read_text())


def test_required_profiles_are_shipped():
    assert REQUIRED <= set(list_profiles())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_shipped_profile_validates(name):
    p = load_profile(name)
    assert p.name == name
    assert set(p.formats) <= {f for rt in [p.runtime, *p.other_runtimes] for f in RUNTIME_FORMATS[rt]}
    assert p.batch_sizes and all(b >= 1 for b in p.batch_sizes)
    if name != "host-cpu":  # everything but the host needs sourced peak figures to be estimated
        assert p.peak is not None
        assert "http" in p.peak.source
        assert p.peak.memory_bandwidth_gbs > 0
        assert p.peak.compute_for("fp32")[0] > 0


def test_host_cpu_is_always_the_host_and_uses_all_cores():
    p = load_profile("host-cpu")
    assert p.match.host
    assert p.threads is None and p.thread_count >= 1


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d.update(trheads=2), "'trheads'"),
    (lambda d: d["peak"].update(tops=3), "'peak.tops'"),
    (lambda d: d["budgets"].update(latency_ms=3), "'budgets.latency_ms'"),
    (lambda d: d["match"].update(gpu=True), "'match.gpu'"),
])
def test_unknown_key_is_named_with_allowed_keys(mutate, key):
    data = _raw("raspberry-pi-5")
    mutate(data)
    with pytest.raises(UserError) as exc:
        parse_profile(data, "x.yaml")
    msg = str(exc.value)
    assert f"unknown key {key}" in msg and "allowed:" in msg


@pytest.mark.parametrize("key, value, shown", [
    ("threads", "many", "threads"),
    ("batch_sizes", [1, 0], "batch_sizes"),
    ("runtime", "tflite", "runtime"),
    ("formats", ["tensorrt-fp16"], "formats"),
])
def test_wrong_value_names_the_key(key, value, shown):
    data = _raw("raspberry-pi-5")
    data[key] = value
    with pytest.raises(UserError) as exc:
        parse_profile(data, "x.yaml")
    assert str(exc.value).startswith("invalid device profile x.yaml:")
    assert f"{shown}:" in str(exc.value)


def test_missing_key_and_non_mapping():
    data = _raw("host-cpu")
    del data["runtime"]
    with pytest.raises(UserError, match="missing key 'runtime'"):
        parse_profile(data, "x.yaml")
    with pytest.raises(UserError, match="mapping"):
        parse_profile(["a"], "x.yaml")


def test_peak_falls_back_to_a_wider_type():
    p = load_profile("raspberry-pi-5").peak.model_copy(update={"int8_gops": None, "fp16_gflops": None})
    value, key = p.compute_for("int8")
    assert key == "fp32_gflops" and value == pytest.approx(153.6e9)


def test_unknown_name_suggests(tmp_path):
    with pytest.raises(UserError, match="did you mean 'jetson-orin-nano'"):
        load_profile("jetson-orin-nan")


def test_load_by_path_and_env_override(tmp_path, monkeypatch):
    data = _raw("host-cpu")
    data["name"] = "my-box"
    data["threads"] = 1
    path = tmp_path / "my-box.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_profile(path).threads == 1
    monkeypatch.setenv("EDGESPEC_DEVICES_DIR", str(tmp_path))
    assert list_profiles() == ["my-box"]
    assert load_profile("my-box").name == "my-box"
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match="rename"):
        load_profile("other")


def test_invalid_yaml_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_profile(bad)
    with pytest.raises(UserError, match="not found"):
        load_profile(Path(tmp_path / "missing.yaml"))
