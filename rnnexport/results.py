"""The report record of one validation: `ArtifactReport` (every comparison, error, skip and note
one validation of one artifact found) and `RunError` (a runtime that raised). Records only:
`ArtifactReport.passed` applies `rnnexport.compare.failures`; `rnnexport.validate` fills them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rnnexport.compare import Comparison, failures

__all__ = ["ArtifactReport", "RunError"]


@dataclass(frozen=True)
class RunError:
    """A runtime that raised while loading or running a case (a failure, not a skip)."""

    artifact: str
    runtime: str
    case: str | None
    message: str


@dataclass
class ArtifactReport:
    """Everything one validation of one artifact found."""

    artifact: str
    path: str
    runtimes: list[str]
    skipped: dict[str, str]
    cases: list[str]
    comparisons: list[Comparison] = field(default_factory=list)
    errors: list[RunError] = field(default_factory=list)
    left_out: list[dict[str, str]] = field(default_factory=list)
    golden_versions: dict[str, str] = field(default_factory=dict)
    current_versions: dict[str, str] = field(default_factory=dict)
    localizations: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, dict[str, str]] = field(default_factory=dict)
    streaming: dict[str, Any] = field(default_factory=dict)
    error_over_time: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tolerance: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[Comparison]:
        return failures(self.comparisons)

    @property
    def passed(self) -> bool:
        return not self.errors and not self.failures

    def runtime_summary(self) -> dict[str, dict[str, Any]]:
        """Per runtime: status, cases run, worst error against the reference (for manifests)."""
        summary: dict[str, dict[str, Any]] = {}
        for runtime in self.runtimes:
            mine = [c for c in self.comparisons if c.runtime == runtime]
            errors = [e for e in self.errors if e.runtime == runtime]
            vs_torch = [c.max_abs_error for c in mine if c.against == "torch" and c.max_abs_error is not None]
            summary[runtime] = {
                "status": "failed" if errors or failures(mine) else "passed",
                "cases": len({c.case for c in mine}),
                "max_abs_error_vs_torch": max(vs_torch) if vs_torch else None,
                **({"details": self.details[runtime]} if self.details.get(runtime) else {}),
            }
        for runtime, reason in self.skipped.items():
            summary[runtime] = {"status": "skipped", "reason": reason}
        return summary

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "path": self.path,
            "passed": self.passed,
            "runtimes": self.runtime_summary(),
            "cases": self.cases,
            "golden_versions": self.golden_versions,
            "current_versions": self.current_versions,
            "errors": [e.__dict__ for e in self.errors],
            "left_out": self.left_out,
            "streaming": self.streaming,
            "localizations": self.localizations,
            "error_over_time": self.error_over_time,
            "notes": self.notes,
            "tolerance": self.tolerance,
            "comparisons": [c.to_json() for c in self.comparisons],
        }
