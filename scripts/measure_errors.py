"""Print the worst max abs error of every runtime against torch eager, per artifact, over the
default validation sweep, with the machine it was measured on. The README quotes its output.

    python scripts/measure_errors.py [DIR ...]      # default: models
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from rnnexport.artifacts import versions
from rnnexport.validate import validate_paths


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _vector_isa() -> str:
    """The widest x86 vector extension the CPU has: the last bits of torch's CPU kernels differ
    between AVX2 and AVX-512, and so do these figures."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"


def main(paths: list[str]) -> int:
    reports = validate_paths(paths or ["models"])
    runtimes = list(dict.fromkeys(r for report in reports for r in report.runtimes if r != "torch"))
    found = versions()
    isa = f", {_vector_isa()}" if platform.machine() in ("x86_64", "AMD64") else ""
    print(f"machine: {_cpu()}, {platform.machine()}{isa}, {os.cpu_count()} core(s), python {found['python']}, "
          f"torch {found['torch']}, "
          f"onnxruntime {found.get('onnxruntime')}, onnx {found.get('onnx')}")
    print(f"{'artifact':<22}" + "".join(f"{name:>18}" for name in runtimes) + "   worst case")
    worst_overall: dict[str, float] = {}
    for report in reports:
        row, worst = f"{report.artifact:<22}", ("", 0.0)
        for name in runtimes:
            records = [c for c in report.comparisons if c.runtime == name and c.against == "torch"
                       and c.max_abs_error is not None]
            if not records:
                row += f"{'-':>18}"
                continue
            top = max(records, key=lambda c: c.max_abs_error)
            worst_overall[name] = max(worst_overall.get(name, 0.0), top.max_abs_error)
            row += f"{top.max_abs_error:>18.2e}"
            if top.max_abs_error > worst[1]:
                worst = (f"{name} {top.case} {top.output}", top.max_abs_error)
        print(row + f"   {worst[0]}")
    print(f"{'worst':<22}" + "".join(f"{worst_overall.get(name, float('nan')):>18.2e}" for name in runtimes))
    print("passed" if all(r.passed for r in reports) else "FAILED")
    return 0 if all(r.passed for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
