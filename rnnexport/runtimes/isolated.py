"""The eager reference of a user's module, run in a child process.

Importing a user's module runs its code. Validation does it in a child process (forked from the
fork server of `rnnexport.workers`, which imported torch once), so that the module can neither
end the validating process (``os._exit(0)`` at import would read as a clean exit) nor patch it
(rnnexport's comparisons, numpy). The child sends back data only: outputs as ``.npz`` bytes read
with ``allow_pickle=False``, errors as text; nothing it sends is unpickled here.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from rnnexport.errors import ArtifactError

__all__ = ["IsolatedReference"]

class IsolatedReference:
    """A `TorchEagerRunner` of `artifact` living in a child process: `load` imports the module
    (its file checked against `sha256` as it is read) and builds it, `infer` runs it.

    A child that ends (killed, ``os._exit``) or fails is an `ArtifactError` naming the
    artifact, never a result.
    """

    def __init__(self, artifact, sha256: str | None, threads: int) -> None:
        self.label = f"{artifact.path}: the eager reference (module {artifact.spec.module})"
        context = self.start_server()
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, artifact, sha256, threads), daemon=True,
                                        name="rnnexport-reference")
        self._process.start()
        child.close()

    @staticmethod
    def start_server():
        """The context the references start in (`rnnexport.workers.start_workers`): called
        early, its fork server imports while this process does other work. When it starts the
        server, what the reference runs needs: the ``torch`` runtime's imports, not the other
        runtimes' (the first start decides; validating with variants starts it earlier with these
        and the trials' imports: `rnnexport.runtimes.probe.start_probing`)."""
        from rnnexport.runtimes.registry import runtime_imports
        from rnnexport.workers import start_workers

        return start_workers(runtime_imports(["torch"]))

    def load(self) -> None:
        self._call("load")

    def load_inputs(self, sha256: str | None) -> None:
        """Import the spec's ``inputs_fn`` in the child (checked against `sha256`)."""
        self._call("load_inputs", sha256)

    def inputs(self, case) -> dict[str, np.ndarray]:
        """The inputs of `case`, made by the spec's ``inputs_fn`` in the child."""
        return self._arrays(self._call("inputs", case))

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._arrays(self._call("infer", feeds))

    def _arrays(self, data: bytes) -> dict[str, np.ndarray]:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                return {name: arrays[name] for name in arrays.files}
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{self.label}: unreadable outputs from its process ({exc})") from None

    def close(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join(5)
        self._conn.close()

    def _call(self, command: str, payload: Any = None) -> bytes:
        try:
            self._conn.send((command, payload))
            reply = self._conn.recv_bytes()
        except (EOFError, OSError):
            from rnnexport.workers import describe_death

            self._process.join(5)
            raise ArtifactError(f"{self.label}: its process ended ({describe_death(self._process.exitcode)}) while "
                                f"running {command!r}; the module ends the process it runs in") from None
        if reply[:1] == b"E":
            raise ArtifactError(f"{self.label}: {reply[1:].decode('utf-8', 'replace')}")
        return reply[1:]


def _serve(conn, artifact, sha256: str | None, threads: int) -> None:
    """In the child: load on ``load``, run on ``infer``; end when the parent is gone. What the
    module prints goes nowhere: the validation's output is rnnexport's."""
    from rnnexport.runtimes.torch_runners import TorchEagerRunner
    from rnnexport.userimport import import_module
    from rnnexport.usermodel import build_user_module
    from rnnexport.workers import collect_less, freeze_imported

    collect_less()
    freeze_imported()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)

    runner = make = None
    while True:
        try:
            command, payload = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        try:
            if command == "load":
                import_module(artifact.spec, sha256)
                module = build_user_module(artifact.spec, artifact.state_dict())
                runner = TorchEagerRunner(artifact, "torch", threads=threads, module=module)
                runner.load()
                reply = b"O"
            elif command == "load_inputs":
                from rnnexport.userinputs import load_inputs_fn

                make = load_inputs_fn(artifact.spec, payload)
                reply = b"O"
            else:
                from rnnexport.userinputs import case_inputs

                arrays = runner.infer(payload) if command == "infer" else case_inputs(artifact.spec, payload, make)
                buffer = io.BytesIO()
                np.savez(buffer, **arrays)
                reply = b"O" + buffer.getvalue()
        except BaseException as exc:  # one line back, whatever the module raised
            lines = str(exc).strip().splitlines() or [""]
            reply = b"E" + f"{type(exc).__name__}: {lines[0][:500]}".encode()
        conn.send_bytes(reply)
