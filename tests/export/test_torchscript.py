from __future__ import annotations

import hashlib

import pytest
import torch

from rnnexport.builder import build_module
from rnnexport.errors import UsageError
from rnnexport.export.torchscript import export_torchscript
from rnnexport.spec import get_spec


@pytest.mark.parametrize("method", ["script", "trace"])
def test_torchscript_reloads_and_is_bit_identical_to_eager(tmp_path, method):
    spec = get_spec("deep_bidirectional").replace(nonlinearity="relu")
    module = build_module(spec)
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    messages = export_torchscript(spec, tmp_path / "weights.pt", tmp_path / "model.pt", method=method)
    assert any("deprecated" in m for m in messages)  # recorded, not printed
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    for batch, seq in [(1, 1), (3, 17), (2, 300)]:
        x, h = torch.randn(batch, seq, 5), torch.randn(6, batch, 8)
        with torch.no_grad():
            got, want = loaded(x, h), module(x, h)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_torchscript_is_byte_deterministic_whatever_ran_before(tmp_path):
    """torch.jit.script output depends on the hash seed and on earlier compilations in the
    process; export_torchscript must not."""
    spec = get_spec("deep")
    torch.save(build_module(spec).state_dict(), tmp_path / "weights.pt")
    # The archive's inner folder is named after the file, so both are called model.pt.
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    export_torchscript(spec, tmp_path / "weights.pt", tmp_path / "first" / "model.pt")
    torch.jit.script(build_module(get_spec("single_layer")))  # pollute this process's jit state
    export_torchscript(spec, tmp_path / "weights.pt", tmp_path / "second" / "model.pt")
    digest = [hashlib.sha256((tmp_path / n / "model.pt").read_bytes()).hexdigest() for n in ("first", "second")]
    assert digest[0] == digest[1]


def test_unknown_method(tmp_path):
    with pytest.raises(UsageError, match="unknown TorchScript method 'freeze'; valid: script, trace"):
        export_torchscript(get_spec("deep"), tmp_path / "w.pt", tmp_path / "m.pt", method="freeze")


def test_the_compile_server_compiles_in_the_callers_folder_even_after_its_own_is_gone(tmp_path, monkeypatch):
    """The compile server lives as long as the process that started it; the folder it started in
    may be deleted meanwhile, and later exports name relative paths from elsewhere."""
    import shutil

    from rnnexport.export import export_spec
    from rnnexport.export import compile_server as ts
    from rnnexport.spec import get_spec

    first = tmp_path / "first"
    first.mkdir()
    monkeypatch.chdir(first)
    if ts._SERVER is not None:
        ts._SERVER.close()
        ts._SERVER = None
    export_spec(get_spec("single_layer"), "out", validate=False)  # starts the server here
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(first)
    result = export_spec(get_spec("single_layer"), "again", validate=False)
    assert (tmp_path / "again" / "single_layer" / "model.pt").is_file() and not result.path.is_absolute()


class _Reporter:
    """An exporting (``spec.pipeline``) whose compilation reports the compiling child's state."""

    @staticmethod
    def compile_request(request):
        import gc
        import sys

        return {"frozen": gc.get_freeze_count(), "jsonschema": "jsonschema" in sys.modules,
                "threshold": gc.get_threshold()[0]}


def test_a_compiling_child_starts_with_the_servers_imports_frozen_and_the_spec_schemas_loaded(tmp_path):
    """Every compilation forks from the compile server: the child rechecks its spec against the
    shipped schema, and a collection of its own would walk every object torch made at import
    (tens of ms, and each page copied). The server loads the schemas and freezes (``gc.freeze``)
    once, before it forks."""
    from rnnexport.export.compile_server import start_compile

    request = {"exporting": f"{__name__}:_Reporter", "weights": str(tmp_path / "w"), "path": str(tmp_path / "m")}
    with start_compile(request, "reporter") as job:
        state = job.result()
    assert state["jsonschema"] and state["frozen"] > 100_000, state  # torch alone is hundreds of thousands
    assert state["threshold"] == 10_000, state  # collect_less, from before the server's imports
