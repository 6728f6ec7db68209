"""The one place rnnexport relies on private torch internals; neither changes what a model computes.

1. ``torch.onnx.export(..., dynamo=True)`` rebuilds its whole ATen -> ONNX translation registry
(``ONNXRegistry.from_torchlib``, ~500 onnxscript functions parsed from source) on every call:
about 1 s, most of an export of an RNN with native ops. `reused_torchlib_registry` builds it once
per opset and process and hands each export a copy. If torch changes these internals, the patch
is not applied and exports are only slower.

2. ``torch.jit.save`` writes ``*.debug_pkl`` records holding the absolute paths of the source
files it compiled (the checkout, the venv's site-packages), so ``model.pt`` differs between
checkouts (upstream: https://github.com/pytorch/pytorch/issues/112425, source positions baked
into saved TorchScript). `strip_torchscript_debug_info` rewrites the archive without them, with torch's own
archive reader and writer (``torch._C.PyTorchFileReader``/``PyTorchFileWriter``), which keep
its record alignment; the debug records only serve source locations in TorchScript errors.

3. Whether the TorchScript-based ONNX exporter is still in torch is asked of its private module
(`torchscript_onnx_exporter_present`): torch has no public flag for it.

``tests/export/testtorch_internals.py`` fails loudly when torch changes any of these.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["reused_torchlib_registry", "strip_torchscript_debug_info", "torchscript_onnx_exporter_present"]

_CACHE: dict[int, object] = {}


def _registry_class():
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return None
    cls = getattr(_registration, "ONNXRegistry", None)
    if cls is None or not isinstance(cls.__dict__.get("from_torchlib"), classmethod):
        return None
    return cls


@contextlib.contextmanager
def reused_torchlib_registry() -> Iterator[bool]:
    """Within the block, ``ONNXRegistry.from_torchlib`` returns a copy of a cached registry.

    Yields True when the patch is in place, False when torch's internals no longer match.
    """
    cls = _registry_class()
    if cls is None:
        yield False
        return
    original = cls.__dict__["from_torchlib"]

    def from_torchlib(registry_cls, *args, **kwargs):
        key = args[0] if args else kwargs.get("opset_version")
        if key not in _CACHE:
            _CACHE[key] = original.__func__(registry_cls, *args, **kwargs)
        base = _CACHE[key]
        copy = registry_cls()
        copy._opset_version = base._opset_version
        # Exports register custom ops into the registry: each gets its own lists.
        copy.functions = {target: list(metas) for target, metas in base.functions.items()}
        return copy

    cls.from_torchlib = classmethod(from_torchlib)
    try:
        yield True
    finally:
        cls.from_torchlib = original


def torchscript_onnx_exporter_present() -> bool:
    """Whether ``torch.onnx._internal.torchscript_exporter`` (behind ``dynamo=False``) exists."""
    import importlib.util

    return importlib.util.find_spec("torch.onnx._internal.torchscript_exporter") is not None


# Records PyTorchFileWriter writes by itself at the end of every archive.
_WRITER_RECORDS = {"version", ".data/version", "byteorder", ".data/serialization_id"}


def strip_torchscript_debug_info(path: Path) -> bool:
    """Rewrite the TorchScript archive at `path` without its ``.debug_pkl`` records.

    Returns False (file untouched) when torch no longer has the archive reader/writer.
    """
    import torch

    reader_cls = getattr(torch._C, "PyTorchFileReader", None)
    writer_cls = getattr(torch._C, "PyTorchFileWriter", None)
    if reader_cls is None or writer_cls is None:
        return False
    reader = reader_cls(str(path))
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        stripped = Path(tmp) / path.name  # the archive's inner folder is named after the file
        writer = writer_cls(str(stripped))
        for name in reader.get_all_records():
            if name.endswith(".debug_pkl") or name in _WRITER_RECORDS:
                continue
            data = reader.get_record(name)
            writer.write_record(name, data, len(data))
        writer.write_end_of_file()
        del writer, reader
        os.replace(stripped, path)
    return True
