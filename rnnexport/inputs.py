"""Input cases: `Case` (a size per named dim of a spec, how its state inputs are filled, and
for the user's evaluation data its name), `Sizes` (a case given by its sizes alone, `--cases
8x24`), and the spec protocol's cases and inputs as functions.

Every array is seeded by the spec and the case (`rnnexport.contract`), so each runtime, each
process and each machine gets byte-identical feeds, whatever order the cases run in. Arrays are
cached and read-only: no runtime can alter another's feed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["Case", "IDENT_RE", "INITIAL_STATES", "Sizes", "check_feeds", "default_sweep", "golden_cases", "make_inputs"]

INITIAL_STATES = ("zero", "random")
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # a dim, input or output name
_COMPACT_RE = re.compile(r"b?(\d+)xs?(\d+)(?:-h0(\w+))?")


@dataclass(frozen=True, order=True)
class Case:
    """One input case of a spec: a size per dim (in the spec's order), and how state inputs are
    filled (``zero`` or ``random``).

    Its id is how golden data and reports name it, in one of two spellings the spec chooses:
    ``batch=3,seq=17,state=zero`` (named dims), or ``b3xs17-h0zero`` (`compact`: an RNN
    configuration's, whose dims are always batch and seq; `rnn` makes one). `state_in_id` is
    False for a spec without state inputs (``batch=3,seq=17``); artifacts exported before wrote
    ``state=random`` for those too: a parsed id keeps its spelling (it keys the golden data) and
    equals the case spelled either way. `data` names the user's evaluation data
    (`rnnexport.evaldata`) the case's inputs are, not seeded ones: ``data=heldout,batch=200,seq=24``.
    """

    sizes: tuple[tuple[str, int], ...]
    initial_state: str = "random"
    state_in_id: bool = dataclasses.field(default=True, compare=False)
    data: str = ""
    compact: bool = dataclasses.field(default=False, compare=False)

    def __post_init__(self) -> None:
        if any(v < 1 for _, v in self.sizes):
            raise ValueError(f"a case needs every size >= 1, got {dict(self.sizes)}")
        if self.initial_state not in INITIAL_STATES:
            raise ValueError(f"initial_state must be one of {INITIAL_STATES}, got {self.initial_state!r}")

    @classmethod
    def rnn(cls, batch: int, seq: int, initial_state: str = "random") -> Case:
        """A case of an RNN configuration: batch and seq, spelled ``b3xs17-h0zero``."""
        return cls((("batch", batch), ("seq", seq)), initial_state, compact=True)

    @property
    def id(self) -> str:
        """Readable id, e.g. ``b3xs17-h0zero`` (compact) or ``batch=3,seq=17,state=zero``."""
        if self.compact:
            return f"b{self.size('batch')}xs{self.size('seq')}-h0{self.initial_state}"
        return ",".join([*([f"data={self.data}"] if self.data else []), *(f"{k}={v}" for k, v in self.sizes),
                         *([f"state={self.initial_state}"] if self.state_in_id else [])])

    @property
    def steps(self) -> int:
        """Product of the dim sizes (how much work the case is)."""
        return math.prod(v for _, v in self.sizes)

    def size(self, dim: str) -> int:
        return dict(self.sizes)[dim]

    @property
    def label(self) -> str:
        """The sizes alone, ``3x17`` (a bench table's column)."""
        return "x".join(str(v) for _, v in self.sizes)

    @classmethod
    def parse(cls, text: str) -> Case:
        """Parse an id made by `id` in either spelling, or ``BxS`` (compact, random state)."""
        compact = _COMPACT_RE.fullmatch(text)
        try:
            if compact:
                batch, seq, state = compact.groups()
                return cls.rnn(int(batch), int(seq), state or "random")
            parts = dict(part.split("=", 1) for part in text.split(","))
            data = parts.pop("data", None)
            state = parts.pop("state", None)
            if state not in (*INITIAL_STATES, None) or not parts or (data is not None and not IDENT_RE.fullmatch(data)):
                raise ValueError(state)
            sizes = tuple((k, int(v)) for k, v in parts.items())
            if any(not IDENT_RE.fullmatch(k) for k, _ in sizes):
                raise ValueError(text)
            return cls(sizes, state or "random", state is not None, data or "")
        except (ValueError, KeyError) as exc:
            raise ValueError(f"bad case {text!r}: expected [data=NAME,]dim=N,...[,state=zero|random], "
                             f"bBxsS-h0zero|random or BxS ({exc})") from None


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
        """RNN case ids (``b3xs17-h0zero``) and named ids give a `Case`; sizes alone a `Sizes`."""
        shape, _, state = text.partition("-h0")
        try:
            if "xs" in shape or "=" in shape:
                return Case.parse(text)
            sizes = tuple(int(v) for v in shape.split("x"))
            if any(v < 1 for v in sizes) or (state or "random") not in INITIAL_STATES:
                raise ValueError(text)
            return cls(sizes, state or "random")
        except ValueError as exc:
            raise ValueError(f"bad case {text!r}: expected sizes AxB... (one per dim, e.g. 3x17) or "
                             f"bBxsS-h0zero|random ({exc})") from None


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
