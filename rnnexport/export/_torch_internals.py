"""The one place rnnexport relies on private torch internals (speed only, never correctness).

``torch.onnx.export(..., dynamo=True)`` rebuilds its whole ATen -> ONNX translation registry
(``ONNXRegistry.from_torchlib``, ~500 onnxscript functions parsed from source) on every call:
about 1 s, most of an export of an RNN with native ops. `reused_torchlib_registry` builds it once
per opset and process and hands each export a copy. If torch changes these internals, the patch
is not applied and exports are only slower; ``tests/export/test_torch_internals.py`` fails loudly
so that the change is noticed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["reused_torchlib_registry"]

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
