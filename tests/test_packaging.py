"""A non-editable install must carry everything the runtimes load at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.conftest import REPO


def test_wheel_contains_catalog_and_clients(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("rnnexport-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("rnnexport/catalog/deep.toml", "rnnexport/clients/node/run.js",
                     "rnnexport/clients/node/package.json", "rnnexport/clients/libtorch_cpp/main.cpp",
                     "rnnexport/clients/libtorch_cpp/CMakeLists.txt", "rnnexport/pytest_plugin.py"):
        assert required in names, required
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "rnnexport = rnnexport.cli:console_main" in text and "[pytest11]" in text


def test_missing_client_source_is_unavailable_not_a_crash(monkeypatch, tmp_path):
    from rnnexport.runtimes import clients, unavailable_reason

    monkeypatch.setattr(clients, "_client_source", lambda name: tmp_path / name)
    monkeypatch.setenv("RNNEXPORT_CACHE", str(tmp_path / "cache"))
    caches = (clients._libtorch_plan, clients._libtorch_build, clients.node_status)
    for cache in caches:
        cache.cache_clear()
    try:
        for name in ("libtorch-cpp", "onnxruntime-node"):
            reason = unavailable_reason(name)
            assert reason is not None
            assert "reinstall rnnexport" in reason or "not found on PATH" in reason or "cmake" in reason
    finally:
        for cache in caches:
            cache.cache_clear()
