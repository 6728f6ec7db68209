"""What a model spec (`rnnexport.modelspec.ModelSpec`) does in the pipeline: the same spec
protocol as `rnnexport.rnn_behaviour` (see there), for a user's own module. The sweep, golden and
streaming cases are `ModelSpec`'s own; the inputs and feed checks `rnnexport.contract`'s; this
mixin adds the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ModelBehaviour"]


class ModelBehaviour:
    """The spec protocol of `ModelSpec`, beyond its data model (mixed into it)."""

    positional_call = True  # the module's forward() takes its inputs in the spec's order
    weights_file = "weights.safetensors"
    pipeline = "rnnexport.export.model:ModelExporting"  # what it does at each export step (`rnnexport.export.pipeline`)
    num_layers = None  # a module's recurrent layers are found in it, not in the spec
    reference_forks = True  # its eager reference runs the user's code in a forked child (`load_reference`)

    def bench_cases(self) -> list:
        """The documented sizes and the all-largest combination of the sweep (random state)."""
        sweep = self.sweep()
        return list(dict.fromkeys([self.case(dict(c.sizes), "random") for c in (sweep[0], sweep[-1])]))

    def stream_axis(self, name: str) -> int | None:
        """The axis of input `name` along the stream dim, or None."""
        shape = self.input(name).shape if name in self.input_names else ()
        return shape.index(self.stream_dim) if self.stream_dim in shape else None

    def stream_output(self, io: Any) -> tuple[str, int] | None:
        """The first output with an axis along the stream dim (as the manifest's ``io`` records
        it) and that axis: its error per time step is plotted. None without a stream dim."""
        if not self.stream_dim or not isinstance(io, dict):
            return None
        for entry in io.get("outputs") or []:
            axes = entry.get("dynamic_axes") if isinstance(entry, dict) else None
            for axis, dim in (axes or {}).items():
                if dim == self.stream_dim and str(axis).isdigit():
                    return entry["name"], int(axis)
        return None

    def output_checks(self, outputs: dict[str, np.ndarray], case, feeds: dict[str, np.ndarray],
                      labels: dict[str, Any]) -> list:
        return []  # a user's module has no invariants rnnexport knows of

    def locate(self, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], tolerance) -> dict | None:
        return None  # its layers are not separable from the outputs

    def load_state_dict(self, path: Path) -> dict[str, Any]:
        """``weights.safetensors`` (data only).

        Raises:
            ArtifactError: it cannot be loaded.
        """
        from rnnexport.errors import ArtifactError
        from rnnexport.userweights import load_weights

        try:
            return load_weights(path)
        except Exception as exc:
            raise ArtifactError(f"{path.parent}: {exc}") from None

    def reference_unavailable(self, manifest: dict[str, Any], folder: Path, trusted: bool) -> str | None:
        """Why the eager reference cannot run: the module is the user's Python code (not run on
        untrusted artifacts), imported only as recorded at export and unchanged since
        (`rnnexport.userimport.recorded_module`)."""
        if not trusted:
            return (f"the eager reference imports the module's Python code ({self.module}); not run on untrusted "
                    "artifacts (--untrusted)")
        from rnnexport.userimport import recorded_module

        return recorded_module(self, manifest.get("module_source"), folder)[1]

    def load_reference(self, artifact, threads: int):
        """The user's module, imported and run in a child process, where it can neither end nor
        patch this one (`rnnexport.runtimes.isolated`); run with ``infer(feeds)``."""
        import dataclasses

        from rnnexport.errors import ArtifactError
        from rnnexport.runtimes.isolated import IsolatedReference
        from rnnexport.userimport import recorded_module

        source = artifact.manifest.get("module_source")
        resolved, reason = recorded_module(self, source, artifact.path)
        if resolved is None:
            raise ArtifactError(f"{artifact.path}: the eager reference cannot be rebuilt: {reason}")
        child = IsolatedReference(dataclasses.replace(artifact, spec=resolved), source.get("sha256"), threads)
        child.load()
        return child

    def call_reference(self, module, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`module` (this process's: an export in progress) called on named feeds."""
        from rnnexport.usermodel import call_user_model

        return call_user_model(module, self, feeds)

    def uses_sequence_lens(self, manifest: dict[str, Any]) -> bool:
        return any(op.get("sequence_lens") for op in manifest.get("recurrent_ops", []))

    def recurrent_activations(self, manifest: dict[str, Any]) -> set[str]:
        return {op.get("activation") or "Tanh" for op in manifest.get("recurrent_ops", [])}

    def onnx_impossible(self) -> str | None:
        return None  # found by exporting (a format that cannot be made is recorded then)

    def golden_arrays(self, manifest: dict[str, Any], case) -> list[tuple[str, tuple, np.dtype]]:
        from rnnexport.golden import recorded_arrays

        return recorded_arrays(self, manifest, case)

    def output_tensors(self, io: Any) -> tuple:
        """The outputs as a manifest's ``io`` records them (the shape, the dtype and the axes that
        follow a dim), each such axis named after its dim: `ModelSpec.case_bytes` sizes them for
        any case before anything runs. The shape gives an axis that follows a dim by the dim's
        name, as the inputs' do, or (manifests written before) by its documented size.

        Raises:
            ValueError: an output without a well-formed entry.
        """
        from rnnexport.contract import DTYPES, TensorSpec

        entries = io.get("outputs") if isinstance(io, dict) else None
        found = {e.get("name"): e for e in entries if isinstance(e, dict)} if isinstance(entries, list) else {}
        declared = {d.name for d in self.dims} | {d.name for d in self.derived}
        tensors = []
        for name in self.output_names:
            entry = found.get(name, {})
            shape, axes = entry.get("shape"), entry.get("dynamic_axes")
            if (not isinstance(shape, list) or not isinstance(axes, dict)
                    or not all(type(d) is int and 0 <= d < 2**31 or isinstance(d, str) and axes.get(str(i)) == d
                               for i, d in enumerate(shape))
                    or entry.get("dtype") not in (*DTYPES, "float64")
                    or not all(d in declared and a.isdigit() and int(a) < len(shape) for a, d in axes.items())):
                raise ValueError(f"io.outputs lacks a valid entry for {name!r} ({{\"shape\": [...], \"dtype\": ..., "
                                 "\"dynamic_axes\": {axis: dim}})")
            tensors.append(TensorSpec(name, entry["dtype"], tuple(axes.get(str(a), d) for a, d in enumerate(shape))))
        return tuple(tensors)

    def weight_bytes(self) -> int | None:
        return None  # known once the module is built (`rnnexport.export.model`)

    def to_dict(self) -> dict[str, Any]:
        """The TOML keys (paths absolute), as stored in the manifest; `rnnexport.modelspec_load`
        reads them back."""
        data: dict[str, Any] = {"name": self.name, "module": self.module, "module_args": dict(self.module_args),
                                "seed": self.seed}
        if self.weights:
            data["weights"] = self.weights
        if self.weights_key:
            data["weights_key"] = self.weights_key
        # Lists of named tables: JSON writers sort keys, and the order of inputs is forward()'s.
        data["inputs"] = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                           **({"range": list(t.range)} if t.range is not None else {}),
                           **({"sorted": t.sorted} if t.sorted else {}),
                           **({"reaches_max": True} if t.reaches_max else {})} for t in self.inputs]
        data["dims"] = [*({"name": d.name, "size": d.size, "sweep": list(d.sweep),
                           **({"min": d.min} if d.min != 1 else {})} for d in self.dims),
                        *({"name": d.name, "size": d.expr} for d in self.derived)]
        data["outputs"] = {"names": list(self.outputs)}
        if self.state:
            data["outputs"]["state"] = dict(self.state)
            data["outputs"]["stream_dim"] = self.stream_dim
        if self.tolerance:
            data["tolerance"] = json.loads(json.dumps(self.tolerance))
        if self.torchscript:
            data["torchscript"] = self.torchscript
        if self.formats:
            data["formats"] = list(self.formats)
        if self.inputs_fn:
            data["inputs_fn"] = self.inputs_fn
        if self.variants:
            data["variants"] = list(self.variants)
        if self.criteria:
            data["criteria"] = json.loads(json.dumps(self.criteria))
        if self.evaluation:
            data["evaluation"] = json.loads(json.dumps(self.evaluation))
        return data
