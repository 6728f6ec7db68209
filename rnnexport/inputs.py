"""Input cases: `Case` (an RNN configuration's batch, seq and initial state), `ShapeCase` (a
model spec's: a size per named dim), `Sizes` (a case given by its sizes alone, `--cases 8x24`), and the spec protocol's cases and inputs as functions.

Every array is seeded by the spec and the case (an RNN configuration's: `rnnexport.rnn_behaviour`;
a model spec's: `rnnexport.modelspec`), so each runtime, each process and each machine gets
byte-identical feeds, whatever order the cases run in. Arrays are cached and read-only: no runtime
can alter another's feed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["Case", "IDENT_RE", "INITIAL_STATES", "ShapeCase", "Sizes", "check_feeds", "default_sweep", "golden_cases", "make_inputs"]

INITIAL_STATES = ("zero", "random")
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # a dim, input or output name


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
    def sizes(self) -> tuple[tuple[str, int], ...]:
        return (("batch", self.batch), ("seq", self.seq))

    def size(self, dim: str) -> int:
        return dict(self.sizes)[dim]

    data = ""  # never the user's evaluation data (`rnnexport.modelspec.ShapeCase.data`)

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


@dataclass(frozen=True)
class Sizes:
    """A case given by its sizes alone, in the order of a spec's dims (``8x24``, ``4``,
    ``2x50-h0zero``): each spec makes it a case of its own (`case_of`), or says it does not fit."""

    sizes: tuple[int, ...]
    initial_state: str = "random"

    @property
    def id(self) -> str:
        return "x".join(map(str, self.sizes)) + (f"-h0{self.initial_state}" if self.initial_state != "random" else "")

    @classmethod
    def parse(cls, text: str) -> Case | Sizes:
        """``BxS`` and RNN case ids give a `Case`; any other number of sizes a `Sizes`."""
        shape, _, state = text.partition("-h0")
        try:
            if "xs" in shape or shape.count("x") == 1:
                return Case.parse(text)
            sizes = tuple(int(v) for v in shape.split("x"))
            if any(v < 1 for v in sizes) or (state or "random") not in INITIAL_STATES:
                raise ValueError(text)
            return cls(sizes, state or "random")
        except ValueError as exc:
            raise ValueError(f"bad case {text!r}: expected sizes AxB... (one per dim, e.g. 3x17) or "
                             f"bBxsS-h0zero|random ({exc})") from None


@dataclass(frozen=True, order=True)
class ShapeCase:
    """One input case of a model spec: a size per dim, and how state inputs are filled.

    `state_in_id` is False for a spec without state inputs (there is no state to name: the id
    is ``batch=3,seq=17``). Artifacts exported before wrote ``state=random`` for those too: a
    parsed id keeps its spelling (it keys the golden data), and equals the case spelled either way.
    `data` names the user's evaluation data (`rnnexport.evaldata`) the case's inputs are, not
    seeded ones: ``data=heldout,batch=200,seq=24``.
    """

    sizes: tuple[tuple[str, int], ...]
    initial_state: str = "random"
    state_in_id: bool = dataclasses.field(default=True, compare=False)
    data: str = ""

    @property
    def id(self) -> str:
        """Readable id, e.g. ``batch=3,seq=17,state=zero``, or ``batch=3,seq=17`` without state."""
        return ",".join([*([f"data={self.data}"] if self.data else []), *(f"{k}={v}" for k, v in self.sizes),
                         *([f"state={self.initial_state}"] if self.state_in_id else [])])

    @property
    def steps(self) -> int:
        """Product of the dim sizes (how much work the case is)."""
        return math.prod(v for _, v in self.sizes)

    def size(self, dim: str) -> int:
        return dict(self.sizes)[dim]

    @classmethod
    def parse(cls, text: str) -> ShapeCase:
        try:
            parts = dict(part.split("=", 1) for part in text.split(","))
            data = parts.pop("data", None)
            state = parts.pop("state", None)
            if state not in (*INITIAL_STATES, None) or not parts or (data is not None and not IDENT_RE.fullmatch(data)):
                raise ValueError(state)
            sizes = tuple((k, int(v)) for k, v in parts.items())
            if any(not IDENT_RE.fullmatch(k) or v < 1 for k, v in sizes):
                raise ValueError(text)
            return cls(sizes, state or "random", state is not None, data or "")
        except (ValueError, KeyError) as exc:
            raise ValueError(f"bad case {text!r}: expected [data=NAME,]dim=N,...[,state=zero|random] ({exc})") \
                from None


# The spec protocol (`rnnexport.rnn_behaviour`, `rnnexport.model_behaviour`), as functions.


def default_sweep(spec) -> list:
    """The cases every validation runs (the spec's sweep)."""
    return spec.sweep()


def golden_cases(spec) -> list:
    """The cases whose inputs and outputs are stored with an artifact (kept small)."""
    return spec.golden_cases()


def make_inputs(spec, case) -> dict[str, np.ndarray]:
    """Graph inputs of `case`: seeded, C-contiguous, read-only."""
    return spec.make_inputs(case)


def check_feeds(spec, feeds: dict[str, np.ndarray]) -> None:
    """Check named feeds against the spec before any runtime sees them.

    Raises:
        UsageError: a missing or unexpected input, a wrong dtype or shape, integers out of
            range; the message names the input, what was found and what is valid.
    """
    spec.check_feeds(feeds)
