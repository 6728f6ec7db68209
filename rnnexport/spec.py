"""RNNSpec: one recurrent configuration as data, loaded from TOML or the built-in catalog.

A spec is everything needed to rebuild the module and its example inputs bit for bit:
the architecture (the arguments of ``nn.RNN``), the documented example shape and the seed.
The four documented configurations live as TOML files in ``rnnexport/catalog/``.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rnnexport.errors import SpecError, UsageError
from rnnexport.contract import Contract, DimSpec, TensorSpec
from rnnexport.rnn_behaviour import RNNBehaviour

__all__ = ["CELLS", "NONLINEARITIES", "RNNSpec", "catalog", "get_spec", "load_spec", "replace_spec", "spec_from_dict",
           "spec_from_flags"]

CELLS = ("rnn", "lstm", "gru")
NONLINEARITIES = ("tanh", "relu")
_MAX_SPEC_BYTES = 1 << 20


@dataclass(frozen=True)
class RNNSpec(Contract, RNNBehaviour):
    """One recurrent network configuration.

    Attributes:
        name: Folder name of the artifact (letters, digits, ``_ . -``).
        cell: Recurrent cell: ``"rnn"`` (Elman, ``nn.RNN``), ``"lstm"`` (``nn.LSTM``, adds the cell
            state ``c_0``/``c_n``) or ``"gru"`` (``nn.GRU``). Default ``"rnn"``.
        input_size: Features per time step (``I``).
        hidden_size: Hidden features (``H``).
        num_layers: Stacked layers. Default 1.
        bidirectional: Two directions per layer; output has ``2*H`` features. Default False.
        batch_first: Input/output layout ``[batch, seq, feature]`` when True, else
            ``[seq, batch, feature]``. ``h_0``/``h_n`` are ``[layers*dirs, batch, H]`` either way.
            Default False (PyTorch's default).
        nonlinearity: ``"tanh"`` or ``"relu"``, for ``cell = "rnn"`` only. Default ``"tanh"``.
        bias: Whether the cell has ``b_ih``/``b_hh``. Default True.
        dropout: Dropout between layers; exported models are in eval mode, where it is the
            identity. Default 0.0.
        proj_size: LSTM projection size (``nn.LSTM(proj_size=...)``); 0 (default) for none. The
            hidden state ``h`` then has ``proj_size`` features; ONNX has no projection, so such
            models export to TorchScript and torch.export only.
        variable_length: Padded batches with per-example lengths: the model takes a ``lengths``
            input (int64, ``[batch]``), runs ``pack_padded_sequence(enforce_sorted=False)``
            semantics (ONNX ``sequence_lens``), pads outputs with 0 past each length and takes
            ``h_n`` at each example's last valid step. Default False.
        batch_size: Documented (example) batch size. Default 1.
        seq_len: Documented (example) sequence length. Default 1.
        seed: Seed of the weights and of every generated input. Default 0.
    """

    name: str
    input_size: int
    hidden_size: int
    cell: str = "rnn"
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    nonlinearity: str = "tanh"
    bias: bool = True
    dropout: float = 0.0
    proj_size: int = 0
    variable_length: bool = False
    batch_size: int = 1
    seq_len: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        # Built directly (RNNSpec(...)) a spec is checked like one from TOML.
        _check_values(dataclasses.asdict(self), f"RNNSpec(name={self.name!r})")

    kind = "rnn"  # the catalog's listing (`catalog(kind)`); the pipeline calls the spec protocol instead
    # An RNN configuration has no such keys: variants only when asked for (--variant), every
    # format (one that cannot be made recorded), TorchScript scripted (--torchscript trace).
    variants = None
    formats = None
    torchscript = "script"

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the recurrent state tensors: ``h`` (and ``c`` for an LSTM)."""
        return ("h", "c") if self.cell == "lstm" else ("h",)

    @property
    def output_size(self) -> int:
        """Features of ``h`` per direction: ``proj_size`` when set, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("output", *(f"{s}_n" for s in self.state_names))

    # The calling contract this configuration produces (`rnnexport.contract`), as a model spec
    # declares it: ``input``, ``h_0`` (``c_0``), ``lengths`` over ``batch`` and ``seq``.
    compact_case_ids = True  # b3xs17-h0zero
    derived = ()
    stream_dim = "seq"

    @property
    def dims(self) -> tuple[DimSpec, ...]:
        return (DimSpec("batch", self.batch_size), DimSpec("seq", self.seq_len))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """``input`` (float32, in the spec's layout), each initial state, and with
        `variable_length` ``lengths`` (int64 ``[batch]`` in ``[1, seq]``, unsorted; none need
        fill the sequence: outputs are padded to ``seq`` (``total_length``))."""
        shapes = self.shapes("batch", "seq")
        lengths = (TensorSpec("lengths", "int64", ("batch",), (1, "seq")),)
        return (*(TensorSpec(n, "float32", shapes[n]) for n in ("input", *self.state_inputs)),
                *(lengths if self.variable_length else ()))

    @property
    def state(self) -> tuple[tuple[str, str], ...]:
        """(input, output) pairs: ``h_n`` feeds ``h_0`` (and ``c_n`` ``c_0``) at the next chunk."""
        return tuple((f"{s}_0", f"{s}_n") for s in self.state_names)

    def sequence_shape(self, batch: int, seq: int, features: int) -> tuple[int, int, int]:
        """Shape of a sequence tensor in this spec's layout."""
        return (batch, seq, features) if self.batch_first else (seq, batch, features)

    def shapes(self, batch: int | str | None = None, seq: int | str | None = None) -> dict[str, tuple[int, ...]]:
        """Shapes of every graph input and output; defaults to the documented batch and seq."""
        batch = self.batch_size if batch is None else batch
        seq = self.seq_len if seq is None else seq
        layers = self.num_layers * self.num_directions
        shapes = {
            "input": self.sequence_shape(batch, seq, self.input_size),
            "output": self.sequence_shape(batch, seq, self.num_directions * self.output_size),
        }
        for s in self.state_names:
            state = (layers, batch, self.output_size if s == "h" else self.hidden_size)
            shapes[f"{s}_0"] = state
            shapes[f"{s}_n"] = state
        if self.variable_length:
            shapes["lengths"] = (batch,)
        return shapes

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Symbolic axes of every graph input and output: batch and sequence are dynamic."""
        seq_axes = {0: "batch", 1: "seq"} if self.batch_first else {0: "seq", 1: "batch"}
        axes: dict[str, dict[int, str]] = {"input": dict(seq_axes), "output": dict(seq_axes)}
        for s in self.state_names:
            axes[f"{s}_0"] = {1: "batch"}
            axes[f"{s}_n"] = {1: "batch"}
        if self.variable_length:
            axes["lengths"] = {0: "batch"}
        return axes

    def module_description(self) -> str:
        """The PyTorch constructor call this spec builds, e.g.
        ``nn.RNN(5, 8, num_layers=3, batch_first=True)`` (defaults left out)."""
        options = [f"num_layers={self.num_layers}"] if self.num_layers > 1 else []
        options += [f"nonlinearity={self.nonlinearity!r}"] if self.nonlinearity != "tanh" else []
        options += ["bias=False"] if not self.bias else []
        options += ["batch_first=True"] if self.batch_first else []
        options += [f"dropout={self.dropout}"] if self.dropout else []
        options += ["bidirectional=True"] if self.bidirectional else []
        options += [f"proj_size={self.proj_size}"] if self.proj_size else []
        return f"nn.{self.cell.upper()}({', '.join([str(self.input_size), str(self.hidden_size), *options])})"

    def case_bytes(self, case, outputs: tuple = (), runs: int = 1) -> int:
        """Estimated peak bytes of running `case` on `runs` runtimes at once
        (`rnnexport.limits.case_bytes`); `outputs` is for model specs (an RNN spec's follow from it)."""
        from rnnexport.limits import case_bytes

        return case_bytes(self, case.size("batch"), case.size("seq"), runs)

    def acceptance_criteria(self) -> tuple:
        """The criteria variants are judged by: the default one for every output
        (`rnnexport.criteria.DEFAULT`); RNN configurations declare none."""
        from rnnexport.criteria import parse_criteria

        return parse_criteria({}, self.output_names, (), self.name, ValueError)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RNNSpec:
        """A validated copy with some fields changed (`replace_spec`)."""
        return replace_spec(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(RNNSpec)}
_REQUIRED = tuple(f.name for f in dataclasses.fields(RNNSpec) if f.default is dataclasses.MISSING)


def _check_values(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Keys, types and values against the shipped schema (`rnnexport.schema`, kind
    ``rnn-config``), then the combinations it cannot state; returns them with floats coerced.

    Raises:
        SpecError: naming the key and the value.
    """
    from rnnexport.schema import check

    check("rnn-config", data, source, SpecError)
    values = {k: float(v) if k == "dropout" else v for k, v in data.items()}

    def bad(key: str, valid: str) -> SpecError:
        return SpecError(f"{source}: invalid value for {key!r}: {values[key]!r}; valid: {valid}")

    cell = values.get("cell", "rnn")
    if cell != "rnn" and values.get("nonlinearity", "tanh") != "tanh":
        raise bad("nonlinearity", f"'tanh' (nonlinearity applies to cell 'rnn' only; cell is {cell!r})")
    if values.get("proj_size", 0) > 0:
        if cell != "lstm":
            raise bad("proj_size", f"0 (projections exist for cell 'lstm' only; cell is {cell!r})")
        if values["proj_size"] >= values.get("hidden_size", 0):
            raise bad("proj_size", f"an integer below hidden_size ({values.get('hidden_size')})")
    return values


def spec_from_dict(data: dict[str, Any], *, source: str = "spec") -> RNNSpec:
    """Validate a mapping of spec keys and build an `RNNSpec`.

    Raises:
        SpecError: naming the key and the value for an unknown key, a missing key, a wrong type or
            an invalid value.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a table of spec keys, got {type(data).__name__}")
    values = _check_values(data, source)
    missing = [k for k in _REQUIRED if k not in data]  # the schema's, and a name (a TOML file's stem by default)
    if missing:
        raise SpecError(f"{source}: missing required key {missing[0]!r}")
    return RNNSpec(**values)


def load_spec(path: str | Path):
    """Load and validate a spec from a TOML file: an `RNNSpec`, or a `ModelSpec` when the file
    has a ``module`` key (docs/specs.md, "Model spec").

    Raises:
        SpecError: the file is unreadable, is not TOML, or holds an invalid spec.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise SpecError(f"spec file {str(path)!r} is not a regular file")
    if path.is_file() and path.stat().st_size > _MAX_SPEC_BYTES:
        raise SpecError(f"spec file {str(path)!r} is {path.stat().st_size} bytes; a spec is a few lines of TOML")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {str(path)!r}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"spec file {str(path)!r} is not valid TOML: {exc}") from None
    from rnnexport.modelspec_load import is_model_spec_data, load_model_spec

    if is_model_spec_data(data):  # a model spec names a module; an RNN spec a cell
        return load_model_spec(path, data)
    data.setdefault("name", path.stem)
    return spec_from_dict(data, source=f"spec file {str(path)!r}")


def replace_spec(spec, **changes: Any):
    """A validated copy of `spec` (either kind) with some keys changed, e.g. ``seed``.

    Raises:
        SpecError: a changed key or value the spec does not take.
    """
    from rnnexport.modelspec_load import is_model_spec_data, model_spec_from_dict

    data = {**spec.to_dict(), **changes}
    return model_spec_from_dict(data) if is_model_spec_data(data) else spec_from_dict(data)


def catalog(kind: str | None = None) -> dict:
    """The built-in configurations (``rnnexport/catalog/*.toml``), by name, in sorted order:
    the documented RNN configurations and the example model specs (`kind` ``"rnn"`` or
    ``"model"`` selects one kind)."""
    from rnnexport.modelspec_load import is_model_spec_data, load_model_spec

    specs = {}
    for entry in sorted(resources.files("rnnexport.catalog").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            if is_model_spec_data(data):
                spec = load_model_spec(Path(str(entry)), data)
            else:
                spec = spec_from_dict(data, source=f"built-in spec {entry.name!r}")
            if kind in (None, spec.kind):
                specs[spec.name] = spec
    return specs


def get_spec(name_or_path: str) -> RNNSpec:
    """A built-in configuration by name, or a spec loaded from a ``.toml`` path.

    Raises:
        UsageError: unknown name; the message lists the valid names and the closest match.
    """
    if name_or_path.endswith(".toml") or Path(name_or_path).is_file():
        return load_spec(name_or_path)
    specs = catalog()
    if name_or_path in specs:
        return specs[name_or_path]
    close = difflib.get_close_matches(name_or_path, list(specs), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    if Path(f"{name_or_path}.toml").is_file():  # `export sentiment` for ./sentiment.toml
        hint = f" Did you mean {name_or_path + '.toml'!r} (a spec file in this folder)?"
    raise UsageError(
        f"unknown configuration {name_or_path!r}.{hint} Valid names: {', '.join(specs)}; "
        "or pass a path to a spec .toml file."
    )


def spec_from_flags(
    *, cell: str, input_size: int | None, hidden_size: int | None, name: str | None = None, **options: Any
) -> RNNSpec:
    """A spec given by keyword values (the ``export --cell ...`` flags), validated like a TOML spec.

    Without `name`, the name is derived from the values: ``rnn_i5_h8_l3_bi_bf``.

    Raises:
        UsageError: `input_size` or `hidden_size` missing.
        SpecError: an invalid value, naming the key.
    """
    missing = [key for key, value in (("input_size", input_size), ("hidden_size", hidden_size)) if value is None]
    if missing:
        raise UsageError(f"cell {cell!r} needs {' and '.join(missing)}")
    data = {"cell": cell, "input_size": input_size, "hidden_size": hidden_size, **options}
    if name is None:
        get = lambda key: data.get(key, _FIELDS[key].default)  # noqa: E731
        parts = [f"{cell}", f"i{input_size}", f"h{hidden_size}", f"l{get('num_layers')}"]
        parts += ["bi"] * get("bidirectional") + ["bf"] * get("batch_first") + ["var"] * get("variable_length")
        parts += [f"p{get('proj_size')}"] * bool(get("proj_size")) + ["nobias"] * (not get("bias"))
        parts += [get("nonlinearity")] * (get("nonlinearity") != "tanh")
        name = "_".join(map(str, parts))
    return spec_from_dict({**data, "name": name}, source="export flags")
