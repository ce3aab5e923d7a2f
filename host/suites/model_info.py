"""Static facts about a .tflite model: op list, MACs, parameter count, I/O quantization.

Energy-per-inference results are only comparable when we know what the inference
computed, so every run records the model's cost (MACs, parameters) and identity
(size, SHA-256) next to its measurements. The model is read with the flatbuffers
schema that ships in the tflite-micro wheel, so no TensorFlow install is needed.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

_OP_NAMES: dict[int, str] = {
    code: name for name, code in vars(S.BuiltinOperator).items() if not name.startswith("_")
}
_TYPE_NAMES: dict[int, str] = {
    code: name.lower() for name, code in vars(S.TensorType).items() if not name.startswith("_")
}
_FILE_IDENTIFIER = b"TFL3"
_REEXPORT = "re-export it with the TFLite converter"


class ModelError(ValueError):
    """The bytes are not a TFLite model this module can describe."""


@dataclass(frozen=True)
class ModelInfo:
    """What one inference of a model computes, and which model file it is."""

    ops: tuple[str, ...]
    macs: int
    params: int
    input_shape: tuple[int, ...]
    input_dtype: str
    input_scale: float
    input_zero_point: int
    output_shape: tuple[int, ...]
    size_bytes: int
    sha256: str


def model_info(path: Path) -> ModelInfo:
    """Describe the .tflite file at ``path``; a bad file raises ModelError naming it."""
    data = Path(path).read_bytes()
    try:
        return read_model_info(data)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


def read_model_info(data: bytes) -> ModelInfo:
    """Describe a .tflite model given as bytes (main subgraph only)."""
    if len(data) < 8 or data[4:8] != _FILE_IDENTIFIER:
        raise ModelError(
            f"not a TFLite flatbuffer (missing {_FILE_IDENTIFIER.decode()} identifier): "
            "pass a .tflite model file"
        )
    try:
        model = S.ModelT.InitFromPackedBuf(data, 0)
    except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"corrupt or truncated TFLite flatbuffer ({exc}): copy or export the model again"
        ) from exc
    try:
        return _describe(model, data)
    except (IndexError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(
            f"inconsistent TFLite model ({type(exc).__name__}: {exc}): {_REEXPORT}"
        ) from exc


def _describe(model: S.ModelT, data: bytes) -> ModelInfo:
    if not model.subgraphs:
        raise ModelError(f"TFLite model has no subgraphs: {_REEXPORT}")
    graph = model.subgraphs[0]
    tensors = graph.tensors
    if any(ids is None or not len(ids) for ids in (graph.inputs, graph.outputs)):
        raise ModelError(f"TFLite main subgraph has no inputs or outputs: {_REEXPORT}")
    ops: list[str] = []
    macs = 0
    for op in graph.operators or []:
        name = _op_name(model.operatorCodes[op.opcodeIndex])
        ops.append(name)
        macs += _op_macs(
            name, [_shape(tensors[i]) for i in op.inputs], _shape(tensors[op.outputs[0]])
        )
    params = sum(math.prod(_shape(t)) for t in tensors if _is_constant(model.buffers[t.buffer]))
    source = tensors[graph.inputs[0]]
    scale, zero_point = _quantization(source)
    return ModelInfo(
        ops=tuple(ops),
        macs=macs,
        params=params,
        input_shape=_shape(source),
        input_dtype=_TYPE_NAMES.get(source.type, f"type{source.type}"),
        input_scale=scale,
        input_zero_point=zero_point,
        output_shape=_shape(tensors[graph.outputs[0]]),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def macs_by_op(data: bytes) -> dict[str, int]:
    """Multiply-accumulates per operator type of one inference (main subgraph), the count of
    each type under ``"<TYPE>#ops"``, and a convolution's kernel positions (outputs x kernel
    height x width, whatever the input depth) under ``"CONV_2D#positions"``: what a
    per-operator latency model needs."""
    read_model_info(data)  # the same checks, and the same errors, as for the whole model
    model = S.ModelT.InitFromPackedBuf(data, 0)
    graph = model.subgraphs[0]
    out: dict[str, int] = {}
    for op in graph.operators or []:
        name = _op_name(model.operatorCodes[op.opcodeIndex])
        macs = _op_macs(name, [_shape(graph.tensors[i]) for i in op.inputs],
                        _shape(graph.tensors[op.outputs[0]]))
        out[name] = out.get(name, 0) + macs
        out[f"{name}#ops"] = out.get(f"{name}#ops", 0) + 1
        if name == "CONV_2D":
            _, k_h, k_w, _ = _shape(graph.tensors[op.inputs[1]])
            positions = math.prod(_shape(graph.tensors[op.outputs[0]])) * k_h * k_w
            out["CONV_2D#positions"] = out.get("CONV_2D#positions", 0) + positions
    return out


def _op_name(code: S.OperatorCodeT) -> str:
    # Old files only fill the 8-bit deprecated field; new ones may leave it at 127
    # (PLACEHOLDER_FOR_GREATER_OP_CODES). TFLite itself takes the larger of the two.
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    name = _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")
    if builtin == S.BuiltinOperator.CUSTOM and code.customCode:
        custom = code.customCode
        return f"CUSTOM:{custom.decode() if isinstance(custom, bytes) else custom}"
    return name


def _op_macs(name: str, inputs: list[tuple[int, ...]], output: tuple[int, ...]) -> int:
    """Multiply-accumulates of one op; layouts are TFLite's (NHWC, OHWI filters)."""
    if name == "CONV_2D":
        _, k_h, k_w, in_c = inputs[1]
        return math.prod(output) * k_h * k_w * in_c
    if name == "DEPTHWISE_CONV_2D":
        _, k_h, k_w, _ = inputs[1]
        return math.prod(output) * k_h * k_w
    if name == "FULLY_CONNECTED":
        return math.prod(output) * inputs[1][-1]
    return 0


def _shape(tensor: S.TensorT) -> tuple[int, ...]:
    return () if tensor.shape is None else tuple(int(d) for d in tensor.shape)


def _is_constant(buffer: S.BufferT) -> bool:
    # Data is either inline or, in models over 2 GB, at an offset after the flatbuffer.
    return (buffer.data is not None and len(buffer.data) > 0) or buffer.offset > 1


def _quantization(tensor: S.TensorT) -> tuple[float, int]:
    q = tensor.quantization
    if q is None or q.scale is None or not len(q.scale):
        return 0.0, 0
    zero_points = q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0]
    return float(q.scale[0]), int(zero_points[0])
