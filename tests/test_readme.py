"""The README's Quickstart and .ci/run must not drift apart."""

from __future__ import annotations

import re

from tests.conftest import REPO


def quickstart_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.+?)\n```", section)


def test_quickstart_has_two_commands():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert "rnnexport export --all" in commands[0] and "-c constraints.txt" in commands[0]
    assert "pytest" in commands[1] and "-c constraints.txt" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert quickstart_commands()[1] in ci_lines


def test_constraints_pin_torch():
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text().splitlines()


def test_your_own_model_walkthrough_runs_as_written(tmp_path, cli, monkeypatch):
    """README "Your own model": the model file, a checkpoint, the TOML, export, validate, and
    loading the result in ONNX Runtime, exactly as the section's code blocks say."""
    import re
    import runpy
    import sys

    import torch
    from safetensors.torch import save_file

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Your own model"):text.index("## How the dynamo path works")]
    blocks = re.findall(r"```\w*\n(.*?)```", section, re.S)
    (tmp_path / "tagger.py").write_text(blocks[0])
    (tmp_path / "tagger.toml").write_text(blocks[1])
    assert "rnnexport export tagger.toml --out models" in blocks[2]
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from tagger import Tagger  # noqa: the README's own model file

    torch.manual_seed(1)
    save_file(Tagger(vocab=100).state_dict(), str(tmp_path / "tagger.safetensors"))
    code, _, err = cli("export", "tagger.toml", "--out", "models", "--runtimes", "onnxruntime-cpu")
    assert code == 0, err
    code, _, err = cli("validate", "models/tagger", "--runtimes", "onnxruntime-cpu")
    assert code == 0, err
    loaded = runpy.run_path(str(_write(tmp_path / "load.py", blocks[3])))
    assert loaded["tag_logits"].shape == (3, 57, 9)
    sys.modules.pop("tagger", None)


def _write(path, text):
    path.write_text(text)
    return path


def test_your_own_model_state_example_runs_as_written(tmp_path, monkeypatch):
    """README "Your own model": the stateful export_model example, with its streaming check."""
    import re

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Your own model"):text.index("## How the dynamo path works")]
    block = next(b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "stream_dim" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block.replace('out="models",', 'out="models", runtimes=["onnxruntime-cpu"],'), "README", "exec"),
         namespace)
    report = namespace["result"].report
    assert report.passed and report.streaming.get("cases"), report.streaming
