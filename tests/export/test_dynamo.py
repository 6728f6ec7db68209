"""The torch.export-based path: artifacts, determinism, process history, .pt2, fallbacks."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rnnexport.errors import ExportError, UsageError
from rnnexport.export import export_spec
from rnnexport.spec import get_spec
from tests.conftest import REPO


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def dynamo_export(tmp_path_factory):
    """deep_bidirectional by the dynamo exporter, validated on every runtime by its export."""
    out = tmp_path_factory.mktemp("dynamo")
    return export_spec(get_spec("deep_bidirectional"), out, exporter="dynamo")


@pytest.fixture(scope="module")
def dynamo_artifact(dynamo_export) -> Path:
    return dynamo_export.path


def test_dynamo_artifact_validates_on_every_runtime(dynamo_export):
    manifest = json.loads((dynamo_export.path / "manifest.json").read_text())
    assert manifest["exporter"] == "dynamo" and manifest["validation"]["passed"] is True
    report = dynamo_export.report  # the export's own validation, on every available runtime
    assert report.passed
    assert {"torch-export", "onnxruntime-cpu", "torchscript"} <= set(report.runtimes)
    # Sequence lengths other than the example's (10) ran on ONNX Runtime and the .pt2.
    ran = {(c.runtime, c.case) for c in report.comparisons if c.against == "torch"}
    for case in ("b1xs1-h0zero", "b3xs17-h0random", "b1xs1000-h0random", "b64xs200-h0zero"):
        assert ("onnxruntime-cpu", case) in ran and ("torch-export", case) in ran


def test_dynamo_files_do_not_depend_on_the_process_the_folder_or_what_ran_before(dynamo_export, tmp_path):
    """The fixture's export (in this test process, after whatever ran in it) and one in a fresh
    process elsewhere that first makes a default (unrolled, static) dynamo export of an nn.RNN:
    torch caches the first dispatch kernel it looks up, which must not change rnnexport's files.
    Byte-identical, and neither holds its folder's path."""
    script = textwrap.dedent("""
        import sys, warnings
        from pathlib import Path
        import torch
        warnings.simplefilter("ignore")
        m = torch.nn.RNN(5, 8, num_layers=3, batch_first=True, bidirectional=True).eval()
        torch.onnx.export(m, (torch.randn(40, 10, 5),), dynamo=True, verbose=False)
        torch.export.export(m, (torch.randn(40, 10, 5),))
        from rnnexport.cli import main
        sys.exit(main(["export", "deep_bidirectional", "--exporter", "dynamo", "--no-validate", "--out", "out"]))
    """)
    cwd = tmp_path / "b" / "c"
    cwd.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("model.onnx", "model.pt2", "model.pt", "weights.pt"):
        fresh, here = cwd / "out" / "deep_bidirectional" / name, dynamo_export.path / name
        assert sha(fresh) == sha(here), name
        assert str(cwd).encode() not in fresh.read_bytes() and str(here.parent).encode() not in here.read_bytes()
    # And the ONNX still runs at another sequence length.
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(cwd / "out" / "deep_bidirectional" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    output, h_n = session.run(None, {"input": np.zeros((3, 17, 5), np.float32), "h_0": np.zeros((6, 3, 8), np.float32)})
    assert output.shape == (3, 17, 16) and h_n.shape == (6, 3, 8)


def test_pt2_loads_in_a_fresh_process_through_rnnexport_ops(dynamo_artifact):
    """In a fresh process the op is unknown until ``import rnnexport.ops`` (that is why the
    README says to import it); then the program runs at other shapes exactly as eager does."""
    script = textwrap.dedent(f"""
        import torch
        try:
            torch.export.load({str(dynamo_artifact / "model.pt2")!r})
        except Exception:
            print("unknown op")  # torch logs which: rnnexport.rnn
        else:
            raise AssertionError("model.pt2 loaded without rnnexport::rnn registered")
        import rnnexport.ops  # registers rnnexport::rnn
        from rnnexport.artifacts import open_artifact
        from rnnexport.builder import module_from_state_dict
        artifact = open_artifact({str(dynamo_artifact)!r})
        module = torch.export.load({str(dynamo_artifact / "model.pt2")!r}).module()
        reference = module_from_state_dict(artifact.spec, artifact.state_dict())
        for batch, seq in [(1, 1), (3, 17), (2, 300)]:
            x, h = torch.randn(batch, seq, 5), torch.randn(6, batch, 8)
            out, h_n = module(x, h)
            ref_out, ref_h = reference(x, h)
            assert out.shape == (batch, seq, 16) and h_n.shape == (6, batch, 8)
            assert torch.equal(out, ref_out) and torch.equal(h_n, ref_h), (batch, seq)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.split() == ["unknown", "op", "ok"], done.stderr[-2000:]
    assert "rnnexport" in done.stderr


def test_legacy_missing_defaults_to_dynamo_and_says_so(tmp_path, monkeypatch, cli):
    from rnnexport.export import onnx_legacy

    monkeypatch.setattr(onnx_legacy, "legacy_exporter_available", lambda: False)
    result = export_spec(get_spec("single_layer"), tmp_path, validate=False)
    assert result.exporter == "dynamo"
    assert any("not in this torch; using --exporter dynamo" in n for n in result.notes)
    assert json.loads((result.path / "manifest.json").read_text())["exporter"] == "dynamo"
    code, _, err = cli("export", "seq_first", "--out", tmp_path, "--no-validate")
    assert code == 0 and "note: the TorchScript-based ONNX exporter is not in this torch" in err
    with pytest.raises(UsageError, match="no TorchScript-based ONNX exporter; use --exporter dynamo"):
        export_spec(get_spec("single_layer"), tmp_path, exporter="legacy", validate=False)


def test_missing_onnxscript_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    from rnnexport.export import onnx_dynamo

    real = importlib.util.find_spec
    monkeypatch.setattr(onnx_dynamo.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ExportError, match="needs the package 'onnxscript'.*pip install onnxscript"):
        export_spec(get_spec("single_layer"), tmp_path, exporter="dynamo", validate=False)
    assert not (tmp_path / "single_layer").exists()


def test_training_mode_dropout_is_refused(tmp_path):
    """Dropout is random in training mode: refused before anything is written (every format;
    the module left as it was); in eval mode it is the identity."""
    import torch

    from rnnexport.builder import build_module, example_args, wrap
    from rnnexport.export.rnn import RNNExporting
    from rnnexport.export.program import native_program

    spec = get_spec("deep").replace(dropout=0.2)
    module = build_module(spec).train()
    with pytest.raises(ExportError, match="training mode with dropout=0.2"):
        export_spec(spec, tmp_path, module=module, exporter="dynamo", validate=False)
    assert module.training and not (tmp_path / spec.name).exists()
    program, _ = native_program(RNNExporting(spec, module.eval()))
    args = example_args(spec)
    assert torch.allclose(program.module()(*args)[0], wrap(module, spec)(*args)[0], atol=1e-6)
def test_custom_op_schema_is_what_the_translation_expects():
    """rnnexport depends on torch.library.custom_op's schema inference; fail loudly if it changes."""
    import torch

    import rnnexport.ops  # noqa: F401

    assert str(torch.ops.rnnexport.rnn.default._schema) == (
        "rnnexport::rnn(Tensor input, Tensor h_0, Tensor[] weights, str mode, SymInt hidden_size, "
        "SymInt num_layers, bool bidirectional, bool batch_first, bool has_biases, Tensor? lengths) -> (Tensor, Tensor)"
    )
    assert str(torch.ops.rnnexport.lstm.default._schema) == (
        "rnnexport::lstm(Tensor input, Tensor h_0, Tensor c_0, Tensor[] weights, SymInt hidden_size, SymInt proj_size, "
        "SymInt num_layers, bool bidirectional, bool batch_first, bool has_biases, Tensor? lengths) "
        "-> (Tensor, Tensor, Tensor)"
    )
