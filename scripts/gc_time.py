"""CPU seconds spent in garbage collection by every Python process of an rnnexport command.

    python scripts/gc_time.py                               # export --all --variant none
    python scripts/gc_time.py --jobs 1
    python scripts/gc_time.py --baseline /path/to/checkout  # also another rnnexport, in turn

Each Python process the command starts (the command, its workers, fork servers, compile servers
and their children) records the time between the ``start`` and ``stop`` of each of its
collections (``gc.callbacks``, installed through a ``sitecustomize`` put first on
``PYTHONPATH``) into a file of its own; a forked process counts only its own. Prints the total
and the three processes that spent the most. ``--baseline`` runs another checkout of rnnexport
the same way (put first on ``PYTHONPATH``, in the same environment), before this one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_cli import makes_variants  # scripts/, on the path when run as a script

_HOOK = '''
import gc, os, time
_state = {"pid": os.getpid(), "seconds": 0.0, "count": 0, "start": 0.0}
def _record(phase, info):
    if _state["pid"] != os.getpid():  # forked: count this process's own collections only
        _state.update(pid=os.getpid(), seconds=0.0, count=0)
    if phase == "start":
        _state["start"] = time.perf_counter()
        return
    _state["seconds"] += time.perf_counter() - _state["start"]
    _state["count"] += 1
    with open(os.path.join(os.environ["RNNEXPORT_GC_LOG"], str(os.getpid())), "w") as log:
        log.write(f"{_state['seconds']} {_state['count']}")
gc.callbacks.append(_record)
'''


def gc_seconds(checkout: Path | None, args: list[str]) -> list[tuple[float, int]]:
    """(seconds, collections) of each Python process of ``rnnexport export --all ARGS`` run
    with `checkout` first on the path (None: the installed rnnexport), most first."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as scratch:
        scratch = Path(scratch)
        (scratch / "hook").mkdir()
        (scratch / "hook" / "sitecustomize.py").write_text(_HOOK)
        (scratch / "log").mkdir()
        path = [str(scratch / "hook"), *([str(checkout)] if checkout else []), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path)), "RNNEXPORT_GC_LOG": str(scratch / "log")}
        subprocess.run([sys.executable, "-m", "rnnexport", "export", "--all", "--out", str(scratch / "models"), *args],
                       env=env, cwd=scratch, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)  # the fork server and the workers' helpers end in the background
        records = [log.read_text().split() for log in (scratch / "log").iterdir()]
    # A record still being rewritten by a process that outlived the wait is left out
    return sorted(((float(r[0]), int(r[1])) for r in records if len(r) == 2), reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--baseline", type=Path, default=None)
    options = parser.parse_args()
    args = ["--variant", "none", *(["--jobs", str(options.jobs)] if options.jobs else [])]
    runs = [("baseline", options.baseline)] if options.baseline else []
    for name, checkout in [*runs, ("this", None)]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(checkout or ""),
                                                                          os.environ.get("PYTHONPATH", "")]))}
        # A version from before variants has no --variant: the same work is its plain export
        made = gc_seconds(checkout, args if makes_variants(env, Path.cwd()) else args[2:])
        top = ", ".join(f"{seconds:.2f} s ({count} collections)" for seconds, count in made[:3])
        print(f"{name:8} export --all {' '.join(args)}: {sum(s for s, _ in made):.2f} s in garbage collection "
              f"over {len(made)} processes; most: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
