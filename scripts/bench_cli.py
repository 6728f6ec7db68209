"""Wall-clock of the CLI's main jobs, side by side in one run, with ratios to the import floor.

    python scripts/bench_cli.py [--repeat N]                  # default 3; medians
    python scripts/bench_cli.py --baseline /path/to/checkout  # also another rnnexport, interleaved

Rows: the import floor (``import torch, onnx, onnxruntime`` in a fresh process), what validating
and exporting import before any artifact runs (this version only), ``rnnexport list``, ``export --all`` (every built-in configuration, validated on every available runtime)
and ``validate`` of those artifacts, both as typed (``--jobs`` defaults to the number of cores)
and with ``--jobs 1``; the same work without the examples' deployment variants (``--variant none``
for a version that makes them: the same artifacts as a version from before variants) and its
validation; and ``validate`` of 16 artifacts (copies of those) with ``--jobs 1`` and ``--jobs 2``. Each command runs in a fresh process in a scratch folder; one unmeasured run of
the floor first, so that no row pays for a cold file cache; each version's modules byte-compiled
first, as an installed package's are.

``--baseline`` runs every row with another checkout of rnnexport as well (put first on
``PYTHONPATH``, in the same environment), alternating the two run by run, so that a shared
machine's changing load falls on both alike; it prints both columns and baseline / this. Each
version exports into a folder of its own and validates what it exported (an older rnnexport
may refuse a newer manifest, by design).
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


def _run(command: list[str], cwd: Path, env: dict[str, str] | None) -> float:
    time.sleep(2)  # helpers of the previous run (the --jobs fork server) end in the background
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _seconds(command: list[str] | list[list[str]], cwd: Path | list[Path], repeat: int,
             envs: list[dict[str, str] | None], before=None) -> list[float]:
    """Median seconds of `command` (one, or one per environment) under each environment, the
    environments alternating; `cwd` one folder, or one per environment (each version works on
    the artifacts it exported: an older one may not read a newer manifest); `before(folder)`
    runs before each run."""
    folders = cwd if isinstance(cwd, list) else [cwd] * len(envs)
    commands = command if isinstance(command[0], list) else [command] * len(envs)
    times: list[list[float]] = [[] for _ in envs]
    for _ in range(repeat):
        for index, env in enumerate(envs):
            if before is not None:
                before(folders[index])
            times[index].append(_run(commands[index], folders[index], env))
    return [statistics.median(t) for t in times]


def _byte_compile(env: dict[str, str] | None, cwd: Path) -> None:
    """Byte-compile the rnnexport that `env` runs, as ``pip install`` does: a checkout run with
    ``PYTHONDONTWRITEBYTECODE=1`` (this machine sets it) compiles every module from source in
    every process it starts, which would measure the checkout's size, not its speed."""
    where = subprocess.run([sys.executable, "-c", "import os, rnnexport; print(os.path.dirname(rnnexport.__file__))"],
                           cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", where], env=env, check=True, stdout=subprocess.DEVNULL)


def makes_variants(env: dict[str, str] | None, cwd: Path) -> bool:
    """Whether the rnnexport that `env` runs makes deployment variants (``--variant``)."""
    done = subprocess.run([*RNNEXPORT, "export", "--help"], cwd=cwd, env=env, capture_output=True, text=True,
                          check=True)
    return "--variant" in done.stdout


def speed_change(before: float, after: float) -> str:
    """`after` seconds against `before`, in words: ``1.39x faster`` when it took less time,
    ``1.14x slower`` when it took more (never a ratio below 1 called faster), ``as fast``
    within half a percent."""
    if not (before > 0 and after > 0):
        raise ValueError(f"times must be > 0 seconds, got {before!r} and {after!r}")
    if abs(before / after - 1) < 0.005:
        return "as fast"
    return f"{before / after:.2f}x faster" if after < before else f"{after / before:.2f}x slower"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                        help="another rnnexport checkout to measure side by side")
    args = parser.parse_args()
    envs: list[dict[str, str] | None] = [None]
    if args.baseline is not None:
        if not (args.baseline / "rnnexport" / "__init__.py").is_file():
            parser.error(f"--baseline {args.baseline}: not an rnnexport checkout (no rnnexport/__init__.py)")
        envs.append({**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(args.baseline.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])])})
    with tempfile.TemporaryDirectory(prefix="rnnexport-bench-cli-") as scratch:
        work = Path(scratch)
        rows: list[tuple[str, list[float]]] = []
        for env in envs:
            _byte_compile(env, work)
        floor_command = [sys.executable, "-c", "import torch, onnx, onnxruntime"]
        _run(floor_command, work, None)  # warm the file cache
        rows.append(("import torch, onnx, onnxruntime", _seconds(floor_command, work, args.repeat, envs)))
        # What validating and exporting import before any artifact runs (what --jobs workers
        # are forked with), ended without the interpreter's teardown, as the CLI ends.
        from rnnexport.export import export_imports
        from rnnexport.runtimes import validation_imports

        for label, modules in (("imports validate needs", validation_imports()),
                               ("imports export --all needs", export_imports())):
            command = [sys.executable, "-c", f"import os, {', '.join(modules)}; os._exit(0)"]
            rows.append((label, _seconds(command, work, args.repeat, envs[:1])))
        rows.append(("rnnexport list", _seconds([*RNNEXPORT, "list"], work, args.repeat, envs)))
        own = [work / "this", work / "baseline"][:len(envs)]  # each version's own exports
        for folder in own:
            folder.mkdir()
        for label, jobs in (("", []), (" --jobs 1", ["--jobs", "1"])):
            rows.append((f"rnnexport export --all{label}", _seconds(
                [*RNNEXPORT, "export", "--all", "--out", "models", *jobs], own, args.repeat, envs,
                before=lambda folder: shutil.rmtree(folder / "models", ignore_errors=True))))
        # The same work without the examples' variants, in every version: --variant none where
        # a version makes them.
        without = [[*RNNEXPORT, "export", "--all", "--out", "variantless",
                    *(["--variant", "none"] if makes_variants(env, work) else [])] for env in envs]
        for label, jobs in (("", []), (" --jobs 1", ["--jobs", "1"])):
            rows.append((f"export --all --variant none{label}", _seconds(
                [[*command, *jobs] for command in without], own, args.repeat, envs,
                before=lambda folder: shutil.rmtree(folder / "variantless", ignore_errors=True))))
            rows.append((f"validate of that{label}", _seconds(
                [*RNNEXPORT, "validate", "variantless", *jobs], own, args.repeat, envs)))
        for label, jobs in (("", []), (" --jobs 1", ["--jobs", "1"])):
            rows.append((f"rnnexport validate models{label}",
                         _seconds([*RNNEXPORT, "validate", "models", *jobs], own, args.repeat, envs)))
        for folder in own:
            made = sorted(p for p in (folder / "models").iterdir() if p.is_dir() and not p.name.startswith("."))
            for index in range(16):  # copies of the built-in artifacts, 16 in all
                artifact = made[index % len(made)]
                shutil.copytree(artifact, folder / "many" / f"{artifact.name}_{index // len(made)}")
        for jobs in (1, 2):
            rows.append((f"validate 16 artifacts --jobs {jobs}",
                         _seconds([*RNNEXPORT, "validate", "many", "--jobs", str(jobs)], own, args.repeat, envs)))
    print(f"median of {args.repeat} run(s), {os.cpu_count()} core(s); ratio = time / import floor; "
          f"--jobs defaults to {os.cpu_count()} here")
    floor = rows[0][1][0]
    if args.baseline is None:
        for label, (seconds,) in rows:
            print(f"  {label:<48}{seconds:>8.2f} s{seconds / floor:>8.1f}x")
    else:
        print(f"  {'':<48}{'this':>18}{'baseline':>18}{'baseline/this':>15}")
        for label, (seconds, *base) in rows:
            line = f"  {label:<48}{seconds:>8.2f} s{seconds / floor:>8.1f}x"
            if base:
                line += f"{base[0]:>8.2f} s{base[0] / floor:>8.1f}x{base[0] / seconds:>14.2f}x"
            print(line)
    one, two = rows[-2][1][0], rows[-1][1][0]
    print(f"  --jobs 2 vs --jobs 1 on 16 artifacts: {speed_change(one, two)} ({two:.2f} s vs {one:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
