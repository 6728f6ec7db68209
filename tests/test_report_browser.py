"""The HTML report as a browser shows it: rendered by headless Chromium (Debian's `chromium`),
the screenshot is not blank, shows the heatmap's colours, and the page holds the SVG plot."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from rnnexport.inputs import Case
from rnnexport.report import write_html
from rnnexport.validate import validate_artifact
from tests.conftest import MODELS, perturb_weight

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian package `chromium`)")


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_in_chromium(tmp_path, artifact_copy):
    pil = pytest.importorskip("PIL.Image", reason="Pillow reads the screenshot (pip install 'rnnexport[test]')")
    folder = artifact_copy("deep")
    perturb_weight(folder, 0, "W", (0, 1, 1), 0.05)
    cases = [Case(3, 17, "zero"), Case(2, 60, "random")]
    reports = [validate_artifact(MODELS / "seq_first", cases=cases, runtimes=["onnxruntime-cpu", "onnx-reference"]),
               validate_artifact(folder, cases=cases, runtimes=["onnxruntime-cpu"])]
    page = tmp_path / "report.html"
    write_html(reports, page)

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") == 2 and "<polyline" in dom.stdout

    shot = tmp_path / "report.png"
    done = _chromium(tmp_path, "--window-size=1200,1400", f"--screenshot={shot}", page.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    image = pil.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"
    pixels = {colour for _, colour in colours}
    assert (0xC6, 0xEF, 0xCE) in pixels, "no green (well within tolerance) cell"
    assert (0xF4, 0xA0, 0xA0) in pixels, "no red (failing) cell"
