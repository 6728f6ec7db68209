"""Runners that drive deployment clients outside Python: LibTorch C++ and ONNX Runtime for Node.

Both clients (``rnnexport/clients/``) speak one line protocol on stdin/stdout (``LOAD PATH``,
``RUN DIR``, ``BENCH DIR WARMUP REPEAT``; answers ``ok`` or ``error <message>``) and exchange
tensors as raw files. A client process is started once per kind and thread count and serves
the artifacts of this Python process in turn (`LOAD` per artifact): starting LibTorch and
ending it cost about 0.6 s an artifact. Their toolchains are optional: a missing or broken one
makes the runtime unavailable, with the reason, never a crash.

- ``libtorch-cpp`` is built with CMake against the headers and libraries inside the installed
  torch wheel (``torch.utils.cmake_prefix_path``), once per torch version and source, in
  ``$RNNEXPORT_CACHE/libtorch-cpp/`` (default ``~/.cache/rnnexport``).
- ``onnxruntime-node`` needs ``node`` and the npm package, installed with
  ``npm install --prefix ~/.cache/rnnexport/node onnxruntime-node@1.30.0 --ignore-scripts``
  (its install script downloads CUDA binaries from outside the registry; the CPU binary is
  bundled). ``$RNNEXPORT_NODE_PREFIX`` overrides the prefix.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from rnnexport.errors import ArtifactError, RuntimeUnavailableError
from rnnexport.runtimes.base import Runner

__all__ = [
    "LibTorchCppRunner", "NODE_PACKAGE", "NodeRunner", "cache_dir", "libtorch_binary", "libtorch_status",
    "node_prefix", "node_status",
]

NODE_PACKAGE = "onnxruntime-node@1.30.0"
_BINARY = "rnnexport_libtorch"


def cache_dir() -> Path:
    return Path(os.environ.get("RNNEXPORT_CACHE") or Path.home() / ".cache" / "rnnexport")


def _client_source(name: str) -> Path:
    return Path(str(resources.files("rnnexport.clients") / name))


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


@functools.lru_cache(maxsize=1)
def _libtorch_plan() -> tuple[list[list[str]] | None, Path | None, str | None]:
    """How the client would be built: its CMake steps and the binary they make (in a folder
    keyed by the LibTorch it links and its source), or why it cannot be. Builds nothing."""
    cmake = shutil.which("cmake")
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cmake is None:
        return None, None, "cmake not found on PATH"
    if compiler is None:
        return None, None, "no C++ compiler found (c++, g++ or clang++; or set CXX)"
    import torch.utils

    source = _client_source("libtorch_cpp")
    if not (source / "main.cpp").is_file():
        return None, None, f"rnnexport's LibTorch client source is missing ({source / 'main.cpp'}): reinstall rnnexport"
    digest = hashlib.sha256(_libtorch_identity().encode())
    for file in sorted(source.iterdir()):
        if file.is_file():
            digest.update(file.name.encode() + file.read_bytes())
    build = cache_dir() / "libtorch-cpp" / digest.hexdigest()[:16]
    steps = [
        [cmake, "-S", str(source), "-B", str(build), f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
         "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_CXX_COMPILER={compiler}"],
        [cmake, "--build", str(build), "-j", str(os.cpu_count() or 2)],
    ]
    return steps, build / _BINARY, None


@functools.lru_cache(maxsize=1)
def _libtorch_build() -> tuple[Path | None, str | None]:
    """The client binary, built now if it is not yet (once per LibTorch and source, under a
    lock: two processes never build into one folder), or why it cannot be."""
    from filelock import FileLock

    steps, binary, reason = _libtorch_plan()
    if binary is None:
        return None, reason
    if binary.is_file():
        return binary, None
    binary.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(binary.parent) + ".lock"):
        if binary.is_file():  # another process built it while this one waited
            return binary, None
        if sys.stderr.isatty():  # a minute or two, once: say so where someone is watching
            print(f"rnnexport: building the LibTorch client once, into {binary.parent} (CMake)", file=sys.stderr)
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                return None, f"LibTorch client build failed ({' '.join(step[:2])}): {_tail(done.stdout + done.stderr)}"
    if not binary.is_file():
        return None, f"LibTorch client build produced no {binary}"
    return binary, None


def _libtorch_identity() -> str:
    """What the client binary links against: the torch version, the folder of its LibTorch
    libraries, and each library's size and modification time. A binary built in one venv is
    never reused from another (after the first venv is deleted, its libc10.so is gone)."""
    import torch

    lib = Path(torch.__file__).resolve().parent / "lib"
    parts = [torch.__version__, str(lib)]
    for library in sorted(lib.glob("*.so*")):
        stat = library.stat()
        parts.append(f"{library.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "\n".join(parts)


def libtorch_status() -> str | None:
    """None if the LibTorch client is built or can be (CMake, a C++ compiler and its source are
    here), else why not. Builds nothing: the build is `libtorch_binary`'s, on first use."""
    return _libtorch_plan()[2]


