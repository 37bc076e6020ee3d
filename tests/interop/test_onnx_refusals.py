"""Files from_onnx must refuse with one clear sentence, executing nothing: truncated and
corrupt files, external data outside the model's folder, huge declared shapes, tensors that
carry fewer values than they declare, unsupported operators (all named at once) and opsets."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import numbagrad as ng  # noqa: E402
from numbagrad.errors import OnnxError  # noqa: E402


def _model(nodes=None, initializers=(), opset=17, inputs=None) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = nodes or [helper.make_node("Add", ["x", "w"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", inputs or [x], [y], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _weight(name="w", shape=(1, 4)) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def _raw_tensor(name: str, dims, data: bytes) -> onnx.TensorProto:
    """A float tensor as a hostile file may hold it (helper.make_tensor checks its sizes)."""
    t = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, raw_data=data)
    t.dims.extend(dims)
    return t


def _refused(source, *words: str) -> str:
    with pytest.raises(OnnxError) as info:
        ng.from_onnx(source)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    return message


def test_a_valid_model_imports(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_model(initializers=[_weight()]), path)
    assert list(ng.from_onnx(path).state_dict()) == ["w"]


def test_truncated_and_corrupt_files(tmp_path):
    data = _model(initializers=[_weight()]).SerializeToString()
    for cut in (len(data) // 2, len(data) - 3):
        (tmp_path / "cut.onnx").write_bytes(data[:cut])
        _refused(tmp_path / "cut.onnx", "cut.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xfe not a protobuf \x00" * 10)
    _refused(tmp_path / "junk.onnx", "junk.onnx")
    _refused(tmp_path / "missing.onnx", "cannot read")


def test_external_data_outside_the_models_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(4, np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "link.bin").symlink_to(secret)
    for location in ("../secret.bin", str(secret), "link.bin"):
        w = _weight()
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        w.external_data.add(key="location", value=location)
        onnx.save(_model(initializers=[w]), folder / "m.onnx")
        _refused(folder / "m.onnx", "outside the model's folder")


def test_external_data_inside_the_folder_loads(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_model(initializers=[_weight()]), path, save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)  # fmt: skip
    np.testing.assert_array_equal(ng.from_onnx(path).state_dict()["w"], np.ones((1, 4)))
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 3)  # truncated
    _refused(path, "does not hold")


def test_huge_declared_shapes_are_refused(tmp_path):
    huge = _raw_tensor("w", [2**20, 2**20], b"")
    _refused(_model(initializers=[huge]), "'w'", "beyond")
    shape = numpy_helper.from_array(np.array([2**30, 2**30], np.int64), "s")
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["c"], name="fill"),
             helper.make_node("Add", ["x", "c"], ["y"], name="add")]  # fmt: skip
    model = ng.from_onnx(_model(nodes, [shape]))
    with pytest.raises(OnnxError, match="fill"):
        ng.compile(model, ng.Spec((1, 4)), backend="interp")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2**40])
    _refused(_model(initializers=[_weight()], inputs=[x]), "dimension")


def test_tensor_carrying_fewer_values_than_declared(tmp_path):
    short = _raw_tensor("w", [1, 4], np.ones(2, np.float32).tobytes())
    _refused(_model(initializers=[short]), "'w'", "carries")


def test_unsupported_operators_are_named_all_at_once():
    nodes = [helper.make_node("Add", ["x", "w"], ["a"], name="add"),
             helper.make_node("NonMaxSuppression", ["a", "a"], ["b"], name="nms"),
             helper.make_node("Einsum", ["b"], ["y"], name="ein", equation="ij->ij")]  # fmt: skip
    message = _refused(_model(nodes, [_weight()], opset=18), "NonMaxSuppression", "'nms'",
                       "Einsum", "'ein'", "opset 18")  # fmt: skip
    assert message.count("node") >= 2


def test_unsupported_opset_is_refused():
    _refused(_model(initializers=[_weight()], opset=9), "opset 9")


def test_an_input_of_the_wrong_dtype_is_refused():
    model = ng.from_onnx(_model(initializers=[_weight()]))
    with pytest.raises(ng.errors.DTypeError, match="'x' is float32, got float64"):
        ng.trace(model, ng.Spec((1, 4), "float64"))


def test_a_malformed_node_is_refused_naming_it():
    shape = numpy_helper.from_array(np.array([3, 5], np.int64), "s")  # 4 values into 15
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="squash")]
    model = ng.from_onnx(_model(nodes, [shape]))
    with pytest.raises(ng.errors.NumbagradError, match="squash"):
        ng.trace(model, ng.Spec((1, 4)))
    nodes = [helper.make_node("Gather", ["x", "i"], ["y"], name="pick", axis=1)]
    index = numpy_helper.from_array(np.array([1.5], np.float32), "i")
    with pytest.raises(OnnxError, match="pick"):
        ng.trace(ng.from_onnx(_model(nodes, [index])), ng.Spec((1, 4)))


def test_damaged_files_raise_only_numbagrad_errors(tmp_path):
    """Bytes of a valid model flipped or cut at random: the model imports and traces, or
    a NumbagradError says why not; nothing else escapes."""
    from numbagrad import models

    data = ng.to_onnx(models.lenet5(), ng.Spec((1, 1, 32, 32))).SerializeToString()
    rng = np.random.default_rng(0)
    path = tmp_path / "damaged.onnx"
    for trial in range(60):
        damaged = bytearray(data)
        if trial % 3 == 0:
            damaged = damaged[: rng.integers(1, len(data))]
        else:
            for at in rng.integers(0, len(data), size=1 + trial % 4):
                damaged[at] = rng.integers(0, 256)
        path.write_bytes(bytes(damaged))
        try:
            ng.trace(ng.from_onnx(path), ng.Spec((1, 1, 32, 32)))
        except ng.errors.NumbagradError:
            pass
