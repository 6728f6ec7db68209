"""The runner interface: load an artifact, infer on named numpy feeds, close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rnnexport.artifacts import Artifact
    from rnnexport.inputs import Case

__all__ = ["Runner", "median_ms", "times_ms"]


def median_ms(call, *, warmup: int, repeat: int) -> float:
    """Median wall-clock milliseconds of `call()` over `repeat` runs after `warmup` runs."""
    import statistics

    return statistics.median(times_ms(call, warmup=warmup, repeat=repeat))


def times_ms(call, *, warmup: int, repeat: int) -> list[float]:
    """Wall-clock milliseconds of each of `repeat` runs of `call()` after `warmup` runs."""
    import time

    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


class Runner(ABC):
    """One backend running one artifact. Use as a context manager::

        with make_runner("onnxruntime-cpu", artifact) as runner:
            outputs = runner.infer({"input": x, "h_0": h})

    The registry (`rnnexport.runtimes.RUNTIMES`) owns each runtime's name and the artifact file
    it loads (`requires`); the runner gets them from its entry. Subclasses implement `_load`,
    `_infer` and, where they hold resources, `_close`. Whether the backend can run in this
    environment at all is the registry's check (`rnnexport.runtimes.unavailable_reason`).
    """

    def __init__(self, artifact: Artifact, runtime: str) -> None:
        from rnnexport.runtimes.registry import RUNTIMES, split_row

        base, self.variant = split_row(runtime)  # ``onnxruntime-cpu:int8`` runs the int8 variant's file
        self.name: str = runtime
        self.requires: str = RUNTIMES[base].requires
        if self.variant:
            entry = (artifact.manifest.get("variants") or {}).get(self.variant)
            self.requires = entry["file"] if entry else f"model.{self.variant}.onnx"
        self.artifact = artifact
        self._loaded = False

    def unsupported_reason(self) -> str | None:
        """Why this runner cannot run this artifact at all (the artifact lacks the file it
        loads, or a known limitation of the runtime for this kind of model), or None when it
        can. The runtime is then reported as skipped. Overrides call this first."""
        if self.artifact.file(self.requires) is None:
            from rnnexport.formats import FORMATS, missing_formats

            why = {FORMATS[f]: reason for f, reason in missing_formats(self.artifact.manifest).items()}
            return f"artifact has no {self.requires}" + (f" (not made: {why[self.requires]})" if self.requires in why else "")
        return None

    def skip_reason(self, case: Case) -> str | None:
        """Why `case` is left out on this runner (e.g. too slow), or None when it runs."""
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

    def bench_times(self, feeds: dict[str, np.ndarray], *, warmup: int, repeat: int) -> list[float]:
        """Milliseconds of each of `repeat` runs of `infer` on `feeds`, after `warmup`
        unmeasured runs. Out-of-process runners override this to time inside the client.
        """
        self.load()
        return times_ms(lambda: self._infer(feeds), warmup=warmup, repeat=repeat)

    def bench_ms(self, feeds: dict[str, np.ndarray], *, warmup: int, repeat: int) -> float:
        """Median milliseconds of `bench_times`."""
        import statistics

        return statistics.median(self.bench_times(feeds, warmup=warmup, repeat=repeat))

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
        """Release what `load` acquired (sessions, processes, files); safe to call twice."""
        self._close()
        self._loaded = False

    def _close(self) -> None:
        """Subclasses release their resources here."""

    def __enter__(self) -> Runner:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
