"""Download, extract and load model source files from pinned public PyPI packages, at test time.

Nothing is installed and no package source is committed: ``pip download --no-deps`` fetches one
pinned archive into a cache folder (``$RNNEXPORT_CACHE`` or ``~/.cache/rnnexport``, subfolder
``realmodels/<pkg>-<version>/``), it is extracted there once, and single ``.py`` files are loaded
with ``importlib.util.spec_from_file_location`` under unique module names. A file lock keeps two
xdist workers from downloading or extracting the same package at once. Without network the
calling test is skipped with the package's name and pip's last error line (never a silent pass).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
from filelock import FileLock

# torchaudio has no sdist on PyPI, only platform wheels. Its C extension is never imported (only
# pure-Python model files are loaded), so the platform is fixed: the same wheel on any host.
PLATFORM_WHEEL = ("--python-version", "3.11", "--platform", "manylinux2014_x86_64",
                  "--implementation", "cp", "--abi", "cp311")


def cache_root() -> Path:
    base = os.environ.get("RNNEXPORT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rnnexport")
    return Path(base) / "realmodels"


def fetch(package: str, version: str, extra: tuple[str, ...] = ()) -> Path:
    """The extracted archive of ``package==version`` (downloaded and extracted once, cached)."""
    folder = cache_root() / f"{package}-{version}"
    src = folder / "src"
    if (folder / ".extracted").exists():
        return src
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock", timeout=900):
        if (folder / ".extracted").exists():  # another worker finished while this one waited
            return src
        dl = folder / "dl"
        archives = sorted(dl.glob("*.whl")) if dl.is_dir() else []
        if not archives:
            shutil.rmtree(dl, ignore_errors=True)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", str(dl), *extra, f"{package}=={version}"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                pytest.skip(f"{package}=={version}: pip download timed out after 600 s")
            archives = sorted(dl.glob("*.whl"))
            if proc.returncode != 0 or not archives:
                lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
                pytest.skip(f"{package}=={version}: pip download failed (exit {proc.returncode}): "
                            f"{lines[-1] if lines else 'no output'}")
        if len(archives) != 1:
            raise RuntimeError(f"{package}=={version}: expected one wheel in {dl}, found {archives}")
        shutil.rmtree(src, ignore_errors=True)
        partial = folder / "src.partial"
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(archives[0]) as z:
            z.extractall(partial)
        partial.rename(src)
        (folder / ".extracted").touch()
    return src


def load_file(path: Path, name: str) -> types.ModuleType:
    """Load one source file as module `name` (registered in sys.modules; loaded once)."""
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the extracted archive")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses, typing and relative imports look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def synthetic_package(name: str, directory: Path) -> types.ModuleType:
    """An empty package `name` whose ``__path__`` is `directory`: files loaded as ``name.<file>``
    resolve their relative imports (``from .sibling import X``) to the sibling files, and the
    real package's ``__init__.py`` (with its heavy imports) never runs."""
    if name in sys.modules:
        return sys.modules[name]
    package = types.ModuleType(name)
    package.__path__ = [str(directory)]
    package.__package__ = name
    sys.modules[name] = package
    return package


@contextlib.contextmanager
def stub_modules(stubs: dict[str, types.ModuleType]):
    """`stubs` in sys.modules only within the block; whatever was there before is restored."""
    saved = {key: sys.modules.get(key) for key in stubs}
    sys.modules.update(stubs)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
