"""ONNX-side runners: ONNX Runtime (one class, any execution provider) and the ONNX reference
evaluator (an independent pure-Python implementation of the spec)."""

from __future__ import annotations

import functools

import numpy as np

from rnnexport.errors import ArtifactError, RuntimeUnavailableError
from rnnexport.runtimes.base import Runner

__all__ = ["OnnxReferenceRunner", "OnnxRuntimeRunner", "OpenVinoRunner", "cuda_provider_status", "identity_model"]


def identity_model(feeds: dict[str, np.ndarray]) -> bytes:
    """A serialized ONNX model passing every feed through ``Identity`` (outputs ``<name>_out``),
    each declared with its array's element type and shape: float32 states, int64 lengths."""
    from onnx import helper

    def info(name: str, value: np.ndarray):
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape))

    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"{name}_out"]) for name in feeds], "identity",
        [info(name, value) for name, value in feeds.items()],
        [info(f"{name}_out", value) for name, value in feeds.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


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
    model = identity_model({"x": np.zeros(1, dtype=np.float32)})
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failed CUDA load logs errors; the result says it all
    previous = 3  # errors only (rnnexport's default, `OnnxRuntimeRunner._load`)
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(
            model, options,
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

    def __init__(self, artifact, runtime: str, provider: str = "CPUExecutionProvider", threads: int = 0) -> None:
        super().__init__(artifact, runtime)
        self.provider = provider
        self.threads = threads
        self._session = None

    def _load(self) -> None:
        import onnxruntime as ort

        path = self.artifact.path / self.requires
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        # Errors only, for the process-wide logger too: its coloured warnings would land in the
        # user's terminal between rnnexport's lines.
        ort.set_default_logger_severity(3)
        try:
            self._session = ort.InferenceSession(str(self.artifact.file(self.requires)), options, providers=[self.provider])
        except Exception as exc:
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {exc})") from None
        used = self._session.get_providers()[0]
        if used != self.provider:
            raise RuntimeUnavailableError(
                f"{self.name}: asked for {self.provider} but the session runs on {used}"
            )

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self._session.get_outputs()]
        inputs = {i.name: feeds[i.name] for i in self._session.get_inputs()}
        if self.provider == "CUDAExecutionProvider":
            # I/O binding: inputs copied to the GPU once, outputs allocated there by ORT.
            binding = self._session.io_binding()
            for name, value in inputs.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            for name in names:
                binding.bind_output(name, "cuda")
            self._session.run_with_iobinding(binding)
            return dict(zip(names, binding.copy_outputs_to_cpu()))
        return dict(zip(names, self._session.run(names, inputs)))

    def io_names(self) -> tuple[list[str], list[str]]:
        return [i.name for i in self._session.get_inputs()], [o.name for o in self._session.get_outputs()]

    def describe(self) -> dict[str, str]:
        return {"provider": self.provider, "intra_op_num_threads": str(self.threads)}

    def _close(self) -> None:
        self._session = None


