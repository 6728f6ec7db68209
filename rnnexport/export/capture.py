"""Capture what torch's exporters print and warn, so it is recorded once instead of sprayed."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator

__all__ = ["captured_messages"]


# torch's C++ logging prefix, "[W1129 01:23:45.678901234 shape_type_inference.cpp:1994] ": its
# time stamp would make every manifest differ, so it is dropped.
_CPP_PREFIX = re.compile(r"^\[[A-Z]\d{4} [\d:.]+ [^\]]*\] ")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


_MAX_FD_LINES = 20  # a failing legacy export prints its whole TorchScript graph to fd 1


@contextlib.contextmanager
def _captured_fd(fd: int) -> Iterator[io.BytesIO]:
    """Redirect file descriptor `fd` (1 or 2: where torch's C++ code writes its warnings and,
    when the legacy ONNX exporter fails, its graph) into a buffer."""
    streams = (sys.stdout, sys.__stdout__) if fd == 1 else (sys.stderr, sys.__stderr__)
    for stream in streams:
        if stream is not None:
            stream.flush()
    saved = os.dup(fd)
    buffer = io.BytesIO()
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield buffer
        finally:
            for stream in streams:
                if stream is not None:
                    stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            buffer.write(sink.read())


@contextlib.contextmanager
def captured_messages() -> Iterator[list[str]]:
    """Collect warnings and printed lines of the block into the yielded list.

    Each message is kept once, as ``Category: first line``, in first-seen order. Printed output
    (the torch.export-based exporter prints progress lines), warnings logged under the ``torch``
    logger (e.g. "torchvision is not installed") and what torch's C++ code writes to the stderr
    file descriptor (e.g. "The shape inference of prim::PackPadded type is missing") are
    captured too.
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
    caught: list[warnings.WarningMessage] = []
    fd1 = fd2 = io.BytesIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                _captured_fd(1) as fd1, _captured_fd(2) as fd2:
            warnings.simplefilter("always")
            yield messages
    finally:
        # After the redirections are undone: the descriptor's text is in `fd2` only now.
        for lg, (handlers, propagate) in zip(loggers, saved):
            lg.handlers[:], lg.propagate = handlers, propagate
        seen = dict.fromkeys(f"{w.category.__name__}: {_first_line(str(w.message))}" for w in caught)
        seen.update(dict.fromkeys(
            f"stdout: {line.strip()}" for line in out.getvalue().splitlines() if line.strip()))
        seen.update(dict.fromkeys(f"log {r.levelname}: {_first_line(r.getMessage())}" for r in records))
        seen.update(dict.fromkeys(
            f"stderr: {_CPP_PREFIX.sub('', line.strip())}"
            for line in fd2.getvalue().decode("utf-8", "replace").splitlines() if line.strip()))
        printed = [line.strip() for line in fd1.getvalue().decode("utf-8", "replace").splitlines() if line.strip()]
        seen.update(dict.fromkeys(f"stdout: {line}" for line in printed[:_MAX_FD_LINES]))
        messages.extend(seen)
