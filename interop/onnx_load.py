"""Reading an ONNX model that may be truncated, corrupt or hostile. Everything the file declares
is checked before anything uses it: a tensor's declared size against a limit and against the
bytes it carries, shapes against a limit, external data files against the model's folder (a
path outside it, absolute or through ``..`` or a link, is refused). Nothing in the file is
executed: its graph only ever becomes numbagrad ops (onnx_module.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, helper

from ..errors import OnnxError

MAX_ELEMENTS = 2**28  # per tensor: 1 GiB of float32, far beyond any layer of the model zoo
MAX_DIM = 2**31
SUPPORTED_OPSETS = range(11, 23)  # default-domain opsets whose operator versions we follow


def load_model(source: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """The checked ModelProto of ``source`` (a path or a ModelProto), external data loaded
    from files inside the model's folder, local functions inlined."""
    if isinstance(source, onnx.ModelProto):
        where, folder, model = "the ONNX model", None, source
    else:
        path = Path(source)
        where, folder = f"ONNX file {path}", path.resolve().parent
        model = _parse(path, where)
    _check_tensors(model, where, folder)
    if folder is not None:
        external_data_helper.load_external_data_for_model(model, str(folder))
    _check_shapes(model, where)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise OnnxError(f"{where} is not a valid ONNX model: {_first_line(e)}") from None
    opset_version(model, where)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    return model


def opset_version(model: onnx.ModelProto, where: str = "the ONNX model") -> int:
    """The model's default-domain opset, refused outside ``SUPPORTED_OPSETS``."""
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions or versions[0] not in SUPPORTED_OPSETS:
        found = versions[0] if versions else "none"
        raise OnnxError(
            f"{where} uses opset {found}; numbagrad imports opsets {SUPPORTED_OPSETS.start} to "
            f"{SUPPORTED_OPSETS.stop - 1} (re-export it with opset_version in that range)"
        )
    return versions[0]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _parse(path: Path, where: str) -> onnx.ModelProto:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OnnxError(f"cannot read {where}: {e.strerror}") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise OnnxError(
            f"{where} is not a readable ONNX model (truncated or corrupt: {e})"
        ) from None
    if not model.HasField("graph"):
        raise OnnxError(f"{where} is not a readable ONNX model (no graph: truncated or corrupt)")
    return model


def _all_tensors(model: onnx.ModelProto):
    """Every TensorProto of the model: initializers, Constant nodes, subgraphs."""
    return external_data_helper._get_all_tensors(model)


def _check_tensors(model: onnx.ModelProto, where: str, folder: Path | None) -> None:
    for t in _all_tensors(model):
        if any(d < 0 for d in t.dims) or int(np.prod(t.dims, dtype=object)) > MAX_ELEMENTS:
            raise OnnxError(
                f"{where}: tensor {t.name!r} declares shape {list(t.dims)}, beyond the "
                f"{MAX_ELEMENTS:,} elements numbagrad accepts per tensor"
            )
        if t.data_location == onnx.TensorProto.EXTERNAL:
            _check_external(t, where, folder)
        else:
            _check_inline_size(t, where)


def _check_inline_size(t: onnx.TensorProto, where: str) -> None:
    if t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return
    count = int(np.prod(t.dims, dtype=np.int64))
    itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    if t.raw_data:
        carried = len(t.raw_data) // itemsize if len(t.raw_data) % itemsize == 0 else -1
    else:
        carried = len(getattr(t, helper.tensor_dtype_to_field(t.data_type)))
    if carried != count:
        raise OnnxError(
            f"{where}: tensor {t.name!r} declares shape {list(t.dims)} ({count:,} values) but "
            f"carries {max(carried, 0):,} (truncated or corrupt)"
        )


def _check_external(t: onnx.TensorProto, where: str, folder: Path | None) -> None:
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    if folder is None:
        raise OnnxError(
            f"{where}: tensor {t.name!r} keeps its data in an external file; give from_onnx "
            "the model's path so the file is read from the model's folder"
        )
    target = (folder / location).resolve()
    if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
        raise OnnxError(
            f"{where}: tensor {t.name!r} points to external data {location!r} outside the "
            f"model's folder {folder}; only files inside that folder are read"
        )
    if not target.is_file():
        raise OnnxError(f"{where}: external data file {location!r} of tensor {t.name!r} is missing")
    itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    need = int(np.prod(t.dims, dtype=np.int64)) * itemsize
    offset, length = _int_field(info, "offset", where, t), _int_field(info, "length", where, t)
    length = need if length is None else length
    if length != need or (offset or 0) + length > target.stat().st_size:
        raise OnnxError(
            f"{where}: external data of tensor {t.name!r} ({location!r}, offset {offset or 0}, "
            f"length {length}) does not hold its {need:,} bytes (truncated or corrupt)"
        )


def _int_field(info: dict, key: str, where: str, t: onnx.TensorProto) -> int | None:
    if key not in info:
        return None
    try:
        value = int(info[key])
    except ValueError:
        value = -1
    if value < 0:
        raise OnnxError(f"{where}: tensor {t.name!r} has external data {key} {info[key]!r}")
    return value


def _check_shapes(model: onnx.ModelProto, where: str) -> None:
    g = model.graph
    for info in [*g.input, *g.output, *g.value_info]:
        if not info.type.HasField("tensor_type"):
            continue
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim if d.HasField("dim_value")]
        if any(d < 0 or d > MAX_DIM for d in dims):
            raise OnnxError(
                f"{where}: value {info.name!r} declares a dimension in {dims} outside "
                f"0..{MAX_DIM:,}"
            )
