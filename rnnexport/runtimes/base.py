"""The runner interface: load an artifact, infer on named numpy feeds, close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from rnnexport.artifacts import Artifact
    from rnnexport.inputs import Case

__all__ = ["Runner", "median_ms"]


def median_ms(call, *, warmup: int, repeat: int) -> float:
    """Median wall-clock milliseconds of `call()` over `repeat` runs after `warmup` runs."""
    import statistics
    import time

    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


class Runner(ABC):
    """One backend running one artifact. Use as a context manager::

        with OnnxRuntimeRunner(artifact, "CPUExecutionProvider") as runner:
            outputs = runner.infer({"input": x, "h_0": h})

    Subclasses set `name` and `requires` (the artifact file they load) and implement
    `_load` and `_infer`. Whether the backend can run in this environment at all is the
    registry's check (`rnnexport.runtimes.RuntimeInfo.check`).
    """

    name: ClassVar[str]
    requires: ClassVar[str | None] = None

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self._loaded = False

    def unsupported(self) -> str | None:
        """None when this runner can run this artifact at all, else why not: the artifact lacks
        the file it loads, or a known limitation of the runtime for this kind of model.
        The runtime is then reported as skipped. Overrides call this first."""
        if self.requires is not None and self.artifact.file(self.requires) is None:
            return f"artifact has no {self.requires}"
        return None

    def supports(self, case: Case) -> str | None:
        """None when this runner runs `case`, else why it is left out (e.g. too slow)."""
        return None

    def load(self) -> None:
        if not self._loaded:
            self._load()
            self._loaded = True

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by graph output name (``output``, ``h_n``[, ``c_n``]), as float32 arrays.

        Raises:
            UsageError: feeds that do not fit the artifact (see `rnnexport.inputs.check_feeds`).
        """
        from rnnexport.inputs import check_feeds

        check_feeds(self.artifact.spec, feeds)
        self.load()
        return self._infer(feeds)

    def bench_ms(self, feeds: dict[str, np.ndarray], *, warmup: int, repeat: int) -> float:
        """Median milliseconds of `infer` on `feeds`, after `warmup` unmeasured runs.

        Out-of-process runners override this to time inside the client.
        """
        self.load()
        return median_ms(lambda: self._infer(feeds), warmup=warmup, repeat=repeat)

    def io_names(self) -> tuple[list[str], list[str]] | None:
        """The input and output names of what was loaded (call after `load`), or None where
        the runtime tells them only with each result. Default: the calling contract's names,
        which the PyTorch-side runners are called by."""
        spec = self.artifact.spec
        return list(spec.input_names), list(spec.output_names)

    def describe(self) -> dict[str, str]:
        """Settings worth recording with results (e.g. the inference precision used)."""
        return {}

    def close(self) -> None:
        self._loaded = False

    def __enter__(self) -> Runner:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
