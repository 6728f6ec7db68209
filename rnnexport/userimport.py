"""Importing a model spec's module, and the trust rules around it: the ``ATTR`` of
``FILE.py:ATTR`` or ``package.module:ATTR`` imported (`import_target`, `import_module`), with
``os._exit`` refused meanwhile (`exits_refused`); what an export records of its source
(`module_source`) and what a validation may import again (`recorded_module`).

Importing a user's module runs its code: validation does it only for trusted artifacts, and only
the module the export recorded, while its file's sha256 is the recorded one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TYPE_CHECKING

import torch

from rnnexport.errors import SpecError

if TYPE_CHECKING:
    from rnnexport.modelspec import ModelSpec

__all__ = ["exits_refused", "import_module", "import_target", "module_source", "recorded_module"]


def import_module(spec: ModelSpec, sha256: str | None) -> Any:
    """Import the module of `spec` now (checked against `sha256`, see `import_target`), so
    that building it later uses exactly this import. Returns its ``ATTR``."""
    return import_target(spec, sha256)


def import_target(spec: ModelSpec, sha256: str | None = None):
    """The ``ATTR`` of ``spec.module``, imported. With `sha256`, a ``FILE.py`` module is run
    from bytes read once and checked against it (what was checked is what runs).

    Raises:
        SpecError: a script's class, a missing file or attribute, a failing import, a
            standard-library module, or an ``ATTR`` that is neither an nn.Module class nor a
            Python function (a factory).
    """
    target, attr = spec.module.rsplit(":", 1)
    if target == "__main__":
        raise SpecError(f"{spec.name}: {_script_reason(attr)}")
    if _standard_library(target):
        raise SpecError(f"{spec.name}: module {target!r} is part of Python's standard library, not a model module "
                        "(module = 'FILE.py:ATTR' or 'package.module:ATTR')")
    if target.endswith(".py"):
        module = _import_file(spec, Path(target), sha256)
    else:
        try:
            with exits_refused():
                module = importlib.import_module(target)
        except BaseException as exc:
            raise SpecError(f"{spec.name}: cannot import module {target!r}: {type(exc).__name__}: {exc}") from None
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            found = sorted(n for n, v in vars(module).items()
                           if isinstance(v, type) and issubclass(v, torch.nn.Module) and v.__module__ == module.__name__)
            raise SpecError(f"{spec.name}: {target!r} has no attribute {attr!r}; its nn.Module classes: "
                            f"{', '.join(found) or '(none)'}")
        value = getattr(value, part)
    is_module_class = isinstance(value, type) and issubclass(value, torch.nn.Module)
    if not is_module_class and not (inspect.isfunction(value) and not _standard_library(value.__module__)):
        raise SpecError(f"{spec.name}: {spec.module} is a {type(value).__name__}, not an nn.Module class or a Python "
                        "function returning one")
    return value


@contextlib.contextmanager
def exits_refused() -> Iterator[None]:
    """While a user's module runs in this process (imported, built, exported), ``os._exit``
    called from the main thread raises `SpecError` instead of ending the process on the spot:
    an export would otherwise exit 0 having written nothing. Other threads (rnnexport's own
    watchers) still exit. Validation runs the module in a child process instead
    (`rnnexport.runtimes.isolated`), which catches any way out."""
    import threading

    real = os._exit

    def refuse(code: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            real(code)
        raise SpecError(f"the module called os._exit({code})")

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real


def _script_reason(attr: str) -> str:
    return (f"{attr} was defined in a script (__main__) when it was exported; importing the script again would run "
            "it, so it is not rebuilt")


def _standard_library(target: str) -> bool:
    """Whether module `target` (``a.b``; never ``FILE.py``) is one of Python's own."""
    return not target.endswith(".py") and target.split(".")[0] in sys.stdlib_module_names


