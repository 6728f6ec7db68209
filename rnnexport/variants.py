"""Deployment variants: smaller or faster copies of ``model.onnx`` shipped beside it.

``--variant int8,fp16`` (the spec's ``variants`` key, the API's ``variants=``) writes, after the
fp32 files, one ONNX file per variant, listed and hashed in the manifest (``variants``) like
every other file. A variant is not expected to match PyTorch element by element: validation
runs it on every ONNX runtime as its own row (``onnxruntime-cpu:int8``) and judges it by the
acceptance criteria of each output (`rnnexport.criteria`), not by the tolerances.

- ``int8``: ONNX Runtime's dynamic quantization (``quantize_dynamic``, QInt8 weights,
  activations quantized per run), weights in 7 bits (``reduce_range``): ONNX Runtime multiplies
  uint8 activations by int8 weights with ``VPMADDUBSW`` on x86 CPUs without VNNI, whose 16-bit
  sums saturate with full-range weights, so the same file's accuracy depended on the CPU
  (measured on an AVX2 AMD EPYC: ``h_n`` cosine 0.96 for stanza's LSTM, argmax agreement 0.75 on
  ``seq2seq_decoder``; ``scripts/int8_saturation.py``). It has an integer kernel for ``LSTM``
  (``com.microsoft.DynamicQuantizeLSTM``) and for ``MatMul``/``Conv``/``Gather``; ``GRU`` and
  ``RNN`` ops have none and stay float32 (the manifest lists which ops became integer ones).
- ``fp16``: every float32 weight and op in float16 (``onnxruntime.transformers.float16``), inputs
  and outputs kept float32 so the calling contract does not change.

No TorchScript variant: torch's dynamic quantization (``torch.ao.quantization``) is deprecated,
and its quantized LSTM does not run the packed sequences and native ops rnnexport exports.
Both variants are deterministic: the same ``model.onnx`` gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


__all__ = ["SOURCE", "VARIANTS", "Variant", "check_variants_field", "parse_variants", "record_variants", "variant_files",
           "write_variants"]

SOURCE = "model.onnx"  # every variant is made from it, and runs where it runs


def _int8(source: Path, target: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "Please consider to run pre-processing before quantization"
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, reduce_range=True)
    finally:
        root.setLevel(level)


def _fp16(source: Path, target: Path) -> None:
    import warnings

    import onnx
    import onnx_ir
    from onnx_ir.passes.common import TopologicalSortPass
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the float32 value ... will be truncated"
        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    # The converter appends its Casts after the nodes that read them: onnx.checker refuses that.
    graph = onnx_ir.from_proto(model)
    TopologicalSortPass()(graph)
    onnx_ir.save(graph, str(target))


@dataclass(frozen=True)
class Variant:
    """One kind of variant: its file, how it is made (`make(source, target)`) and in words."""

    name: str
    file: str
    make: Callable[[Path, Path], None]
    method: str


VARIANTS = {v.name: v for v in (
    Variant("int8", "model.int8.onnx", _int8,
            "onnxruntime.quantization.quantize_dynamic(weight_type=QInt8, reduce_range=True): integer LSTM, MatMul, Conv, Gather; "
            "GRU and RNN ops stay float32"),
    Variant("fp16", "model.fp16.onnx", _fp16,
            "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)"),
)}


def parse_variants(value: Any, where: str, error: type[Exception]) -> tuple[str, ...]:
    """A list (or comma-separated string) of variant names: known, not repeated, at least one;
    returned in `VARIANTS` order.

    Raises:
        `error`: naming `where`, the bad value, the valid names and the closest one.
    """
    from rnnexport.options import parse_names

    return parse_names(value, VARIANTS, "variant", where, error)


def write_variants(name: str, stage: Path, variants: tuple[str, ...], writing,
                   notes: list[str]) -> dict[str, dict[str, Any]]:
    """Make each of `variants` from ``stage/model.onnx``; return the manifest's ``variants``
    table: per variant its file, the file it was made from, the method and its ops (`ops_of`).
    An int8 variant in which nothing could be quantized is said in `notes`.

    Without ``model.onnx`` (a format that could not be made) none is made, with a note.

    Raises:
        ExportError: a variant cannot be made.
    """
    from rnnexport.errors import ExportError, first_line
    from rnnexport.export.loadable import check_onnx

    if not variants:
        return {}
    source = stage / SOURCE
    if not source.exists():  # left out with its reason (`rnnexport.formats`): the export says so
        notes.append(f"{name}: the variants ({', '.join(variants)}) are not made: they are made from model.onnx, "
                     "which this export could not make")
        return {}
    table = {}
    for variant in (VARIANTS[v] for v in variants):
        with writing(stage, variant.file, 2 * source.stat().st_size) as path:
            try:
                variant.make(source, path)
            except Exception as exc:
                raise ExportError(f"{name}: the {variant.name} variant cannot be made: {type(exc).__name__}: "
                                  f"{first_line(exc)}") from None
        check_onnx(path, f"{name} ({variant.name})", session=False)
        table[variant.name] = {"file": variant.file, "of": SOURCE, "method": variant.method, "ops": ops_of(path)}
        if variant.name == "int8" and not any("Integer" in op or "Quantize" in op for op in table["int8"]["ops"]):
            notes.append(f"{name}: int8: no op was quantized (ONNX Runtime's dynamic quantization has integer kernels "
                         "for LSTM, MatMul, Conv and Gather, not for GRU or RNN ops): model.int8.onnx computes in "
                         "float32 like model.onnx")
    return table


def record_variants(manifest: dict[str, Any], stage: Path, table: dict[str, dict[str, Any]], spec) -> None:
    """Add the variants made (`write_variants`) to `manifest`: each file hashed in ``files``,
    the ``variants`` table, and the ``criteria`` they are judged by."""
    from rnnexport.criteria import criteria_json
    from rnnexport.verify import file_entry

    if table:
        manifest["files"].update({entry["file"]: file_entry(stage / entry["file"]) for entry in table.values()})
        manifest["variants"] = table
        manifest["criteria"] = criteria_json(spec.acceptance_criteria())



def ops_of(path: Path) -> list[str]:
    """The op types of an ONNX graph (``domain.Op`` outside the default domain), sorted."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sorted({f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                   for n in model.graph.node})


def variant_files(manifest: dict[str, Any]) -> list[str]:
    """The variant files an artifact's manifest lists (``variants``), checked by the reader."""
    return [entry["file"] for entry in (manifest.get("variants") or {}).values()]


def check_variants_field(manifest: dict[str, Any], where: str, error: type[Exception]) -> None:
    """Each of ``variants`` (its structure is the manifest schema's) has its own file, listed in
    ``files``."""
    for name, entry in manifest.get("variants", {}).items():
        if entry["file"] != VARIANTS[name].file:
            raise error(f"{where}: variants entry {name!r} must name its own file {VARIANTS[name].file!r}, got "
                        f"{entry['file']!r:.80}")
        if entry["file"] not in manifest["files"]:
            raise error(f"{where}: variant file {entry['file']!r} is not listed in 'files'")
