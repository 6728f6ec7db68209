"""LSTM and GRU: gate-order mappings, GRU's linear_before_reset, projections, variable lengths.

Gate orders: PyTorch LSTM i,f,g,o vs ONNX i,o,f,c; PyTorch GRU r,z,n vs ONNX z,r,h. Each test
perturbs one gate's weights strongly, so that a wrong mapping cannot go unnoticed, and shows
that a deliberately wrong mapping *is* caught.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import rnnexport.ops
from rnnexport.builder import build_module, call_model, example_args, wrap
from rnnexport.compare import Tolerance, compare_arrays, passed
from rnnexport.errors import ExportError, UsageError
from rnnexport.export.onnx_dynamo import export_onnx_dynamo
from rnnexport.export.rnn import RNNExporting
from rnnexport.export.program import native_program
from rnnexport.export.onnx_legacy import export_onnx_legacy
from rnnexport.inputs import Case, check_feeds, make_inputs
from rnnexport.spec import RNNSpec

GATES = {"lstm": 4, "gru": 3}


def gate_perturbed(cell: str, gate: int, **changes) -> tuple[RNNSpec, torch.nn.Module]:
    spec = RNNSpec(f"{cell}_gate{gate}", cell=cell, input_size=3, hidden_size=5, num_layers=2, bidirectional=True,
                   batch_size=2, seq_len=4, **changes)
    module = build_module(spec)
    H = spec.hidden_size
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0_reverse", "bias_ih_l1"):
            getattr(module, name)[gate * H:(gate + 1) * H] += 0.7
    return spec, module


def export_with(exporter: str, spec: RNNSpec, module, path: Path) -> None:
    if exporter == "legacy":
        export_onnx_legacy(wrap(module, spec), example_args(spec), spec, path, opset=18)
    else:
        program, _ = native_program(RNNExporting(spec, module))
        export_onnx_dynamo(program, spec, path, opset=18)


def ort_matches_eager(spec: RNNSpec, module, path: Path, cases=(Case.rnn(3, 7, "random"), Case.rnn(1, 1, "zero"))) -> bool:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = wrap(module, spec)
    for case in cases:
        feeds = make_inputs(spec, case)
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(names, dict(feeds))))
        want = call_model(reference, spec, feeds)
        for name, expected in want.items():
            record = compare_arrays(got[name], expected, tolerance=Tolerance(), artifact=spec.name, runtime="ort",
                                    case=case.id, output=name, against="torch")
            if not passed(record):
                return False
    return True


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize(("cell", "gate"), [("lstm", g) for g in range(4)] + [("gru", g) for g in range(3)])
def test_gate_mapping_is_exact(tmp_path, exporter, cell, gate):
    spec, module = gate_perturbed(cell, gate)
    export_with(exporter, spec, module, tmp_path / "m.onnx")
    assert ort_matches_eager(spec, module, tmp_path / "m.onnx")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_wrong_gate_mapping_is_caught(tmp_path, monkeypatch, cell):
    spec, module = gate_perturbed(cell, 1)
    wrong = tuple(range(GATES[cell]))  # PyTorch order taken as ONNX order: the classic bug
    monkeypatch.setitem(rnnexport.ops.GATE_ORDER, cell.upper(), wrong)
    export_with("dynamo", spec, module, tmp_path / "wrong.onnx")
    assert not ort_matches_eager(spec, module, tmp_path / "wrong.onnx")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_swapped_gate_blocks_in_a_legacy_export_are_caught(tmp_path, cell):
    spec, module = gate_perturbed(cell, 0)
    path = tmp_path / "m.onnx"
    export_with("legacy", spec, module, path)
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == cell.upper())
    init = next(i for i in model.graph.initializer if i.name == node.input[1])
    w = numpy_helper.to_array(init).copy()
    H = spec.hidden_size
    w[:, :H], w[:, H:2 * H] = w[:, H:2 * H].copy(), w[:, :H].copy()
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(path))
    assert not ort_matches_eager(spec, module, path)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_gru_uses_linear_before_reset_and_zero_is_caught(tmp_path, exporter):
    spec, module = gate_perturbed("gru", 2)
    path = tmp_path / "m.onnx"
    export_with(exporter, spec, module, path)
    model = onnx.load(str(path))
    grus = [n for n in model.graph.node if n.op_type == "GRU"]
    assert len(grus) == spec.num_layers
    for node in grus:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["linear_before_reset"] == 1
    # The upstream bug emitted 0, giving ~10% errors: validation must see it.
    for node in grus:
        for a in node.attribute:
            if a.name == "linear_before_reset":
                a.i = 0
    onnx.save(model, str(path))
    assert not ort_matches_eager(spec, module, path)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_lstm_projection_is_refused_for_onnx(tmp_path, exporter):
    spec = RNNSpec("proj", cell="lstm", input_size=3, hidden_size=6, proj_size=2)
    with pytest.raises(ExportError, match="ONNX cannot express an LSTM with proj_size=2"):
        export_with(exporter, spec, build_module(spec), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_lstm_projection_artifact_has_torchscript_and_pt2_only(tmp_path):
    from rnnexport.export import export_spec

    spec = RNNSpec("proj", cell="lstm", input_size=3, hidden_size=6, proj_size=2, num_layers=2, bidirectional=True,
                   batch_size=2, seq_len=5)
    result = export_spec(spec, tmp_path)
    assert result.report.passed
    assert sorted(p.name for p in result.path.iterdir()) == ["golden.npz", "manifest.json", "model.pt", "model.pt2",
                                                            "weights.pt"]
    assert any("no model.onnx" in n for n in result.notes)
    assert {"torchscript", "torch-export"} <= set(result.report.runtimes)
    assert result.report.skipped["onnxruntime-cpu"].startswith("artifact has no model.onnx (not made: proj: no model.onnx")
    assert result.missing is None  # by design, not a failure: exit 0, with the note above


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_packed_sequences_match_pytorch_exactly_in_padding_and_h_n(tmp_path, exporter, batch_first):
    spec = RNNSpec("packed", cell="lstm", input_size=4, hidden_size=5, num_layers=2, bidirectional=True,
                   batch_first=batch_first, variable_length=True, batch_size=3, seq_len=6)
    module = build_module(spec)
    export_with(exporter, spec, module, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    feeds = make_inputs(spec, Case.rnn(5, 11, "random"))
    lengths = feeds["lengths"]
    assert list(lengths) != sorted(lengths, reverse=True)  # unsorted: enforce_sorted=False semantics
    output, h_n, c_n = session.run(["output", "h_n", "c_n"], dict(feeds))
    # The reference built by hand with pack_padded_sequence / pad_packed_sequence.
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    x = torch.from_numpy(feeds["input"].copy())
    packed = pack_padded_sequence(x, torch.from_numpy(lengths.copy()), batch_first=batch_first, enforce_sorted=False)
    with torch.no_grad():
        out, (ref_h, ref_c) = module(packed, (torch.from_numpy(feeds["h_0"].copy()), torch.from_numpy(feeds["c_0"].copy())))
    ref_out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=11)
    steps = np.moveaxis(output, 1, 0) if batch_first else output
    padding = np.arange(11)[:, None] >= lengths[None, :]
    assert np.count_nonzero(steps[padding]) == 0  # exactly the padding value
    np.testing.assert_allclose(output, ref_out.numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(h_n, ref_h.numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(c_n, ref_c.numpy(), atol=1e-5, rtol=1e-4)


VAR = RNNSpec("var", cell="gru", input_size=3, hidden_size=4, variable_length=True, batch_first=True)
PLAIN = RNNSpec("plain", cell="gru", input_size=3, hidden_size=4, batch_first=True)


@pytest.mark.parametrize(
    ("spec", "lengths", "match"),
    [
        (VAR, [1, 7, 2], r"'lengths' must be in \[1, 5\], got \[7\]"),
        (VAR, [1, 0, 2], r"'lengths' must be in \[1, 5\].*got \[0\]"),
        (VAR, [1, 2], r"'lengths' axis 0 is 'batch' = 2, but another input has 'batch' = 3"),
        (PLAIN, [1, 2, 3], "unexpected input 'lengths'; inputs are input, h_0"),
        (VAR, None, "missing input 'lengths'"),
    ],
    ids=["too-long", "zero", "wrong-batch", "no-lengths-input", "missing"],
)
def test_bad_lengths_are_clear_errors(spec, lengths, match):
    feeds = {"input": np.zeros((3, 5, 3), np.float32), "h_0": np.zeros((1, 3, 4), np.float32)}
    if lengths is not None:
        feeds["lengths"] = np.array(lengths, np.int64)
    with pytest.raises(UsageError, match=match):
        check_feeds(spec, feeds)


def test_bad_lengths_never_reach_a_runtime(tmp_path, cli):
    """Through a runner (API) and through the CLI (a golden file with a bad length): exit 2."""
    from rnnexport.artifacts import open_artifact, read_npz, write_npz
    from rnnexport.export import export_spec
    from rnnexport.runtimes import make_runner
    from tests.conftest import restamp

    folder = export_spec(VAR.replace(batch_size=3, seq_len=5), tmp_path, validate=False).path
    with make_runner("onnxruntime-cpu", open_artifact(folder)) as runner:
        feeds = dict(make_inputs(VAR.replace(batch_size=3, seq_len=5), Case.rnn(3, 5)))
        feeds["lengths"] = np.array([9, 1, 1], np.int64)
        with pytest.raises(UsageError, match=r"must be in \[1, 5\]"):
            runner.infer(feeds)
    arrays = read_npz(folder / "golden.npz")
    key = next(k for k in arrays if k.endswith("/lengths"))
    arrays[key] = np.zeros_like(arrays[key])
    write_npz(folder / "golden.npz", arrays)
    restamp(folder, "golden.npz")
    code, _, err = cli("validate", folder)
    assert code == 2 and "'lengths' must be in" in err and "Traceback" not in err
