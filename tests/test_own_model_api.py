"""export_model on a module in memory: it leaves the module as it was, and its signature says
what it takes."""

from __future__ import annotations

import inspect

import pytest
import torch

from rnnexport.export import export_model
from tests.usermodels.features import TwoRecurrent

SPEC = dict(inputs={"x": {"shape": ["batch", "seq", 3]}}, dims={"batch": {"size": 2}, "seq": {"size": 5}},
            outputs=["z"], runtimes=["onnxruntime-cpu"])


def _modes(module: torch.nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in module.named_modules()}


def test_export_model_leaves_each_submodules_mode_as_it_was(tmp_path):
    module = TwoRecurrent().train()
    module.second.eval()  # a mixed state, as a user mid-fine-tuning may have
    before = _modes(module)
    export_model(module, name="two", out=tmp_path, **SPEC)
    assert _modes(module) == before


def test_a_failing_export_model_leaves_the_mode_too(tmp_path):
    module = TwoRecurrent().train()
    with pytest.raises(Exception, match="outputs"):
        export_model(module, name="two", out=tmp_path, **{**SPEC, "outputs": ["z", "extra"]})
    assert all(_modes(module).values())


def test_export_model_shows_every_parameter():
    parameters = inspect.signature(export_model).parameters
    assert {"inputs", "dims", "outputs", "name", "out", "exporter", "opset", "validate", "runtimes",
            "max_memory"} <= set(parameters)
    assert not any(p.kind is p.VAR_KEYWORD for p in parameters.values())