def libtorch_binary() -> Path:
    """The client binary, built on first use.

    Raises:
        RuntimeUnavailableError: it cannot be built here (the build's last lines say why).
    """
    binary, reason = _libtorch_build()
    if binary is None:
        raise RuntimeUnavailableError(f"libtorch-cpp: {reason}")
    return binary


def node_prefix() -> Path:
    return Path(os.environ.get("RNNEXPORT_NODE_PREFIX") or cache_dir() / "node")


def _node_env() -> dict[str, str]:
    return {**os.environ, "NODE_PATH": str(node_prefix() / "node_modules")}


@functools.lru_cache(maxsize=1)
def node_status() -> str | None:
    """None if node and onnxruntime-node load here, else why not."""
    node = shutil.which("node")
    if node is None:
        return "node not found on PATH"
    script = _client_source("node") / "run.js"
    if not script.is_file():
        return f"rnnexport's Node client is missing ({script}): reinstall rnnexport"
    if not (node_prefix() / "node_modules" / "onnxruntime-node").is_dir():
        return (f"npm package onnxruntime-node is not installed under {node_prefix()}: run "
                f"`npm install --prefix {node_prefix()} {NODE_PACKAGE} --ignore-scripts`")
    done = subprocess.run([node, "-e", "require('onnxruntime-node')"], capture_output=True, text=True,
                          env=_node_env(), check=False, timeout=120)
    if done.returncode != 0:
        return f"onnxruntime-node does not load: {_tail(done.stderr, 3)}"
    return None


