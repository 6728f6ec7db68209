"""Why the int8 variant quantizes weights in 7 bits: its accuracy on this CPU with 8 and 7 bits.

ONNX Runtime multiplies uint8 activations by int8 weights with ``VPMADDUBSW`` on x86 CPUs without
VNNI; its 16-bit sums saturate with full-range weights. For each folder given (default: the
examples in ``models/`` with an int8 variant) this makes ``model.onnx``'s dynamic quantization
with full-range int8 weights (the earlier choice) and with 7-bit ones (``reduce_range``,
rnnexport's), runs both on ONNX Runtime CPU over the golden cases, and prints each output's worst
cosine similarity to the golden (eager) outputs, side by side, with whether this CPU has VNNI.

Run from the repository root: ``python scripts/int8_saturation.py [ARTIFACT ...]``. Prints markdown.
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = {"8 bits": False, "7 bits (reduce_range)": True}


def cpu() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    flags = next((line for line in lines if line.startswith("flags")), "")
    vnni = "with VNNI" if "vnni" in flags else "without VNNI"
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    return f"{name}, {vnni}"


def worst_cosines(model: Path, folder: Path) -> dict[str, float]:
    """Each output's lowest cosine similarity to the golden outputs over the golden cases."""
    import onnxruntime as ort

    from rnnexport.artifacts import open_artifact

    artifact = open_artifact(folder)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    worst = dict.fromkeys(outputs, 1.0)
    for arrays in artifact.golden().values():
        got = session.run(None, {n: arrays[n] for n in artifact.spec.input_names})
        for name, value in zip(outputs, got):
            a, b = value.ravel().astype(np.float64), arrays[name].ravel().astype(np.float64)
            worst[name] = min(worst[name], float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return worst


def main() -> None:
    import sys

    from onnxruntime.quantization import QuantType, quantize_dynamic

    folders = [Path(p) for p in sys.argv[1:]] or sorted(p.parent for p in (ROOT / "models").glob("*/model.int8.onnx"))
    print(f"ONNX Runtime CPU on {cpu()}: worst cosine to eager per output, int8 weights in\n")
    print("| artifact | " + " | ".join(WEIGHTS) + " |")
    print("|---|" + "---|" * len(WEIGHTS))
    with tempfile.TemporaryDirectory() as tmp:
        for folder in folders:
            cells = []
            for label, reduce_range in WEIGHTS.items():
                target = Path(tmp) / f"{folder.name}.{reduce_range}.onnx"
                quantize_dynamic(str(folder / "model.onnx"), str(target), weight_type=QuantType.QInt8,
                                 reduce_range=reduce_range)
                cells.append(", ".join(f"{n} {v:.4f}" for n, v in worst_cosines(target, folder).items()))
            print(f"| {folder.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # "Please consider to run pre-processing before quantization"
    main()
