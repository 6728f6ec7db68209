"""The runtime registry: every backend by its contract name (README, "CLI"): how to build its
runner (by module and class name, imported when asked), how to tell whether it can run here, the
file it loads; the runtimes a validation resolves to, and a variant's rows (``RUNTIME:VARIANT``).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rnnexport.compare import split_row
from rnnexport.errors import RuntimeUnavailableError, UsageError

if TYPE_CHECKING:
    from rnnexport.runtimes.base import Runner

__all__ = ["RUNTIMES", "UNTRUSTED_REASON", "RuntimeInfo", "make_runner", "resolve_runtimes", "runtime_imports",
           "split_row", "trial_imports", "unavailable_reason", "validation_imports", "variant_rows"]


def _module_missing(module: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if importlib.util.find_spec(module) is None:
            return f"Python package {module!r} is not installed"
        return None
    return check


def _deferred(module: str, function: str) -> Callable[[], str | None]:
    """An availability check living in `module`, imported only when it is asked."""

    def check() -> str | None:
        return getattr(importlib.import_module(module), function)()
    return check


def _build(module: str, cls: str, **kwargs) -> Callable[..., Runner]:
    def factory(artifact, runtime: str, **options) -> Runner:
        runner_cls = getattr(importlib.import_module(module), cls)
        return runner_cls(artifact, runtime, **kwargs, **options)
    return factory



@dataclass(frozen=True)
class RuntimeInfo:
    """A registered runtime: its factory, its availability check, the file it needs, and
    whether loading that file can run code (TorchScript and torch.export programs can; ONNX,
    weights-only state dicts and npz are data; see docs/validation.md, "Trust"), and the modules its
    runner imports (imported once by the fork server of ``--jobs`` workers)."""

    name: str
    factory: Callable[..., Runner]
    check: Callable[[], str | None]
    requires: str
    description: str
    loads_code: bool = False
    imports: tuple[str, ...] = ()


UNTRUSTED_REASON = ("loads {file}, which can run arbitrary code when loaded; not run on untrusted artifacts "
                    "(--untrusted)")


RUNTIMES: dict[str, RuntimeInfo] = {
    info.name: info
    for info in (
        RuntimeInfo("torch", _build("rnnexport.runtimes.torch_runners", "TorchEagerRunner"),
                    _module_missing("torch"), "weights.pt", "PyTorch eager (the reference)",
                    imports=("torch", "rnnexport.runtimes.torch_runners", "rnnexport.builder", "rnnexport.usermodel")),
        RuntimeInfo("torchscript", _build("rnnexport.runtimes.torch_runners", "TorchScriptRunner"),
                    _module_missing("torch"), "model.pt", "TorchScript reloaded with torch.jit.load", loads_code=True,
                    imports=("torch", "rnnexport.runtimes.torch_runners")),
        RuntimeInfo("torch-export", _build("rnnexport.runtimes.torch_runners", "TorchExportRunner"),
                    _module_missing("torch"), "model.pt2", "torch.export program reloaded with torch.export.load",
                    loads_code=True, imports=("torch", "rnnexport.runtimes.torch_runners", "rnnexport.ops",
                                              "torch.export.pt2_archive")),
        RuntimeInfo("onnxruntime-cpu",
                    _build("rnnexport.runtimes.onnx_runners", "OnnxRuntimeRunner", provider="CPUExecutionProvider"),
                    _module_missing("onnxruntime"), "model.onnx", "ONNX Runtime, CPUExecutionProvider",
                    imports=("rnnexport.runtimes.onnx_runners", "onnxruntime")),
        RuntimeInfo("onnxruntime-cuda",
                    _build("rnnexport.runtimes.onnx_runners", "OnnxRuntimeRunner", provider="CUDAExecutionProvider"),
                    _deferred("rnnexport.runtimes.onnx_runners", "cuda_provider_status"), "model.onnx", "ONNX Runtime, CUDAExecutionProvider on a real GPU",
                    imports=("rnnexport.runtimes.onnx_runners", "onnxruntime")),
        RuntimeInfo("onnx-reference", _build("rnnexport.runtimes.onnx_runners", "OnnxReferenceRunner"),
                    _module_missing("onnx"), "model.onnx", "onnx.reference.ReferenceEvaluator (small cases)",
                    imports=("rnnexport.runtimes.onnx_runners", "onnx.reference")),
        RuntimeInfo("openvino", _build("rnnexport.runtimes.onnx_runners", "OpenVinoRunner"),
                    _module_missing("openvino"), "model.onnx", "OpenVINO CPU, f32 inference precision",
                    imports=("rnnexport.runtimes.onnx_runners", "rnnexport.runtimes.openvino_quiet")),
        RuntimeInfo("libtorch-cpp", _build("rnnexport.runtimes.clients", "LibTorchCppRunner"),
                    _deferred("rnnexport.runtimes.clients", "libtorch_status"), "model.pt", "C++ program on LibTorch (built with CMake on first use)",
                    loads_code=True, imports=("rnnexport.runtimes.clients",)),
        RuntimeInfo("onnxruntime-node", _build("rnnexport.runtimes.clients", "NodeRunner"),
                    _deferred("rnnexport.runtimes.clients", "node_status"), "model.onnx", "ONNX Runtime for Node.js (npm onnxruntime-node)",
                    imports=("rnnexport.runtimes.clients",)),
    )
}


def unavailable_reason(name: str) -> str | None:
    """Why runtime `name` cannot run here, or None when it can."""
    try:
        return RUNTIMES[name].check()
    except Exception as exc:  # a broken toolchain makes a runtime unavailable, never a crash
        return f"availability check failed: {type(exc).__name__}: {exc}"


def resolve_runtimes(requested: list[str] | None, *, trusted: bool = True) -> tuple[list[str], dict[str, str]]:
    """The runtimes to run, and the unavailable ones with their reasons (for the report).

    With `requested` None: every registered runtime that is really available here (without
    the ones that load code, unless `trusted`). Otherwise exactly those named; ``torch`` (the
    reference, rebuilt from data) is always run.

    Raises:
        UsageError: an unknown runtime name (the message lists the valid ones), or one that
            loads code asked for on untrusted artifacts.
        RuntimeUnavailableError: a runtime that was asked for cannot run here (with the reason).
    """
    known = list(RUNTIMES)
    if requested is None:
        skipped = {}
        for name, info in RUNTIMES.items():
            if not trusted and info.loads_code:
                skipped[name] = UNTRUSTED_REASON.format(file=info.requires)
            elif reason := unavailable_reason(name):
                skipped[name] = reason
        return [name for name in RUNTIMES if name not in skipped], skipped
    if not requested:  # an empty selection would check torch against the golden data and pass
        raise UsageError(f"no runtime given; valid runtimes: {', '.join(known)} (comma-separated), or leave "
                         "--runtimes out for every available one")
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise UsageError(f"unknown runtime {unknown[0]!r}; valid runtimes: {', '.join(known)}")
    for name in requested:
        if not trusted and RUNTIMES[name].loads_code:
            raise UsageError(f"runtime {name!r} was asked for, but it " + UNTRUSTED_REASON.format(file=RUNTIMES[name].requires)
                             + "; runtimes for untrusted artifacts: "
                             + ", ".join(n for n, i in RUNTIMES.items() if not i.loads_code))
        reason = unavailable_reason(name)
        if reason:
            raise RuntimeUnavailableError(f"runtime {name!r} was asked for but is not available: {reason}")
    chosen = list(dict.fromkeys(["torch", *requested]))
    return chosen, {}


def runtime_imports(names: list[str] | None) -> list[str]:
    """The modules the runners of `names` (None: all) import, each once, in order."""
    chosen = RUNTIMES if names is None else {name: RUNTIMES[name] for name in names if name in RUNTIMES}
    return list(dict.fromkeys(module for info in chosen.values() for module in info.imports))


# What validating imports whatever it runs: jsonschema, since every manifest read is checked
# against its schema (rnnexport.schema).
_VALIDATING = ("rnnexport.validate", "jsonschema")


def validation_imports(runtimes: list[str] | None = None) -> list[str]:
    """The modules validating on `runtimes` (None: all; the eager reference always) imports: what
    the fork server of a validating process preloads (`rnnexport.workers.start_workers`) for the
    ``--jobs`` workers, so that they start with them imported. Without workers, the fork server
    the variants' trials and a model's eager reference fork from imports less
    (`trial_imports`, and the ``torch`` runtime's for a reference)."""
    return [*_VALIDATING, *runtime_imports(None if runtimes is None else ["torch", *runtimes])]


def trial_imports() -> list[str]:
    """The modules a variant's trial (`rnnexport.runtimes.probe`) imports: the runners of the
    runtimes that load the file variants are made from (`rnnexport.variants.SOURCE`), not torch
    (0.7 s of imports here against 4.7 s for `validation_imports`)."""
    from rnnexport.variants import SOURCE

    return [*_VALIDATING, *runtime_imports([name for name, info in RUNTIMES.items() if info.requires == SOURCE])]


def make_runner(name: str, artifact, **options) -> Runner:
    """A runner of runtime `name` for `artifact` (not loaded yet); ``RUNTIME:VARIANT`` runs the
    variant's file (`variant_rows`)."""
    return RUNTIMES[split_row(name)[0]].factory(artifact, name, **options)


def variant_rows(artifact, names: list[str]) -> list[str]:
    """``RUNTIME:VARIANT`` for every variant of `artifact` (`rnnexport.variants`) and every
    runtime of `names` that loads the file it was made from (ONNX runtimes for ONNX variants)."""
    from rnnexport.variants import VARIANTS

    made = artifact.manifest.get("variants") or {}
    return [f"{name}:{variant}" for variant in VARIANTS if variant in made for name in names
            if name in RUNTIMES and RUNTIMES[name].requires == made[variant].get("of")]
