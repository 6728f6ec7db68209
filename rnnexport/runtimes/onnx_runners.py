"""ONNX-side runners: ONNX Runtime (one class, any execution provider) and the ONNX reference
evaluator (an independent pure-Python implementation of the spec)."""

from __future__ import annotations

import functools

import numpy as np

from rnnexport.errors import ArtifactError, RuntimeUnavailableError
from rnnexport.runtimes.base import Runner

__all__ = ["OnnxReferenceRunner", "OnnxRuntimeRunner", "cuda_provider_status"]


@functools.lru_cache(maxsize=1)
def cuda_provider_status() -> str | None:
    """None if ONNX Runtime really runs on CUDA here, else why not.

    onnxruntime-gpu lists ``CUDAExecutionProvider`` even without a GPU and then silently runs
    on CPU, so a tiny session is created and asked which provider it really got.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime build has no CUDAExecutionProvider"
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failed CUDA load logs errors; the result says it all
    previous = 2
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(
            onnx.shape_inference.infer_shapes(model).SerializeToString(), options,
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
        got = session.get_providers()[0]
    except Exception as exc:
        return f"CUDA session creation failed: {exc}"
    finally:
        ort.set_default_logger_severity(previous)
    if got != "CUDAExecutionProvider":
        return "no usable CUDA GPU (onnxruntime fell back to CPU)"
    return None


class OnnxRuntimeRunner(Runner):
    """``model.onnx`` in one ONNX Runtime session, created once and reused for every case.

    Args:
        artifact: The artifact to run.
        provider: Execution provider asked for; the session must really use it first.
        threads: ``intra_op_num_threads``; 0 (default) lets ONNX Runtime choose.
    """

    requires = "model.onnx"
    name = "onnxruntime-cpu"

    def __init__(self, artifact, provider: str = "CPUExecutionProvider", threads: int = 0) -> None:
        super().__init__(artifact)
        self.provider = provider
        self.threads = threads
        self.name = {"CPUExecutionProvider": "onnxruntime-cpu",
                     "CUDAExecutionProvider": "onnxruntime-cuda"}.get(provider, provider)
        self._session = None

    def _load(self) -> None:
        import onnxruntime as ort

        path = self.artifact.path / "model.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=[self.provider])
        except Exception as exc:
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {exc})") from None
        used = self._session.get_providers()[0]
        if used != self.provider:
            raise RuntimeUnavailableError(
                f"{self.name}: asked for {self.provider} but the session runs on {used}"
            )

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self._session.get_outputs()]
        values = self._session.run(names, {i.name: feeds[i.name] for i in self._session.get_inputs()})
        return dict(zip(names, values))

    def close(self) -> None:
        self._session = None
        super().close()


class OnnxReferenceRunner(Runner):
    """``onnx.reference.ReferenceEvaluator``: slow, so kept to small cases by default.

    Args:
        artifact: The artifact to run.
        max_steps: Largest ``batch * seq`` it runs; larger cases are reported as left out.
    """

    name = "onnx-reference"
    requires = "model.onnx"

    def __init__(self, artifact, max_steps: int = 1000) -> None:
        super().__init__(artifact)
        self.max_steps = max_steps
        self._evaluator = None

    def supports(self, case) -> str | None:
        if case.batch * case.seq > self.max_steps:
            return f"onnx-reference runs cases up to batch*seq={self.max_steps} (slow, pure Python)"
        return None

    def _load(self) -> None:
        import onnx
        from onnx.reference import ReferenceEvaluator

        path = self.artifact.path / "model.onnx"
        try:
            self._evaluator = ReferenceEvaluator(onnx.load(str(path)))
        except Exception as exc:
            raise ArtifactError(f"{path}: the ONNX reference evaluator cannot load it ({exc})") from None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self._evaluator.output_names)
        values = self._evaluator.run(None, {name: feeds[name] for name in self._evaluator.input_names})
        return dict(zip(names, values))

    def close(self) -> None:
        self._evaluator = None
        super().close()
