"""Wall-clock of the CLI's main jobs, side by side in one run, with ratios to the import floor.

    python scripts/bench_cli.py [--repeat N]      # default 3; medians

Rows: the import floor (``import torch, onnx, onnxruntime`` in a fresh process), ``rnnexport
list``, ``export --all`` (every built-in configuration, validated on every available runtime)
and ``validate`` of those artifacts, both as typed (``--jobs`` defaults to the number of cores)
and with ``--jobs 1``, and ``validate`` of 16 artifacts (copies of those) with ``--jobs 1`` and
``--jobs 2``. Each command runs in a fresh process in a scratch folder; one unmeasured run of
the floor first, so that no row pays for a cold file cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RNNEXPORT = [sys.executable, "-m", "rnnexport"]


def _seconds(command: list[str], cwd: Path, repeat: int, before=None) -> float:
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        time.sleep(2)  # helpers of the previous run (the --jobs fork server) end in the background
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rnnexport-bench-cli-") as scratch:
        work = Path(scratch)
        rows: list[tuple[str, float]] = []
        _seconds([sys.executable, "-c", "import torch, onnx, onnxruntime"], work, 1)  # warm the file cache
        floor = _seconds([sys.executable, "-c", "import torch, onnx, onnxruntime"], work, args.repeat)
        rows.append(("import torch, onnx, onnxruntime", floor))
        rows.append(("rnnexport list", _seconds([*RNNEXPORT, "list"], work, args.repeat)))
        for label, jobs in (("", []), (" --jobs 1", ["--jobs", "1"])):
            rows.append((f"rnnexport export --all{label}", _seconds(
                [*RNNEXPORT, "export", "--all", "--out", "models", *jobs], work, args.repeat,
                before=lambda: shutil.rmtree(work / "models", ignore_errors=True))))
        for label, jobs in (("", []), (" --jobs 1", ["--jobs", "1"])):
            rows.append((f"rnnexport validate models{label}",
                         _seconds([*RNNEXPORT, "validate", "models", *jobs], work, args.repeat)))
        many = work / "many"
        made = sorted(p for p in (work / "models").iterdir() if p.is_dir() and not p.name.startswith("."))
        for index in range(16):  # copies of the built-in artifacts, 16 in all
            artifact = made[index % len(made)]
            shutil.copytree(artifact, many / f"{artifact.name}_{index // len(made)}")
        for jobs in (1, 2):
            rows.append((f"validate 16 artifacts --jobs {jobs}",
                         _seconds([*RNNEXPORT, "validate", "many", "--jobs", str(jobs)], work, args.repeat)))
    print(f"median of {args.repeat} run(s), {os.cpu_count()} core(s); ratio = time / import floor; "
          f"--jobs defaults to {os.cpu_count()} here")
    for label, seconds in rows:
        print(f"  {label:<36}{seconds:>8.2f} s{seconds / floor:>8.1f}x")
    one, two = rows[-2][1], rows[-1][1]
    print(f"  --jobs 2 vs --jobs 1 on 16 artifacts: {one / two:.2f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
