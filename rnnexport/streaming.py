"""The streaming check: which cases run in chunks (`streaming_cases`, `streaming_not_applicable`)
and the records of one chunked run against a full run on the same runtime (`streaming_records`),
for RNN specs (``h_n`` fed back as ``h_0``) and model specs (their declared state pairs).
"""

from __future__ import annotations

import numpy as np

from rnnexport.artifacts import Artifact
from rnnexport.compare import Comparison, Tolerance, compare_arrays
from rnnexport.inputs import Case
from rnnexport.spec import RNNSpec

__all__ = ["streaming_cases", "streaming_not_applicable", "streaming_records"]


def streaming_not_applicable(spec: RNNSpec) -> str | None:
    """Why the streaming check does not apply to `spec`, or None if it does."""
    if spec.kind == "model":
        return spec.streaming_not_applicable()
    if spec.bidirectional:
        return "bidirectional: the reverse direction needs the whole sequence"
    if spec.variable_length:
        return "variable-length: padded batches end at different steps, so chunks do not line up"
    return None


def streaming_cases(spec: RNNSpec) -> list[tuple[Case, tuple[int, ...]]]:
    """Cases run in chunks for the streaming check, with their chunk lengths (see
    `streaming_not_applicable` for the models it does not apply to)."""
    if spec.kind == "model":
        return spec.streaming_cases()
    if streaming_not_applicable(spec):
        return []
    documented = spec.seq_len
    cases = [(Case(3, 17, "zero"), (5, 1, 11))]
    if documented >= 3:
        third = documented // 3
        cases.append((Case(spec.batch_size, documented, "random"), (third, 1, documented - third - 1)))
    return cases


def streaming_records(
    artifact: Artifact, runner, case: Case, chunks: tuple[int, ...], feeds: dict[str, np.ndarray], tolerance: Tolerance,
    full: dict[str, np.ndarray] | None = None,
) -> list[Comparison]:
    """Run `case` in chunks, feeding each chunk's ``h_n`` back as the next ``h_0``; compare the
    joined output and the last ``h_n`` with one full run on the same runtime (`full`, run here
    when not given).

    This is how RNNs are deployed for streaming: a state-layout bug (layers of ``h_0`` read in
    the wrong order, batch and layer axes swapped) shows here even when every full run passes.
    """
    spec = artifact.spec
    if spec.kind == "model":
        return _model_streaming_records(artifact, runner, case, chunks, feeds, tolerance, full)
    time_axis = 1 if spec.batch_first else 0
    full = full if full is not None else runner.infer(feeds)
    state = {f"{s}_0": feeds[f"{s}_0"] for s in spec.state_names}
    pieces, start = [], 0
    for length in chunks:
        index = [slice(None)] * 3
        index[time_axis] = slice(start, start + length)
        out = runner.infer({"input": np.ascontiguousarray(feeds["input"][tuple(index)]), **state})
        pieces.append(out["output"])
        state = {f"{s}_0": out[f"{s}_n"] for s in spec.state_names}
        start += length
    labels = dict(tolerance=tolerance, artifact=artifact.name, runtime=runner.name, case=case.id, against="streaming")
    return [
        compare_arrays(np.concatenate(pieces, axis=time_axis), full["output"], output="output", **labels),
        *(compare_arrays(state[f"{s}_0"], full[f"{s}_n"], output=f"{s}_n", **labels) for s in spec.state_names),
    ]


def _model_streaming_records(
    artifact: Artifact, runner, case, chunks: tuple[int, ...], feeds: dict[str, np.ndarray], tolerance: Tolerance,
    full: dict[str, np.ndarray] | None = None,
) -> list[Comparison]:
    """The streaming check of a model spec: every input with `stream_dim` in its shape is cut
    into `chunks` along it; each state input is fed the previous chunk's state output. Outputs
    with the chunk length on some axis are joined along it; state outputs are compared at the
    end; both against one full run on the same runtime (`full`, run here when not given)."""
    spec = artifact.spec
    full = full if full is not None else runner.infer(feeds)
    state_out = dict(spec.state)
    state = {name: feeds[name] for name in spec.state_inputs}
    pieces: dict[str, list[np.ndarray]] = {name: [] for name in spec.output_names if name not in state_out.values()}
    start = 0
    for length in chunks:
        chunk = {}
        for t in spec.inputs:
            if t.name in state:
                chunk[t.name] = state[t.name]
            elif spec.stream_dim in t.shape:
                axis = t.shape.index(spec.stream_dim)
                chunk[t.name] = np.ascontiguousarray(np.take(feeds[t.name], range(start, start + length), axis=axis))
            else:
                chunk[t.name] = feeds[t.name]
        out = runner.infer(chunk)
        for name in pieces:
            pieces[name].append((out[name], length))
        state = {i: out[o] for i, o in spec.state}
        start += length
    labels = dict(tolerance=tolerance, artifact=artifact.name, runtime=runner.name, case=case.id, against="streaming")
    records = [compare_arrays(state[i], full[o], output=o, **labels) for i, o in spec.state]
    for name, parts in pieces.items():
        axis = _stream_axis(parts, full[name], sum(chunks))
        if axis is not None:
            joined = np.concatenate([p for p, _ in parts], axis=axis)
            records.append(compare_arrays(joined, full[name], output=name, **labels))
    return records


def _stream_axis(parts: list[tuple[np.ndarray, int]], full: np.ndarray, total: int) -> int | None:
    """The axis along which an output grows with the stream (each piece has its chunk's length
    there, the full run the total), or None for outputs that do not (pooled, per-sequence)."""
    for axis in range(full.ndim):
        if full.shape[axis] == total and all(p.ndim == full.ndim and p.shape[axis] == n for p, n in parts):
            return axis
    return None
