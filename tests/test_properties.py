"""Property-based: any valid spec exports and validates on every CPU runtime.

Hypothesis draws specs over sizes 1..32, layers 1..4 and every flag, exports them through a
drawn exporter into a real artifact folder and validates it on every available CPU runtime.
A failure is shrunk and reported with its spec (``note``). Examples are derandomized so CI is
reproducible; ``RNNEXPORT_HYPOTHESIS_EXAMPLES`` raises the count (default 6).
"""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from rnnexport.export import export_spec
from rnnexport.inputs import Case
from rnnexport.report import format_table
from rnnexport.spec import RNNSpec
from rnnexport.validate import validate_artifact

EXAMPLES = int(os.environ.get("RNNEXPORT_HYPOTHESIS_EXAMPLES", "6"))


@st.composite
def specs(draw) -> RNNSpec:
    cell = draw(st.sampled_from(["rnn", "lstm", "gru"]))
    hidden = draw(st.integers(1, 32))
    proj = draw(st.integers(0, hidden - 1)) if cell == "lstm" and hidden > 1 and draw(st.booleans()) else 0
    return RNNSpec(
        "prop", cell=cell, input_size=draw(st.integers(1, 32)), hidden_size=hidden,
        num_layers=draw(st.integers(1, 4)), bidirectional=draw(st.booleans()), batch_first=draw(st.booleans()),
        nonlinearity=draw(st.sampled_from(["tanh", "relu"])) if cell == "rnn" else "tanh",
        bias=draw(st.booleans()), dropout=draw(st.sampled_from([0.0, 0.2, 0.5])), proj_size=proj,
        variable_length=draw(st.booleans()), batch_size=draw(st.integers(1, 4)), seq_len=draw(st.integers(1, 6)),
        seed=draw(st.integers(0, 2**31)),
    )


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), exporter=st.sampled_from(["legacy", "dynamo"]))
def test_any_valid_spec_exports_and_validates(spec, exporter):
    note(f"spec: {spec}")
    note(f"exporter: {exporter}")
    with tempfile.TemporaryDirectory() as tmp:
        result = export_spec(spec, tmp, exporter=exporter, validate=False)
        report = validate_artifact(result.path,  # every runtime available here
                                   cases=[Case.rnn(2, 3, "random"), Case.rnn(1, 1, "zero"), Case.rnn(3, 9, "random")])
        note(format_table([report]))
        assert report.passed
        expected = {"torch", "torchscript", "torch-export"} | (set() if spec.proj_size else {"onnxruntime-cpu"})
        assert expected <= set(report.runtimes)
