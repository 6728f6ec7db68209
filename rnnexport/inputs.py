"""Deterministic input cases and the default shape sweep.

Every array is drawn from a NumPy generator keyed by (spec seed, batch, seq, initial-state kind),
so each runtime, each process and each machine gets byte-identical feeds, whatever order the cases
run in. Arrays are cached and read-only: no runtime can alter another's feed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from rnnexport.spec import RNNSpec

__all__ = ["Case", "INITIAL_STATES", "check_feeds", "default_sweep", "golden_cases", "make_inputs"]

INITIAL_STATES = ("zero", "random")


@dataclass(frozen=True, order=True)
class Case:
    """One input case: batch size, sequence length, and how the initial state is filled."""

    batch: int
    seq: int
    initial_state: str = "random"

    def __post_init__(self) -> None:
        if self.batch < 1 or self.seq < 1:
            raise ValueError(f"case needs batch >= 1 and seq >= 1, got {self.batch}x{self.seq}")
        if self.initial_state not in INITIAL_STATES:
            raise ValueError(f"initial_state must be one of {INITIAL_STATES}, got {self.initial_state!r}")

    @property
    def steps(self) -> int:
        """batch * seq: how much work the case is."""
        return self.batch * self.seq

    @property
    def id(self) -> str:
        """Readable id, e.g. ``b3xs17-h0zero``."""
        return f"b{self.batch}xs{self.seq}-h0{self.initial_state}"

    @classmethod
    def parse(cls, text: str) -> Case:
        """Parse an id made by `id`, or ``BxS`` (random initial state)."""
        try:
            if "-h0" in text:
                shape, state = text.split("-h0")
            else:
                shape, state = text, "random"
            batch, seq = shape.lstrip("b").split("xs" if "xs" in shape else "x")
            return cls(int(batch), int(seq), state)
        except ValueError as exc:
            raise ValueError(f"bad case {text!r}: expected BxS or bBxsS-h0zero|random ({exc})") from None


def default_sweep(spec: RNNSpec) -> list[Case]:
    """The documented shape, 1x1, an odd 3x17, a large 64x200 and a long 1x1000; each with a
    zero and a random initial state."""
    if spec.kind == "model":
        return spec.sweep()
    shapes = [(spec.batch_size, spec.seq_len), (1, 1), (3, 17), (64, 200), (1, 1000)]
    cases = [Case(b, s, h) for b, s in dict.fromkeys(shapes) for h in INITIAL_STATES]
    return cases


def golden_cases(spec: RNNSpec) -> list[Case]:
    """The cases whose inputs and outputs are stored with an artifact (kept small)."""
    if spec.kind == "model":
        return spec.golden_cases()
    return [Case(spec.batch_size, spec.seq_len, "random"), Case(3, 17, "zero")]


_STATE_CODE = {"zero": 0, "random": 1}


@functools.lru_cache(maxsize=64)
def _cached_inputs(spec: RNNSpec, case: Case) -> tuple[tuple[str, np.ndarray], ...]:
    rng = np.random.default_rng([spec.seed, case.batch, case.seq, _STATE_CODE[case.initial_state]])
    shapes = spec.shapes(case.batch, case.seq)
    arrays = [("input", rng.standard_normal(shapes["input"], dtype=np.float32))]
    for state in spec.state_names:
        shape = shapes[f"{state}_0"]
        if case.initial_state == "zero":
            value = np.zeros(shape, dtype=np.float32)
        else:
            value = rng.standard_normal(shape, dtype=np.float32)
        arrays.append((f"{state}_0", value))
    if spec.variable_length:
        # Unsorted lengths in [1, seq], one of them the full length (pad_packed's total_length).
        lengths = rng.integers(1, case.seq + 1, size=case.batch, dtype=np.int64)
        lengths[rng.integers(case.batch)] = case.seq
        arrays.append(("lengths", lengths))
    for _, array in arrays:
        array.setflags(write=False)
    return tuple(arrays)


def make_inputs(spec: RNNSpec, case: Case) -> dict[str, np.ndarray]:
    """Graph inputs of `case` (``input``, ``h_0``[, ``c_0``][, ``lengths``]), C-contiguous,
    read-only; float32, and int64 ``lengths`` (unsorted, in ``[1, seq]``). A model spec's
    inputs come from its own signature (`rnnexport.modelspec.ModelSpec.make_inputs`)."""
    if spec.kind == "model":
        return spec.make_inputs(case)
    return dict(_cached_inputs(spec, case))


def check_feeds(spec: RNNSpec, feeds: dict[str, np.ndarray]) -> None:
    """Check named feeds against the spec before any runtime sees them.

    Raises:
        UsageError: a missing or unexpected input (``lengths`` for a model exported without
            variable lengths), a wrong shape, or lengths outside ``[1, seq]`` or of the wrong
            batch size; the message names the input, what was found and what is valid.
    """
    from rnnexport.errors import UsageError

    if getattr(spec, "kind", "rnn") == "model":
        spec.check_feeds(feeds)
        return
    unexpected = sorted(set(feeds) - set(spec.input_names))
    if "lengths" in unexpected:
        raise UsageError(f"{spec.name}: got a 'lengths' input, but the model was exported without "
                         "variable_length; its inputs are " + ", ".join(spec.input_names))
    if unexpected:
        raise UsageError(f"{spec.name}: unexpected input {unexpected[0]!r}; inputs are {', '.join(spec.input_names)}")
    missing = [name for name in spec.input_names if name not in feeds]
    if missing:
        raise UsageError(f"{spec.name}: missing input {missing[0]!r}; inputs are {', '.join(spec.input_names)}")
    x = np.asarray(feeds["input"])
    if x.ndim != 3:
        raise UsageError(f"{spec.name}: 'input' must be 3-D, got shape {list(x.shape)}")
    batch, seq = (x.shape[0], x.shape[1]) if spec.batch_first else (x.shape[1], x.shape[0])
    expected = spec.shapes(batch, seq)
    for name in spec.input_names:
        if tuple(np.shape(feeds[name])) != expected[name]:
            raise UsageError(f"{spec.name}: {name!r} has shape {list(np.shape(feeds[name]))}, expected "
                             f"{list(expected[name])} for batch {batch} and sequence length {seq}")
    if spec.variable_length:
        lengths = np.asarray(feeds["lengths"])
        if not np.issubdtype(lengths.dtype, np.integer):
            raise UsageError(f"{spec.name}: 'lengths' must be integers, got {lengths.dtype}")
        bad = lengths[(lengths < 1) | (lengths > seq)]
        if bad.size:
            raise UsageError(f"{spec.name}: 'lengths' must be in [1, {seq}] (the sequence length), got {bad.tolist()}")
