"""Capture what torch's exporters print and warn, so it is recorded once instead of sprayed."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

__all__ = ["captured_messages"]


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


@contextlib.contextmanager
def captured_messages() -> Iterator[list[str]]:
    """Collect warnings and printed lines of the block into the yielded list.

    Each message is kept once, as ``Category: first line``, in first-seen order. Printed output
    (the torch.export-based exporter prints progress lines) and warnings logged under the
    ``torch`` logger (e.g. "torchvision is not installed") are captured too.
    """
    messages: list[str] = []
    out = io.StringIO()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    # torch attaches its own stderr handlers to "torch" and "torch.onnx" (propagate=False).
    loggers = [logging.getLogger(name) for name in ("torch", "torch.onnx")]
    saved = [(lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers[:] = [handler]
        lg.propagate = False
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
        warnings.simplefilter("always")
        try:
            yield messages
        finally:
            for lg, (handlers, propagate) in zip(loggers, saved):
                lg.handlers[:], lg.propagate = handlers, propagate
            seen = dict.fromkeys(
                f"{w.category.__name__}: {_first_line(str(w.message))}" for w in caught
            )
            seen.update(dict.fromkeys(
                f"stdout: {line.strip()[:200]}" for line in out.getvalue().splitlines() if line.strip()
            ))
            seen.update(dict.fromkeys(
                f"log {r.levelname}: {_first_line(r.getMessage())}" for r in records
            ))
            messages.extend(seen)
