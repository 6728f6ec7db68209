"""Export time: rnnexport's dynamo path (native RNN ops) vs torch's default dynamo export.

Both are measured side by side in one process, interleaved, after one warm-up each; medians
of --repeat runs are printed with their ratio. The native path is also timed at longer example
sequences to show its export time does not grow with sequence length (the default path unrolls
over time, so it does).

The `text_classifier` example (a model spec: Embedding -> packed 2-layer bidirectional LSTM ->
pooling -> Linear) is timed the same way: rnnexport's dynamo path next to torch's default dynamo
export of the same module with the same dynamic dims, and whether the default kept the sequence
dynamic (its graph's ``seq`` axis, its native LSTM ops, and a run at another length in ONNX Runtime).

    python scripts/bench_export.py [--config deep_bidirectional] [--repeat 5] [--seqs 10,100] [--model text_classifier]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from rnnexport.builder import build_module
from rnnexport.export.capture import captured_messages
from rnnexport.export.onnx_dynamo import export_onnx_dynamo
from rnnexport.export.rnn import RNNExporting
from rnnexport.export.program import native_program
from rnnexport.spec import get_spec


def native(spec, tmp) -> None:
    program, _ = native_program(RNNExporting(spec, build_module(spec)))
    export_onnx_dynamo(program, spec, tmp, opset=18)


def default(spec, tmp) -> None:
    module = build_module(spec)
    x = torch.randn(*spec.shapes()["input"])
    h = torch.zeros(*spec.shapes()["h_0"])
    with captured_messages():
        torch.onnx.export(module, (x, h), str(tmp), dynamo=True, opset_version=18, verbose=False)


def model_native(spec, module, tmp) -> None:
    from rnnexport.export.model import ModelExporting
    from rnnexport.export.program import native_program

    program, _ = native_program(ModelExporting(spec, module, True))
    export_onnx_dynamo(program, spec, tmp, opset=18)


def model_default(spec, module, tmp) -> None:
    from rnnexport.export.model import dynamic_shapes
    from rnnexport.usermodel import example_args

    with captured_messages():
        torch.onnx.export(module, example_args(spec), str(tmp), dynamo=True, opset_version=18, verbose=False,
                          input_names=list(spec.input_names), output_names=list(spec.output_names),
                          dynamic_shapes=dynamic_shapes(spec))


def default_keeps_seq_dynamic(spec, path) -> str:
    """What torch's default export did to the sequence: the graph's axis, native ops, a run."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    axis = model.graph.input[0].type.tensor_type.shape.dim[1]
    lstm = sum(n.op_type == "LSTM" for n in model.graph.node)
    feeds = spec.make_inputs(spec.case({**spec.documented, "seq": 37}))
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
        ran = "runs at seq 37"
    except Exception as exc:
        ran = f"fails at seq 37 ({type(exc).__name__})"
    return (f"seq axis {axis.dim_param or axis.dim_value!r}, {lstm} LSTM ops, {len(model.graph.node)} nodes, {ran}")


def bench_model(name: str, repeat: int, tmp) -> None:
    from rnnexport.usermodel import build_user_module

    spec = get_spec(name)
    module = build_user_module(spec)
    print(f"\nmodel spec {name} ({spec.module_description()}); median of {repeat} after one warm-up each")
    try:
        timed(model_default, spec, module, tmp)
        default_error = None
    except Exception as exc:
        cause = exc.__cause__ or exc  # torch wraps the reason in a generic "step 1/3" error
        default_error = f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0][:200]}"
    timed(model_native, spec, module, tmp)
    d, n = [], []
    for _ in range(repeat):
        if default_error is None:
            d.append(timed(model_default, spec, module, tmp))
        n.append(timed(model_native, spec, module, tmp))
    nm = statistics.median(n)
    if default_error is None:
        dm = statistics.median(d)
        model_default(spec, module, tmp)
        print(f"  torch default dynamo: {dm:.3f} s; {default_keeps_seq_dynamic(spec, tmp)}")
    else:
        print(f"  torch default dynamo: failed: {default_error}")
    model_native(spec, module, tmp)
    print(f"  rnnexport dynamo path: {nm:.3f} s; {default_keeps_seq_dynamic(spec, tmp)}")
    if default_error is None:
        print(f"  speed-up {dm / nm:.1f}x")


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="deep_bidirectional")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seqs", default="10,100", help="example sequence lengths to time")
    parser.add_argument("--model", default="text_classifier", help="a model spec to time as well ('' for none)")
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
    if args.model:
        bench_model(args.model, args.repeat, tmp)


if __name__ == "__main__":
    main()
