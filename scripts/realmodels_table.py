"""The README's real-models table, measured in one run on this machine.

For every model record in ``tests/realmodels/test_real_models.py`` (``MODELS``): rnnexport's
export with each exporter (validated on torch, torchscript, torch-export and onnxruntime-cpu, less
a runtime whose file the record says that exporter leaves out), and torch's default exporter
(``torch.onnx.export(..., dynamo=True)``) without and with ``dynamic_shapes``
(``torch.export.Dim`` per named dim, as rnnexport builds them, derived dims included). torch's
exports run in a subprocess each, stopped after 300 s; their seconds are the export call alone.

Run from the repository root: ``python scripts/realmodels_table.py`` (the package archives are
fetched into the cache `tests.realmodels.fetch` uses). Prints markdown.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.realmodels.test_real_models import (  # noqa: E402
    FORMAT_FILES, MODELS, RECURRENT, RUNTIMES, RealModel, flat, onnx_nodes, pinned, recurrent_layers)

CAP_S = 300


def first_line(exc: BaseException) -> str:
    """The root cause's type and first line (torch.onnx wraps torch.export's error in its own)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:160]


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def machine() -> str:
    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        found = re.search(r"^Model name:\s*(.+)$", out, re.M)
        model = found.group(1).strip() if found else model
    except (OSError, subprocess.SubprocessError):
        pass
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"Machine: {model or platform.machine()}, {os.cpu_count()} cores ({usable} usable by this process), "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}")


