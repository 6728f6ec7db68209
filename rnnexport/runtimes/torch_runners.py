"""PyTorch-side runners: eager (the reference), reloaded TorchScript, reloaded torch.export."""

from __future__ import annotations

import warnings

import numpy as np

from rnnexport.errors import ArtifactError
from rnnexport.runtimes.base import Runner

__all__ = ["TorchEagerRunner", "TorchExportRunner", "TorchScriptRunner"]


class _ModuleRunner(Runner):
    """Calls a module through the artifact calling contract under ``torch.no_grad``."""

    _module = None

    def __init__(self, artifact, runtime: str, threads: int = 0) -> None:
        super().__init__(artifact, runtime)
        self.threads = threads
        self._threads_before: int | None = None

    def load(self) -> None:
        if self.threads > 0 and not self._loaded:
            import torch

            # Process-wide (torch has no per-module setting): restored by close().
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        super().load()

    def close(self) -> None:
        super().close()
        if self._threads_before is not None:
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with warnings.catch_warnings():
            # "LSTM with projections is not supported with oneDNN. Using default implementation":
            # which kernel runs is torch's business; the numbers are what validation checks.
            warnings.filterwarnings("ignore", message="LSTM with projections is not supported", category=UserWarning)
            return self.artifact.spec.call_reference(self._module, feeds)  # its calling contract

    def _close(self) -> None:
        self._module = None


class TorchEagerRunner(_ModuleRunner):
    """The reference, as the spec rebuilds it (`load_reference`): an RNN configuration's module
    from ``weights.pt`` (no RNG involved) behind its calling contract; a model spec's module,
    imported in a child process and loaded with ``weights.safetensors``. Or `module`, given by
    an export in progress."""

    def __init__(self, artifact, runtime: str, threads: int = 0, module=None) -> None:
        super().__init__(artifact, runtime, threads)
        self._given = module
        self._reference = None
        self.requires = artifact.spec.weights_file

    def _load(self) -> None:
        if self._given is None:  # `infer` and `close` (`load_reference`)
            self._reference = self.artifact.spec.load_reference(self.artifact, self.threads)
        else:
            self._module = self._given

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._reference is None:
            return super()._infer(feeds)  # the module given, in this process
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LSTM with projections is not supported", category=UserWarning)
            return self._reference.infer(feeds)

    def _close(self) -> None:
        if self._reference is not None:
            self._reference.close()
            self._reference = None
        super()._close()


class TorchScriptRunner(_ModuleRunner):
    """``model.pt`` reloaded with ``torch.jit.load``."""

    def _load(self) -> None:
        import torch

        path = self.artifact.path / "model.pt"
        try:
            with warnings.catch_warnings():
                # "torch.jit.load is deprecated" (torch 2.13): loading is what we test here.
                warnings.simplefilter("ignore", DeprecationWarning)
                self._module = torch.jit.load(str(self.artifact.file("model.pt")), map_location="cpu").eval()
        except Exception as exc:  # torch raises RuntimeError or ValueError for a bad archive
            raise ArtifactError(f"{path}: cannot load TorchScript ({type(exc).__name__}: {exc})") from None


class TorchExportRunner(_ModuleRunner):
    """``model.pt2`` reloaded with ``torch.export.load`` (after ``import rnnexport.ops``).

    The archive is checked first (`rnnexport.artifacts.check_program_archive`) and loaded with every ``torch.load``
    forced to ``weights_only`` (`rnnexport.artifacts.weights_only_loading`): it never falls
    back to unrestricted unpickling.
    """

    def _load(self) -> None:
        import torch

        import rnnexport.ops  # registers rnnexport::rnn, which the program calls
        from rnnexport.pt2check import check_program_archive, weights_only_loading

        path = self.artifact.path / "model.pt2"
        verified = self.artifact.file("model.pt2")
        check_program_archive(verified)  # checked when the artifact was opened (a no-op for the same file)
        try:
            with weights_only_loading():
                self._module = torch.export.load(str(verified)).module()
        except Exception as exc:
            raise ArtifactError(f"{path}: cannot load torch.export program ({type(exc).__name__}: {exc})") from None
