"""What an RNN configuration (`rnnexport.spec.RNNSpec`) does at each step of the one export
pipeline (`rnnexport.export.pipeline`): the seeded ``nn.RNN/LSTM/GRU`` behind its calling
contract (`rnnexport.builder.wrap`), ``weights.pt`` (its state dict), the recurrence exported
as one custom op, as inside a user's module (`rnnexport.export.program.native_program`), the
manifest's RNN fields.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.errors import ExportError
from rnnexport.spec import RNNSpec, spec_from_dict
from rnnexport.verify import file_entry

__all__ = ["RNNExporting"]


class RNNExporting:
    """An RNN configuration's module as the pipeline exports it (see the module docstring)."""

    weights_file = "weights.pt"
    rebuildable = True  # the compile server rebuilds it from weights.pt
    reference = None  # validation rebuilds the eager reference from weights.pt too

    def __init__(self, spec: RNNSpec, module) -> None:
        """Raises:
            ExportError: the module is in training mode with dropout (random: a silently
                different model is never emitted).
        """
        from rnnexport.builder import wrap

        if module.training and spec.dropout > 0:
            raise ExportError(f"{spec.name}: cannot export a module in training mode with dropout={spec.dropout}: "
                              "dropout is random in training mode; call module.eval() first")
        self.spec, self.module = spec, module
        self.contract_module = wrap(module, spec)  # what every format keeps: m(input, h_0[, lengths])

    @classmethod
    @contextlib.contextmanager
    def opened(cls, spec: RNNSpec, module, notes: list[str]) -> Iterator[RNNExporting]:
        """The spec's seeded module (`module`, when given)."""
        from rnnexport.builder import build_module

        yield cls(spec, build_module(spec) if module is None else module)

    def prepare(self, **_: Any) -> None:
        """Nothing to check: the module is built from the spec, which was checked."""

    def write_weights(self, stage: Path) -> int:
        """``weights.pt``: the module's state dict; returns its bytes."""
        import torch

        from rnnexport.export.steps import writing
        from rnnexport.limits import weight_bytes

        size = weight_bytes(self.spec)
        with writing(stage, self.weights_file, size) as path:
            buffer = io.BytesIO()  # written by Python: torch's C++ writer aborts the process on a full disk
            torch.save(self.module.state_dict(), buffer)
            path.write_bytes(buffer.getbuffer())
        return size

    @staticmethod
    def compile_request(request: dict[str, Any]) -> dict[str, Any]:
        """Rebuild the module from ``weights.pt`` and compile it (in a compiling child)."""
        import torch

        from rnnexport.builder import module_from_state_dict

        spec = spec_from_dict(request["spec"])
        module = module_from_state_dict(spec, torch.load(request["weights"], weights_only=True))
        return RNNExporting(spec, module).compile(Path(request["path"]), request["method"])

    def compile(self, path: Path, method: str | None) -> dict[str, Any]:
        from rnnexport.export.torchscript import compile_and_save

        method = method or "script"
        return {"method": method, "messages": compile_and_save(self.module, self.spec, path, method=method)}

    def arranged(self, named: dict[str, Any]) -> tuple:
        """One value per input, `named`, as the calling contract takes them (`builder.arranged`)."""
        from rnnexport.builder import arranged

        return arranged(self.spec, named)

    def example_args(self) -> tuple:
        from rnnexport.builder import example_args

        return example_args(self.spec)

    def check_graph(self, stage: Path, path: Path, exporter: str) -> None:
        """A native op for every layer (none unrolled)."""
        from rnnexport.export.graph import check_native_ops, recurrent_ops

        check_native_ops(self.spec, [("rnn", self.module)], recurrent_ops(path), exporter)

    def golden_cases(self) -> list:
        return self.spec.golden_cases()

    def inputs(self, case) -> dict[str, np.ndarray]:
        return self.spec.make_inputs(case)

    def labels(self, case) -> dict[str, np.ndarray]:
        return {}

    def call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from rnnexport.builder import call_model

        return call_model(self.contract_module, self.spec, feeds)

    def manifest(self, stage: Path, files: list[str], golden: dict[str, Any], **common: Any) -> dict[str, Any]:
        """The manifest (`rnnexport.manifest.rnn_manifest`)."""
        from rnnexport.manifest import rnn_manifest

        return rnn_manifest(self.spec, {name: file_entry(stage / name) for name in files}, **common)
