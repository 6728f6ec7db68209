"""TorchScript export: ``model.pt``, called like the module: ``m(input, h_0[, lengths]) ->
(output, h_n)`` for RNN and GRU, ``m(input, (h_0, c_0)[, lengths]) -> (output, (h_n, c_n))`` for
an LSTM (`rnnexport.builder.wrap`).

``torch.jit.script`` is not byte-deterministic within a long-lived process: it iterates a
``set`` of constant names (``torch/jit/_recursive.py``, ``infer_concrete_type_builder``), so
the saved code depends on Python's string hash seed, and the types it compiled earlier in the
process change the names it gives later ones. `export_torchscript` therefore compiles in a
process that has compiled nothing before, with ``PYTHONHASHSEED=0``, from the weights already
written to disk, and drops the archive's debug records, which hold absolute source paths. That
process is a child forked from a compile server (`TorchScriptJob`), which imports torch once for
all the artifacts of an export instead of once per artifact.

Model specs (a user's module, called ``m(*inputs)``) are compiled the same way
(`compile_model_spec`: script, falling back to trace where scripting fails). What a request
rebuilds is the spec's exporting's (`rnnexport.export.pipeline`).

This module owns what is compiled and how (`compile_and_save`, `compile_model_spec`, the request
a child runs: `compile_request`); `rnnexport.export.compile_server` owns the processes it runs in
(`TorchScriptJob`, the compile server), its public names re-exported here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from rnnexport.errors import ExportError, UsageError, first_line
from rnnexport.export.capture import captured_messages
from rnnexport.export.torch_internals import strip_torchscript_debug_info
from rnnexport.export.compile_server import TorchScriptJob, fork_compile_server, start_compile, start_compile_server

if TYPE_CHECKING:
    import torch

    from rnnexport.spec import RNNSpec

__all__ = ["TorchScriptJob", "check_method", "compile_and_save", "compile_model_spec", "compile_request", "export_torchscript",
           "fork_compile_server", "start_compile", "start_compile_server", "start_torchscript"]

def compile_and_save(module: torch.nn.Module, spec: RNNSpec, path: Path, *, method: str = "script") -> list[str]:
    """Compile in this process and save; deterministic only in a fresh ``PYTHONHASHSEED=0`` one."""
    import torch

    from rnnexport.builder import example_args, wrap

    # The saved program keeps the calling contract, with one plain forward: scripting nn.RNN
    # itself gives its @overload-ed forward as forward__0/forward__1 and no forward.
    module = wrap(module, spec)
    with captured_messages() as messages:
        if method == "script":
            compiled = torch.jit.script(module)
        else:
            compiled = torch.jit.trace(module, example_args(spec), check_trace=False)
        torch.jit.save(compiled, str(path))
    strip_torchscript_debug_info(path)
    return messages


def compile_model_spec(module: torch.nn.Module, spec, path: Path, method: str | None) -> dict:
    """Compile a model spec's module (called ``m(*inputs)``) and save it to `path`.

    `method` None scripts and, where scripting or saving the scripted module fails (user code
    often has Python TorchScript cannot compile), traces on the spec's example inputs instead.
    Returns ``{"method", "messages", "script_error", "dropped"}``: `dropped` names the
    ``@torch.jit.export`` methods a traced ``model.pt`` leaves out.
    """
    import torch

    from rnnexport.usermodel import example_args

    script_error, dropped = None, []
    with captured_messages() as messages:
        saved = False
        if method in (None, "script"):
            try:
                torch.jit.save(torch.jit.script(module), str(path))
                saved = True
            except Exception as exc:
                if method == "script":
                    raise ExportError(f"{spec.name}: torch.jit.script failed: {script_failure(exc)}; "
                                      "try --torchscript trace (or torchscript = \"trace\" in the spec)") from None
                script_error = script_failure(exc)
        if not saved:
            try:
                with torch.no_grad(), _forward_only(module) as dropped:
                    # strict=False: a dict output (common in user code) is refused otherwise; its keys
                    # are fixed for a module, and every call is checked against ``[outputs] names``.
                    compiled = torch.jit.trace(module, example_args(spec), check_trace=False, strict=False)
                torch.jit.save(compiled, str(path))
            except Exception as exc:
                first = first_line(exc)
                why = f" (torch.jit.script failed too: {script_error})" if script_error else ""
                raise ExportError(f"{spec.name}: torch.jit.trace failed: {type(exc).__name__}: {first}{why}") from None
    strip_torchscript_debug_info(path)
    return {"method": "trace" if script_error or method == "trace" else "script",
            "messages": messages, "script_error": script_error, "dropped": dropped}


def script_failure(exc: BaseException) -> str:
    """TorchScript's error in one line: its first line, where (file:line) and what called it.

    TorchScript's message starts with the construct it refused (``SetComp aren't supported:``)
    and then shows source; the useful part is the place and the chain of calls that led there."""
    import re

    text = str(exc).strip()
    first = (text.splitlines() or [""])[0].rstrip(":")
    where = re.search(r'File "([^"]+)", line (\d+)', text)
    chain = re.findall(r"'([^']+)' is being compiled since it was called from '([^']+)'", text)
    parts = [f"{type(exc).__name__}: {first}"[:200]]
    if where:
        parts.append(f"at {'/'.join(Path(where[1]).parts[-3:])}:{where[2]}")
    if chain:
        parts.append(f"in {chain[0][0]}, called from {chain[-1][1]}")
    return ", ".join(parts)


@contextlib.contextmanager
def _forward_only(module: torch.nn.Module):
    """Tracing compiles every ``@torch.jit.export`` method too (``torch.jit._trace.make_module``),
    so one method TorchScript cannot compile fails the trace of a forward it could record. Within
    the block tracing records ``forward`` only; yields the names of the exported methods left out."""
    import torch._jit_internal as jit_internal

    dropped = sorted({name for m in module.modules() for name in dir(type(m))
                      if jit_internal.get_torchscript_modifier(getattr(type(m), name, None))
                      is jit_internal.FunctionModifiers.EXPORT})
    has_exports = jit_internal.module_has_exports
    jit_internal.module_has_exports = lambda mod: False
    try:
        yield dropped
    finally:
        jit_internal.module_has_exports = has_exports


def check_method(method: str | None) -> None:
    """Raise UsageError unless `method` is ``script``, ``trace`` or None (script, falling back
    to trace where scripting fails)."""
    if method not in (None, "script", "trace"):
        raise UsageError(f"unknown TorchScript method {method!r}; valid: script, trace")


def start_torchscript(spec, weights: Path, path: Path, *, method: str | None = "script") -> TorchScriptJob:
    """Start compiling `spec`'s module rebuilt from `weights` (the weights file its exporting
    writes) into `path`, in the compile server. `method` None: script, else trace (model specs).

    Raises:
        UsageError: unknown `method` (valid: script, trace).
    """
    check_method(method)
    request = {"exporting": spec.pipeline, "spec": spec.to_dict(), "weights": str(weights), "path": str(path),
               "method": method}
    return start_compile(request, spec.name)


def export_torchscript(spec, weights: Path, path: Path, *, method: str | None = "script") -> list[str]:
    """Compile `spec`'s module rebuilt from `weights` in a fresh process and wait for it.

    Returns the warnings torch raised (TorchScript is deprecated in torch 2.13), recorded
    instead of printed.

    Raises:
        UsageError: unknown `method` (valid: script, trace).
        ExportError: the compiling process failed; its last error line is in the message.
    """
    with start_torchscript(spec, weights, path, method=method) as job:
        return job.result()["messages"]


def compile_request(request: dict) -> dict:
    """One compilation, as a compiling child runs it (`rnnexport.export.compile_server`): the
    spec's exporting (``request["exporting"]``, ``module:Class``, `rnnexport.export.pipeline`)
    rebuilds the module from the weights file and compiles it into ``path``. Returns
    ``{"method", "messages", ...}``."""
    from rnnexport.export.steps import exporting_class

    return exporting_class(request["exporting"]).compile_request(request)