class OnnxReferenceRunner(Runner):
    """``onnx.reference.ReferenceEvaluator``: slow, so kept to small cases by default.

    Args:
        artifact: The artifact to run.
        max_steps: Largest ``batch * seq`` it runs; larger cases are reported as left out.
    """

    def __init__(self, artifact, runtime: str, max_steps: int = 1000, threads: int = 0) -> None:
        super().__init__(artifact, runtime)
        self.max_steps = max_steps
        self._evaluator = None

    def unsupported_reason(self) -> str | None:
        spec = self.artifact.spec
        if reason := super().unsupported_reason():
            return reason
        if self.artifact.uses_sequence_lens:
            # onnx 1.23's reference RNN/GRU/LSTM ignore sequence_lens (errors up to 0.5 measured).
            return "onnx.reference ignores sequence_lens: variable-length models are not run on it"
        if "Relu" in spec.recurrent_activations(self.artifact.manifest):
            return "onnx.reference's RNN implements the Tanh activation only"
        return None

    def skip_reason(self, case) -> str | None:
        if self.artifact.spec.case_steps(case) > self.max_steps:
            return f"onnx-reference runs cases up to batch*seq={self.max_steps} (slow, pure Python)"
        return None

    def _load(self) -> None:
        import onnx
        from onnx.reference import ReferenceEvaluator

        path = self.artifact.path / self.requires
        try:
            self._evaluator = ReferenceEvaluator(onnx.load(str(self.artifact.file(self.requires))))
        except Exception as exc:
            raise ArtifactError(f"{path}: the ONNX reference evaluator cannot load it ({exc})") from None

    def io_names(self) -> tuple[list[str], list[str]]:
        return list(self._evaluator.input_names), list(self._evaluator.output_names)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self._evaluator.output_names)
        values = self._evaluator.run(None, {name: feeds[name] for name in self._evaluator.input_names})
        return dict(zip(names, values))

    def _close(self) -> None:
        self._evaluator = None


class OpenVinoRunner(Runner):
    """``model.onnx`` compiled by OpenVINO for its CPU device, forced to f32 inference.

    OpenVINO's CPU plugin computes in bf16 by default on processors that have it (errors around
    1e-2 for these RNNs); ``INFERENCE_PRECISION_HINT=f32`` gives float32 results. The precision
    the compiled model really uses is read back and recorded (`describe`).

    Args:
        artifact: The artifact to run.
        threads: ``INFERENCE_NUM_THREADS``; 0 (default) lets OpenVINO choose.
        precision: The inference precision hint. Default ``f32``.
    """

    def __init__(self, artifact, runtime: str, threads: int = 0, precision: str = "f32") -> None:
        super().__init__(artifact, runtime)
        self.threads = threads
        self.precision = precision
        self._compiled = None
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._used_precision = "?"

    def _load(self) -> None:
        from rnnexport.runtimes.openvino_quiet import ov  # not `import openvino`: see there

        path = self.artifact.path / self.requires
        config = {"INFERENCE_PRECISION_HINT": self.precision}
        if self.threads > 0:
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:
            core = ov.Core()
            self._compiled = core.compile_model(core.read_model(str(self.artifact.file(self.requires))), "CPU", config)
        except Exception as exc:
            raise ArtifactError(f"{path}: OpenVINO cannot compile it ({type(exc).__name__}: {exc})") from None
        self._inputs = self._port_names(self._compiled.inputs)
        self._outputs = self._port_names(self._compiled.outputs)
        used = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self._used_precision = used.get_type_name() if hasattr(used, "get_type_name") else str(used)

    def unsupported_reason(self) -> str | None:
        if reason := super().unsupported_reason():
            return reason
        if self.artifact.uses_sequence_lens:
            # OpenVINO 2026.4.1 CPU: graph outputs differ from ONNX Runtime by up to 1.3 when
            # sequence_lens varies (exact when all lengths are full); a single RNN op with static
            # shapes is right. tests/runtimes/test_clients.py keeps checking that it still fails.
            return "OpenVINO 2026.4 gives wrong results for variable-length (sequence_lens) RNN graphs"
        return None

    def _port_names(self, ports) -> list[str]:
        # A tensor can carry several names (e.g. "/Cast_1_output_0" and "output").
        wanted = set(self.artifact.spec.input_names) | set(self.artifact.spec.output_names)
        return [next((n for n in sorted(port.get_names()) if n in wanted), port.get_any_name()) for port in ports]

    def io_names(self) -> tuple[list[str], list[str]]:
        return list(self._inputs), list(self._outputs)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._compiled({name: feeds[name] for name in self._inputs})
        return {name: np.array(result[port]) for name, port in zip(self._outputs, self._compiled.outputs)}

    def describe(self) -> dict[str, str]:
        return {"device": "CPU", "inference_precision": self._used_precision}

    def _close(self) -> None:
        self._compiled = None
