"""report.html in a real headless browser (Debian's chromium): it parses into the same sections and tables as
report.md, with a plot per device, and renders to a screenshot. Skipped where no chromium is installed."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from test_report import report, row, sample

from benchmarks.budgets import check_budgets
from benchmarks.report import render_html, render_markdown

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a chromium browser (apt-get install chromium)")


def _browser(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", *args],
                          capture_output=True, text=True, timeout=120)


def test_the_html_report_has_report_mds_sections_tables_and_plots_in_a_browser(tmp_path):
    rows = sample()
    rows[1]["generalist_model"] = "gen"
    rows.append(row("gen", fmt="onnx-int8", p50=3.0, precision="int8", notes=["slower than its fp32 file"]))
    rep = report(rows, check_budgets(rows, {"host-cpu": {"latency_p50_ms": 1.0}}))
    md = render_markdown(rep)
    page = tmp_path / "report.html"
    page.write_text(render_html(rep))
    dom = _browser("--dump-dom", page.as_uri()).stdout  # the document as the browser parsed it
    headings = [ln[ln.index(" ") + 1:] for ln in md.splitlines() if ln.startswith("#")]
    for h in headings:
        assert h in dom, h
    assert "<pre>" not in dom and "## " not in dom  # budgets are a section, not literal Markdown
    assert dom.count("<table>") == md.count("\n|---") and dom.count("data:image/png;base64,") >= 1
    assert "<li>slower than its fp32 file</li>" in dom and "2 failed" in dom
    shot = tmp_path / "report.png"
    _browser("--window-size=1400,2000", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
