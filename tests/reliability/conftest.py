"""Fixtures the reliability suite shares (the tiny runs themselves come from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_export(digits_run, tmp_path_factory) -> Path:
    """digits_run exported to ONNX fp32 once (in process)."""
    from exporters import export_runs

    out = tmp_path_factory.mktemp("exports") / "digits"
    export_runs([digits_run], "onnx", out, parity_images=64)
    return out
