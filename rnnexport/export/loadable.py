"""No model file is installed that its own runtime cannot load, validated or not.

`onnx.checker` alone misses what an exporter can get wrong: with a dynamic length the legacy
exporter once wrote an ``Unsqueeze`` with an out-of-range axis that the checker passed and ONNX
Runtime refused to load. So a written ``model.onnx`` also goes through strict shape inference
(with data propagation) and one ONNX Runtime session on the CPU.
"""

from __future__ import annotations

from pathlib import Path

from rnnexport.errors import FormatFailed, first_line

__all__ = ["check_onnx"]


def check_onnx(path: Path, name: str, *, session: bool = True) -> None:
    """Refuse `path` (the ONNX file of artifact `name`) unless it passes ``onnx.checker``
    (full check), strict shape inference and (`session`) an ONNX Runtime CPU session. Variants
    are not loaded here: ONNX Runtime 1.31 crashes the process (SIGSEGV) creating a session
    for some fp16 graphs; validation loads them in a child process (`rnnexport.runtimes.probe`).

    Raises:
        FormatFailed: naming the artifact, the check and its first line.
    """
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise FormatFailed(f"{name}: the exported {path.name} fails onnx.checker: {_first_line(exc)}; not installed") \
            from None
    if not session:
        return
    try:
        import onnxruntime as ort
    except ImportError:
        return  # validation says onnxruntime is missing; the checker passed
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's to read
    ort.set_default_logger_severity(3)
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise FormatFailed(f"{name}: ONNX Runtime cannot load the exported {path.name}: {_first_line(exc)}; the "
                          "exporter wrote an invalid graph; not installed (try the other --exporter)") from None


def _first_line(exc: BaseException) -> str:
    """The first line of `exc`, without ONNX Runtime's source locations and C++ signatures."""
    import re

    line = re.sub(r"/onnxruntime_src/\S+ [^(]*\([^)]*\)[^ ]* ?", "", first_line(exc, None))
    return f"{type(exc).__name__}: {line[:300]}"
