"""The README's "Writing your own layer" code blocks run as written, in order, as one script
(its custom ops registered in this process under the README's ``demo::`` names)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np

README = Path(__file__).parents[1] / "README.md"


def _section_code(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.index("\n## ", start + 1)
    return "\n".join(re.findall(r"```python\n(.*?)```", text[start:end], re.DOTALL))


def test_writing_your_own_layer_runs_as_written(tmp_path, monkeypatch, capsys):
    script = tmp_path / "readme_layer.py"
    script.write_text(_section_code("Writing your own layer"))
    monkeypatch.chdir(tmp_path)
    names = runpy.run_path(str(script), run_name="readme_layer")
    losses = names["losses"]
    assert losses[-1] < losses[0]
    x = names["x"]
    assert names["resumed"](x, np.tanh(x)) == names["step"](x, np.tanh(x))
    assert np.allclose(names["clip_ste"](np.array([-3.0, 0.5]), limit=2.0), [-2.0, 0.5])
    assert "[" in capsys.readouterr().out  # the reference's result, printed
