"""The README's deployment-variants table, measured in one run on this machine.

For each example with an ``int8`` variant in ``models/`` (text_classifier, keyword_spotter, the
seq2seq pair): the variant's size against ``model.onnx``, ONNX Runtime CPU latency of both files
side by side in one bench run (median and p90 at the documented sizes, 1 thread, ratio int8 /
fp32), and the acceptance criteria validated now (`rnnexport validate`, every available runtime):
each criterion's value on the int8 row of ONNX Runtime CPU, and for text_classifier its class
agreement and accuracy on the held-out set alone.

Run from the repository root after ``rnnexport export --all``: ``python scripts/variants_table.py
[--repeat N]``. Prints markdown.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("text_classifier", "keyword_spotter", "seq2seq_encoder", "seq2seq_decoder")


def held_out_figures(folder: Path) -> str:
    """Agreement with fp32 eager and accuracy on the held-out case alone (text_classifier)."""
    import onnxruntime as ort

    from rnnexport.artifacts import open_artifact

    artifact = open_artifact(folder)
    golden = artifact.golden()
    case = next((c for c in golden if c.data), None)
    if case is None:
        return ""
    feeds = {n: golden[case][n] for n in artifact.spec.input_names}
    eager = golden[case]["logits"].argmax(-1)
    labels = golden[case]["labels"]
    int8 = ort.InferenceSession(str(folder / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    mine = int8.run(["logits"], feeds)[0].argmax(-1)
    return (f"held-out ({len(labels)}): agreement {np.mean(mine == eager):.4f}, accuracy int8 "
            f"{np.mean(mine == labels):.4f} vs fp32 {np.mean(eager == labels):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    from rnnexport.artifacts import open_artifact
    from rnnexport.bench import bench_artifact
    from rnnexport.validate import validate_artifact

    print(f"Machine: {platform.processor() or platform.machine()}, {platform.system()}; ONNX Runtime CPU, 1 thread, "
          f"median of {args.repeat} runs after 5 warm-up; int8/fp32 latency ratios measured side by side in "
          f"{args.rounds} rounds (median, and the range)\n")
    print("| example | int8 bytes (x fp32) | int8/fp32 latency, documented sizes | int8/fp32 latency, largest | "
          "criteria (int8 on onnxruntime-cpu) | int8 validated on |")
    print("|---|---|---|---|---|---|")
    for name in EXAMPLES:
        folder = args.models / name
        artifact = open_artifact(folder)
        ratios: dict[str, list[float]] = {}
        fp32_ms: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            report = bench_artifact(artifact, runtimes=["onnxruntime-cpu"], warmup=5, repeat=args.repeat)
            timed = {(r.runtime, r.shape): r.median_ms for r in report.results}
            for shape in dict.fromkeys(r.shape for r in report.results):
                ratios.setdefault(shape, []).append(timed[("onnxruntime-cpu:int8", shape)]
                                                    / timed[("onnxruntime-cpu", shape)])
                fp32_ms.setdefault(shape, []).append(timed[("onnxruntime-cpu", shape)])
        size = next(row for row in report.variants if row["variant"] == "int8")
        cells = [f"{np.median(r):.2f}x ({min(r):.2f}-{max(r):.2f}; fp32 {np.median(fp32_ms[s]):.3f} ms at {s})"
                 for s, r in ratios.items()]
        validation = validate_artifact(folder)
        criteria = ", ".join(f"{c.output} {c.criterion} {c.value:.4g}" for c in validation.criteria
                             if c.runtime == "onnxruntime-cpu:int8")
        ran = [r.partition(":")[0] for r in validation.runtimes if r.endswith(":int8")]
        extra = held_out_figures(folder)
        print(f"| {name} | {size['bytes']} ({size['size_ratio']:.2f}x) | {' | '.join(cells)} | "
              f"{criteria}{'; ' + extra if extra else ''} | {', '.join(ran)}"
              f"{'' if validation.passed else ' (FAILED)'} |")

if __name__ == "__main__":
    main()
