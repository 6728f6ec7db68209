"""pytest plugin: validate rnnexport artifacts from your own test suite.

Registered through the ``pytest11`` entry point, so installing rnnexport is enough::

    # pytest.ini (or [tool.pytest.ini_options])
    rnnexport_artifacts = models            # folders, or folders of artifact folders

    # test_artifacts.py
    def test_artifact(rnnexport_artifact, rnnexport_check):   # one test per artifact folder
        rnnexport_check(rnnexport_artifact)

    def test_one(rnnexport_check):
        rnnexport_check("path/to/artifacts", cases=["3x17"])

A failure shows the comparison table. ``--rnnexport-runtimes onnxruntime-cpu,torchscript``
picks the runtimes (default: every available one); ``--rnnexport-artifacts DIR[,DIR]``
overrides the ini setting. Artifacts are trusted (TorchScript and torch.export programs can run
code when loaded); ``--rnnexport-untrusted`` (ini ``rnnexport_untrusted = true``) checks artifacts
from elsewhere with the data formats only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

__all__ = ["rnnexport_check"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rnnexport", "rnnexport artifact validation")
    group.addoption("--rnnexport-runtimes", default=None, metavar="R,...",
                    help="runtimes for rnnexport checks (default: every available one)")
    group.addoption("--rnnexport-artifacts", default=None, metavar="DIR,...",
                    help="artifact folders the rnnexport_artifact fixture runs over (overrides the ini)")
    group.addoption("--rnnexport-untrusted", action="store_true", default=None,
                    help="treat artifacts as untrusted: load only data formats (ONNX, weights, npz) and skip the "
                         "runtimes that load model.pt/model.pt2, which can run code")
    parser.addini("rnnexport_untrusted", "treat artifacts as untrusted (see --rnnexport-untrusted)",
                  type="bool", default=False)
    group.addoption("--rnnexport-manifest-tolerance", action="store_true", default=None,
                    help="apply each manifest's tolerance as stored (by default a manifest only tightens yours)")
    parser.addini("rnnexport_manifest_tolerance", "apply each manifest's tolerance as stored "
                  "(see --rnnexport-manifest-tolerance)", type="bool", default=False)
    parser.addini("rnnexport_atol", "absolute tolerance of rnnexport checks (default 1e-5)", default=None)
    parser.addini("rnnexport_rtol", "relative tolerance of rnnexport checks (default 1e-4)", default=None)
    parser.addini("rnnexport_artifacts", "artifact folders (or folders of them) for the rnnexport_artifact fixture",
                  type="paths", default=[])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rnnexport_artifact" not in metafunc.fixturenames:
        return
    from rnnexport.artifacts import discover_artifacts
    from rnnexport.errors import RNNExportError
    from rnnexport.options import comma_list

    option = comma_list(metafunc.config.getoption("rnnexport_artifacts"))
    roots = option if option is not None else [str(p) for p in metafunc.config.getini("rnnexport_artifacts")]
    if not roots:
        raise pytest.UsageError(
            "the rnnexport_artifact fixture needs artifact folders: set `rnnexport_artifacts` in the pytest "
            "ini file or pass --rnnexport-artifacts DIR"
        )
    try:
        folders = discover_artifacts(roots)
    except RNNExportError as exc:
        raise pytest.UsageError(f"rnnexport_artifacts: {exc}") from None
    metafunc.parametrize("rnnexport_artifact", folders, ids=[f.name for f in folders])


@pytest.fixture
def rnnexport_check(request: pytest.FixtureRequest) -> Callable[..., list]:
    """A function ``check(*paths, runtimes=None, cases=None, atol=None, rtol=None, untrusted=None,
    manifest_tolerance=None)`` that validates artifact folders and fails the test with the
    comparison table on any mismatch. The tolerance is yours: `atol`/`rtol`, else the ini's
    ``rnnexport_atol``/``rnnexport_rtol``, else the defaults; a manifest may only tighten it
    unless `manifest_tolerance` (default: ``--rnnexport-manifest-tolerance`` or the ini).
    ``untrusted`` (default: ``--rnnexport-untrusted`` or the ``rnnexport_untrusted`` ini) loads
    only data formats and skips the runtimes that load code.

    `cases` takes `Case` objects or ids such as ``"3x17"`` / ``"b1xs1-h0zero"`` (None: the
    default sweep; an empty one fails the test, as it would check nothing). Returns the
    reports (to assert more). Bad artifacts (tampered, missing) fail the test with the message.
    """
    from rnnexport.options import comma_list

    default_runtimes = comma_list(request.config.getoption("rnnexport_runtimes"))
    inipath = request.config.inipath
    rootdir = Path(str(inipath.parent if inipath is not None else request.config.rootpath))
    default_untrusted = bool(request.config.getoption("rnnexport_untrusted") or request.config.getini("rnnexport_untrusted"))
    default_manifest_tolerance = bool(request.config.getoption("rnnexport_manifest_tolerance")
                                      or request.config.getini("rnnexport_manifest_tolerance"))
    ini_atol, ini_rtol = request.config.getini("rnnexport_atol"), request.config.getini("rnnexport_rtol")

    def check(*paths: str | Path, runtimes: Sequence[str] | None = None, cases: Sequence | None = None,
              atol: float | None = None, rtol: float | None = None, untrusted: bool | None = None,
              manifest_tolerance: bool | None = None) -> list:
        from rnnexport.errors import RNNExportError
        from rnnexport.options import parse_cases, parse_tolerance
        from rnnexport.report import format_table
        from rnnexport.validate import validate_paths

        # Relative paths are the ini file's (the rootdir's), as for `rnnexport_artifacts`, not the
        # current folder's: pytest may run from anywhere below the project.
        folders = [path if Path(path).is_absolute() else rootdir / path for path in paths]
        error = None
        try:
            reports = validate_paths(folders, runtimes=comma_list(runtimes) if runtimes is not None else default_runtimes,
                                     tolerance=parse_tolerance(ini_atol if atol is None else atol,
                                                               ini_rtol if rtol is None else rtol),
                                     cases=parse_cases(cases, "cases"),
                                     trusted=not (default_untrusted if untrusted is None else untrusted),
                                     manifest_tolerance=(default_manifest_tolerance if manifest_tolerance is None
                                                         else manifest_tolerance),
                                     require_runnable=runtimes is not None)
        except RNNExportError as exc:
            error = f"rnnexport: {exc}"
        if error is not None:  # failed outside the except block: one message, no chained traceback
            pytest.fail(error, pytrace=False)
        if not all(r.passed for r in reports):
            pytest.fail("rnnexport validation failed\n" + format_table(reports), pytrace=False)
        return reports

    return check
