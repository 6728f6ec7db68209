"""The processes TorchScript compiles in: a compile server per exporting process, which imports
torch once and then forks a fresh child per compilation (`TorchScriptJob`, `start_compile`,
`start_compile_server`, `fork_compile_server`), and dies with the process that started it.

Why a fresh process for every compilation: see `rnnexport.export.torchscript`, which owns what a
child compiles (`compile_request`). This module names that module (`COMPILER`) instead of
importing it, since it imports this one; the server imports it by name before it forks.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

from rnnexport.errors import ExportError, RNNExportError, WorkerDied
from rnnexport.workers import collect_less, freeze_imported

__all__ = ["COMPILER", "TorchScriptJob", "fork_compile_server", "start_compile", "start_compile_server"]

# The module whose `compile_request(request)` each compiling child runs.
COMPILER = "rnnexport.export.torchscript"
# The modules of each kind's exporting, one of which a request names (imported once, here, too).
EXPORTINGS = ("rnnexport.export.rnn", "rnnexport.export.model")


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

    A fresh interpreter (``python -m rnnexport.export.compile_server --server``), or, in a
    ``--jobs`` worker, a fork of the worker made before it did anything (`fork_compile_server`).
    """

    def __init__(self, forked: bool = False) -> None:
        self.owner = os.getpid()
        if forked:
            self.process = _ForkedServer()
            return
        env = {**os.environ, "PYTHONHASHSEED": "0", _PARENT_ENV: str(os.getpid())}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rnnexport.export.compile_server", "--server"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env,
        )

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def _died(self) -> WorkerDied:
        from rnnexport.workers import describe_death

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
    """Start a compilation described by `request` (see `rnnexport.export.torchscript.compile_request`) in the compile server."""
    return TorchScriptJob(request, label)


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
    """One compilation: the compiler module's `compile_request` (imported by the server already)."""
    import importlib

    return importlib.import_module(COMPILER).compile_request(request)


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
    collect_less()
    import importlib

    import torch  # noqa: F401 (imported once, here, for every child)

    import rnnexport.builder  # noqa: F401
    import rnnexport.usermodel  # noqa: F401
    from rnnexport.schema import prepare_validators

    for name in (COMPILER, *EXPORTINGS):
        importlib.import_module(name)
    prepare_validators()  # each request's spec is checked again as the child rebuilds it
    freeze_imported()  # no compiling child walks (and copies) what the server imported

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
            from rnnexport.workers import describe_death

            why = describe_death(os.waitstatus_to_exitcode(status))
            print(json.dumps({"died": why}), flush=True)


if __name__ == "__main__":
    _server()
    os._exit(0)  # every reply is flushed: no interpreter teardown (torch's takes ~0.5 s) for the exporter to wait for
