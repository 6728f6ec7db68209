"""What an RNN configuration (`rnnexport.spec.RNNSpec`) does in the pipeline: the spec protocol
every stage calls, so that no stage branches on the kind of spec. `rnnexport.model_behaviour`
is the same protocol for a model spec.

The protocol: the cases (`sweep`, `golden_cases`, `bench_cases`); the stream axis of each tensor
(`stream_axis`, `stream_output`, `streaming_not_applicable`, `streaming_cases`); the
checks an RNN carries besides the comparisons (`output_checks`: the invariants; `locate`: the
first layer and direction that diverges); the stored weights and the eager reference
(`weights_file`, `load_state_dict`, `load_reference`, `call_reference`); what the ONNX graph holds
(`uses_sequence_lens`, `recurrent_activations`, `onnx_impossible`); the golden arrays and memory
(`golden_arrays`, `output_tensors`, `weight_bytes`). The inputs, their cases and the feed check
are `rnnexport.contract`'s, over the contract an RNN configuration produces (`RNNSpec.inputs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rnnexport.inputs import INITIAL_STATES, Case

__all__ = ["RNNBehaviour"]


class RNNBehaviour:
    """The spec protocol of `RNNSpec` (mixed into it; see the module docstring)."""

    # What a model spec has and an RNN configuration does not.
    inputs_fn = None
    evaluation = None
    weights = None  # seeded by the spec: no file, nothing to point out
    positional_call = False  # its TorchScript module takes (input, h_0 | (h_0, c_0)[, lengths])
    weights_file = "weights.pt"
    pipeline = "rnnexport.export.rnn:RNNExporting"  # what it does at each export step (`rnnexport.export.pipeline`)
    reference_forks = False  # its eager reference is torch's own module, built here (`load_reference`)

    # --- cases and inputs -------------------------------------------------------------------

    def sweep(self) -> list[Case]:
        """The documented shape, 1x1, an odd 3x17, a large 64x200 and a long 1x1000; each with
        a zero and a random initial state."""
        shapes = [(self.batch_size, self.seq_len), (1, 1), (3, 17), (64, 200), (1, 1000)]
        return [Case.rnn(b, s, h) for b, s in dict.fromkeys(shapes) for h in INITIAL_STATES]

    def golden_cases(self) -> list[Case]:
        """The cases whose inputs and outputs are stored with an artifact (kept small)."""
        return [Case.rnn(self.batch_size, self.seq_len, "random"), Case.rnn(3, 17, "zero")]

    def bench_cases(self) -> list[Case]:
        """The documented shape, 1 x 1000 and 64 x 200 (random initial state)."""
        return list(dict.fromkeys([Case.rnn(self.batch_size, self.seq_len), Case.rnn(1, 1000), Case.rnn(64, 200)]))

    # --- state and streaming ----------------------------------------------------------------

    def stream_axis(self, name: str) -> int | None:
        """The time axis of input or output `name`, or None (states, lengths)."""
        return (1 if self.batch_first else 0) if name in ("input", "output") else None

    def stream_output(self, io: Any) -> tuple[str, int] | None:
        """The output whose error per time step is plotted, and its time axis."""
        return "output", self.stream_axis("output")

    def streaming_not_applicable(self) -> str | None:
        if self.bidirectional:
            return "bidirectional: the reverse direction needs the whole sequence"
        if self.variable_length:
            return "variable-length: padded batches end at different steps, so chunks do not line up"
        return None

    def streaming_cases(self) -> list[tuple[Case, tuple[int, ...]]]:
        """3x17 with a zero state in chunks 5, 1, 11, and the documented shape (random state)
        in three chunks."""
        if self.streaming_not_applicable():
            return []
        cases = [(Case.rnn(3, 17, "zero"), (5, 1, 11))]
        if self.seq_len >= 3:
            third = self.seq_len // 3
            cases.append((Case.rnn(self.batch_size, self.seq_len, "random"), (third, 1, self.seq_len - third - 1)))
        return cases

    # --- the checks an RNN carries ----------------------------------------------------------

    def output_checks(self, outputs: dict[str, np.ndarray], case: Case, feeds: dict[str, np.ndarray],
                      labels: dict[str, Any]) -> list:
        """The RNN invariants (`rnnexport.invariants`): shapes, ``h_n`` against the output's
        boundary steps, zero padding; `labels` name the records (artifact, runtime, case id, tolerance)."""
        from rnnexport.invariants import check_invariants

        return check_invariants(self, outputs, batch=case.size("batch"), seq=case.size("seq"), lengths=feeds.get("lengths"),
                                **labels)

    def locate(self, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], tolerance) -> dict | None:
        """The first layer and direction whose final hidden state diverges from the reference.

        ``h_n[layer * D + direction]`` is that layer's state; a wrong weight in one layer shows
        in its own slice first and only propagates to the layers above it, so the first failing
        slice in (layer, direction) order names where the mismatch starts. None if no slice
        fails (or the shapes differ).
        """
        from rnnexport.compare import compare_arrays

        h_n, expected = outputs["h_n"], reference["h_n"]
        if np.shape(h_n) != np.shape(expected):
            return None
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                record = compare_arrays(h_n[index], expected[index], tolerance=tolerance, artifact="", runtime="",
                                        case="", output="h_n", against="torch")
                if record.mismatched:
                    return {"layer": layer, "direction": "reverse" if direction else "forward",
                            "h_n_index": index, "max_abs_error": record.max_abs_error}
        return None

    # --- weights and the eager reference ----------------------------------------------------

    def load_state_dict(self, path: Path) -> dict[str, Any]:
        """``weights.pt`` loaded with ``weights_only=True`` (no code is unpickled).

        Raises:
            ArtifactError: it cannot be loaded.
        """
        import torch

        from rnnexport.errors import ArtifactError
        from rnnexport.pt2check import weights_only_loading

        try:
            with weights_only_loading():
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a corrupt zip/pickle
            raise ArtifactError(f"{path}: cannot load weights ({type(exc).__name__}: {exc})") from None

    def reference_unavailable(self, manifest: dict[str, Any], folder: Path, trusted: bool) -> str | None:
        return None  # rebuilt from the weights, which are data

    def load_reference(self, artifact, threads: int) -> _Reference:
        """The module rebuilt from ``weights.pt`` (no RNG involved), behind the calling contract;
        run with ``infer(feeds)``."""
        from rnnexport.builder import module_from_state_dict, wrap
        from rnnexport.errors import ArtifactError

        try:
            return _Reference(wrap(module_from_state_dict(self, artifact.state_dict()), self), self)
        except (RuntimeError, KeyError) as exc:
            raise ArtifactError(f"{artifact.path}: weights.pt does not fit the spec ({exc})") from None

    def call_reference(self, module, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from rnnexport.builder import call_model

        return call_model(module, self, feeds)

    # --- the files ------------------------------------------------------------------------------

    def uses_sequence_lens(self, manifest: dict[str, Any]) -> bool:
        return self.variable_length

    def recurrent_activations(self, manifest: dict[str, Any]) -> set[str]:
        return {"Relu" if self.cell == "rnn" and self.nonlinearity == "relu" else "Tanh"}

    def onnx_impossible(self) -> str | None:
        """Why ONNX cannot express this configuration at all, or None."""
        if self.proj_size:
            return (f"ONNX cannot express an LSTM with proj_size={self.proj_size} (the ONNX LSTM op has no "
                    "projection, and its recurrence would need the projected state)")
        return None

    def golden_arrays(self, manifest: dict[str, Any], case: Case) -> list[tuple[str, tuple, np.dtype]]:
        """(name, shape, dtype) of every golden tensor of `case`, from the spec."""
        shapes = self.shapes(case.size("batch"), case.size("seq"))
        return [(n, shapes[n], np.dtype(self.dtype(n))) for n in (*self.input_names, *self.output_names)]

    def output_tensors(self, io: Any) -> tuple:
        return ()  # an RNN's outputs follow from the spec (`case_bytes`)

    def weight_bytes(self) -> int | None:
        from rnnexport.limits import weight_bytes

        return weight_bytes(self)


class _Reference:
    """An RNN configuration's eager reference, as `load_reference` gives every reference: ``infer``
    and ``close`` (a model spec's runs in a child process: `rnnexport.runtimes.isolated`)."""

    def __init__(self, module, spec) -> None:
        self.module, self.spec = module, spec

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.spec.call_reference(self.module, feeds)

    def close(self) -> None:
        self.module = None
