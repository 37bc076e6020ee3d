"""``numbagrad graph`` and ``numbagrad profile --dump --render``: graphs as pictures through
Graphviz dot where it is installed, and as .dot files with a how-to where it is not."""

from __future__ import annotations

import re
import shutil

import pytest

from numbagrad import cli

HAS_DOT = shutil.which("dot") is not None
FILL = re.compile(r'^\s*n\d+ \[label="%\d+ ([^"\\]+)[^"]*".*fillcolor=(\w+)', re.M)


def fills(dot: str) -> dict[str, set[str]]:
    """Op (or leaf role) -> the fill colours its nodes have."""
    found: dict[str, set[str]] = {}
    for op, colour in FILL.findall(dot):
        found.setdefault(op, set()).add(colour)
    return found


@pytest.fixture
def no_dot(monkeypatch):
    monkeypatch.setattr(cli.graph.shutil, "which", lambda name: None)


def test_graph_writes_dot_with_fused_kernels_filled(tmp_path, capsys):
    out = tmp_path / "lenet5.dot"
    assert cli.main(["graph", "lenet5", "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "lenet5 inference, forward graph after schedule: 8 ops, 11 leaves",
        f"wrote {out}",
    ]
    dot = out.read_text()
    colours = fills(dot)
    kernels = colours["conv2d_epilogue"] | colours["matmul_epilogue"]
    assert len(kernels) == 5 and "white" not in kernels  # 3 convs + 2 linears, each its own
    assert "max_pool2d" not in colours  # runs alone: the default white
    assert re.search(r'-> n\d+ \[label="\d+(\.\d)? (B|KiB)"\];', dot)


def test_graph_before_fusion_colours_the_groups_to_be(tmp_path, capsys):
    out = tmp_path / "cse.dot"
    assert cli.main(["graph", "lenet5", "--after", "cse", "-o", str(out)]) == 0
    assert "forward graph after cse: " in capsys.readouterr().out
    colours = fills(out.read_text())
    assert "conv2d_epilogue" not in colours
    assert len(colours["conv2d"]) == 3 and colours["conv2d"] <= colours["relu"]


def test_graph_of_a_training_step(tmp_path, capsys):
    backward, forward = tmp_path / "b.dot", tmp_path / "f.dot"
    assert cli.main(["graph", "lenet5", "--training", "-o", str(backward)]) == 0
    assert (
        cli.main(["graph", "lenet5", "--training", "--graph", "forward", "-o", str(forward)]) == 0
    )
    out = capsys.readouterr().out
    assert "lenet5 training step, backward graph after schedule" in out
    assert "lenet5 training step, forward graph after schedule" in out
    assert "style=dashed" in backward.read_text()  # the optimizer's in-place updates
    assert "log_softmax" in forward.read_text()  # the loss is in the forward graph


def test_graph_without_graphviz_writes_dot_and_says_how_to_render(tmp_path, capsys, no_dot):
    out = tmp_path / "g.svg"
    assert cli.main(["graph", "lenet5", "--after", "input", "-o", str(out)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    dot = tmp_path / "g.dot"
    assert last == (
        f"Graphviz dot is not installed (apt-get install graphviz): wrote {dot}; render it "
        f"with dot -Tsvg {dot} -o {out}"
    )
    assert dot.read_text().startswith("digraph") and not out.exists()


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz dot is not installed")
@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".png", b"\x89PNG")])
def test_graph_renders_with_graphviz(tmp_path, capsys, suffix, magic):
    out = tmp_path / f"g{suffix}"
    assert cli.main(["graph", "lenet5", "--training", "-o", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out}"
    assert out.read_bytes().startswith(magic)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["graph", "lenet5", "-o", "g.jpg"], "-o g.jpg: the file must end in .svg, .png, .pdf"),
        (["graph", "lenet5", "-o", "/no/such/g.svg"], "no such directory to save into"),
        (["graph", "lenet5", "--after", "fuse", "-o", "g.dot"], "unknown pass 'fuse' for --after"),
        (["graph", "lenet5", "--graph", "forward", "-o", "g.dot"], "add --training"),
        (["graph", "lenet9", "-o", "g.dot"], "unknown model 'lenet9'"),
        (["graph", "lenet5"], "the following arguments are required: -o/--output"),
        (["profile", "lenet5", "--render", "svg"], "--render draws the graphs --dump writes"),
    ],
)
def test_graph_refusals_are_one_line(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("numbagrad: error: ") and message in err[0]


PROFILE = ["profile", "lenet5", "--batch-size", "1", "--steps", "1", "--backend", "interp"]


def test_profile_renders_every_dumped_graph(tmp_path, capsys):
    argv = [*PROFILE, "--dump", str(tmp_path), "--render", "svg"]
    if not HAS_DOT:
        pytest.skip("Graphviz dot is not installed")
    assert cli.main(argv) == 0
    dots = sorted(p.stem for p in tmp_path.glob("*.dot"))
    assert dots and dots == sorted(p.stem for p in tmp_path.glob("*.svg"))
    assert f"drew {len(dots)} graphs as .svg in {tmp_path}" in capsys.readouterr().out


def test_profile_render_without_graphviz_says_how(tmp_path, capsys, no_dot):
    assert cli.main([*PROFILE, "--dump", str(tmp_path), "--render", "png"]) == 0
    assert "Graphviz dot is not installed (apt-get install graphviz)" in capsys.readouterr().out
    assert list(tmp_path.glob("*.dot")) and not list(tmp_path.glob("*.png"))
