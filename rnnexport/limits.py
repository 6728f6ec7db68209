"""Memory estimates, checked before anything large is allocated.

A spec with ``hidden_size = 10000000`` or ``seq_len = 1000000000``, or ``validate --cases
100000x100000``, would otherwise end in an allocation failure deep inside torch or numpy (or
in the kernel's OOM killer). Every export and validation first estimates the bytes of the
weights and of each input case, and refuses (exit 2, naming the estimate) what exceeds the
limit: ``--max-memory`` / ``max_memory=``, by default half of the memory available now. A case
of more than `MAX_CASE_STEPS` elements (the product of its dim sizes: batch x seq) is refused
too, whatever its memory: an artifact's manifest names its sweep, and a sweep of ``[1, 1048576]``
would otherwise run for many minutes on every runtime.
"""

from __future__ import annotations

import math
import os
import re

from rnnexport.errors import UsageError

__all__ = [
    "DEFAULT_FRACTION",
    "MAX_CASE_STEPS",
    "available_memory",
    "case_bytes",
    "check_free_space",
    "check_memory",
    "check_steps",
    "default_max_memory",
    "format_bytes",
    "nearly_full",
    "no_space",
    "parse_size",
    "weight_bytes",
]

DEFAULT_FRACTION = 0.5
MAX_CASE_STEPS = 1 << 21  # e.g. batch 512 x seq 4096: seconds per runtime for a small RNN, minutes beyond
_FLOAT = 4  # float32
_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def available_memory() -> int:
    """Bytes of memory available to new allocations now (``MemAvailable`` on Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 8 << 30


def default_max_memory() -> int:
    """The default limit: `DEFAULT_FRACTION` of `available_memory`."""
    return int(available_memory() * DEFAULT_FRACTION)


def parse_size(text: str) -> int:
    """Bytes from ``"2G"``, ``"512M"``, ``"1.5GiB"``, ``"100k"`` or a plain number of bytes.

    Raises:
        UsageError: anything else, or a size below 1 MiB.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise UsageError(f"memory size {text!r} is not a size; valid: bytes or a number with K, M, G or T (e.g. 4G)")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < 1 << 20:
        raise UsageError(f"memory size {text!r} is below 1 MiB; nothing useful fits")
    return size


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def weight_bytes(spec) -> int:
    """Bytes of the parameters of `spec`'s module (float32), computed without building it."""
    gates, hidden, out = _GATES[spec.cell], spec.hidden_size, spec.output_size
    total = 0
    for layer in range(spec.num_layers):
        features = spec.input_size if layer == 0 else spec.num_directions * out
        per_direction = gates * hidden * (features + out) + (2 * gates * hidden if spec.bias else 0)
        per_direction += hidden * out if spec.proj_size else 0
        total += spec.num_directions * per_direction
    return total * _FLOAT


def case_bytes(spec, batch: int, seq: int, runs: int = 1) -> int:
    """Estimated peak bytes of running one case: the inputs and outputs (held by each of the
    `runs` runtimes, the reference and the comparison) and each layer's gate pre-activations
    and outputs."""
    io = sum(math.prod(shape) for shape in spec.shapes(batch, seq).values())
    work = spec.num_layers * spec.num_directions * batch * seq * (_GATES[spec.cell] + 1) * spec.hidden_size
    return ((runs + 2) * io + work) * _FLOAT


def check_memory(what: str, estimate: int, limit: int | None) -> None:
    """Refuse `what` when its `estimate` exceeds `limit` (default `default_max_memory`).

    Raises:
        UsageError: naming what, the estimate and the limit.
    """
    limit = default_max_memory() if limit is None else limit
    if estimate > limit:
        raise UsageError(
            f"{what} would need an estimated {format_bytes(estimate)}, over the memory limit of {format_bytes(limit)} "
            f"(--max-memory; default {DEFAULT_FRACTION:.0%} of the memory available now); use smaller sizes "
            "or raise --max-memory"
        )


def check_steps(what: str, steps: int) -> None:
    """Refuse a case of more than `MAX_CASE_STEPS` elements (`steps`: its dim sizes multiplied).

    Raises:
        UsageError: naming what, its size and the bound.
    """
    if steps > MAX_CASE_STEPS:
        raise UsageError(
            f"{what} has {steps:,} elements (its dim sizes multiplied, e.g. batch x seq), over the {MAX_CASE_STEPS:,} "
            "rnnexport runs in one case (the recurrent work of a larger one takes minutes on every runtime); "
            "use smaller sizes in the sweep"
        )


_DISK_MARGIN = 1 << 20  # what a writer needs beyond the file itself (temporary copies, metadata)


def free_bytes(folder) -> int:
    """Bytes an unprivileged writer can still use in `folder`'s filesystem."""
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def no_space(folder, name: str) -> str:
    try:
        free = f"{format_bytes(free_bytes(folder))} free"
    except OSError:
        free = "free space unknown"
    return f"no space left on device while writing {name} (in {folder}; {free}); the previous artifact is unchanged"


def check_free_space(folder, name: str, estimate: int) -> None:
    """Refuse to start writing `name` into `folder` unless about `estimate` bytes are free.

    Raises:
        UsageError: "no space left on device while writing <name>".
    """
    try:
        free = free_bytes(folder)
    except OSError:
        return  # no statvfs here: the write itself will tell
    if free < estimate + _DISK_MARGIN:
        raise UsageError(no_space(folder, name) + f"; it needs about {format_bytes(estimate + _DISK_MARGIN)}")


def nearly_full(folder) -> bool:
    """Whether `folder`'s filesystem has less than the writer's margin left (a failed write's
    likely cause, when the writer reports it in its own words)."""
    try:
        return free_bytes(folder) < _DISK_MARGIN
    except OSError:
        return False
