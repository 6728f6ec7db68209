"""The ``rnnexport`` command's arguments: the parser (`build_parser`) with its subcommands and
options, the types that check option values, and argparse's usage errors as `UsageError`
(exit 2, with a did-you-mean for unknown options). Imports nothing heavy: `rnnexport.cli`
builds it for ``--help``."""

from __future__ import annotations

import argparse
import os

from rnnexport import __version__
from rnnexport.errors import UsageError
from rnnexport.schema import KINDS

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: exit 2, one message
        raise UsageError(f"{message} (see `{self.prog} --help`)")

    def parse_args(self, args=None, namespace=None):  # argparse's own, with a did-you-mean for unknown options
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            commands = next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {})
            command = commands.get(getattr(parsed, "command", None), self)
            command.error(f"unrecognized arguments: {' '.join(extras)}{command._option_hint(extras)}")
        return parsed

    def _option_hint(self, extras: list[str]) -> str:
        """`` (did you mean '--hidden-size'?)`` for the first unknown option close to one of
        this parser's own (``--hidden_size``: argparse offers nothing)."""
        from rnnexport.errors import did_you_mean

        options = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        for extra in extras:
            if extra.startswith("--") and (hint := did_you_mean(extra.split("=", 1)[0], options)):
                return hint
        return ""


def _runtime_list(text: str) -> list[str]:
    from rnnexport.options import comma_list

    return comma_list(text)


