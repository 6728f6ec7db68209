"""One spec protocol (issue 18): every stage calls the spec (`rnnexport.rnn_behaviour`,
`rnnexport.model_behaviour`) instead of branching on its kind, so a model spec gets what an RNN
configuration gets: cases in one syntax (``--cases``, ``bench --shapes``, the plugin's
``cases=``), the error per time step along its stream dim, the streaming check without the eager
reference."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from rnnexport.artifacts import open_artifact
from rnnexport.bench import bench_artifact
from rnnexport.options import parse_cases
from rnnexport.validate import validate_artifact
from tests.conftest import MODELS

PACKAGE = Path(__file__).resolve().parents[1] / "rnnexport"


def test_no_stage_branches_on_the_kind_of_spec():
    """The issue's own check: `grep -rnE "\\.kind ==|isinstance\\([^)]*(ModelSpec|RNNSpec)" rnnexport/`."""
    pattern = re.compile(r"\.kind ==|isinstance\([^)]*(ModelSpec|RNNSpec)")
    found = [f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}" for path in sorted(PACKAGE.rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def _import_graph() -> dict[str, set[str]]:
    """rnnexport's modules and the rnnexport modules each imports (in functions too; not under
    ``if TYPE_CHECKING``)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        edges = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                edges |= {resolve(a.name) for a in node.names if a.name.startswith("rnnexport")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("rnnexport"):
                edges |= {resolve(f"{node.module}.{a.name}") for a in node.names}
        graph[name] = {e for e in edges if e and e != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module."""
    reach = {m: set() for m in graph}
    for start in graph:
        todo = list(graph[start])
        while todo:
            m = todo.pop()
            if m not in reach[start]:
                reach[start].add(m)
                todo.extend(graph.get(m, ()))
    groups = {frozenset({m, *(o for o in reach[m] if m in reach[o])}) for m in graph}
    return [set(g) for g in groups if len(g) > 1]


def test_no_import_cycles():
    """Imports inside functions count."""
    graph = _import_graph()
    assert _cycles(graph) == []
    graph["rnnexport.inputs"].add("rnnexport.spec")  # the test can fail: a cycle through the RNN spec
    assert any({"rnnexport.inputs", "rnnexport.spec", "rnnexport.contract"} <= c for c in _cycles(graph))


def _private_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rnnexport"):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")
                      and not a.name.endswith("__")]
            found += [node.module] if any(p.startswith("_") for p in node.module.split(".")) else []
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("rnnexport")
                      and any(p.startswith("_") for p in a.name.split("."))]
    return found


def test_no_private_name_is_imported_from_another_module():
    found = {str(path.relative_to(PACKAGE)): names for path in sorted(PACKAGE.rglob("*.py"))
             if (names := _private_imports(ast.parse(path.read_text())))}
    assert found == {}
    assert _private_imports(ast.parse("from rnnexport.export.steps import _check\nimport rnnexport._x")) == [
        "rnnexport.export.steps._check", "rnnexport._x"]  # the test can fail


def test_one_case_syntax_for_every_spec(tmp_path):
    """Sizes, one per dim in the spec's order: ``2x9`` is batch x seq for an RNN, batch x time
    for keyword_spotter; ``4`` the decoder's batch; a case that does not fit runs the spec's
    own sweep, with a note."""
    spotter = validate_artifact(MODELS / "keyword_spotter", runtimes=["onnxruntime-cpu"],
                                cases=parse_cases("2x9,3x5-h0zero"))
    deep = validate_artifact(MODELS / "deep", runtimes=["onnxruntime-cpu"], cases=parse_cases("2x9,3x5-h0zero"))
    decoder = validate_artifact(MODELS / "seq2seq_decoder", runtimes=["onnxruntime-cpu"], cases=parse_cases("4,9"))
    assert spotter.cases[:2] == ["batch=2,time=9,state=random", "batch=3,time=5,state=zero"] and spotter.passed
    assert deep.cases[:2] == ["b2xs9-h0random", "b3xs5-h0zero"]
    assert decoder.cases[:2] == ["batch=4", "batch=9"] and decoder.passed
    unfit = validate_artifact(MODELS / "seq2seq_decoder", runtimes=["onnxruntime-cpu"], cases=parse_cases("2x9"))
    assert unfit.cases[:4] == ["batch=4", "batch=1", "batch=7", "batch=64"]  # its own sweep
    assert any("the given case 2x9 does not fit this spec's dims (batch)" in n for n in unfit.notes)
    report = bench_artifact(open_artifact(MODELS / "keyword_spotter"), runtimes=["onnxruntime-cpu"],
                            cases=parse_cases("1x30"), warmup=0, repeat=2)
    assert {r.shape for r in report.results} == {"batch=1,time=30"}


def test_a_model_spec_gets_its_error_over_time_along_its_stream_dim(tmp_path):
    from rnnexport.report import write_html

    report = validate_artifact(MODELS / "keyword_spotter", runtimes=["onnxruntime-cpu"])
    curve = report.error_over_time["onnxruntime-cpu"]
    longest = max(report.cases, key=lambda c: [int(v) for v in re.findall(r"(?:time|batch)=(\d+)", c)][::-1])
    assert curve["case"] == longest and curve["output"] == "logits"
    io = json.loads((MODELS / "keyword_spotter" / "manifest.json").read_text())["io"]
    steps = next(int(c) for c in re.findall(r"time=(\d+)", longest))
    logits = next(o for o in io["outputs"] if o["name"] == "logits")
    assert logits["dynamic_axes"]["1"] == "time" and len(curve["errors"]) == steps
    write_html([report], tmp_path / "r.html")
    assert "Error per time step" in (tmp_path / "r.html").read_text()


def test_the_streaming_check_runs_without_the_eager_reference():
    """--untrusted: a model spec's module is not imported, so only the stored golden cases run;
    the streaming check compares each runtime with itself and runs on them, in three chunks."""
    report = validate_artifact(MODELS / "keyword_spotter", runtimes=["onnxruntime-cpu"], trusted=False)
    assert "torch" in report.skipped and report.cases == ["batch=2,time=50,state=random", "batch=1,time=1,state=zero"]
    streamed = [c for c in report.comparisons if c.against == "streaming"]
    assert report.passed and {(c.runtime, c.output) for c in streamed} == {("onnxruntime-cpu", "logits"),
                                                                         ("onnxruntime-cpu", "h_n")}
    assert report.streaming["chunks"] == {"batch=2,time=50,state=random": [16, 1, 33]}