def _import_file(spec: ModelSpec, path: Path, sha256: str | None):
    if not path.is_file():
        raise SpecError(f"{spec.name}: module file {str(path)!r} does not exist (module = {spec.module!r})")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"rnnexport_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{spec.name}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if sha256 is not None and hashlib.sha256(source).hexdigest() != sha256:
        raise SpecError(f"{spec.name}: {str(path)!r} changed since it was checked; not imported")
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # TorchScript finds source through sys.modules
    sys.path.insert(0, str(path.parent))  # the file may import its neighbours
    try:
        with exits_refused():
            exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 (the user's module, checked)
    except BaseException as exc:
        del sys.modules[name]
        raise SpecError(f"{spec.name}: cannot import {str(path)!r}: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def module_source(spec: ModelSpec, artifact_folder: Path, *, rebuildable: bool) -> dict[str, Any]:
    """What the manifest records of where the module came from: ``module``, its source
    ``file`` relative to the artifact folder (it moves with the project) and that file's
    ``sha256``, which validation requires before it imports anything (`recorded_module`)."""
    path = _source_file(spec.module.rsplit(":", 1)[0])
    recorded: dict[str, Any] = {"module": spec.module, "rebuildable": rebuildable,
                                "sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path else None}
    if path is not None and spec.module_file is not None:
        recorded["file"] = os.path.relpath(path.resolve(), artifact_folder.resolve())
    return recorded


def _source_file(target: str) -> Path | None:
    """The source file of ``FILE.py`` or of module ``a.b``, found as ``import`` would find it
    (every finder on ``sys.meta_path``, editable installs included) without running anything:
    ``importlib.util.find_spec`` would import the parent packages. None where there is none."""
    if target.endswith(".py"):
        return Path(target) if Path(target).is_file() else None
    parts, locations, found = target.split("."), None, None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        found = next((spec for finder in sys.meta_path if hasattr(finder, "find_spec")
                      for spec in [_quiet_find(finder, name, locations)] if spec is not None), None)
        if found is None:
            return None
        locations = found.submodule_search_locations
    origin = found.origin if found is not None else None
    return Path(origin) if origin and origin.endswith(".py") and Path(origin).is_file() else None


def _quiet_find(finder, name: str, locations):
    try:
        return finder.find_spec(name, locations)
    except (ImportError, ValueError, AttributeError, TypeError):
        return None


def recorded_module(spec: ModelSpec, source: Any, folder: Path) -> tuple[ModelSpec | None, str | None]:
    """The spec whose module a validation may import, with the file it imports, or None and
    why not (the artifact is then checked against its golden data only).

    Only the module the export recorded (``module_source``), only while its file's sha256 is
    the recorded one, never a standard-library module: a manifest is easy to edit, and
    importing runs code. A ``FILE.py`` module is looked for relative to the artifact folder
    first (recorded so at export: the project may have moved), then at its absolute path; a
    relative path is never resolved against the current folder. rnnexport's own examples go
    the same way: a manifest naming another of rnnexport's functions must not get it called.
    """
    target, attr = spec.module.rsplit(":", 1)
    if target == "__main__":
        return None, _script_reason(attr)
    if _standard_library(target):
        return None, f"the manifest names {spec.module!r}, a standard-library module, not a model module; not imported"
    if not isinstance(source, dict) or source.get("module") != spec.module:
        return None, (f"the export did not record importing {spec.module!r} (manifest module_source); the module "
                      "is not imported")
    if target.endswith(".py"):
        candidates = [folder / source["file"]] if isinstance(source.get("file"), str) else []
        candidates += [Path(target)] if Path(target).is_absolute() else []
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return None, f"module file not found ({', '.join(map(str, candidates)) or target}); not imported"
    else:
        path = _source_file(target)
        if path is None:
            return None, f"module {target!r} is not installed here (no source file found); not imported"
    recorded = source.get("sha256")
    if not isinstance(recorded, str):
        return None, (f"the export recorded no sha256 of {path} (an older rnnexport): not imported; re-export "
                      "to validate against the eager reference")
    current = hashlib.sha256(path.read_bytes()).hexdigest()
    if current != recorded:
        return None, (f"the module's source file {path} changed since the export (sha256 {recorded[:12]}... then, "
                      f"{current[:12]}... now): not imported")
    resolved = f"{path.resolve()}:{attr}" if target.endswith(".py") else spec.module
    return dataclasses.replace(spec, module=resolved), None
