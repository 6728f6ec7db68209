"""The variants of an artifact side by side: for fp32 and each variant (int8, fp16), its file
and size, its latency on each runtime that ran it (median and p90 at one shape, and the ratio
to the same runtime's fp32 median) and each acceptance criterion's value as validated
(the manifest's validation block: `rnnexport.criteria`). `rnnexport bench` prints it (terminal,
``--json``, ``--html``)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

__all__ = ["format_variant_table", "variant_table", "variant_table_html"]

_FP32 = "fp32"


def variant_table(artifact, results, shape: str) -> list[dict[str, Any]]:
    """One row per variant (fp32 first) when the artifact has variants, else ``[]``;
    `results` are the bench's (`rnnexport.bench.BenchResult`) and `shape` the one compared."""
    from rnnexport.runtimes import RUNTIMES, split_row

    made = artifact.manifest.get("variants") or {}
    if not made:
        return []
    files = artifact.manifest["files"]
    source = next(iter(made.values()))["of"]
    validated = (artifact.manifest.get("validation") or {}).get("runtimes", {})
    timed = {r.runtime: r for r in results if r.shape == shape}
    rows = []
    for variant, file in [(_FP32, source), *((v, e["file"]) for v, e in made.items())]:
        suffix = "" if variant == _FP32 else f":{variant}"
        latency = {}
        for row, r in timed.items():
            base, of = split_row(row)
            if (of or _FP32) != variant or base not in RUNTIMES:  # not the ONNX Runtime floor
                continue
            fp32 = timed.get(base)
            latency[base] = {"median_ms": r.median_ms, "p90_ms": r.p90_ms,
                             "ratio_to_fp32": r.median_ms / fp32.median_ms if fp32 and fp32.median_ms else None}
        # The first runtime that ran this file (ONNX Runtime CPU comes first among them).
        judged = [(runtime, entry["criteria"]) for runtime, entry in validated.items()
                  if (split_row(runtime)[1] or "") == suffix[1:] and entry.get("criteria")
                  and (suffix or runtime.startswith("onnx"))]
        runtime, criteria = judged[0] if judged else (None, {})
        rows.append({"variant": variant, "file": file, "bytes": files[file]["bytes"],
                     "size_ratio": files[file]["bytes"] / files[source]["bytes"], "shape": shape,
                     "latency": latency, "criteria": criteria, "criteria_runtime": runtime})
    return rows


def _latency(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    ratio = f" ({entry['ratio_to_fp32']:.2f}x)" if entry.get("ratio_to_fp32") else ""
    return f"{entry['median_ms']:.3f}{ratio} p90 {entry['p90_ms']:.3f}"


def _columns(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    runtimes = list(dict.fromkeys(r for row in rows for r in row["latency"]))
    criteria = list(dict.fromkeys(c for row in rows for c in row["criteria"]))
    return runtimes, criteria


def format_variant_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a terminal table, with a line saying what the columns are."""
    from rnnexport.report import plain_table, render

    runtimes, criteria = _columns(rows)
    table = plain_table("variant", ["file", "bytes (x fp32)", *(f"{r} ms" for r in runtimes), *criteria])
    for row in rows:
        table.add_row(row["variant"], row["file"], f"{row['bytes']} ({row['size_ratio']:.2f}x)",
                      *(_latency(row["latency"].get(r)) for r in runtimes),
                      *(f"{row['criteria'][c]:.4g}" if c in row["criteria"] else "-" for c in criteria))
    note = (f"variants at {rows[0]['shape']}: median ms (x = ratio to the runtime's fp32) and p90; criteria as "
            "validated at export (the manifest; '-': not validated)")
    return note + "\n" + render(table)


def variant_table_html(reports, path: str | Path) -> None:
    """A self-contained page with each artifact's variant table (`rnnexport bench --html`)."""
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>rnnexport bench</title><style>"
             "body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td.l,th.l{text-align:left}"
             "</style></head><body><h1>rnnexport bench</h1>"]
    for report in reports:
        parts.append(f"<h2>{esc(report.artifact)}</h2><table><tr><th class='l'>runtime</th>"
                     + "".join(f"<th>{esc(s)}</th>" for s in dict.fromkeys(r.shape for r in report.results)) + "</tr>")
        shapes = list(dict.fromkeys(r.shape for r in report.results))
        cells = {(r.runtime, r.shape): r for r in report.results}
        for runtime in dict.fromkeys(r.runtime for r in report.results):
            row = []
            for shape in shapes:
                r = cells.get((runtime, shape))
                row.append("<td>-</td>" if r is None else f"<td title='p99 {r.p99_ms or 0:.3f} ms, {r.throughput:.1f} runs/s'>"
                           f"{r.median_ms:.3f}{f' ({r.ratio_to_torch:.2f}x)' if r.ratio_to_torch else ''}</td>")
            parts.append(f"<tr><td class='l'>{esc(runtime)}</td>{''.join(row)}</tr>")
        parts.append("</table>")
        if report.variants:
            runtimes, criteria = _columns(report.variants)
            parts.append("<h3>Variants side by side</h3><table><tr><th class='l'>variant</th><th>file</th><th>bytes</th>"
                         + "".join(f"<th>{esc(r)} ms</th>" for r in runtimes)
                         + "".join(f"<th>{esc(c)}</th>" for c in criteria) + "</tr>")
            for row in report.variants:
                parts.append(f"<tr><td class='l'>{esc(row['variant'])}</td><td>{esc(row['file'])}</td>"
                             f"<td>{row['bytes']} ({row['size_ratio']:.2f}x)</td>"
                             + "".join(f"<td>{esc(_latency(row['latency'].get(r)))}</td>" for r in runtimes)
                             + "".join(f"<td>{row['criteria'][c]:.4g}</td>" if c in row["criteria"] else "<td>-</td>"
                                       for c in criteria) + "</tr>")
            parts.append("</table>")
    parts.append("</body></html>\n")
    Path(path).write_text("".join(parts), encoding="utf-8")