@contextlib.contextmanager
def stdout_to_stderr():
    """File descriptor 1 onto 2 within the block: torch's legacy exporter prints the whole
    TorchScript IR graph to stdout (C level) when a symbolic fails; the table stays clean."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# ---------------------------------------------------------------------------------------------
# rnnexport


def rnnexport_cell(real: RealModel, exporter: str) -> str:
    from rnnexport.export import export_model

    module = real.build()
    runtimes = real.runtimes(exporter)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(), stdout_to_stderr():
                warnings.simplefilter("ignore")
                result = export_model(module, name=real.id.replace("-", "_"), out=out, exporter=exporter,
                                      inputs=real.inputs, dims=real.dims, outputs=real.outputs, runtimes=runtimes)
        except Exception as exc:
            return f"fails: {first_line(exc)} ({time.perf_counter() - start:.1f} s)"
        seconds = time.perf_counter() - start
        made = [FORMAT_FILES[f][0] for f in FORMAT_FILES if (result.path / FORMAT_FILES[f][0]).exists()]
        passed = result.report is not None and result.report.passed
        text = f"{'passed' if passed else 'FAILED'}: {', '.join(made)}"
        manifest = json.loads((result.path / "manifest.json").read_text())
        for fmt, reason in (manifest.get("formats_missing") or {}).items():
            reason = reason.split(": ", 1)[1] if ": " in reason else reason
            text += f"; no {FORMAT_FILES[fmt][0]} ({reason[:170]})"
        text += f"; TorchScript {manifest.get('torchscript_method')}"
        return f"{text} ({seconds:.1f} s, validated on {', '.join(runtimes)})"


# ---------------------------------------------------------------------------------------------
# torch's default exporter, in a subprocess (`--worker ID static|dynamic`)


def dynamic_shapes(real: RealModel) -> dict:
    """A torch.export.Dim per named dim, as rnnexport builds them: a dim's ``min`` (default 1);
    a dim another is derived from starts at its smallest size (below it a convolution's output
    reaches 1, which torch.export specializes); a derived dim is the expression of its root Dim."""
    from torch.export import Dim

    derived = {name: d["size"] for name, d in real.dims.items() if isinstance(d["size"], str)}
    roots = {name for expr in derived.values() for name in re.findall(r"[A-Za-z_]\w*", expr)}
    dims = {}
    for name, d in real.dims.items():
        if name not in derived:
            low = min(d["size"], *d.get("sweep", [])) if name in roots else d.get("min", 1)
            dims[name] = Dim(name, min=low)
    for name, expr in derived.items():
        dims[name] = eval(expr, {"__builtins__": {}}, dims)  # noqa: S307  (the record's own expression)
    return {input_name: {axis: dims[d] for axis, d in enumerate(t["shape"]) if isinstance(d, str)} or None
            for input_name, t in real.inputs.items()}


def describe(real: RealModel, module, path: Path, dynamic: bool) -> str:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    nodes = onnx_nodes(path)
    ops = [n.op_type for n in nodes]
    native = [op for op in ops if op in RECURRENT]
    loops = [op for op in ops if op in ("Loop", "Scan")]
    if native:
        text = f"native {'/'.join(sorted(set(native)))} x{len(native)}"
        if len(native) != recurrent_layers(module):
            text += f" (module has {recurrent_layers(module)} recurrent layers)"
    elif loops:
        text = f"recurrence as {'/'.join(sorted(set(loops)))}"
    else:
        text = "recurrence unrolled"
    text += f", {len(nodes)} nodes"
    graph = onnx.load(str(path)).graph
    shapes = pinned(graph.input)
    if all(isinstance(d, int) for shape in shapes for d in shape):
        return text + ", dims pinned"
    text += (", input dims " + " ".join(str(s).replace("'", "").replace(" ", "") for s in shapes)
             + ", output dims " + " ".join(str(s).replace("'", "").replace(" ", "") for s in pinned(graph.output)))
    if dynamic:  # does it hold at a shape no example used?
        args = real.unseen()
        with torch.no_grad():
            want = flat(module(*args))
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            by_name = dict(zip(real.inputs, (a.numpy() for a in args)))
            got = session.run(None, {i.name: by_name[i.name] for i in session.get_inputs()})
            worst = max(float(np.max(np.abs(g - w))) if g.shape == w.shape else float("inf")
                        for g, w in zip(got, want))
            text += (f"; unseen shape: matches eager (max diff {worst:.1e})" if worst < 1e-3
                     else f"; unseen shape: WRONG (max diff {worst:.3g})")
        except Exception as exc:
            message = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first_line(exc))
            text += f"; unseen shape: ORT fails: {message[:150]}"
    return text


def worker(model_id: str, mode: str) -> None:
    import torch

    real = next(m for m in MODELS if m.id == model_id)
    module, args = real.build(), real.example()
    kwargs = {"dynamic_shapes": dynamic_shapes(real)} if mode == "dynamic" else {}
    with tempfile.TemporaryDirectory() as out:
        path = Path(out) / "default.onnx"
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, args, str(path), dynamo=True, **kwargs)
        except Exception as exc:
            seconds = time.perf_counter() - start
            outcome = f"fails: {first_line(exc)}"
        else:
            seconds = time.perf_counter() - start
            outcome = describe(real, module, path, mode == "dynamic")
    print("RESULT " + json.dumps({"outcome": outcome, "seconds": seconds}))


def torch_default_cell(real: RealModel, mode: str) -> str:
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", real.id, mode], cwd=ROOT, capture_output=True,
                              text=True, timeout=CAP_S + 60)  # the cap is on the export; +60 s for imports
    except subprocess.TimeoutExpired:
        return f"> {CAP_S} s (stopped)"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        tail = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-1:]
        return f"worker exited {proc.returncode}: {tail[0][:160] if tail else 'no output'}"
    result = json.loads(lines[-1][len("RESULT "):])
    if result["seconds"] > CAP_S:
        return f"> {CAP_S} s (stopped)"
    return f"{result['outcome']} ({result['seconds']:.1f} s)"


# ---------------------------------------------------------------------------------------------


def main() -> None:
    print(machine())
    print()
    print("| model | field | pattern | what it needed | rnnexport legacy | rnnexport dynamo | "
          "torch default exporter (no dynamic_shapes) | torch default exporter (dynamic_shapes) |")
    print("|---|---|---|---|---|---|---|---|")
    for real in MODELS:
        legacy, dynamo = rnnexport_cell(real, "legacy"), rnnexport_cell(real, "dynamo")
        static, dynamic = torch_default_cell(real, "static"), torch_default_cell(real, "dynamic")
        row = [f"{real.package}, `{real.file}`", real.field, real.pattern, real.needed, legacy, dynamo, static, dynamic]
        print("| " + " | ".join(cell(c) for c in row) + " |", flush=True)
    print()
    print(f"rnnexport: export_model with validation (every case of the record's dims) on {', '.join(RUNTIMES)}, "
          "less the runtime of a file the exporter leaves out; seconds include validation. torch's default "
          "exporter: torch.onnx.export(module, example, dynamo=True), seconds of that call alone, each in its own "
          f"process, stopped after {CAP_S} s; with dynamic_shapes the file is also run in ONNX Runtime at the record's "
          "unseen shape and compared with eager.")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        main()
