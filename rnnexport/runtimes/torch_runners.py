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
        from rnnexport.builder import call_model

        with warnings.catch_warnings():
            # "LSTM with projections is not supported with oneDNN. Using default implementation":
            # which kernel runs is torch's business; the numbers are what validation checks.
            warnings.filterwarnings("ignore", message="LSTM with projections is not supported", category=UserWarning)
            if self.artifact.spec.kind == "model":
                from rnnexport.usermodel import call_user_model

                return call_user_model(self._module, self.artifact.spec, feeds)
            return call_model(self._module, self.artifact.spec, feeds)

    def _close(self) -> None:
        self._module = None


class TorchEagerRunner(_ModuleRunner):
    """The reference: the module rebuilt from ``weights.pt`` (no RNG involved), behind the
    calling contract (`rnnexport.builder.wrap`). For a model spec: the user's module, imported
    and loaded with ``weights.safetensors`` (or `module`, given by an export in progress)."""

    def __init__(self, artifact, runtime: str, threads: int = 0, module=None) -> None:
        super().__init__(artifact, runtime, threads)
        self._given = module
        self._child = None
        if artifact.spec.kind == "model":
            self.requires = "weights.safetensors"

    def _load(self) -> None:
        from rnnexport.builder import module_from_state_dict, wrap

        spec = self.artifact.spec
        if spec.kind == "model":
            from rnnexport.userimport import recorded_module

            if self._given is not None:
                self._module = self._given
                return
            source = self.artifact.manifest.get("module_source")
            resolved, reason = recorded_module(spec, source, self.artifact.path)
            if resolved is None:
                raise ArtifactError(f"{self.artifact.path}: the eager reference cannot be rebuilt: {reason}")
            # The user's code: imported and run in a child process, where it can neither end
            # nor patch this one (`rnnexport.runtimes.isolated`).
            import dataclasses

            from rnnexport.runtimes.isolated import IsolatedReference

            self._child = IsolatedReference(dataclasses.replace(self.artifact, spec=resolved), source.get("sha256"),
                                            self.threads)
            self._child.load()
            return
        try:
            self._module = wrap(module_from_state_dict(spec, self.artifact.state_dict()), spec)
        except (RuntimeError, KeyError) as exc:
            raise ArtifactError(f"{self.artifact.path}: weights.pt does not fit the spec ({exc})") from None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._child.infer(feeds) if self._child is not None else super()._infer(feeds)

    def _close(self) -> None:
        if self._child is not None:
            self._child.close()
            self._child = None
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
