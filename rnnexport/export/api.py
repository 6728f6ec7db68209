"""`export_model`: export an ``nn.Module`` in memory, no TOML needed. Its class and the keys
given become a model spec, exported by the one pipeline (`rnnexport.export.pipeline`) with the
module itself as the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnexport.export.pipeline import export_artifact
from rnnexport.modelspec_load import model_spec_from_dict
from rnnexport.staging import DEFAULT_LOCK_TIMEOUT

__all__ = ["export_model"]


def export_model(
    module,
    *,
    inputs: dict[str, dict[str, Any]],
    dims: dict[str, dict[str, Any]],
    outputs: list[str] | dict[str, Any],
    name: str,
    out: str | Path = "models",
    module_args: dict[str, Any] | None = None,
    seed: int = 0,
    tolerance: dict[str, Any] | None = None,
    exporter: str | None = None,
    opset: int = 18,
    torchscript_method: str | None = None,
    validate: bool = True,
    runtimes: list[str] | None = None,
    max_memory: int | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    formats: list[str] | str | None = None,
    variants: list[str] | str | None = None,
):
    """Export an ``nn.Module`` in memory (trained or not), no TOML needed. The module is left
    as it was: its weights, and each submodule's train/eval mode (the export runs in eval mode).

    The keys are those of a model spec (docs/model-spec.md)::

        export_model(model, name="tagger", out="models",
                     inputs={"tokens": {"dtype": "int64", "shape": ["batch", "seq"], "range": [0, 99]}},
                     dims={"batch": {"size": 4, "sweep": [1, 9]}, "seq": {"size": 12, "sweep": [1, 50]}},
                     outputs=["logits"])

    `outputs` is the list of names, or the ``[outputs]`` table (``names``, ``state``,
    ``stream_dim``). The module's own weights are exported. The manifest records its class
    (``FILE.py:Class``) and `module_args`: when ``Class(**module_args)`` rebuilds a module whose
    state dict fits, later ``rnnexport validate`` runs also use it as the eager reference;
    otherwise they check every runtime against the golden data and say why.

    Args:
        module: The ``nn.Module`` to export.
        inputs, dims, outputs, name, module_args, seed, tolerance: The model spec's keys
            (``[inputs.NAME]`` tables, ``[dims.NAME]`` tables, the ``[outputs]`` table or the
            list of output names, ...).
        out: Parent folder of the artifact folder (``out/<name>/``). Default ``models``.
        exporter, opset, torchscript_method, validate, runtimes, max_memory, lock_timeout, formats, variants: As
            `rnnexport.export.export_spec` (default exporter legacy where torch has it, opset 18,
            TorchScript script falling back to trace, validated on every available runtime).

    Returns:
        The `ExportResult` of `rnnexport.export.export_spec`.

    Raises:
        SpecError: a key is invalid, or the module does not fit the spec.
        ExportError, ExportRejected, UsageError, ValidationFailed: as `rnnexport.export.export_spec`.
    """
    import inspect

    cls = type(module)
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:
        source = None
    if cls.__module__ == "__main__":
        # Importing a script again would run it; such a module is checked against golden data later.
        target = f"__main__:{cls.__qualname__}"
    else:
        target = f"{source}:{cls.__qualname__}" if source else f"{cls.__module__}:{cls.__qualname__}"
    table = {"names": list(outputs)} if isinstance(outputs, (list, tuple)) else dict(outputs)
    data = {"name": name, "module": target, "module_args": dict(module_args or {}), "seed": seed,
            "inputs": inputs, "dims": dims, "outputs": table}
    if tolerance:
        data["tolerance"] = tolerance
    spec = model_spec_from_dict(data, source=f"export_model(name={name!r})")
    from rnnexport.usermodel import check_forward

    check_forward(spec, module)
    return export_artifact(spec, out, module=module, exporter=exporter, opset=opset,
                           torchscript_method=torchscript_method, validate=validate, runtimes=runtimes,
                           max_memory=max_memory, lock_timeout=lock_timeout, formats=formats, variants=variants)
