"""The ``rnnexport`` command: parses arguments, calls the API, maps errors to exit codes.

Exit codes: 0 all passed; 1 a mismatch or failed check; 2 bad usage or bad input. The
arguments themselves (the parser and its option types) are `rnnexport.cli_args`. Importing this
module imports neither torch nor the report libraries: each command imports what it needs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence

from rnnexport.cli_args import build_parser
from rnnexport.errors import RNNExportError, UsageError

__all__ = ["console_main", "main"]


def _tolerance(args: argparse.Namespace):
    from rnnexport.options import parse_tolerance

    return parse_tolerance(args.atol, args.rtol)


def _cases(args: argparse.Namespace):
    from rnnexport.options import parse_cases

    return parse_cases(getattr(args, "cases", None))


def _cmd_schema(args: argparse.Namespace) -> int:
    from rnnexport.schema import schema_text

    print(schema_text(args.kind), end="")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.runtimes:
        return _list_runtimes(args)
    from rnnexport.spec import catalog

    specs = catalog("rnn")
    models = catalog("model")
    if args.json:
        listing = {name: {"kind": "rnn", "module": spec.module_description(), "spec": spec.to_dict(),
                          "shapes": {k: list(v) for k, v in spec.shapes().items()}}
                   for name, spec in specs.items()}
        listing.update({name: {"kind": "model", "module": spec.module_description(), "spec": spec.to_dict(),
                               "inputs": {t.name: {"dtype": t.dtype, "shape": list(t.shape)} for t in spec.inputs},
                               "outputs": list(spec.output_names)}
                        for name, spec in models.items()})
        print(json.dumps(listing, indent=2))
        return 0
    print(f"{'name':<20}{'module':<66}{'input':<14}{'output':<14}h_n")
    for name, spec in specs.items():
        shapes = spec.shapes()
        print(f"{name:<20}{spec.module_description():<66}{str(list(shapes['input'])):<14}"
              f"{str(list(shapes['output'])):<14}{list(shapes['h_n'])}")
    print(f"\n{'model spec':<20}{'module':<66}{'inputs':<42}outputs")
    for name, spec in models.items():
        inputs = ", ".join(f"{t.name}[{','.join(map(str, t.shape))}]" for t in spec.inputs)
        print(f"{name:<20}{spec.module_description():<66}{inputs:<42}{', '.join(spec.output_names)}")
    return 0


def _list_runtimes(args: argparse.Namespace) -> int:
    from rnnexport.runtimes import RUNTIMES, unavailable_reason

    rows = {name: {"description": info.description, "loads": info.requires, "loads_code": info.loads_code,
                   "available": (reason := unavailable_reason(name)) is None, "reason": reason}
            for name, info in RUNTIMES.items()}
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for name, row in rows.items():
        state = "available" if row["available"] else f"unavailable: {row['reason']}"
        code = ", code" if row["loads_code"] else ""
        print(f"{name:<18}{row['description']} (loads {row['loads']}{code}); {state}")
    return 0


def _finish(reports, args: argparse.Namespace) -> int:
    """Print the table first (results are never lost to a bad report path), then the files."""
    from rnnexport.report import format_table, write_html, write_json_report, write_junit

    print(format_table(reports, color=sys.stdout.isatty()))
    for path, writer in ((args.json_path, write_json_report), (args.junit, write_junit), (args.html, write_html)):
        if path:
            try:
                writer(reports, path)
            except OSError as exc:
                raise UsageError(f"cannot write report {path!r}: {exc.strerror or exc} "
                                 "(the results are printed above)") from None
    return 0 if all(r.passed for r in reports) else 1


def _adhoc_spec(args: argparse.Namespace):
    """The spec given by ``--cell --input-size ...`` flags."""
    from rnnexport.spec import spec_from_flags

    return spec_from_flags(
        cell=args.cell, input_size=args.input_size, hidden_size=args.hidden_size, name=args.name,
        num_layers=args.num_layers, bidirectional=args.bidirectional, batch_first=args.batch_first,
        nonlinearity=args.nonlinearity, bias=not args.no_bias, dropout=args.dropout, proj_size=args.proj_size,
        variable_length=args.variable_length, batch_size=args.batch_size, seq_len=args.seq_len,
        seed=0 if args.seed is None else args.seed,
    )


def _check_unique_names(specs, sources: list[str]) -> None:
    """Two configurations of one call must not write the same folder."""
    seen: dict[str, str] = {}
    for spec, source in zip(specs, sources):
        if spec.name in seen:
            raise UsageError(f"{seen[spec.name]} and {source} both have the name {spec.name!r}; "
                             "each artifact folder is written once per call: rename one of them")
        seen[spec.name] = source


def _cmd_export(args: argparse.Namespace) -> int:
    from rnnexport.errors import ValidationFailed, WorkerDied
    from rnnexport.export import DEFAULT_OPSET, export_specs
    from rnnexport.formats import parse_formats
    from rnnexport.spec import catalog, get_spec, replace_spec
    from rnnexport.variants import parse_variants

    if sum(map(bool, (args.all, args.configs, args.cell))) > 1:
        raise UsageError("give configuration names, --all, or an ad-hoc --cell configuration, not several")
    if not (args.all or args.configs or args.cell):
        raise UsageError(f"name a configuration, use --all, or define one with --cell; valid names: {', '.join(catalog())}")
    if args.cell:
        specs = [_adhoc_spec(args)]
    else:
        specs = list(catalog().values()) if args.all else [get_spec(c) for c in args.configs]
        _check_unique_names(specs, [f"built-in {s.name!r}" for s in specs] if args.all else args.configs)
    if args.seed is not None:
        specs = [replace_spec(spec, seed=args.seed) for spec in specs]
    tolerance = _tolerance(args)
    formats = None if args.formats is None else parse_formats(args.formats, "--formats", UsageError)
    variants = (None if args.variant is None else [] if args.variant.strip() in ("", "none")  # none: not the spec's
                else parse_variants(args.variant, "--variant", UsageError))
    if args.no_validate:
        wanted = [flag for flag, value in (("--json", args.json_path), ("--junit", args.junit), ("--html", args.html),
                                           ("--runtimes", args.runtimes)) if value]
        if wanted:
            raise UsageError(f"{wanted[0]} reports on validation, which --no-validate turns off; drop one of them")
    reports, failed = [], []
    outcomes = export_specs(
        specs, args.out, jobs=args.jobs, exporter=args.exporter,
        opset=DEFAULT_OPSET if args.opset is None else args.opset,
        torchscript_method=args.torchscript, validate=not args.no_validate,
        runtimes=args.runtimes, tolerance=tolerance, max_memory=args.max_memory, formats=formats,
        variants=variants,
        **({} if args.lock_timeout is None else {"lock_timeout": args.lock_timeout}),
    )
    for result in outcomes:
        if isinstance(result, (ValidationFailed, WorkerDied)):
            failed.append(str(result))
            if getattr(result, "report", None) is not None:
                reports.append(result.report)
            continue
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"wrote {result.path} (exporter {result.exporter})", file=sys.stderr)
        if result.missing:
            failed.append(result.missing)
        if result.report is not None:
            reports.append(result.report)
    if failed:
        if reports:
            _finish(reports, args)
        for message in failed:
            print(f"rnnexport: {message}", file=sys.stderr)
        return 1
    return _finish(reports, args) if reports else 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from rnnexport.report import Progress
    from rnnexport.validate import validate_paths

    progress = Progress()
    try:
        reports = validate_paths(args.paths, runtimes=args.runtimes, tolerance=_tolerance(args), cases=_cases(args),
                                 on_step=progress, on_plan=progress.plan, trusted=not args.untrusted,
                                 max_memory=args.max_memory, jobs=args.jobs, shard=args.shard,
                                 manifest_tolerance=args.manifest_tolerance)
    finally:
        progress.close()
    return _finish(reports, args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rnnexport.bench import bench_artifact, bench_targets, format_bench
    from rnnexport.options import parse_cases

    cases = parse_cases(args.shapes, "--shapes")
    with bench_targets(args.targets or ["models"]) as artifacts:
        reports = [bench_artifact(a, runtimes=args.runtimes, cases=cases, threads=args.threads,
                                  warmup=args.warmup, repeat=args.repeat) for a in artifacts]
    print(format_bench(reports))
    if args.html:
        from rnnexport.variant_table import variant_table_html

        try:
            variant_table_html(reports, args.html)
        except OSError as exc:
            raise UsageError(f"cannot write {args.html!r}: {exc.strerror or exc} (results printed above)") from None
    if args.json_path:
        try:
            Path(args.json_path).write_text(json.dumps({"schema": "rnnexport.bench/1",
                                                        "artifacts": [r.to_json() for r in reports]}, indent=2) + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write {args.json_path!r}: {exc.strerror or exc} (results printed above)") from None
    return 1 if any(r.errors for r in reports) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 passed, 1 mismatch, 2 bad usage or input)."""
    try:
        args = build_parser().parse_args(argv)
        command = {"list": _cmd_list, "schema": _cmd_schema, "export": _cmd_export, "validate": _cmd_validate,
                   "bench": _cmd_bench}[args.command]
        return command(args)
    except RNNExportError as exc:
        print(f"rnnexport: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rnnexport: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    """Entry point of the ``rnnexport`` console script (and ``python -m rnnexport``)."""
    from rnnexport.workers import collect_less

    collect_less()  # this process is the CLI's own
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `rnnexport list | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    _exit(code)


def _exit(code: int) -> None:
    """Exit with `code`. After torch was imported, tearing the interpreter down takes about a
    second (1.1 s measured on 2 cores) and frees nothing the OS would not: the exit handlers
    run (client processes, the compile server, worker pools, temporary folders), output is
    flushed, and the process ends without that teardown."""
    import atexit

    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if "torch" not in sys.modules or run_exit_handlers is None:
        raise SystemExit(code)
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
