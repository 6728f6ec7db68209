"""The tolerance policy: which tolerance a validation applies (`applied_tolerance`: yours, which
a manifest may only tighten), the manifest's as stored (`manifest_tolerance`), and how a report
spells one (`describe_tolerance`). The comparison itself is `rnnexport.compare`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnexport.artifacts import Artifact
from rnnexport.compare import Tolerance
from rnnexport.errors import UsageError

__all__ = ["applied_tolerance", "describe_tolerance", "manifest_tolerance"]


def manifest_tolerance(artifact: Artifact) -> Tolerance:
    """The tolerance stored in the manifest (model and per output), defaults where absent.

    Raises:
        ArtifactError: a value that is not a finite number >= 0 (NaN would pass everything),
            or an entry that is not a table.
    """
    from rnnexport.errors import ArtifactError

    stored, default = artifact.manifest.get("tolerance"), Tolerance()
    if stored is None:
        return default

    def value(table: Any, key: str, fallback: float, where: str) -> float:
        if not isinstance(table, dict):
            raise ArtifactError(f"{artifact.path}: manifest 'tolerance{where}' must be a table, got {table!r:.60}")
        found = table.get(key, fallback)
        if type(found) not in (int, float) or not np.isfinite(found) or found < 0:
            raise ArtifactError(f"{artifact.path}: manifest 'tolerance{where}.{key}' is {found!r:.40}; valid: a finite "
                                "number >= 0")
        return float(found)

    atol, rtol = value(stored, "atol", default.atol, ""), value(stored, "rtol", default.rtol, "")
    outputs = stored.get("outputs") or {}
    if not isinstance(outputs, dict):
        raise ArtifactError(f"{artifact.path}: manifest 'tolerance.outputs' must be a table, got {outputs!r:.60}")
    per_output = {name: (value(t, "atol", atol, f".outputs.{name}"), value(t, "rtol", rtol, f".outputs.{name}"))
                  for name, t in outputs.items()}
    return Tolerance(atol=atol, rtol=rtol, per_output=per_output)


def applied_tolerance(artifact: Artifact, given: Tolerance | None, *, use_manifest: bool = False
                      ) -> tuple[Tolerance, list[str]]:
    """The tolerance a validation applies, and notes on where it came from.

    The tolerance is the validating user's policy (`given`: ``--atol/--rtol``, the pytest
    ini, the API; else the defaults), not the artifact's: a manifest can be edited along with
    the files it hashes. The manifest's tolerance may only tighten it (the smaller atol and rtol
    of the two, per output), unless `use_manifest` (``--manifest-tolerance``: the user trusts
    the manifest's, e.g. per-output tolerances of their own model spec).

    Raises:
        UsageError: both `given` and `use_manifest`.
        ArtifactError: a malformed manifest tolerance.
    """
    stored = manifest_tolerance(artifact)
    if use_manifest:
        if given is not None:
            raise UsageError("--manifest-tolerance applies the manifest's tolerance; --atol/--rtol give your own: "
                             "choose one")
        return stored, [f"tolerance {describe_tolerance(stored)} (the manifest's)"]
    policy = given or Tolerance()
    names = dict.fromkeys([*artifact.spec.output_names, *policy.per_output, *stored.per_output])

    def tighter(name: str | None) -> tuple[float, float]:
        mine = (policy.atol, policy.rtol) if name is None else policy.for_output(name)
        theirs = (stored.atol, stored.rtol) if name is None else stored.for_output(name)
        return min(mine[0], theirs[0]), min(mine[1], theirs[1])

    atol, rtol = tighter(None)
    per_output = {n: tighter(n) for n in names if tighter(n) != (atol, rtol)}
    applied = Tolerance(atol=atol, rtol=rtol, per_output=per_output)
    looser = [n for n in names if any(t > a for t, a in zip(stored.for_output(n), applied.for_output(n)))]
    notes = [f"tolerance {describe_tolerance(applied)} ({'yours' if given else 'defaults'}"
             f"{', tightened by the manifest' if applied != policy else ''})"]
    if looser:
        notes.append(f"the manifest asks for a looser tolerance on {', '.join(looser)} ({describe_tolerance(stored)}); "
                     "not applied: a manifest only tightens yours (--manifest-tolerance applies it)")
    return applied, notes


def describe_tolerance(tolerance: Tolerance) -> str:
    """``atol 1e-05, rtol 0.0001`` and each output's own, for reports."""
    own = "".join(f"; {name}: atol {a:g}, rtol {r:g}" for name, (a, r) in tolerance.per_output.items()
                  if (a, r) != (tolerance.atol, tolerance.rtol))
    return f"atol {tolerance.atol:g}, rtol {tolerance.rtol:g}{own}"
