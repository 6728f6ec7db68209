"""The example models (model specs in the catalog, artifacts committed under models/): what
their users check after an export, and the validator catching wrong model-spec artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnexport.artifacts import open_artifact
from rnnexport.runtimes import make_runner, resolve_runtimes
from rnnexport.spec import get_spec
from rnnexport.usermodel import build_user_module
from tests.conftest import MODELS, mutate_onnx, rnn_weights

EXAMPLES = ("keyword_spotter", "seq2seq_decoder", "seq2seq_encoder", "text_classifier")


def _runners(artifact):
    """Every available runtime that can run `artifact`, and the reasons for the others."""
    chosen, skipped = resolve_runtimes(None)
    runners, reasons = [], dict(skipped)
    for name in chosen:
        runner = make_runner(name, artifact)
        if reason := runner.unsupported_reason():
            reasons[name] = reason
        else:
            runners.append(runner)
    return runners, reasons


def test_text_classifier_artifacts_predict_the_classes_eager_predicts(capsys) -> None:
    from rnnexport.examples.text_classifier import synthetic_task

    artifact = open_artifact(MODELS / "text_classifier")
    eager = build_user_module(artifact.spec, artifact.state_dict())
    tokens, lengths, labels = synthetic_task(1000, seed=2)  # held out: training used seed 1
    with torch.no_grad():
        expected = eager(tokens, lengths).argmax(1).numpy()
    accuracy = float((expected == labels.numpy()).mean())
    assert accuracy > 0.95, f"the committed weights are trained: held-out accuracy {accuracy:.3f}"
    feeds = {"tokens": tokens.numpy(), "lengths": lengths.numpy()}
    runners, reasons = _runners(artifact)
    assert {"torchscript", "torch-export", "onnxruntime-cpu"} <= {r.name for r in runners}
    for runner in runners:
        with runner:
            predicted = runner.infer(feeds)["logits"].argmax(1)
        assert np.array_equal(predicted, expected), f"{runner.name}: {(predicted != expected).sum()} classes differ"
    with capsys.disabled():
        print(f"\ntext_classifier: held-out accuracy {accuracy:.3f} on 1000 sequences; identical classes on "
              f"{', '.join(r.name for r in runners)}; not run: {', '.join(sorted(reasons))}")


def test_greedy_decoding_with_the_onnx_artifacts_matches_eager() -> None:
    import onnxruntime as ort

    from rnnexport.examples.seq2seq import BOS

    encoder_artifact, decoder_artifact = (open_artifact(MODELS / n) for n in ("seq2seq_encoder", "seq2seq_decoder"))
    encoder = build_user_module(encoder_artifact.spec, encoder_artifact.state_dict())
    decoder = build_user_module(decoder_artifact.spec, decoder_artifact.state_dict())
    sessions = [ort.InferenceSession(str(a.path / "model.onnx"), providers=["CPUExecutionProvider"])
                for a in (encoder_artifact, decoder_artifact)]
    source = np.random.default_rng(5).integers(3, 30, size=(16, 11), dtype=np.int64)

    def decode(encode, step, steps: int = 20) -> np.ndarray:
        hidden = encode(source)
        token = np.full(len(source), BOS, dtype=np.int64)
        out = []
        for _ in range(steps):
            logits, hidden = step(token, hidden)
            token = logits.argmax(1).astype(np.int64)
            out.append(token)
        return np.stack(out, 1)

    with torch.no_grad():
        eager = decode(lambda s: encoder(torch.from_numpy(s))[1].numpy(),
                       lambda t, h: [x.numpy() for x in decoder(torch.from_numpy(t), torch.from_numpy(h))])
    onnx_tokens = decode(lambda s: sessions[0].run(["hidden"], {"source": s})[0],
                         lambda t, h: sessions[1].run(["logits", "next_hidden"], {"token": t, "hidden": h}))
    assert np.array_equal(onnx_tokens, eager)
    assert len(np.unique(eager)) > 3  # not a degenerate sequence of one token


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_have_native_recurrent_ops_and_dynamic_named_dims(name: str) -> None:
    import onnx

    manifest = json.loads((MODELS / name / "manifest.json").read_text())
    module = build_user_module(get_spec(name))
    layers = sum(m.num_layers for m in module.modules() if isinstance(m, (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU)))
    assert len(manifest["recurrent_ops"]) == layers
    graph = onnx.load(str(MODELS / name / "model.onnx")).graph
    spec = get_spec(name)
    for value in graph.input:
        for axis, dim in spec.dynamic_axes()[value.name].items():
            assert value.type.tensor_type.shape.dim[axis].dim_param == dim


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(MODELS / name, target)
    return target


def _edit_weight(folder: Path, slot: str, edit) -> None:
    """Apply `edit` in place to the W, R or B initializer of the first recurrent op of
    ``model.onnx`` (a consistent but wrong artifact)."""
    import onnx.numpy_helper as nh

    def change(model) -> None:
        init = rnn_weights(model, 0)[slot]
        array = nh.to_array(init).copy()
        edit(array)
        init.CopyFrom(nh.from_array(array, init.name))

    mutate_onnx(folder, change)


def _assert_caught(cli, folder: Path) -> None:
    code, out, _ = cli("validate", str(folder), "--runtimes", "onnxruntime-cpu")
    assert code == 1 and "FAIL" in out and "onnxruntime-cpu" in out


def test_a_perturbed_weight_in_a_model_spec_artifact_fails(tmp_path: Path, cli) -> None:
    folder = _copy(tmp_path, "keyword_spotter")

    def perturb(array) -> None:
        array.flat[0] += 0.05

    _edit_weight(folder, "R", perturb)  # the GRU's recurrence
    _assert_caught(cli, folder)


def test_swapped_outputs_in_a_model_spec_artifact_fail(tmp_path: Path, cli) -> None:
    folder = _copy(tmp_path, "seq2seq_decoder")

    def swap(model) -> None:
        a, b = model.graph.output[0].name, model.graph.output[1].name
        for node in model.graph.node:
            for i, name in enumerate(node.output):
                node.output[i] = {a: b, b: a}.get(name, name)
        for value in model.graph.value_info:
            value.name = {a: b, b: a}.get(value.name, value.name)
        kinds = [o.type.SerializeToString() for o in model.graph.output]
        model.graph.output[0].type.ParseFromString(kinds[1])
        model.graph.output[1].type.ParseFromString(kinds[0])

    mutate_onnx(folder, swap)
    _assert_caught(cli, folder)


def test_module_code_gone_validates_against_golden_and_says_why(tmp_path: Path, cli) -> None:
    folder = _copy(tmp_path, "text_classifier")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["spec"]["module"] = str(tmp_path / "moved_away.py") + ":TextClassifier"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code, out, _ = cli("validate", str(folder), "--runtimes", "onnxruntime-cpu", "--json", str(tmp_path / "r.json"))
    assert code == 0, out
    report = json.loads((tmp_path / "r.json").read_text())["artifacts"][0]
    assert "the export did not record importing" in report["runtimes"]["torch"]["reason"]
    assert any("eager reference unavailable" in note for note in report["notes"])
    assert report["cases"] == manifest["golden"]["cases"]
    # ... and a wrong model is still caught, against the golden data.
    _edit_weight(folder, "W", lambda array: array.__imul__(1.5))
    _assert_caught(cli, folder)


def test_untrusted_model_spec_artifacts_do_not_import_the_module(tmp_path: Path, cli) -> None:
    folder = _copy(tmp_path, "keyword_spotter")
    code, out, _ = cli("validate", str(folder), "--untrusted", "--json", str(tmp_path / "r.json"))
    assert code == 0, out
    report = json.loads((tmp_path / "r.json").read_text())["artifacts"][0]
    assert "not run on untrusted artifacts" in report["runtimes"]["torch"]["reason"]
    assert report["runtimes"]["onnxruntime-cpu"]["status"] == "passed"