def _nonnegative_float(text: str) -> float:
    from rnnexport.options import nonnegative_float

    try:
        return nonnegative_float(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None


def _memory_size(text: str) -> int:
    from rnnexport.limits import parse_size

    try:
        return parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_jobs(p: argparse.ArgumentParser, what: str, default: int | None = None) -> None:
    cores = os.cpu_count() or 1
    text = f"the number of cores, {cores} here" if default is None else str(default)
    p.add_argument("--jobs", type=_positive_int, default=cores if default is None else default, metavar="N",
                   help=f"{what} (default: {text})")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _shard(text: str) -> tuple[int, int]:
    k, _, n = text.partition("/")
    try:
        shard = int(k), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= shard[0] <= shard[1]:
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, got {text!r}")
    return shard


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rnnexport", description=(
        "Export PyTorch recurrent networks to TorchScript and ONNX and validate them on every "
        "available runtime."))
    parser.add_argument("--version", action="version", version=f"rnnexport {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="the built-in configurations and their shapes (or the runtimes)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--runtimes", action="store_true",
                   help="list the runtimes instead: what each loads, and whether it can run here (or why not)")

    p = sub.add_parser("schema", help="print the JSON Schema of a spec file (for editors that validate TOML) or "
                                      "of manifest.json")
    p.add_argument("kind", choices=KINDS, help="which kind of file")

    p = sub.add_parser("export", help="export configurations to artifact folders (and validate them)")
    p.add_argument("configs", nargs="*", metavar="NAME|SPEC.toml", help="built-in names or spec files")
    p.add_argument("--all", action="store_true", help="every built-in configuration")
    p.add_argument("--out", default="models", help="parent folder of the artifact folders (default: models)")
    p.add_argument("--exporter", choices=["legacy", "dynamo"], default=None,
                   help="ONNX exporter (default: legacy while torch has it, else dynamo)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 14..20 (default: 18)")
    p.add_argument("--seed", type=int, default=None, help="override the spec's seed")
    p.add_argument("--torchscript", choices=["script", "trace"], default=None,
                   help="how model.pt is compiled (default: script; for a model spec its 'torchscript' key, else "
                        "script falling back to trace where scripting fails, recorded in the manifest)")
    p.add_argument("--no-validate", action="store_true", help="write without validating")
    p.add_argument("--formats", default=None, metavar="F,...",
                   help="formats to make, each required: onnx, torchscript, pt2 (default: all three; one that cannot "
                        "be made is left out with its reason, the rest installed, and the export exits 1)")
    p.add_argument("--variant", default=None, metavar="V,...",
                   help="deployment variants made from model.onnx beside it: int8 (ONNX Runtime dynamic "
                        "quantization), fp16; judged by the spec's acceptance criteria; none: not even the spec's "
                        "(default: the spec's 'variants' key, else none)")
    _add_jobs(p, "configurations exported at once, each in its own process")
    p.add_argument("--lock-timeout", type=_nonnegative_float, default=None, metavar="S",
                   help="seconds to wait while another export of the same name into the same folder runs "
                        "(default 600), then exit 2")
    adhoc = p.add_argument_group("ad-hoc configuration (instead of NAME|SPEC.toml)")
    adhoc.add_argument("--cell", choices=["rnn", "lstm", "gru"], default=None, help="define a configuration here")
    adhoc.add_argument("--name", default=None, help="artifact name (default: derived from the flags)")
    adhoc.add_argument("--input-size", type=int, default=None)
    adhoc.add_argument("--hidden-size", type=int, default=None)
    adhoc.add_argument("--num-layers", type=int, default=1)
    adhoc.add_argument("--bidirectional", action="store_true")
    adhoc.add_argument("--batch-first", action="store_true")
    adhoc.add_argument("--nonlinearity", default="tanh", help="tanh | relu (cell rnn)")
    adhoc.add_argument("--no-bias", action="store_true")
    adhoc.add_argument("--dropout", type=float, default=0.0)
    adhoc.add_argument("--proj-size", type=int, default=0, help="LSTM projection size")
    adhoc.add_argument("--variable-length", action="store_true", help="padded batches with a lengths input")
    adhoc.add_argument("--batch-size", type=int, default=1, help="documented batch size (default 1)")
    adhoc.add_argument("--seq-len", type=int, default=1, help="documented sequence length (default 1)")
    _add_validation_args(p, cases=False)

    p = sub.add_parser("bench", help="median latency of every runtime, with ratios to torch eager")
    p.add_argument("targets", nargs="*", metavar="NAME|SPEC.toml|DIR",
                   help="artifact folders; built-in names (their folder under models/, or exported to a temporary "
                        "folder) or spec files (exported to a temporary folder) (default: models)")
    p.add_argument("--runtimes", type=_runtime_list, default=None,
                   help="comma-separated runtimes (default: every available one)")
    p.add_argument("--threads", type=int, default=1, help="threads per runtime, equal for all (default 1)")
    p.add_argument("--shapes", default=None,
                   help="comma-separated sizes, one per dim of the spec in its order: BxS for an RNN, e.g. 8x24 or 4 "
                        "for a model spec (default: an RNN's documented shape, 1x1000, 64x200; a model spec's "
                        "documented and largest sizes)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured runs per runtime and shape (default 3)")
    p.add_argument("--repeat", type=int, default=10, help="measured runs per runtime and shape (default 10)")
    p.add_argument("--json", dest="json_path", default=None, metavar="F", help="write the results as JSON to F")
    p.add_argument("--html", default=None, metavar="F",
                   help="write the results and the variants side by side as a self-contained HTML page to F")

    p = sub.add_parser(
        "validate", help="validate artifact folders on every available runtime",
        description=("Validate artifact folders on every available runtime. Trust: model.pt (TorchScript) and "
                     "model.pt2 can run arbitrary code when loaded, so validate trusts the artifacts it is given "
                     "(your own); for artifacts from elsewhere use --untrusted, which loads only data formats "
                     "(ONNX, weights-only state dicts, npz without pickle) and skips the runtimes that load code."))
    p.add_argument("paths", nargs="+", metavar="DIR", help="artifact folders, or folders of them")
    p.add_argument("--untrusted", action="store_true",
                   help="load only data formats; skip torchscript, torch-export and libtorch-cpp (they load code)")
    _add_jobs(p, "artifacts validated at once, each in its own process")
    p.add_argument("--shard", type=_shard, default=None, metavar="K/N",
                   help="validate only shard K of N (a stable subset by folder name), e.g. one per CI machine")
    p.add_argument("--manifest-tolerance", action="store_true",
                   help="apply each manifest's tolerance as stored; by default a manifest may only tighten yours "
                        "(--atol/--rtol or the defaults)")
    _add_validation_args(p)
    return parser


def _add_validation_args(p: argparse.ArgumentParser, *, cases: bool = True) -> None:
    p.add_argument("--runtimes", type=_runtime_list, default=None,
                   help="comma-separated runtimes (default: every available one)")
    p.add_argument("--atol", type=_nonnegative_float, default=None, help="absolute tolerance (default 1e-5)")
    p.add_argument("--rtol", type=_nonnegative_float, default=None, help="relative tolerance (default 1e-4)")
    if cases:  # export always validates the default sweep
        p.add_argument("--cases", default=None,
                       help="comma-separated cases: sizes, one per dim of the spec in its order (BxS for an RNN, "
                            "e.g. 2x50 or 4 for a model spec), -h0zero for a zero initial state; or RNN ids "
                            "bBxsS-h0zero|random (default: the sweep)")
    p.add_argument("--json", dest="json_path", default=None, metavar="F", help="write a JSON report to F")
    p.add_argument("--junit", default=None, metavar="F", help="write a JUnit XML report to F")
    p.add_argument("--html", default=None, metavar="F", help="write a self-contained HTML report to F")
    p.add_argument("--max-memory", type=_memory_size, default=None, metavar="SIZE",
                   help="refuse weights or cases estimated to need more (e.g. 4G; default half of the memory "
                        "available now)")
