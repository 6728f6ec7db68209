"""rnnexport: export PyTorch recurrent networks to TorchScript and ONNX, and prove on every
runtime it can reach that the artifacts compute what PyTorch computes.

Heavy libraries (torch, onnx, onnxruntime) are imported lazily, by the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