class _Client:
    """One client process: started with no model, told which model to serve with ``LOAD``."""

    def __init__(self, name: str, command: list[str], env: dict[str, str] | None) -> None:
        self.name = name
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                        text=True, bufsize=1, env=env)
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            message = ready.removeprefix("error ") or self.stderr_tail()
            self.stop()
            raise ArtifactError(f"{name}: the client does not start: {message}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stderr_tail(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return _tail(self._stderr.read()) or "(no output)"

    def request(self, line: str) -> str:
        """Send one request; the reply after ``ok``. Raises RuntimeError on ``error`` or exit."""
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass
        reply = self.process.stdout.readline().strip()
        if not reply:
            raise RuntimeError(f"{self.name} client exited ({self.process.poll()}): {self.stderr_tail()}")
        if not reply.startswith("ok"):
            raise RuntimeError(f"{self.name} client: {reply.removeprefix('error ')}")
        return reply

    def stop(self) -> None:
        """End the process now: it holds nothing to flush, and waiting for LibTorch to unwind
        its exit handlers costs about 0.2 s."""
        if self.process is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            self.process.kill()
            self.process.wait()
            self.process = None
        self._stderr.close()


_IDLE: dict[tuple, list[_Client]] = {}  # client processes not serving a runner now, by command


def _take_client(name: str, command: list[str], env: dict[str, str] | None) -> _Client:
    """An idle client of this command (still running), or a new one."""
    idle = _IDLE.get(tuple(command), [])
    while idle:
        client = idle.pop()
        if client.alive:
            return client
        client.stop()
    return _Client(name, command, env)


def _give_back(command: list[str], client: _Client) -> None:
    if client.alive:
        _IDLE.setdefault(tuple(command), []).append(client)
    else:
        client.stop()


@atexit.register
def stop_idle_clients() -> None:
    """End every idle client process (at exit; a worker process that exits without atexit
    closes their stdin by exiting, and they end on their own)."""
    for clients in _IDLE.values():
        for client in clients:
            client.stop()
    _IDLE.clear()


class _ClientRunner(Runner):
    """A client process (shared with the artifacts before and after), fed through files in a
    private temporary folder."""

    _positional = False  # the client calls m(*inputs) in file order when told "positional"

    def __init__(self, artifact, runtime: str, threads: int = 0) -> None:
        super().__init__(artifact, runtime)
        self.threads = threads
        self._client: _Client | None = None
        self._client_command: list[str] = []
        self._tmp: tempfile.TemporaryDirectory | None = None

    def _command(self) -> tuple[list[str], dict[str, str] | None]:
        """The command starting a client with no model, and its environment."""
        raise NotImplementedError

    def io_names(self) -> None:
        return None  # the client names its outputs with each result

    def unsupported_reason(self) -> str | None:
        if reason := super().unsupported_reason():
            return reason
        spec = self.artifact.spec
        odd = [n for n in spec.input_names if spec.dtype(n) not in ("float32", "int64")]
        odd += [o["name"] for o in self.artifact.manifest["io"]["outputs"] if o.get("dtype", "float32") != "float32"]
        if odd:
            return f"the {self.name} client exchanges float32 and int64 inputs and float32 outputs only ({odd[0]!r})"
        return None

    def _load(self) -> None:
        self._client_command, env = self._command()
        self._client = _take_client(self.name, self._client_command, env)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"rnnexport-{self.name}-")
        try:
            self._client.request(f"LOAD {os.path.abspath(self.artifact.file(self.requires))}")
        except RuntimeError as exc:
            self.close()
            message = str(exc).removeprefix(f"{self.name} client: ")
            raise ArtifactError(f"{self.name}: the client cannot load the model: {message}") from None

    def _request(self, line: str) -> str:
        assert self._client is not None
        return self._client.request(line)

    def _write_inputs(self, feeds: dict[str, np.ndarray]) -> Path:
        folder = Path(tempfile.mkdtemp(dir=self._tmp.name))
        spec = self.artifact.spec
        lines = ["positional"] if spec.positional_call and self._positional else []
        for name in spec.input_names:
            dtype = spec.dtype(name)
            array = np.ascontiguousarray(feeds[name], dtype="<i8" if dtype == "int64" else "<f4")
            array.tofile(folder / f"{name}.bin")
            lines.append(" ".join([name, dtype, str(array.ndim), *map(str, array.shape)]))
        (folder / "inputs.txt").write_text("\n".join(lines) + "\n")
        return folder

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        folder = self._write_inputs(feeds)
        try:
            self._request(f"RUN {folder}")
            outputs = {}
            for line in (folder / "outputs.txt").read_text().split("\n"):
                if not line.strip():
                    continue
                name, ndim, *dims = line.split()
                shape = tuple(int(d) for d in dims[: int(ndim)])
                # LibTorch names outputs by tuple position; Node by graph output name.
                key = self.artifact.spec.output_names[int(name)] if name.isdigit() else name
                outputs[key] = np.fromfile(folder / f"{name}.bin", dtype="<f4").reshape(shape)
            return outputs
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def bench_times(self, feeds: dict[str, np.ndarray], *, warmup: int, repeat: int) -> list[float]:
        """Milliseconds of each timed run, measured inside the client (no file or pipe overhead)."""
        self.load()
        folder = self._write_inputs(feeds)
        try:
            return [float(t) for t in self._request(f"BENCH {folder} {warmup} {repeat}").split()[1:]]
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _close(self) -> None:
        if self._client is not None:
            _give_back(self._client_command, self._client)
            self._client = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class LibTorchCppRunner(_ClientRunner):
    """``model.pt`` loaded by a C++ program linked against LibTorch."""

    _positional = True

    def _command(self):
        return [str(libtorch_binary()), "-", str(self.threads)], None


class NodeRunner(_ClientRunner):
    """``model.onnx`` in ONNX Runtime for Node.js (CPU)."""

    def _command(self):
        script = _client_source("node") / "run.js"
        return ["node", str(script), "-", str(self.threads)], _node_env()
