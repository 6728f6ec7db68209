"""One exception hierarchy: user-facing errors carry their CLI exit code.

`RNNExportError` and its subclasses are what a user can cause (a bad spec, a tampered artifact,
a runtime that is not there) or what a check found (a mismatch). The CLI catches the base class,
prints the message once, and exits with `exit_code`. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ExportError",
    "ExportRejected",
    "RNNExportError",
    "RuntimeUnavailableError",
    "SpecError",
    "UsageError",
    "ValidationFailed",
    "WorkerDied",
    "did_you_mean",
    "first_line",
]


class RNNExportError(Exception):
    """Base class of every error a user can see. Exit code 2 (bad usage or bad input)."""

    exit_code = 2


class UsageError(RNNExportError):
    """Bad command-line usage or API argument: unknown name, bad flag value."""


class SpecError(RNNExportError):
    """An invalid RNN specification (TOML or dict): names the key and the value."""


class ArtifactError(RNNExportError):
    """An artifact folder that cannot be trusted: missing, truncated, tampered, wrong schema."""


class RuntimeUnavailableError(RNNExportError):
    """A runtime was asked for explicitly but cannot run here; the message says why."""


class ExportError(RNNExportError):
    """An export that cannot produce a correct model (unsupported combination, missing package)."""


class ExportRejected(ExportError):
    """An export ran but its result fails a check on the graph (a recurrent layer lost its
    native op, a packed sequence the exporter cannot keep). Exit code 1, like a mismatch."""

    exit_code = 1


class FormatFailed(ExportError):
    """An exporter wrote a model file its own runtime cannot load (a defect of the exporter, not
    of the user's input). Exit code 1; with the default formats the file is left out instead."""

    exit_code = 1


class ValidationFailed(RNNExportError):
    """A check ran and found a mismatch. Exit code 1. `report` holds what was found, if any."""

    exit_code = 1

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report

    def __reduce__(self):  # keep the report when sent back from a worker process (--jobs)
        return type(self), (str(self), self.report)


class WorkerDied(RNNExportError):
    """A ``--jobs`` worker process ended without a result: killed (often by the out-of-memory
    killer) or crashed in native code. Exit code 1: its item was not checked. The other items'
    results stand (`rnnexport.workers.map_in_processes`)."""

    exit_code = 1

    def __init__(self, label: str, reason: str) -> None:
        super().__init__(f"{label}: {reason}")
        self.label, self.reason = label, reason

    def __reduce__(self):
        return type(self), (self.label, self.reason)


def did_you_mean(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the closest of `valid` to `name`, or ``""``: every message
    naming an unknown key, value or option ends with it."""
    import difflib

    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def first_line(exc: BaseException, limit: int | None = 300) -> str:
    """The first line of `exc`'s message, at most `limit` characters (None: all of it): what a
    one-line error quotes of a library's (often multi-line) exception."""
    return (str(exc).strip().splitlines() or [""])[0][:limit]
