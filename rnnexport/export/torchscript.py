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
(`compile_model_spec`: script, falling back to trace where scripting fails).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rnnexport.errors import ExportError, RNNExportError, UsageError, WorkerDied
from rnnexport.export._capture import captured_messages
from rnnexport.export._torch_internals import strip_torchscript_debug_info
from rnnexport.spec import RNNSpec, spec_from_dict

if TYPE_CHECKING:
    import torch

__all__ = ["METHODS", "TorchScriptJob", "compile_and_save", "compile_model_spec", "export_torchscript",
           "fork_compile_server", "start_compile", "start_compile_server", "start_torchscript"]

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
                first = (str(exc).strip().splitlines() or [""])[0][:300]
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


class TorchScriptJob:
    """A TorchScript compilation running in a fresh process (see the module docstring).

    Every compilation runs in its own child forked from one compile server: a process started
    once per exporting process with ``PYTHONHASHSEED=0``, which imports torch and rnnexport and
    then only forks. Each child starts from that same state, compiles nothing before its own
    module and exits, so its output is independent of what ran before, as in a fresh process,
    without importing torch again for every artifact.

    Started by `start_torchscript`, so the caller can do other work (the ONNX exports) while it
    compiles; `result` waits for it. Use as a context manager: leaving the block before `result`
    (an error elsewhere) kills the compiling child, so it never writes into an abandoned folder.
    """

    def __init__(self, request: dict, label: str) -> None:
        self.label = label
        # The child compiles as if it ran here: this working folder and import path (a user's
        # package importable from here), paths absolute. The server may be older than both.
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = None
        request = {**request, "weights": os.path.abspath(request["weights"]), "path": os.path.abspath(request["path"]),
                   "cwd": cwd, "sys_path": list(sys.path)}
        self._server = _compile_server()
        self._reply: dict | None = None
        self._pid: int | None = None
        self._server.submit(request)  # not waiting for "started": the server may still be importing torch

    def result(self):
        """Wait for the compilation; returns what the compiler returned (torch's warnings).

        Raises:
            ExportError: the compilation failed; its last error line is in the message.
        """
        reply = self._wait()
        if "died" in reply:  # killed, not failed: this artifact's error, the others go on
            raise WorkerDied(self.label, f"its TorchScript compiling process died ({reply['died']})")
        if "error" in reply:
            if reply.get("own"):
                raise ExportError(reply["error"])
            raise ExportError(f"{self.label}: TorchScript compilation failed: {reply['error']}")
        return reply["result"]

    def _wait(self) -> dict:
        if self._reply is None:
            try:
                self._started()
                self._reply = self._server.wait()
            except WorkerDied as exc:  # the server itself: the next export starts another
                raise WorkerDied(self.label, f"its TorchScript compile server died ({exc.reason})") from None
        return self._reply

    def _started(self) -> int:
        if self._pid is None:
            self._pid = self._server.started()
        return self._pid

    def close(self) -> None:
        if self._reply is None:
            with contextlib.suppress(OSError, RNNExportError):
                os.kill(self._started(), 9)
            with contextlib.suppress(RNNExportError):
                self._wait()

    def __enter__(self) -> TorchScriptJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CompileServer:
    """The compile server's process; one request at a time (each export waits for its own).

    A fresh interpreter (``python -m rnnexport.export.torchscript --server``), or, in a
    ``--jobs`` worker, a fork of the worker made before it did anything (`fork_compile_server`).
    """

    def __init__(self, forked: bool = False) -> None:
        self.owner = os.getpid()
        if forked:
            self.process = _ForkedServer()
            return
        env = {**os.environ, "PYTHONHASHSEED": "0", _PARENT_ENV: str(os.getpid())}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rnnexport.export.torchscript", "--server"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env,
        )

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def _died(self) -> WorkerDied:
        from rnnexport._workers import describe_death

        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        return WorkerDied("the TorchScript compile server", describe_death(self.process.poll()))

    def _line(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise self._died()
        return line

    def submit(self, request: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died() from None

    def started(self) -> int:
        """The pid of the child compiling the request submitted last (waits for the server)."""
        return int(self._line().split()[1])  # "started <pid>"

    def wait(self) -> dict:
        return json.loads(self._line())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self.process.stdout.close()


_SERVER: _CompileServer | None = None


def _compile_server(forked: bool = False) -> _CompileServer:
    """This process's compile server, started (`forked`: see `_CompileServer`) if it has none."""
    global _SERVER
    if _SERVER is None or not _SERVER.alive():
        _SERVER = _CompileServer(forked=forked)
        import atexit

        atexit.register(_SERVER.close)
    return _SERVER


class _ForkedServer:
    """The compile server forked from this process, behind the part of `subprocess.Popen`
    that `_CompileServer` uses (stdin, stdout, poll, wait, kill)."""

    def __init__(self) -> None:
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the server: requests on stdin, replies on stdout, nothing else inherited
            try:
                os.dup2(request_read, 0)
                os.dup2(reply_write, 1)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
                sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own)
                sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
                os.environ[_PARENT_ENV] = str(os.getppid())
                _server()
            finally:
                os._exit(0)
        os.close(request_read)
        os.close(reply_write)
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = open(request_write, "w", buffering=1)  # noqa: SIM115 (closed by _CompileServer.close)
        self.stdout = open(reply_read)  # noqa: SIM115

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("compile server", timeout)
            time.sleep(0.01)
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)


