"""The HTML report as a browser shows it: rendered by headless Chromium (Debian's `chromium`),
the screenshot is not blank, shows the heatmap's colours, and the page holds the SVG plot."""

from __future__ import annotations

import html
import json
import re
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
    cases = [Case.rnn(3, 17, "zero"), Case.rnn(2, 60, "random")]
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


# Appended to a copy of the page (the report itself runs no scripts): where Chromium lays out
# each text of the plots, and each plot's lines, written into the DOM that --dump-dom prints.
_PROBE = """<script>
const plots = [...document.querySelectorAll('svg')].map(svg => ({
  texts: [...svg.querySelectorAll('text')].map(t => {
    const r = t.getBoundingClientRect();
    return {text: t.textContent, fill: t.getAttribute('fill'), box: [r.left, r.top, r.right, r.bottom]};
  }),
  lines: [...svg.querySelectorAll('polyline')].map(p => ({
    names: p.querySelector('title')?.textContent ?? '', stroke: p.getAttribute('stroke'),
    dash: p.getAttribute('stroke-dasharray') || '', points: p.getAttribute('points')})),
  atol: [...svg.querySelectorAll('line[stroke-dasharray="4 3"]')].map(l => l.getAttribute('stroke')),
}));
const out = document.createElement('pre');
out.id = 'probe';
out.textContent = JSON.stringify(plots);
document.body.appendChild(out);
</script>"""


def _overlapping(texts: list[dict]) -> list[tuple[str, str]]:
    pairs = []
    for i, a in enumerate(texts):
        for b in texts[i + 1:]:
            width = min(a["box"][2], b["box"][2]) - max(a["box"][0], b["box"][0])
            height = min(a["box"][3], b["box"][3]) - max(a["box"][1], b["box"][1])
            if width > 0.5 and height > 0.5:
                pairs.append((a["text"], b["text"]))
    return pairs


def test_error_plot_as_chromium_lays_it_out(tmp_path):
    """Issue 20, item 7e, as measured on deep at --atol 2e-7: torchscript and torch-export (0 at
    every step) were invisible on the floor, onnxruntime-cpu hidden under onnxruntime-node,
    onnx-reference as red as the atol line, the axes and atol unlabelled, and the atol label on
    top of the legend. In the page as Chromium lays it out: every runtime named once in the
    legend (equal lines merged and said so), lines that differ in colour and dash, none in the
    atol line's colour, the labels there, and no text overlapping another."""
    from rnnexport.compare import Tolerance
    from rnnexport.runtimes import unavailable_reason

    pil = pytest.importorskip("PIL.Image", reason="Pillow reads the screenshot (pip install 'rnnexport[test]')")
    runtimes = [r for r in ("torchscript", "torch-export", "onnxruntime-cpu", "onnxruntime-node", "onnx-reference")
                if unavailable_reason(r) is None]
    assert {"torchscript", "torch-export", "onnxruntime-cpu"} <= set(runtimes)
    report = validate_artifact(MODELS / "deep", cases=[Case.rnn(2, 60, "random")], runtimes=runtimes,
                               tolerance=Tolerance(atol=2e-7))
    assert set(report.error_over_time) == set(runtimes) - {"torch"}
    page = tmp_path / "report.html"
    write_html([report], page)
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    (plot,) = json.loads(html.unescape(re.search(r"<pre id=\"probe\">(.*?)</pre>", dom.stdout, re.S).group(1)))

    texts = [t["text"] for t in plot["texts"]]
    assert "max abs error vs torch" in texts and any(t.startswith("time step") for t in texts)
    assert "atol 2e-07" in texts
    assert _overlapping(plot["texts"]) == []
    named = [name for line in plot["lines"] for name in line["names"].split(", ")]
    assert sorted(named) == sorted(report.error_over_time), "every runtime on exactly one line"
    assert "torchscript, torch-export: 0 at every step (identical to torch)" in texts
    if "onnxruntime-node" in runtimes:
        assert "onnxruntime-cpu (identical: onnxruntime-node)" in texts
    styles = [(line["stroke"], line["dash"]) for line in plot["lines"]]
    assert len(set(styles)) == len(styles) and len({s for s, _ in styles}) == len(styles)
    assert len({line["points"] for line in plot["lines"]}) == len(plot["lines"]), "two lines drawn on each other"
    (atol,) = plot["atol"]
    assert atol not in {s for s, _ in styles}

    shot = tmp_path / "plot.png"
    done = _chromium(tmp_path, "--window-size=1000,1400", f"--screenshot={shot}", page.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = {colour for _, colour in pil.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)}
    for stroke in {s for s, _ in styles} | {atol}:  # each legend sample is drawn in its exact colour
        value = stroke.lstrip("#")
        value = "".join(c * 2 for c in value) if len(value) == 3 else value
        assert tuple(int(value[i:i + 2], 16) for i in (0, 2, 4)) in pixels, f"{stroke} not on screen"
