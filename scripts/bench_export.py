"""Export time: rnnexport's dynamo path (native RNN ops) vs torch's default dynamo export.

Both are measured side by side in one process, interleaved, after one warm-up each; medians
of --repeat runs are printed with their ratio. The native path is also timed at longer example
sequences to show its export time does not grow with sequence length (the default path unrolls
over time, so it does).

    python scripts/bench_export.py [--config deep_bidirectional] [--repeat 5] [--seqs 10,100]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from rnnexport.builder import build_module
from rnnexport.export._capture import captured_messages
from rnnexport.export.onnx_dynamo import export_onnx_dynamo, export_program
from rnnexport.spec import get_spec


def native(spec, tmp) -> None:
    program, _ = export_program(build_module(spec), spec)
    export_onnx_dynamo(program, spec, tmp, opset=18)


def default(spec, tmp) -> None:
    module = build_module(spec)
    x = torch.randn(*spec.shapes()["input"])
    h = torch.zeros(*spec.shapes()["h_0"])
    with captured_messages():
        torch.onnx.export(module, (x, h), str(tmp), dynamo=True, opset_version=18, verbose=False)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="deep_bidirectional")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seqs", default="10,100", help="example sequence lengths to time")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp()) / "m.onnx"
    base = get_spec(args.config)
    print(f"config {base.name}; torch {torch.__version__}; median of {args.repeat} after one warm-up each")
    print("first calls include one-off costs (imports; the native path builds torch's translation")
    print("registry once per process, the default path on every call)")
    print(f"{'example seq':>12}{'default dynamo (s)':>20}{'rnnexport native (s)':>22}{'speed-up':>10}"
          f"{'first default (s)':>19}{'first native (s)':>18}")
    for seq in [int(s) for s in args.seqs.split(",")]:
        spec = base.replace(seq_len=seq)
        first_default = timed(default, spec, tmp)
        first_native = timed(native, spec, tmp)
        d, n = [], []
        for _ in range(args.repeat):
            d.append(timed(default, spec, tmp))
            n.append(timed(native, spec, tmp))
        dm, nm = statistics.median(d), statistics.median(n)
        print(f"{seq:>12}{dm:>20.3f}{nm:>22.3f}{dm / nm:>9.1f}x{first_default:>19.3f}{first_native:>18.3f}")


if __name__ == "__main__":
    main()
