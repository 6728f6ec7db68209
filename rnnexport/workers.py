"""Independent pieces of work in worker processes (``--jobs``), results in their order."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from rnnexport.errors import WorkerDied

__all__ = ["collect_less", "describe_death", "freeze_imported", "map_in_processes", "start_workers"]


def start_workers(preload: Sequence[str] = ()):
    """The context workers are started in: the fork server, started now (a no-op when it runs
    already), importing `preload`, so that it imports while the caller does other work (opening
    artifacts) before `map_in_processes` needs it; ``spawn`` where there is no fork server.

    The fork server runs with ``PYTHONHASHSEED=0``, as the TorchScript compile server does:
    a worker forks its compile server from itself (`rnnexport.export.compile_server`) instead of
    starting one that imports torch again, and TorchScript's output depends on the hash seed.
    """
    import multiprocessing
    import os

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    # Applies when the fork server starts (the first time); what it runs first: see that module
    context.set_forkserver_preload(["rnnexport.forkserver_start", *preload])
    _short_socket_folder()
    saved = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = "0"  # read by the fork server's interpreter when it starts
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = saved
    return context


def map_in_processes(
    function: Callable[[Any], Any],
    items: Sequence[Any],
    jobs: int,
    on_done: Callable[[int], None] | None = None,
    preload: Sequence[str] = (),
    initializer: Callable[[], None] | None = None,
    label: Callable[[Any], str] = str,
    forks: bool = True,
) -> list[Any]:
    """``function(item)`` for every item, `jobs` at once, each in a worker process.

    Workers are forked from a fork server (``forkserver``; ``spawn`` where there is none) that
    has imported `preload` (module names; one that fails to import is left out) and run
    nothing else: torch's thread pools do not survive a fork, but a process that only imported
    torch forks safely, and each worker starts with torch, ONNX Runtime and the rest imported
    once instead of importing them itself (seconds each). Results come back in the order of
    `items`; `on_done(index)` is called as each item succeeds. When one raises, the items not
    started yet are cancelled, the running ones finish, and the first error in item order is
    raised (the items start in order, so a cancelled one always comes after it). `initializer`
    runs first in each worker. `forks`: whether `function` may start processes of its own (a
    model's eager reference, the variants' trials); only then does each worker fork a fork
    server of its own at its start (`_fork_server_here`).

    An item whose worker ends without a result (killed, often by the out-of-memory killer, or
    crashed in native code) gets a `WorkerDied` naming it by `label(item)` in place of its
    result; a new worker takes the items left. Each worker is handed one item at a time, so the
    item it had is known: a ``concurrent.futures`` pool breaks instead (``BrokenProcessPool``)
    and fails every item it holds without saying whose worker died.

    A worker ends when this process dies (killed mid-run): it is a child of the fork server,
    which outlives it, and nothing else would tell it; left alone it would finish its item (an
    export would still install its artifact).
    """
    import os
    from multiprocessing.connection import wait

    context = start_workers(preload)

    def worker() -> _Worker:
        return _Worker(context, function, os.getpid(), initializer, forks)

    outcomes: dict[int, tuple[bool, Any, str | None]] = {}
    pending = list(range(len(items)))
    workers = [worker() for _ in range(min(jobs, len(items)))]
    try:
        while True:
            failed = not all(ok for ok, _, _ in outcomes.values())
            idle = [w for w in workers if w.index is None]
            while idle and pending and not failed:
                index = pending.pop(0)
                idle.pop().give(index, items[index])
            busy = [w for w in workers if w.index is not None]
            if not busy:
                break
            # The sentinel too: a process the worker forked may keep the pipe open after it died.
            ready = set(wait([end for w in busy for end in (w.connection, w.process.sentinel)]))
            for done in [w for w in busy if {w.connection, w.process.sentinel} & ready]:
                index, outcome = done.index, done.outcome()
                if outcome is None or done.process.sentinel in ready:  # it ended: another takes its place
                    done.close()
                    workers.remove(done)
                    if pending and not failed:
                        workers.append(worker())
                if outcome is None:
                    outcome = (True, WorkerDied(label(items[index]), _worker_death(done.process.exitcode)), None)
                elif on_done is not None and outcome[0]:
                    on_done(index)
                outcomes[index] = outcome
    finally:
        for w in workers:
            if w.index is not None:  # only when this process is interrupted mid-run
                w.process.terminate()
            w.close()
    for ok, value, remote in (outcomes[index] for index in sorted(outcomes)):
        if not ok:
            if remote:
                value.__cause__ = _RemoteTraceback(remote)
            raise value
    return [outcomes[index][1] for index in range(len(items))]


class _Worker:
    """A worker process, this process's end of the pipe to it, and the index of the item it
    runs (None: idle)."""

    def __init__(self, context, function: Callable[[Any], Any], owner: int,
                 initializer: Callable[[], None] | None, forks: bool) -> None:
        self.connection, there = context.Pipe()
        self.process = context.Process(target=_serve, args=(function, there, owner, initializer, forks),
                                       name="rnnexport-worker")
        self.process.start()
        there.close()  # the worker holds the only other end: its death is an end of file here
        self.index: int | None = None

    def give(self, index: int, item: Any) -> None:
        self.index = index
        with contextlib.suppress(OSError):  # gone already: seen as a death when waited for
            self.connection.send(item)

    def outcome(self) -> tuple[bool, Any, str | None] | None:
        """What it sent for its item (see `_serve`); None when it ended without sending it.
        Idle again either way."""
        self.index = None
        try:
            return self.connection.recv() if self.connection.poll() else None
        except (EOFError, OSError):
            return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.send(None)  # ends its loop
        self.process.join()
        self.connection.close()


class _RemoteTraceback(Exception):
    """The traceback of an error raised in a worker, shown as the cause of the error re-raised here."""

    def __str__(self) -> str:
        return f"in the worker process:\n{self.args[0]}"


def _serve(function: Callable[[Any], Any], connection, owner: int, initializer: Callable[[], None] | None,
           forks: bool) -> None:
    """A worker: start (`_worker_start`), then for each item received until None send back
    ``(True, function(item), None)`` or ``(False, error, traceback)``."""
    import traceback

    _worker_start(owner, initializer, forks)
    while True:
        try:
            item = connection.recv()
        except EOFError:  # the owner is gone
            return
        if item is None:
            return
        try:
            outcome = (True, function(item), None)
        except Exception as exc:
            outcome = (False, exc, traceback.format_exc())
        try:
            connection.send(outcome)
        except Exception as exc:  # pickling failed before anything was sent
            connection.send((False, RuntimeError(f"cannot send the result back: {type(exc).__name__}: {exc}"),
                             traceback.format_exc()))


def collect_less() -> None:
    """Collect garbage less often in this process, one of rnnexport's own (the CLI, its workers,
    compile servers, fork servers): the youngest generation every 10,000 net allocations instead
    of CPython's 700. Importing torch and the runtimes makes millions of objects that live as
    long as the process, and CPython's default walks all of them again and again while they are
    made: `export --all --jobs 1` spent 0.70 s of its main process in collections, 0.21 s with
    this (scripts/gc_time.py). Garbage is still collected, in bigger batches. Never called in a
    process rnnexport does not own (the API, the pytest plugin)."""
    import gc

    gc.set_threshold(10_000, *gc.get_threshold()[1:])


def freeze_imported() -> None:
    """Leave every object this process holds now out of its garbage collections from now on
    (``gc.freeze``): what it imported (torch and the runtimes: millions of objects) or inherited
    from the process it was forked from. A full collection walks every tracked object: tens of
    milliseconds each, and in a forked process a copy of every page it touches (copy-on-write).
    Called where a process has imported what it needs and starts its work (workers, compile
    servers, a model's reference). Frozen objects are still freed by reference counting; only
    reference cycles among them are never collected, which for imports is what happens anyway.
    """
    import gc

    gc.freeze()


def describe_death(exitcode: int | None) -> str:
    """How a process ended, from its exit code: ``exit status 0``, ``killed by signal 9,
    SIGKILL``."""
    import signal

    if exitcode is None or exitcode >= 0:
        return f"exit status {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = "unknown signal"
    return f"killed by signal {-exitcode}, {name}"


def _worker_death(exitcode: int | None) -> str:
    hint = ": SIGKILL often means the out-of-memory killer; try fewer --jobs" if exitcode == -9 else ""
    return f"its worker process died ({describe_death(exitcode)}) before returning a result{hint}"


def _worker_start(owner: int, initializer: Callable[[], None] | None, forks: bool) -> None:
    """In a worker: fork its own fork server (`_fork_server_here`) where it `forks`, and run
    `initializer` (before any thread starts: both fork), then watch the process that owns the
    pool and end this one as soon as the owner is gone."""
    import os
    import threading
    import time

    collect_less()
    freeze_imported()  # before the fork server is forked: its children start frozen too
    if forks:
        _fork_server_here()
    if initializer is not None:
        initializer()

    def watch() -> None:
        while not _gone(owner):
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="rnnexport-owner-watch", daemon=True).start()


def _fork_server_here() -> None:
    """Give this process a fork server of its own: a fork of it, made now, before it runs anything.

    Why: a worker forks processes too (a model spec's eager reference, the variants' trials:
    `start_workers`), but CPython's fork server belongs to the process that started it: in its
    children ``ensure_running`` starts another, a fresh interpreter importing torch and the
    runtimes again (seconds of CPU in every worker that needs one; measured in
    scripts/bench_cli.py). A worker is a fork server's child that has only imported, so a
    fork of it now is a fork server in the same state, at the cost of a fork. It runs
    multiprocessing's own server loop (``forkserver.main``), with what ``ensure_running``
    would hand a fresh one: a listening socket and the read end of a pipe whose end of file
    (this process and the children it serves gone) ends it.

    Where the fork server's internals differ from CPython 3.11-3.13's (checked, not assumed),
    nothing is done: the worker starts a fresh one when it first needs it, as before.
    """
    import inspect
    import os
    import socket
    from multiprocessing import connection, forkserver

    server = forkserver._forkserver
    known = ["listener_fd", "alive_r", "preload", "main_path", "sys_path"]
    if (list(inspect.signature(forkserver.main).parameters) != known or server._forkserver_pid is not None
            or not all(hasattr(server, f"_forkserver_{name}") for name in ("address", "alive_fd", "pid"))):
        return
    _short_socket_folder()
    with socket.socket(socket.AF_UNIX) as listener:
        address = connection.arbitrary_address("AF_UNIX")
        listener.bind(address)
        os.chmod(address, 0o600)
        listener.listen()
        alive_r, alive_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the server: only what a fresh one would hold (the pipe to the owner closed)
            try:
                keep = sorted((listener.fileno(), alive_r))
                os.closerange(3, keep[0])
                os.closerange(keep[0] + 1, keep[1])
                os.closerange(keep[1] + 1, os.sysconf("SC_OPEN_MAX"))
                forkserver.main(listener.fileno(), alive_r, [])
            finally:
                os._exit(0)
        os.close(alive_r)
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid


def _short_socket_folder() -> None:
    """Make multiprocessing's temporary folder, where its fork servers' sockets go, one whose
    socket paths fit: a Unix socket's path has at most 107 bytes, and under a long ``TMPDIR``
    (a test's, a CI runner's) starting a fork server failed with "AF_UNIX path too long". Then,
    as Python 3.13 does, the system's own temporary folder holds it. Nothing changes where the
    folder exists already (it is made once per process)."""
    import os
    import tempfile
    from multiprocessing import util

    below = len("/pymp-12345678/listener-12345678")
    if len(os.fsencode(tempfile.gettempdir())) + below <= 107:
        return
    saved = tempfile.tempdir
    tempfile.tempdir = next((d for d in ("/tmp", "/var/tmp", "/usr/tmp") if os.access(d, os.W_OK | os.X_OK)), saved)
    try:
        util.get_temp_dir()
    finally:
        tempfile.tempdir = saved


def _gone(pid: int) -> bool:
    """Whether process `pid` has ended: no such process, a process of another user now holding
    its number, or (Linux) a zombie its parent has not reaped yet."""
    import os

    try:
        os.kill(pid, 0)  # signal 0: only asks whether it is there
    except (ProcessLookupError, PermissionError):
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
