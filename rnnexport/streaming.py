"""The streaming check: which cases run in chunks (`streaming_cases`, `streaming_not_applicable`)
and the records of one chunked run against a full run on the same runtime (`streaming_records`).
One algorithm for every spec: the inputs along its stream axis are cut into chunks, each state
input is fed the previous chunk's state output (an RNN's ``h_n`` -> ``h_0``; a model spec's
declared pairs), and the joined outputs and the last states are compared with the full run.
"""

from __future__ import annotations

import numpy as np

from rnnexport.artifacts import Artifact
from rnnexport.compare import Comparison, Tolerance, compare_arrays

__all__ = ["streaming_cases", "streaming_not_applicable", "streaming_records"]


def streaming_not_applicable(spec) -> str | None:
    """Why the streaming check does not apply to `spec`, or None if it does."""
    return spec.streaming_not_applicable()


def streaming_cases(spec, among: list | None = None) -> list[tuple[object, tuple[int, ...]]]:
    """Cases run in chunks for the streaming check, with their chunk lengths (none where
    `streaming_not_applicable`): the spec's own, or (`among`: a validation that can run only the
    stored golden cases, without the eager reference or new inputs) each of `among` at least 3
    long along the stream, in three chunks. The check compares a runtime with itself: it needs
    no reference."""
    if among is None:
        return spec.streaming_cases()
    if spec.streaming_not_applicable():
        return []
    return [(case, _thirds(spec.case_length(case))) for case in among if spec.case_length(case) >= 3]


def _thirds(length: int) -> tuple[int, ...]:
    third = length // 3
    return third, 1, length - third - 1


def streaming_records(
    artifact: Artifact, runner, case, chunks: tuple[int, ...], feeds: dict[str, np.ndarray], tolerance: Tolerance,
    full: dict[str, np.ndarray] | None = None,
) -> list[Comparison]:
    """Run `case` in `chunks` along the stream axis, each state input fed the previous chunk's
    state output; compare the last states and every output that grows with the stream (joined
    along that axis) with one full run on the same runtime (`full`, run here when not given).

    This is how recurrent models are deployed for streaming: a state-layout bug (layers of
    ``h_0`` read in the wrong order, batch and layer axes swapped) shows here even when every
    full run passes.
    """
    spec = artifact.spec
    full = full if full is not None else runner.infer(feeds)
    state = {name: feeds[name] for name in spec.state_inputs}
    outputs = dict(spec.state)
    pieces: dict[str, list[tuple[np.ndarray, int]]] = {n: [] for n in spec.output_names if n not in outputs.values()}
    start = 0
    for length in chunks:
        chunk = {}
        for name in spec.input_names:
            axis = spec.stream_axis(name)
            if name in state:
                chunk[name] = state[name]
            elif axis is not None:
                chunk[name] = np.ascontiguousarray(np.take(feeds[name], range(start, start + length), axis=axis))
            else:
                chunk[name] = feeds[name]
        out = runner.infer(chunk)
        for name in pieces:
            pieces[name].append((out[name], length))
        state = {i: out[o] for i, o in spec.state}
        start += length
    labels = dict(tolerance=tolerance, artifact=artifact.name, runtime=runner.name, case=case.id, against="streaming")
    records = []
    for name, parts in pieces.items():
        axis = _stream_axis(parts, full[name], sum(chunks))
        if axis is not None:
            records.append(compare_arrays(np.concatenate([p for p, _ in parts], axis=axis), full[name], output=name,
                                          **labels))
    return records + [compare_arrays(state[i], full[o], output=o, **labels) for i, o in spec.state]


def _stream_axis(parts: list[tuple[np.ndarray, int]], full: np.ndarray, total: int) -> int | None:
    """The axis along which an output grows with the stream (each piece has its chunk's length
    there, the full run the total), or None for outputs that do not (pooled, per-sequence)."""
    for axis in range(full.ndim):
        if full.shape[axis] == total and all(p.ndim == full.ndim and p.shape[axis] == n for p, n in parts):
            return axis
    return None
