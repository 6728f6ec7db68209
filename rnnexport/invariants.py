"""RNN semantics checks on one runtime's outputs, returned as comparison records.

The tutorial's "h_n equals output[:, -1, :]" holds for the last layer of a unidirectional RNN
only. For a bidirectional one the last layer's forward state is the output's last step, first
half; its backward state is the output's *first* step, second half (the reverse direction ends
at t = 0). ``P`` is the per-direction output size (``proj_size`` or ``hidden_size``)::

    unidirectional:  h_n[-1] == output[t = S-1]
    bidirectional:   h_n[-2] == output[t = S-1, :P]     h_n[-1] == output[t = 0, P:]

With variable lengths, "last step" is each example's ``lengths[b] - 1``, and every output step
at or past ``lengths[b]`` is 0 (``pad_packed_sequence``'s padding value).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rnnexport.compare import Comparison, Tolerance, compare_arrays, compare_shapes, judged_by_tolerance

if TYPE_CHECKING:
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
    lengths: np.ndarray | None = None,
) -> list[Comparison]:
    """Shape of every output against the spec, h_n against the output's boundary steps, and
    (variable lengths) zero padding."""
    labels = dict(tolerance=tolerance, artifact=artifact, runtime=runtime, case=case, against="invariant")
    values = dict(labels, judged=judged_by_tolerance(runtime))  # a variant's values: judged by its criteria
    records = []
    expected_shapes = spec.shapes(batch, seq)
    for name in spec.output_names:
        records.append(compare_shapes(np.shape(outputs[name]), expected_shapes[name], output=f"shape({name})", **labels))
    output, h_n = np.asarray(outputs["output"]), np.asarray(outputs["h_n"])
    if output.shape != expected_shapes["output"] or h_n.shape != expected_shapes["h_n"]:
        return records
    P = spec.output_size
    steps = np.moveaxis(output, 1, 0) if spec.batch_first else output  # [S, B, D*P]
    last_step = np.full(batch, seq - 1) if lengths is None else np.asarray(lengths, np.int64) - 1
    last = steps[last_step, np.arange(batch)]  # [B, D*P]
    forward_name = "h_n[-2]==output[t=last,:P]" if spec.bidirectional else "h_n[-1]==output[t=last]"
    records.append(compare_arrays(h_n[-2] if spec.bidirectional else h_n[-1], last[:, :P], output=forward_name, **values))
    if spec.bidirectional:
        records.append(compare_arrays(h_n[-1], steps[0][:, P:], output="h_n[-1]==output[t=0,P:]", **values))
    if lengths is not None:
        padding = np.arange(seq)[:, None] >= np.asarray(lengths)[None, :]  # [S, B]
        padded = steps[padding]
        records.append(compare_arrays(padded, np.zeros_like(padded), output="output[t>=lengths]==0", **values))
    return records