def fork_compile_server() -> None:
    """Make this process's compile server a fork of it, now: for a ``--jobs`` worker, forked
    from a fork server that imported torch with ``PYTHONHASHSEED=0`` and compiled nothing, as
    a fresh compile server would be (without importing torch again). Elsewhere (another hash
    seed) the compile server stays a fresh interpreter, started now."""
    _compile_server(forked=sys.flags.hash_randomization == 0 and hasattr(os, "fork"))


def start_compile_server() -> None:
    """Start this process's compile server now (it imports torch while the caller does too),
    instead of at the first compilation."""
    _compile_server()


def start_compile(request: dict, label: str) -> TorchScriptJob:
    """Start a compilation described by `request` (see `_compile`) in the compile server."""
    return TorchScriptJob(request, label)


def start_torchscript(spec: RNNSpec, weights: Path, path: Path, *, method: str = "script") -> TorchScriptJob:
    """Start compiling the module rebuilt from `weights` (a state dict file) into `path`.

    Raises:
        UsageError: unknown `method` (valid: script, trace).
    """
    if method not in METHODS:
        raise UsageError(f"unknown TorchScript method {method!r}; valid: {', '.join(METHODS)}")
    request = {"spec": spec.to_dict(), "weights": str(weights), "path": str(path), "method": method}
    return TorchScriptJob(request, spec.name)


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
    import threading
    import time

    parent = int(os.environ.get(_PARENT_ENV, "0"))
    if not parent:
        return
    _killed_with_parent()
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _killed_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``)."""
    import signal

    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _compile(request: dict):
    """One compilation: rebuild the module from the weights file and compile it into ``path``."""
    import torch

    if request.get("kind") == "model":
        from rnnexport.modelspec_load import model_spec_from_dict
        from rnnexport.usermodel import build_user_module, load_weights

        spec = model_spec_from_dict(request["spec"])
        module = build_user_module(spec, load_weights(request["weights"]))
        return compile_model_spec(module, spec, Path(request["path"]), request["method"])
    from rnnexport.builder import module_from_state_dict

    spec = spec_from_dict(request["spec"])
    module = module_from_state_dict(spec, torch.load(request["weights"], weights_only=True))
    return compile_and_save(module, spec, Path(request["path"]), method=request["method"])


def _child(request: dict, reply_fd: int) -> None:
    """In a forked child: die with the server, keep stdout (the protocol) clean, compile, reply."""
    _killed_with_parent()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    code = 0
    try:
        if request.get("cwd"):
            os.chdir(request["cwd"])
        sys.path[:] = request.get("sys_path", sys.path)
        reply = {"result": _compile(request)}
    except BaseException as exc:  # everything goes back as one line
        lines = [line for line in str(exc).strip().splitlines() if line.strip()] or [""]
        if isinstance(exc, RNNExportError):  # rnnexport's own message, already one line naming the artifact
            reply = {"error": lines[0][:600], "own": True}
        else:
            reply = {"error": f"{type(exc).__name__}: {lines[-1] if len(lines[-1]) > 20 else lines[0]}"[:600]}
        code = 1
    with os.fdopen(reply_fd, "w") as pipe:
        pipe.write(json.dumps(reply))
    os._exit(code)


def _server() -> None:
    """The compile server: import what compiling needs once, then fork a child per request.

    Each request line gets ``started <pid>`` at once and, when the child ends, one JSON line:
    ``{"result": ...}`` or ``{"error": ...}``.
    """
    _die_with_parent()
    import torch  # noqa: F401 (imported once, here, for every child)

    import rnnexport.builder  # noqa: F401
    import rnnexport.usermodel  # noqa: F401

    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child(request, write_fd)
        os.close(write_fd)
        print(f"started {pid}", flush=True)
        with os.fdopen(read_fd) as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        if data:
            print(data, flush=True)
        else:
            from rnnexport._workers import describe_death

            why = describe_death(os.waitstatus_to_exitcode(status))
            print(json.dumps({"died": why}), flush=True)


if __name__ == "__main__":
    _server()
