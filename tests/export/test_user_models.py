"""Users' own models (model specs): the feature matrix, exported with both exporters, with
native recurrent ops, validated on every available runtime; refusals and bad input.

Each export validates the staged artifact on every runtime available here (a failing one is
not installed and raises), so a passing export is the proof; the tests then check what the
manifest and the graph say.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from rnnexport.errors import ExportRejected
from rnnexport.export import export_model, export_spec
from rnnexport.modelspec_load import load_model_spec
from tests.usermodels import TWO_RECURRENT

USERMODELS = Path(__file__).resolve().parents[1] / "usermodels"
EXPORTERS = ("legacy", "dynamo")


def _spec_file(tmp_path: Path, name: str, body: str) -> Path:
    shutil.copy(USERMODELS / "features.py", tmp_path / "features.py")
    path = tmp_path / f"{name}.toml"
    path.write_text(body)
    return path


STATEFUL = '''
module = "features.py:StatefulLSTM"
[inputs.x]
shape = ["seq", "batch", 4]
[inputs.h_0]
shape = [2, "batch", 6]
[inputs.c_0]
shape = [2, "batch", 6]
[dims.batch]
size = 3
sweep = [1, 6]
[dims.seq]
size = 9
sweep = [1, 30]
[outputs]
names = ["y", "h_n", "c_n"]
state = { h_0 = "h_n", c_0 = "c_n" }
stream_dim = "seq"
'''

TWO = TWO_RECURRENT

PACKED = '''
module = "features.py:PackedGRU"
[inputs.x]
shape = ["seq", "batch", 4]
[inputs.lengths]
dtype = "int64"
shape = ["batch"]
range = [1, "seq"]
[inputs.h_0]
shape = [2, "batch", 6]
[dims.batch]
size = 4
sweep = [1, 7]
[dims.seq]
size = 8
sweep = [2, 30]
[outputs]
names = ["out", "h_n"]
'''

CELLS = '''
module = "features.py:CellStep"
[inputs.x]
shape = ["batch", 4]
[inputs.h]
shape = ["batch", 6]
[inputs.c]
shape = ["batch", 6]
[dims.batch]
size = 3
sweep = [1, 10]
[outputs]
names = ["y", "h_next", "c_next"]
'''

DTYPES = '''
module = "features.py:MaskedIds"
[inputs.ids]
dtype = "int32"
shape = ["batch", "seq"]
range = [0, 9]
[inputs.mask]
dtype = "bool"
shape = ["batch", "seq"]
[inputs.scale]
dtype = "float16"
shape = ["batch"]
range = [0.5, 2.0]
[dims.batch]
size = 3
sweep = [1, 6]
[dims.seq]
size = 5
sweep = [1, 33]
[outputs]
names = ["pooled"]
'''

FLATTEN = '''
module = "features.py:FlattenBiLSTM"
[inputs.x]
shape = ["batch", "seq", 5]
[dims.batch]
size = 2
sweep = [1, 5]
[dims.seq]
size = 6
sweep = [1, 23]
[outputs]
names = ["y"]
'''

INIT_HIDDEN = FLATTEN.replace("FlattenBiLSTM", "InitHidden").replace('"seq", 5]', '"seq", 3]')

FORECASTER = '''
module = "features.py:Forecaster"
[inputs.x]
shape = ["batch", "seq", 2]
[inputs.lengths]
dtype = "int64"
shape = ["batch"]
range = [1, "seq"]
[dims.batch]
size = 3
sweep = [1, 6]
[dims.seq]
size = 7
sweep = [2, 25]
[outputs]
names = ["y", "h_n"]
'''

SORTED = FORECASTER.replace("Forecaster", "SortedPacking").replace('"seq", 2]', '"seq", 3]').replace(
    'range = [1, "seq"]', 'range = [1, "seq"]\nsorted = "descending"').replace('["y", "h_n"]', '["y"]')

TIED = '''
module = "features.py:TiedLengths"
[inputs.waveform]
shape = ["batch", 1, "samples"]
[inputs.features]
shape = ["batch", 3, "frames"]
[dims.batch]
size = 2
sweep = [1, 3]
[dims.frames]
size = 7
sweep = [6, 19]
[dims.samples]
size = "(frames - 4) * 4"
[outputs]
names = ["out"]
'''

LONGEST = SORTED.replace("SortedPacking", "PackedNoTotalLength").replace('"seq", 3]', '"seq", 4]').replace(
    'sorted = "descending"', "reaches_max = true")

MATRIX = {
    # name: (spec text or file, native recurrent ops expected, what it covers)
    "tagger": (None, 1, "int + float inputs, three outputs, nested GRU, factory function, module_args"),
    "stateful_lstm": (STATEFUL, 2, "LSTM (h, c) tuples in and out, seq-first, two layers, streaming"),
    "two_recurrent": (TWO, 3, "two recurrent layers: bidirectional GRU then 2-layer relu RNN, batch_first"),
    "packed_gru": (PACKED, 1, "pack_padded_sequence in the module: sequence_lens, bidirectional"),
    "cells": (CELLS, 0, "LSTMCell and RNNCell (elementwise ops)"),
    "dtypes": (DTYPES, 1, "int32 ids, bool mask, float16 scale"),
    # As public packages write them: the recurrent layer is the user's own object while exporting.
    "flatten": (FLATTEN, 1, "self.rnn.flatten_parameters() in forward, bidirectional LSTM"),
    "init_hidden": (INIT_HIDDEN, 2, "h_0 from the layer's num_layers/hidden_size and its subclass method"),
    "packing_subclass": (FORECASTER, 2, "nn.LSTM subclass packing itself, super().forward, two layers"),
    "sorted_lengths": (SORTED, 1, "pack_padded_sequence(enforce_sorted=True): lengths sorted = \"descending\""),
    "padded_to_longest": (LONGEST, 1, "pad_packed_sequence without total_length: lengths reaches_max = true"),
    "tied_dims": (TIED, 1, "a dim given by an expression of another: samples = (frames - 4) * 4"),
}


def _load(tmp_path: Path, name: str):
    text, _, _ = MATRIX[name]
    if text is None:
        shutil.copy(USERMODELS / "features.py", tmp_path / "features.py")
        shutil.copy(USERMODELS / "tagger.toml", tmp_path / "tagger.toml")
        return load_model_spec(tmp_path / "tagger.toml")
    return load_model_spec(_spec_file(tmp_path, name, text))


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", list(MATRIX), ids=[f"{n}: {MATRIX[n][2]}" for n in MATRIX])
def test_user_model_exports_with_native_ops_and_validates_everywhere(tmp_path: Path, name: str, exporter: str) -> None:
    spec = _load(tmp_path, name)
    result = export_spec(spec, tmp_path / "out", exporter=exporter)
    assert result.report.passed
    ran = set(result.report.runtimes)
    assert {"torch", "torchscript", "torch-export", "onnxruntime-cpu"} <= ran
    manifest = json.loads((result.path / "manifest.json").read_text())
    expected_ops = MATRIX[name][1]
    assert len(manifest["recurrent_ops"]) == expected_ops
    graph = onnx.load(str(result.path / "model.onnx")).graph
    assert sum(n.op_type in ("RNN", "GRU", "LSTM") for n in graph.node) == expected_ops
    # Names and dynamic dims exactly as the spec says.
    assert [i.name for i in graph.input] == list(spec.input_names)
    assert [o.name for o in graph.output] == list(spec.output_names)
    for value in graph.input:
        for axis, dim in spec.dynamic_axes()[value.name].items():
            assert value.type.tensor_type.shape.dim[axis].dim_param == dim
    for value, entry in zip(graph.output, manifest["io"]["outputs"]):
        assert entry["dynamic_axes"], f"{value.name}: no axis follows a dim"
        for axis, dim in entry["dynamic_axes"].items():
            assert value.type.tensor_type.shape.dim[int(axis)].dim_param == dim
    # No torch.export symbol (s16) leaks into a dim name, alone or inside an expression.
    leaked = [d.dim_param for v in graph.output for d in v.type.tensor_type.shape.dim
              if re.search(r"\bs\d+\b", d.dim_param)]
    assert not leaked, leaked
    # Every sweep value of every dim ran (nothing pinned to the example size).
    assert {c.id for c in spec.sweep()} <= set(result.report.cases)
    if spec.state:
        assert result.report.streaming["cases"], "the streaming check must run where state is declared"
        assert any(c.against == "streaming" for c in result.report.comparisons)


def test_tolerances_from_the_spec_are_stored_and_used(tmp_path: Path) -> None:
    spec = _load(tmp_path, "tagger")
    result = export_spec(spec, tmp_path / "out", runtimes=["onnxruntime-cpu"])
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["tolerance"] == {"atol": 2e-5, "rtol": 1e-4, "outputs": {"summary": {"atol": 1e-4, "rtol": 1e-3}}}
    from rnnexport.validate import validate_artifact

    # Stored tolerances are the exporting user's: applied when the validating user says so ...
    report = validate_artifact(result.path, runtimes=["onnxruntime-cpu"], manifest_tolerance=True)
    used = {(c.output, c.atol, c.rtol) for c in report.comparisons if c.against == "torch"}
    assert ("summary", 1e-4, 1e-3) in used and ("tags", 2e-5, 1e-4) in used
    # ... and by default they only tighten the validating user's (here the defaults).
    report = validate_artifact(result.path, runtimes=["onnxruntime-cpu"])
    used = {(c.output, c.atol, c.rtol) for c in report.comparisons if c.against == "torch"}
    assert used == {(name, 1e-5, 1e-4) for name in ("tags", "h_n", "summary")}


def test_the_users_module_is_never_mutated(tmp_path: Path) -> None:
    from tests.usermodels.features import TwoRecurrent

    module = TwoRecurrent().eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    children = [type(m) for m in module.modules()]
    export_model(module, name="two", out=tmp_path, exporter="dynamo", runtimes=["onnxruntime-cpu"],
                 inputs={"x": {"shape": ["batch", "seq", 3]}}, dims={"batch": {"size": 2}, "seq": {"size": 5, "sweep": [40]}},
                 outputs=["z"])
    assert [type(m) for m in module.modules()] == children
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_export_model_api_with_a_trained_module_in_memory(tmp_path: Path) -> None:
    from tests.usermodels.features import StatefulLSTM

    torch.manual_seed(3)
    module = StatefulLSTM().eval()
    result = export_model(
        module, name="mine", out=tmp_path, module_args={},
        inputs={"x": {"shape": ["seq", "batch", 4]}, "h_0": {"shape": [2, "batch", 6]}, "c_0": {"shape": [2, "batch", 6]}},
        dims={"batch": {"size": 2, "sweep": [5]}, "seq": {"size": 6, "sweep": [33]}},
        outputs={"names": ["y", "h_n", "c_n"], "state": {"h_0": "h_n", "c_0": "c_n"}, "stream_dim": "seq"},
    )
    assert result.report.passed and result.path == tmp_path / "mine"
    # The stored weights are the module's own (not a re-initialized copy).
    from rnnexport.usermodel import load_weights

    stored = load_weights(result.path / "weights.safetensors")
    assert all(torch.equal(stored[k], v) for k, v in module.state_dict().items())


def test_unused_recurrent_layer_is_rejected_with_exit_1(tmp_path: Path) -> None:
    from tests.usermodels.features import UnusedLayer

    with pytest.raises(ExportRejected, match=r"1 native recurrent ops, the module has 2 recurrent layers.*spare") as info:
        export_model(UnusedLayer(), name="unused", out=tmp_path, inputs={"x": {"shape": ["batch", "seq", 3]}},
                     dims={"batch": {"size": 2}, "seq": {"size": 5}}, outputs=["y"], exporter="legacy")
    assert info.value.exit_code == 1
    assert not (tmp_path / "unused").exists()


def test_pad_packed_without_total_length_is_refused_naming_the_fix(tmp_path: Path) -> None:
    from tests.usermodels.features import PackedNoTotalLength

    with pytest.raises(ExportRejected, match="without total_length.*total_length=") as info:
        export_model(PackedNoTotalLength(), name="nototal", out=tmp_path, exporter="dynamo",
                     inputs={"x": {"shape": ["batch", "seq", 4]},
                             "lengths": {"dtype": "int64", "shape": ["batch"], "range": [1, "seq"]}},
                     dims={"batch": {"size": 3}, "seq": {"size": 6}}, outputs=["out"])
    assert info.value.exit_code == 1 and "nototal: pad_packed_sequence" in str(info.value)
    assert "reaches_max = true" in str(info.value)
    assert not (tmp_path / "nototal").exists()


def test_scripting_failure_falls_back_to_trace_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "dyn.py").write_text(
        "import torch\n"
        "class Dyn(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.gru = torch.nn.GRU(3, 4, batch_first=True)\n"
        "    def forward(self, x):\n"
        "        out, _ = self.gru(x)\n"
        "        return out * len(set([1, 2]))  # a set: TorchScript cannot compile it\n")
    (tmp_path / "dyn.toml").write_text(TWO.replace("features.py:TwoRecurrent", "dyn.py:Dyn"))
    result = export_spec(load_model_spec(tmp_path / "dyn.toml"), tmp_path / "out", runtimes=["torchscript"])
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["torchscript_method"] == "trace"
    assert any("torch.jit.script failed" in note and "trace" in note for note in result.notes)
    assert result.report.passed


def test_a_changed_module_file_is_never_imported(tmp_path: Path) -> None:
    """The module is imported only while its file is the one the export recorded: an edited
    file (which could do anything at import) is not run; the golden data stands in."""
    from rnnexport.validate import validate_artifact

    spec = _load(tmp_path, "two_recurrent")
    result = export_spec(spec, tmp_path / "out", runtimes=["onnxruntime-cpu"])
    source, marker = tmp_path / "features.py", tmp_path / "imported"
    source.write_text(source.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    report = validate_artifact(result.path, runtimes=["onnxruntime-cpu"])
    assert report.passed and not marker.exists()
    assert "changed since the export" in report.skipped["torch"]
    assert any("eager reference unavailable" in note for note in report.notes)


def test_a_module_defined_in_a_script_is_never_imported_again(tmp_path: Path) -> None:
    """export_model from a script: validating later must not re-run the script (it could train,
    or write files); the golden data stands in for the eager reference, and the report says so."""
    import subprocess
    import sys

    script = tmp_path / "train_and_export.py"
    script.write_text(
        "import pathlib, sys\n"
        "from torch import nn\n"
        "from rnnexport.export import export_model\n"
        "pathlib.Path(sys.argv[1], 'ran').open('a').write('x')  # a side effect of running the script\n"
        "class Mine(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.gru = nn.GRU(3, 4, batch_first=True)\n"
        "    def forward(self, x):\n"
        "        return self.gru(x)[0]\n"
        "export_model(Mine(), name='mine', out=sys.argv[1], inputs={'x': {'shape': ['batch', 'seq', 3]}},\n"
        "             dims={'batch': {'size': 2}, 'seq': {'size': 5}}, outputs=['y'], runtimes=['onnxruntime-cpu'])\n")
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
    from rnnexport.validate import validate_artifact

    report = validate_artifact(tmp_path / "mine", runtimes=["onnxruntime-cpu"])
    assert report.passed and "defined in a script" in report.skipped["torch"]
    assert (tmp_path / "ran").read_text() == "x"  # the script ran once: at the export


def test_sorted_lengths_are_generated_sorted_and_checked(tmp_path: Path) -> None:
    import numpy as np

    from rnnexport.errors import SpecError, UsageError

    spec = _load(tmp_path, "sorted_lengths")
    for case in spec.sweep():
        lengths = spec.make_inputs(case)["lengths"]
        assert (np.diff(lengths) <= 0).all(), case.id
    feeds = dict(spec.make_inputs(spec.case({"batch": 4, "seq": 7})))
    spec.check_feeds(feeds)
    feeds["lengths"] = np.array([1, 2, 3, 4], dtype=np.int64)
    with pytest.raises(UsageError, match=r"'lengths' must be sorted descending \(the spec says so\), got \[1, 2, 3, 4\]"):
        spec.check_feeds(feeds)
    bad = SORTED.replace('sorted = "descending"', 'sorted = "down"')
    with pytest.raises(SpecError, match="invalid value for 'inputs.lengths.sorted': 'down'; valid: 'descending' \\| 'ascending'"):
        load_model_spec(_spec_file(tmp_path, "bad", bad))


@pytest.mark.parametrize("size, message", [
    ('"frames // 2"', "FloorDiv is not allowed; valid: integer arithmetic"),
    ('"frames * batch"', "must use exactly one other dim"),
    ('"(frame - 4) * 4"', "uses 'frame', which is not a declared dim"),
    ('"40 - frames"', "must grow with 'frames'"),
    ('"(frames - 6) * 4"', "is 0 at frames = 6; every size of 'frames' (size and sweep) must be at least 7"),
])
def test_a_bad_dim_expression_is_one_line_naming_what_is_valid(tmp_path: Path, size: str, message: str) -> None:
    from rnnexport.errors import SpecError

    with pytest.raises(SpecError, match=re.escape(message)):
        load_model_spec(_spec_file(tmp_path, "bad", TIED.replace('"(frames - 4) * 4"', size)))


def test_tied_dims_are_computed_per_case_and_checked_in_feeds(tmp_path: Path) -> None:
    from rnnexport.errors import UsageError

    spec = _load(tmp_path, "tied_dims")
    assert [c.id for c in spec.sweep()][:2] == ["batch=2,frames=7", "batch=1,frames=7"]  # no id for a derived dim
    for case in spec.sweep():
        feeds = spec.make_inputs(case)
        assert feeds["waveform"].shape[2] == (case.size("frames") - 4) * 4
    feeds = dict(spec.make_inputs(spec.case({"batch": 2, "frames": 9})))
    feeds["waveform"] = feeds["waveform"][:, :, :-1]
    with pytest.raises(UsageError, match=r"'samples' = 19, but the spec gives samples = \(frames - 4\) \* 4 = 20 for "
                                         r"frames = 9"):
        spec.check_feeds(feeds)


def test_reaches_max_lengths_fill_the_padded_length_in_every_case(tmp_path: Path) -> None:
    import numpy as np

    from rnnexport.errors import UsageError

    spec = _load(tmp_path, "padded_to_longest")
    for case in spec.sweep():
        assert spec.make_inputs(case)["lengths"].max() == case.size("seq"), case.id
    feeds = dict(spec.make_inputs(spec.case({"batch": 3, "seq": 7})))
    feeds["lengths"] = np.array([2, 6, 3], dtype=np.int64)
    with pytest.raises(UsageError, match=r"'lengths' must reach 7 \(the spec says reaches_max.*got at most 6"):
        spec.check_feeds(feeds)
