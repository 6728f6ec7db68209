"""RNN semantics checks on one runtime's outputs, returned as comparison records.

The tutorial's "h_n equals output[:, -1, :]" holds for the last layer of a unidirectional RNN
only. For a bidirectional one the last layer's forward state is the output's last step, first
half; its backward state is the output's *first* step, second half (the reverse direction ends
at t = 0)::

    unidirectional:  h_n[-1] == output[t = S-1]
    bidirectional:   h_n[-2] == output[t = S-1, :H]     h_n[-1] == output[t = 0, H:]
"""

from __future__ import annotations

import numpy as np

from rnnexport.compare import Comparison, Tolerance, compare_arrays, compare_shapes
from rnnexport.spec import RNNSpec

__all__ = ["check_invariants"]


def check_invariants(
    spec: RNNSpec,
    outputs: dict[str, np.ndarray],
    *,
    batch: int,
    seq: int,
    tolerance: Tolerance,
    artifact: str,
    runtime: str,
    case: str,
) -> list[Comparison]:
    """Shape of every output against the spec, and h_n against the output's boundary steps."""
    labels = dict(tolerance=tolerance, artifact=artifact, runtime=runtime, case=case, against="invariant")
    records = []
    expected_shapes = spec.shapes(batch, seq)
    for name in spec.output_names:
        records.append(compare_shapes(
            np.shape(outputs[name]), expected_shapes[name], output=f"shape({name})", **labels
        ))
    output, h_n = np.asarray(outputs["output"]), np.asarray(outputs["h_n"])
    if output.shape != expected_shapes["output"] or h_n.shape != expected_shapes["h_n"]:
        return records
    H = spec.hidden_size
    time_axis = 1 if spec.batch_first else 0
    last = np.take(output, seq - 1, axis=time_axis)  # [B, D*H]
    records.append(compare_arrays(h_n[-1] if not spec.bidirectional else h_n[-2], last[:, :H],
                                  output="h_n[-1]==output[t=-1]" if not spec.bidirectional
                                  else "h_n[-2]==output[t=-1,:H]", **labels))
    if spec.bidirectional:
        first = np.take(output, 0, axis=time_axis)
        records.append(compare_arrays(h_n[-1], first[:, H:], output="h_n[-1]==output[t=0,H:]", **labels))
    return records
