"""The report record of one validation: `ArtifactReport` (every comparison, error, skip and note
one validation of one artifact found) and `RunError` (a runtime that raised). Records only:
`ArtifactReport.passed` applies `rnnexport.compare.failures`; `rnnexport.validate` fills them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rnnexport.compare import Comparison, failures
from rnnexport.criteria import CriterionResult

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
    criteria: list[CriterionResult] = field(default_factory=list)

    @property
    def failures(self) -> list[Comparison]:
        return failures(self.comparisons)

    @property
    def criteria_failures(self) -> list[CriterionResult]:
        return [c for c in self.criteria if c.failed]

    @property
    def passed(self) -> bool:
        return not self.errors and not self.failures and not self.criteria_failures

    def runtime_summary(self) -> dict[str, dict[str, Any]]:
        """Per runtime: status, cases run, worst error against the reference (for manifests)."""
        summary: dict[str, dict[str, Any]] = {}
        for runtime in self.runtimes:
            mine = [c for c in self.comparisons if c.runtime == runtime]
            errors = [e for e in self.errors if e.runtime == runtime]
            vs_torch = [c.max_abs_error for c in mine if c.against == "torch" and c.max_abs_error is not None]
            criteria = [c for c in self.criteria if c.runtime == runtime]
            summary[runtime] = {
                "status": "failed" if errors or failures(mine) or any(c.failed for c in criteria) else "passed",
                "cases": len({c.case for c in mine}),
                "max_abs_error_vs_torch": max(vs_torch) if vs_torch else None,
                **({"criteria": {f"{c.output}.{c.criterion}": c.value for c in criteria}} if criteria else {}),
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
            "criteria": [c.to_json() for c in self.criteria],
        }
