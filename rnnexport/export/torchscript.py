"""TorchScript export: ``model.pt``, called like the module: ``m(input, h_0[, lengths]) ->
(output, h_n)`` for RNN and GRU, ``m(input, (h_0, c_0)[, lengths]) -> (output, (h_n, c_n))`` for
an LSTM (`rnnexport.builder.wrap`).

``torch.jit.script`` is not byte-deterministic within a long-lived process: it iterates a
``set`` of constant names (``torch/jit/_recursive.py``, ``infer_concrete_type_builder``), so
the saved code depends on Python's string hash seed, and the types it compiled earlier in the
process change the names it gives later ones. `export_torchscript` therefore compiles in a fresh
Python process with ``PYTHONHASHSEED=0``, from the weights already written to disk, and drops
the archive's debug records, which hold absolute source paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rnnexport.errors import ExportError, UsageError
from rnnexport.export._capture import captured_messages
from rnnexport.export._torch_internals import strip_torchscript_debug_info
from rnnexport.spec import RNNSpec, spec_from_dict

if TYPE_CHECKING:
    import torch

__all__ = ["METHODS", "TorchScriptJob", "compile_and_save", "compile_model_spec", "export_torchscript", "start_torchscript"]

METHODS = ("script", "trace")


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

    `method` None scripts and, where scripting fails (user code often has Python TorchScript
    cannot compile), traces on the spec's example inputs instead. Returns ``{"method",
    "messages", "script_error"}``.
    """
    import torch

    from rnnexport.usermodel import example_args

    script_error = None
    with captured_messages() as messages:
        compiled = None
        if method in (None, "script"):
            try:
                compiled = torch.jit.script(module)
            except Exception as exc:
                if method == "script":
                    first = (str(exc).strip().splitlines() or [""])[0]
                    raise ExportError(f"{spec.name}: torch.jit.script failed: {type(exc).__name__}: {first}; "
                                      "try --torchscript trace (or torchscript = \"trace\" in the spec)") from None
                script_error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
        if compiled is None:
            with torch.no_grad():
                compiled = torch.jit.trace(module, example_args(spec), check_trace=False)
        torch.jit.save(compiled, str(path))
    strip_torchscript_debug_info(path)
    return {"method": "trace" if script_error or method == "trace" else "script",
            "messages": messages, "script_error": script_error}


class TorchScriptJob:
    """A TorchScript compilation running in its own fresh process (see the module docstring).

    Started by `start_torchscript`, so the caller can do other work (the ONNX exports) while it
    compiles; `result` waits for it. Use as a context manager: leaving the block before `result`
    (an error elsewhere) kills the process, so it never writes into an abandoned folder.
    """

    def __init__(self, spec: RNNSpec, weights: Path, path: Path, method: str) -> None:
        self.spec = spec
        request = json.dumps({"spec": spec.to_dict(), "weights": str(weights), "path": str(path), "method": method})
        env = {**os.environ, "PYTHONHASHSEED": "0", _PARENT_ENV: str(os.getpid())}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "rnnexport.export.torchscript"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env,
        )
        self._request = request

    def result(self) -> list[str]:
        """Wait for the compilation; returns the warnings torch raised.

        Raises:
            ExportError: the compiling process failed; its last error line is in the message.
        """
        stdout, stderr = self._process.communicate(self._request)
        if self._process.returncode != 0:
            last = (stderr.strip().splitlines() or ["(no output)"])[-1]
            raise ExportError(f"{self.spec.name}: TorchScript compilation failed: {last}")
        return json.loads(stdout.strip().splitlines()[-1])

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.communicate()

    def __enter__(self) -> TorchScriptJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_torchscript(spec: RNNSpec, weights: Path, path: Path, *, method: str = "script") -> TorchScriptJob:
    """Start compiling the module rebuilt from `weights` (a state dict file) into `path`.

    Raises:
        UsageError: unknown `method` (valid: script, trace).
    """
    if method not in METHODS:
        raise UsageError(f"unknown TorchScript method {method!r}; valid: {', '.join(METHODS)}")
    return TorchScriptJob(spec, weights, path, method)


def export_torchscript(spec: RNNSpec, weights: Path, path: Path, *, method: str = "script") -> list[str]:
    """Compile the module rebuilt from `weights` in a fresh process and wait for it.

    Returns the warnings torch raised (TorchScript is deprecated in torch 2.13), recorded
    instead of printed.

    Raises:
        UsageError: unknown `method` (valid: script, trace).
        ExportError: the compiling process failed; its last error line is in the message.
    """
    with start_torchscript(spec, weights, path, method=method) as job:
        return job.result()


_PARENT_ENV = "RNNEXPORT_PARENT_PID"


def _die_with_parent() -> None:
    """End this compiling process when the export that started it dies.

    Killed mid-export, the parent leaves its staging folder to the next export; a compiler
    living on would write ``model.pt`` into it seconds later. On Linux the kernel delivers
    SIGKILL when the parent goes (``prctl(PR_SET_PDEATHSIG)``); elsewhere a thread polls the
    parent's pid. Either way a parent that died before this ran is noticed at once.
    """
    import signal
    import threading
    import time

    parent = int(os.environ.get(_PARENT_ENV, "0"))
    if not parent:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker() -> None:
    _die_with_parent()
    import torch

    from rnnexport.builder import module_from_state_dict

    request = json.loads(sys.stdin.read())
    if request.get("kind") == "model":
        from rnnexport.modelspec import model_spec_from_dict
        from rnnexport.usermodel import build_user_module, load_weights

        spec = model_spec_from_dict(request["spec"])
        module = build_user_module(spec, load_weights(request["weights"]))
        print(json.dumps(compile_model_spec(module, spec, Path(request["path"]), request["method"])))
        return
    spec = spec_from_dict(request["spec"])
    module = module_from_state_dict(spec, torch.load(request["weights"], weights_only=True))
    messages = compile_and_save(module, spec, Path(request["path"]), method=request["method"])
    print(json.dumps(messages))


if __name__ == "__main__":
    _worker()
