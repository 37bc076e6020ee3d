"""numbagrad.load on files that are not intact saves: each is refused with one SavedModelError
sentence saying what is wrong (naming the node, for graphs); nothing read from a file runs as
code; and edits that keep a graph valid are caught by the content digest."""

from __future__ import annotations

import json
import os
import string
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _tamper import X_CONV, ConvNet, edited, inputs, node, nodes, read, save_model, write
from _tamper import save_training as save_training_step

import numbagrad as ng
from numbagrad import aot_file
from numbagrad.errors import OpError, SavedModelError
from numbagrad.graph.ops import all_ops
from numbagrad.graph.passes.fuse import compose_scalar


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("load")
    return SimpleNamespace(
        conv_cpu=save_model(ConvNet(), X_CONV, "cpu", d / "conv_cpu.npz"),
        conv=save_model(ConvNet(), X_CONV, "interp", d / "conv.npz"),
        step=save_training_step("interp", d / "step.npz")[0],
    )


def _refused(path: Path, match: str) -> str:
    with pytest.raises(SavedModelError, match=match) as info:
        ng.load(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


# --- code in a file never runs ---------------------------------------------------------------


def _payload(marker: Path) -> str:
    return f"0\nimport os\nos.system('touch {marker}')\n"


def _set_step(op_name=None, attrs=None):
    """Edit step 0 of the conv epilogue's body (relu)."""

    def edit(meta, marker):
        step = node(meta, "conv2d_epilogue")["attrs"]["body"][0]
        if op_name is not None:
            step[0] = op_name(marker)
        if attrs is not None:
            step[0], step[2] = "leaky_relu", attrs(marker)

    return edit


def _set_attr(op, key, value):
    def edit(meta, marker):
        node(meta, op)["attrs"][key] = value(marker)

    return edit


INJECTIONS = {
    "a stored scalar expression": (
        _set_attr("conv2d_epilogue", "scalar", lambda m: "{0}" + _payload(m)),
        "'scalar' is computed at load and must not be stored",
    ),
    "a fused group's scalar": (
        _set_attr("fused_elementwise", "scalar", lambda m: f"__import__('os').system('{m}')"),
        "fused_elementwise .*'scalar' is computed at load",
    ),
    "code as a body step's op": (
        _set_step(op_name=lambda m: "relu" + _payload(m)),
        "conv2d_epilogue .*unknown op",
    ),
    "code as a float attribute in a body": (
        _set_step(attrs=lambda m: [["negative_slope", "0.1 +" + _payload(m)]]),
        "conv2d_epilogue .*attribute",
    ),
    "code where a pair of ints goes": (
        _set_attr("max_pool2d", "stride", lambda m: f"__import__('os').system('touch {m}')"),
        "max_pool2d .*attribute stride=.* is not of the type it takes",
    ),
    "code where an int goes": (
        _set_attr("conv2d_epilogue", "groups", _payload),
        "conv2d_epilogue .*attribute groups=",
    ),
    "code where a shape goes": (
        _set_attr("conv2d_epilogue", "view", lambda m: [2, _payload(m)]),
        "conv2d_epilogue .*view must be None or a shape",
    ),
}


@pytest.mark.parametrize("label", INJECTIONS)
def test_code_in_an_attribute_is_refused_and_never_runs(files, tmp_path, label):
    edit, match = INJECTIONS[label]
    marker = tmp_path / "ran"
    path = edited(files.conv_cpu, tmp_path / "evil.npz", lambda m, a: edit(m, marker), True)
    _refused(path, match)
    assert not marker.exists()


def test_code_in_names_is_only_text(files, tmp_path):
    """Names reach nothing but messages: a file whose names hold code loads and runs right."""
    marker = tmp_path / "ran"

    def edit(meta, arrays):
        for n in nodes(meta):
            if n["role"] not in ("input",):
                n["name"] = _payload(marker)

    path = edited(files.conv_cpu, tmp_path / "names.npz", edit, hostile=True)
    x = inputs(X_CONV)
    np.testing.assert_array_equal(ng.load(path)(x), ng.load(files.conv_cpu)(x))
    assert not marker.exists()


def test_attributes_written_into_kernels_are_finite_floats():
    """Audit of the one way attribute values reach generated source as text: elementwise
    templates name attributes (``{alpha}``), and every such attribute is a finite float once
    the op has checked it: code, NaN and infinity are refused."""
    named = 0
    for name, opdef in all_ops().items():
        if opdef.category != "elementwise" or name == "fused_elementwise":
            continue
        fields = {f for _, f, _, _ in string.Formatter().parse(opdef.scalar) if f}
        for attr in fields - {str(k) for k in range(opdef.arity[1])}:
            named += 1
            assert type(opdef.make_attrs({attr: 1})[attr]) is float, (name, attr)
            for bad in ("__import__('os')", float("nan"), float("inf"), (1.0,)):
                with pytest.raises(OpError):
                    opdef.make_attrs({attr: bad})
    assert named >= 5  # elu, leaky_relu, pow, scaled_tanh, softplus at least


# --- what a security review found ---------------------------------------------------------


def _edit_node(op, key, value):
    return lambda meta, arrays: node(meta, op).__setitem__(key, value)


def _edit_attr(op, key, value):
    return lambda meta, arrays: node(meta, op)["attrs"].__setitem__(key, value)


def _swap_op(meta, arrays):
    node(meta, "max_pool2d")["op"] = "add"


GRAPH_EDITS = {
    "missing key": (lambda m, a: m.pop("input_names"), "metadata: the key 'input_names'"),
    "input pointing nowhere": (
        _edit_node("max_pool2d", "inputs", [999]),
        r"graph %\d+ max_pool2d '.*': it reads %999, which is not an earlier node",
    ),
    "changed intermediate shape": (
        _edit_node("max_pool2d", "shape", [2, 2, 1, 1]),
        r"max_pool2d .*stored as f32\[2,2,1,1\], but its inputs give f32\[2,2,2,2\]",
    ),
    "pool stride 0": (_edit_attr("max_pool2d", "stride", [0, 0]), "max_pool2d .*stride"),
    "an op of another arity": (_swap_op, r"%\d+ add .*add takes 2..2 inputs, not 1"),
    "an unknown op": (
        _edit_node("max_pool2d", "op", "frobnicate"),
        "'frobnicate' is not an op this numbagrad knows",
    ),
    "a number where a list goes": (_edit_node("max_pool2d", "inputs", 3), "expected a list"),
    "a list where a number goes": (_edit_node("max_pool2d", "id", [3]), "expected an integer"),
    "a string dtype numbagrad lacks": (_edit_node("max_pool2d", "dtype", "O"), "'O' is not one"),
    "a graph input that is no input": (
        lambda m, a: m["graph"].__setitem__("inputs", [1]),
        "they must be the graph's input leaves",
    ),
    "an attribute the op lacks": (_edit_attr("max_pool2d", "ceil_mode", True), "ceil_mode"),
    "a parameter of another shape": (
        lambda m, a: a.__setitem__("bound1", np.zeros((3, 3), np.float32)),
        r"graph %1 param 'conv.weight': its array 'bound1' is f32\[3,3\], not f32\[2,1,3,3\]",
    ),
    "a missing parameter": (lambda m, a: a.pop("bound1"), "its array 'bound1' is missing"),
    "an array nothing uses": (
        lambda m, a: a.__setitem__("extra", np.zeros(2)),
        "array 'extra': no part of the saved model uses it",
    ),
    "an unknown backend": (lambda m, a: m.update(backend="tpu"), "metadata backend: 'tpu'"),
    "an unknown kind": (lambda m, a: m.update(kind="weights"), "metadata kind: 'weights'"),
}


@pytest.mark.parametrize("label", GRAPH_EDITS)
def test_a_tampered_graph_is_refused_naming_what_is_wrong(files, tmp_path, label):
    edit, match = GRAPH_EDITS[label]
    _refused(edited(files.conv, tmp_path / "edited.npz", edit, hostile=True), match)
    # As saved (the digest not recomputed), every such edit reads as corruption.
    _refused(edited(files.conv, tmp_path / "as_saved.npz", edit, hostile=False), "is corrupted")


def _backward_input(meta, name_part):
    return next(n for n in nodes(meta, "bwd") if n["role"] == "input" and name_part in n["name"])


def _saved_leaf(meta):
    return next(n for n in nodes(meta, "bwd") if "saved_from" in n["attrs"])


TRAINING_EDITS = {
    "saved from a node of another type": (
        lambda m, a: _saved_leaf(m)["attrs"].update(saved_from=0),
        r"backward graph %\d+ input .*saved from %0, a f32\[2,5\], not its own type",
    ),
    "saved from no node": (
        lambda m, a: _saved_leaf(m)["attrs"].update(saved_from=9999),
        "saved from %9999, which is not a node of the forward graph",
    ),
    "a host scalar with no number": (
        lambda m, a: _backward_input(m, "bias_correction1").update(
            name="adam.bias_correction1(import os)"
        ),
        "has no numeric argument",
    ),
    "a host scalar that cannot be computed": (
        lambda m, a: _backward_input(m, "bias_correction2").update(
            name="adam.bias_correction2_sqrt(3.0)"
        ),
        "host-fed scalar input .* has no value at step 2",
    ),
    "no learning rate": (
        lambda m, a: _backward_input(m, "lr").update(name="rate"),
        "'rate': nothing feeds this input",
    ),
    "a negative step count": (lambda m, a: m.update(step_count=-1), "metadata step_count: -1"),
    "a counter that is no integer": (
        lambda m, a: m.update(counters={"x": "1"}),
        "metadata counters 'x': expected an integer",
    ),
    "an unknown state key": (
        lambda m, a: m["state_keys"].append("nope"),
        "metadata state_keys: 'nope' is none of",
    ),
    "inputs renamed": (
        lambda m, a: nodes(m, "fwd")[0].update(name="x"),
        "forward graph inputs: a training step's inputs are",
    ),
}


@pytest.mark.parametrize("label", TRAINING_EDITS)
def test_a_tampered_training_step_is_refused(files, tmp_path, label):
    edit, match = TRAINING_EDITS[label]
    _refused(edited(files.step, tmp_path / "edited.npz", edit, hostile=True), match)


# --- files that are no saves at all ---------------------------------------------------------


def test_files_that_are_not_intact_saves_are_refused(files, tmp_path):
    path = files.conv
    data = path.read_bytes()
    _refused(tmp_path / "none.npz", "none.npz: no such file")
    (tmp_path / "empty.npz").write_bytes(b"")
    _refused(tmp_path / "empty.npz", "empty.npz is empty")
    (tmp_path / "dir.npz").mkdir()
    _refused(tmp_path / "dir.npz", "dir.npz is a directory, not a file")
    (tmp_path / "text.npz").write_text("hello")
    _refused(tmp_path / "text.npz", "text.npz is not a file saved by numbagrad")
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    _refused(tmp_path / "cut.npz", "cut.npz is truncated or corrupted")
    meta, arrays = read(path)
    pickled = {**arrays, "obj": np.array([{"a": 1}], dtype=object)}
    np.savez(tmp_path / "pickle.npz", **pickled, __numbagrad__=np.array("{}"))
    _refused(tmp_path / "pickle.npz", "holds a pickled array")
    write(tmp_path / "list.npz", [meta], arrays, hostile=False)
    _refused(tmp_path / "list.npz", "its metadata is not a JSON object")
    np.savez(tmp_path / "json.npz", **arrays, __numbagrad__=np.array("{'format':"))
    _refused(tmp_path / "json.npz", "its metadata is not valid JSON")
    deep = "[" * 100_000 + "]" * 100_000  # beyond what the JSON parser recurses into
    np.savez(tmp_path / "deep.npz", **arrays, __numbagrad__=np.array(deep))
    _refused(tmp_path / "deep.npz", "its metadata is not valid JSON")
    nested = {**meta, "graph": {**meta["graph"], "name": json.loads("[" * 40 + "]" * 40)}}
    write(tmp_path / "nested.npz", nested, arrays, hostile=True)
    _refused(tmp_path / "nested.npz", "its metadata nests deeper than 32 levels")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    _refused(tmp_path / "plain.npz", "plain.npz is an .npz file, but not a model saved")
    write(tmp_path / "v1.npz", {**meta, "version": 1}, arrays, hostile=True)
    _refused(tmp_path / "v1.npz", "format version 1 .* reads version 2: compile it again")
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as z:  # a member that is no .npy
        z.writestr("__numbagrad__.npy", b"\x93NUMPY\x01\x00" + b"\xff" * 20)
    _refused(tmp_path / "bomb.npz", "bomb.npz is truncated or corrupted")


def test_an_unreadable_file_is_refused(files, tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(aot_file, "open", denied, raising=False)  # shadows the builtin
    _refused(files.conv, "cannot be read: permission denied")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_a_file_without_read_permission_is_refused(files, tmp_path):
    path = tmp_path / "private.npz"
    path.write_bytes(files.conv.read_bytes())
    path.chmod(0)
    _refused(path, "private.npz cannot be read: permission denied")


# --- edits that keep the graph valid: only the digest sees them ------------------------------


VALID_EDITS = {
    "pool window": _edit_attr("max_pool2d", "kernel", [1, 1]),  # 4x4 -> 2x2 as before
    "a parameter": lambda m, a: a["bound1"].__setitem__((0, 0, 0, 0), 5.0),
}


@pytest.mark.parametrize("label", VALID_EDITS)
def test_valid_edits_are_caught_by_the_digest(files, tmp_path, label):
    edit = VALID_EDITS[label]
    _refused(edited(files.conv, tmp_path / "as_saved.npz", edit, hostile=False), "is corrupted")
    # Whoever recomputes the digest gets a valid model that computes something else:
    # the digest is no signature (README, Security).
    hostile = ng.load(edited(files.conv, tmp_path / "hostile.npz", edit, hostile=True))
    x = inputs(X_CONV)
    assert not np.array_equal(hostile(x), ng.load(files.conv)(x))


def test_derived_attributes_are_recomputed_not_stored(files):
    meta, _ = read(files.conv_cpu)
    fused = [n for n in nodes(meta) if "body" in n["attrs"]]
    assert len(fused) == 3 and not any("scalar" in n["attrs"] for n in fused)
    loaded = ng.load(files.conv_cpu)
    for n in loaded.forward_graph.nodes:
        if "body" in n.attrs:
            assert n.attrs["scalar"] == compose_scalar(n.attrs["body"])
