"""The model formats of an artifact, each made independently of the others.

``--formats onnx,torchscript,pt2`` (the spec's ``formats`` key, the API's ``formats=``) chooses
what an export makes; the default is all three. With the default, a format that cannot be made
(TorchScript cannot compile a module, torch.export refuses it, an exporter writes an invalid
ONNX graph) does not block the others: its reason is recorded in the manifest
(``formats_missing``), the others are made, validated and installed, and the export exits 1 with a
line naming what is missing. A format the user chose explicitly is required: if it cannot be made,
nothing is installed. A format that cannot express the model at all (ONNX has no LSTM
projection) is recorded the same way, with a note, and is not a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rnnexport.errors import ExportError, ExportRejected

__all__ = ["FORMATS", "FormatPlan", "format_files", "missing_formats", "parse_formats"]

# Format -> the file it is, in the order they are listed.
FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt", "pt2": "model.pt2"}
T = TypeVar("T")


def parse_formats(value: Any, where: str, error: type[Exception]) -> tuple[str, ...]:
    """A list (or comma-separated string) of format names, checked: known names, no repeats,
    at least one. Returned in `FORMATS` order.

    Raises:
        `error`: naming `where`, the bad value, the valid names and the closest one.
    """
    from rnnexport.options import parse_names

    return parse_names(value, FORMATS, "format", where, error)


def missing_formats(manifest: dict[str, Any]) -> dict[str, str]:
    """The formats an artifact's export could not make, with the reason. Manifests written before
    ``formats_missing`` existed said ``onnx_refused`` for an LSTM with a projection."""
    missing = dict(manifest.get("formats_missing") or {})
    if manifest.get("onnx_refused"):
        missing.setdefault("onnx", manifest["onnx_refused"])
    return missing


def format_files(manifest: dict[str, Any], *, projection: bool = False) -> list[str]:
    """The model files an artifact holds according to its manifest: its chosen ``formats``
    (default all) less the missing ones. `projection`: an LSTM projection in a manifest written
    before ``formats_missing``, which has no ONNX whether it says so or not."""
    chosen = manifest.get("formats") or list(FORMATS)
    missing = missing_formats(manifest)
    if projection and "formats_missing" not in manifest:
        missing.setdefault("onnx", "ONNX has no LSTM projection")
    return [FORMATS[f] for f in FORMATS if f in chosen and f not in missing]


@dataclass
class FormatPlan:
    """Which formats an export makes, and which it could not.

    Attributes:
        name: The artifact, for messages.
        wanted: The formats to make, in `FORMATS` order.
        explicit: The user chose `wanted`: a failure is the export's failure.
        missing: Format -> why it could not be made (only when not `explicit`).
    """

    name: str
    wanted: tuple[str, ...] = tuple(FORMATS)
    explicit: bool = False
    missing: dict[str, str] = field(default_factory=dict)
    by_design: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, name: str, formats: Any, where: str = "formats") -> FormatPlan:
        from rnnexport.errors import UsageError

        if formats is None:
            return cls(name)
        return cls(name, parse_formats(formats, where, UsageError), explicit=True)

    def wants(self, fmt: str) -> bool:
        """Whether `fmt` is to be made and nothing made it impossible yet."""
        return fmt in self.wanted and fmt not in self.missing

    def attempt(self, fmt: str, make: Callable[[], T], cleanup: Callable[[], None] | None = None) -> T | None:
        """``make()`` when `fmt` is wanted; its `ExportError` is the export's when the format
        was chosen explicitly, else recorded in `missing` (after ``cleanup()``: no partial file
        stays) and None returned."""
        if not self.wants(fmt):
            return None
        try:
            return make()
        except ExportRejected:
            raise  # the model as written cannot be exported faithfully: its message names the fix
        except ExportError as exc:
            if self.explicit:
                raise
            if cleanup is not None:
                cleanup()
            reason = str(exc)
            self.missing[fmt] = reason.removeprefix(f"{self.name}: ")  # the summary names the artifact once
            return None

    def lose(self, fmt: str, reason: str, *, by_design: bool = False) -> None:
        """`fmt` cannot be made for `reason`: a step it depends on failed, or `by_design` (the
        format cannot express the model, e.g. ONNX an LSTM projection: recorded and noted, but
        not a failure of the export)."""
        if self.wants(fmt):
            if self.explicit:
                raise ExportError(reason)
            self.missing[fmt] = reason
            if by_design:
                self.by_design.add(fmt)

    def files(self) -> list[str]:
        """The model files made, in `FORMATS` order."""
        return [FORMATS[f] for f in self.wanted if f not in self.missing]

    def manifest_fields(self) -> dict[str, Any]:
        """``formats`` when the user chose a subset, ``formats_missing`` when one was lost."""
        return {**({"formats": list(self.wanted)} if self.wanted != tuple(FORMATS) else {}),
                **({"formats_missing": dict(self.missing)} if self.missing else {})}

    def summary(self) -> str | None:
        """One line naming what is missing and how to ask for the rest only, or None."""
        failed = {f: reason for f, reason in self.missing.items() if f not in self.by_design}
        if not failed:
            return None
        lost = "; ".join(f"{FORMATS[f]} ({f}): {reason}" for f, reason in failed.items())
        rest = ",".join(f for f in self.wanted if f not in self.missing)
        hint = f"; --formats {rest} exports only what can be made" if rest else ""
        return f"{self.name}: installed WITHOUT {lost}{hint}"
