"""A synthetic stand-in for the MLPerf Tiny KWS DS-CNN reference model.

Energy and latency depend on the ops and their shapes, not on the trained weights, so a
model with the reference architecture and random int8 weights lets the kit measure a
board (and its tests run) where the reference .tflite file is not available. Its
predictions are meaningless, which the SYNTHETIC_LABEL constant and the model's
description field say.

Weights are drawn from a fixed seed; each layer is then normalised on random calibration
inputs (as batch norm folded into the weights would be) so that activations use the
int8 range instead of saturating or collapsing to zero. Weights and calibration inputs
all come from one fixed seed, so every call returns the same bytes.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

SYNTHETIC_LABEL = "synthetic weights: accuracy not meaningful"

_SEED = 20240601
_CALIBRATION_INPUTS = 32
_INPUT_SHAPE = (1, 49, 10, 1)
# Same input quantization as the reference model, so the same feature files apply.
_INPUT_SCALE, _INPUT_ZERO_POINT = 0.5847029089927673, 83
_CHANNELS, _CLASSES, _BLOCKS = 64, 12, 4
_LOGIT_STD = 2.0  # spread of the logits across inputs, so the softmax output varies
_OP_VERSIONS = {  # the versions the TFLite converter writes for these int8 ops
    S.BuiltinOperator.CONV_2D: 3,
    S.BuiltinOperator.DEPTHWISE_CONV_2D: 3,
    S.BuiltinOperator.AVERAGE_POOL_2D: 2,
    S.BuiltinOperator.RESHAPE: 1,
    S.BuiltinOperator.FULLY_CONNECTED: 4,
    S.BuiltinOperator.SOFTMAX: 2,
}


def synthetic_kws_model() -> bytes:
    """Build the int8 KWS DS-CNN-shaped .tflite model; the same bytes on every call."""
    rng = np.random.default_rng(_SEED)
    graph = _Graph()
    q_in = rng.integers(-128, 128, size=(_CALIBRATION_INPUTS, *_INPUT_SHAPE[1:]))
    x = _INPUT_SCALE * (q_in - _INPUT_ZERO_POINT)
    t = graph.activation("input", _INPUT_SHAPE, _INPUT_SCALE, _INPUT_ZERO_POINT)

    x, t = _conv(graph, rng, "conv0", x, t, kernel=(10, 4), stride=2, depthwise=False)
    for block in range(1, _BLOCKS + 1):
        x, t = _conv(graph, rng, f"dw{block}", x, t, kernel=(3, 3), stride=1, depthwise=True)
        x, t = _conv(graph, rng, f"pw{block}", x, t, kernel=(1, 1), stride=1, depthwise=False)

    pool_h, pool_w = x.shape[1:3]
    pool = S.Pool2DOptionsT()
    pool.padding = S.Padding.VALID
    pool.strideH, pool.strideW = pool_h, pool_w
    pool.filterHeight, pool.filterWidth = pool_h, pool_w
    x = x.mean(axis=(1, 2), keepdims=True)
    pooled = graph.activation("avg_pool", (1, 1, 1, _CHANNELS), *graph.quant_of(t))
    graph.op(S.BuiltinOperator.AVERAGE_POOL_2D, [t], pooled, S.BuiltinOptions.Pool2DOptions, pool)

    x = x.reshape(len(x), _CHANNELS)
    new_shape = graph.constant(
        "flatten/shape", np.array([1, _CHANNELS], np.int32), S.TensorType.INT32
    )
    flat = graph.activation("flatten", (1, _CHANNELS), *graph.quant_of(t))
    graph.op(S.BuiltinOperator.RESHAPE, [pooled, new_shape], flat)

    x, dense = _dense(graph, rng, x, flat)
    softmax = S.SoftmaxOptionsT()
    softmax.beta = 1.0
    output = graph.activation("softmax", (1, _CLASSES), 1 / 256, -128)
    graph.op(S.BuiltinOperator.SOFTMAX, [dense], output, S.BuiltinOptions.SoftmaxOptions, softmax)
    return graph.finish(inputs=[0], outputs=[output])


def _conv(
    graph: _Graph,
    rng: np.random.Generator,
    name: str,
    x: np.ndarray,
    tensor: int,
    kernel: tuple[int, int],
    stride: int,
    depthwise: bool,
) -> tuple[np.ndarray, int]:
    """Add a CONV_2D or DEPTHWISE_CONV_2D (SAME padding, fused RELU) and simulate it."""
    k_h, k_w = kernel
    in_c = x.shape[3]
    patches = _same_patches(x, k_h, k_w, stride)  # N, out_h, out_w, C, k_h, k_w
    if depthwise:  # filter layout 1 x k_h x k_w x C, channel axis 3
        weights = rng.standard_normal((1, k_h, k_w, in_c)) / np.sqrt(k_h * k_w)
        pre = np.einsum("nhwcij,ijc->nhwc", patches, weights[0])
        channel_axis, options = 3, S.DepthwiseConv2DOptionsT()
        options.depthMultiplier = 1
        code, options_type = (
            S.BuiltinOperator.DEPTHWISE_CONV_2D,
            S.BuiltinOptions.DepthwiseConv2DOptions,
        )
    else:  # filter layout O x k_h x k_w x I, channel axis 0
        weights = rng.standard_normal((_CHANNELS, k_h, k_w, in_c)) / np.sqrt(k_h * k_w * in_c)
        pre = np.einsum("nhwcij,oijc->nhwo", patches, weights)
        channel_axis, options = 0, S.Conv2DOptionsT()
        code, options_type = S.BuiltinOperator.CONV_2D, S.BuiltinOptions.Conv2DOptions
    options.padding = S.Padding.SAME
    options.strideH = options.strideW = stride
    options.fusedActivationFunction = S.ActivationFunctionType.RELU

    weights, bias, pre = _normalise(weights, pre, axis=channel_axis, gain=1.0)
    out = np.maximum(pre, 0.0)
    q_w, w_scale = _quantize_symmetric(weights, axis=channel_axis)
    bias_scale = graph.quant_of(tensor)[0] * w_scale
    inputs = [
        tensor,
        graph.constant(f"{name}/weights", q_w, S.TensorType.INT8, w_scale, channel_axis),
        graph.constant(
            f"{name}/bias", _quantize_bias(bias, bias_scale), S.TensorType.INT32, bias_scale
        ),
    ]
    output = graph.activation(name, (1, *out.shape[1:]), out.max() / 255, -128)
    graph.op(code, inputs, output, options_type, options)
    return out, output


def _dense(
    graph: _Graph, rng: np.random.Generator, x: np.ndarray, tensor: int
) -> tuple[np.ndarray, int]:
    """Add the FULLY_CONNECTED logits layer (per-tensor weights, as the converter writes)."""
    weights = rng.standard_normal((_CLASSES, x.shape[1])) / np.sqrt(x.shape[1])
    weights, bias, logits = _normalise(weights, x @ weights.T, axis=0, gain=_LOGIT_STD)
    q_w, w_scale = _quantize_symmetric(weights, axis=None)
    bias_scale = graph.quant_of(tensor)[0] * w_scale
    inputs = [
        tensor,
        graph.constant("dense/weights", q_w, S.TensorType.INT8, w_scale),
        graph.constant(
            "dense/bias", _quantize_bias(bias, bias_scale), S.TensorType.INT32, bias_scale
        ),
    ]
    low, high = min(logits.min(), 0.0), max(logits.max(), 0.0)
    scale = (high - low) / 255
    output = graph.activation("dense", (1, _CLASSES), scale, round(-128 - low / scale))
    options = S.FullyConnectedOptionsT()
    graph.op(
        S.BuiltinOperator.FULLY_CONNECTED,
        inputs,
        output,
        S.BuiltinOptions.FullyConnectedOptions,
        options,
    )
    return logits, output


def _same_patches(x: np.ndarray, k_h: int, k_w: int, stride: int) -> np.ndarray:
    """Sliding windows of NHWC ``x`` with TFLite SAME padding (extra row/column at the end)."""
    pads = [(0, 0)]
    for size, k in ((x.shape[1], k_h), (x.shape[2], k_w)):
        total = max((-(-size // stride) - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
    padded = np.pad(x, [*pads, (0, 0)])
    return sliding_window_view(padded, (k_h, k_w), axis=(1, 2))[:, ::stride, ::stride]


def _normalise(
    weights: np.ndarray, pre: np.ndarray, axis: int, gain: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold a per-channel affine map into weights and bias so ``pre`` gets mean 0, std ``gain``.

    ``pre`` is the bias-free layer output with channels last; each output channel
    depends only on the weights along ``axis``, so scaling those scales that channel.
    """
    reduce_axes = tuple(range(pre.ndim - 1))
    mean, std = pre.mean(axis=reduce_axes), pre.std(axis=reduce_axes)
    factor = gain / std
    shape = [1] * weights.ndim
    shape[axis] = -1
    return weights * factor.reshape(shape), -mean * factor, (pre - mean) * factor


def _quantize_symmetric(weights: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights with zero point 0: one scale per slice along ``axis``, or one in all."""
    if axis is None:
        scale = np.array([np.abs(weights).max() / 127])
        return np.round(weights / scale).astype(np.int8), scale
    reduce_axes = tuple(a for a in range(weights.ndim) if a != axis)
    scale = np.abs(weights).max(axis=reduce_axes) / 127
    shape = [1] * weights.ndim
    shape[axis] = -1
    return np.round(weights / scale.reshape(shape)).astype(np.int8), scale


def _quantize_bias(bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.round(bias / scale).astype(np.int32)


class _Graph:
    """Collects tensors, buffers and operators of one subgraph and packs the model."""

    def __init__(self) -> None:
        sentinel = S.BufferT()  # buffer 0: the empty buffer of every non-constant tensor
        self.buffers: list[S.BufferT] = [sentinel]
        self.tensors: list[S.TensorT] = []
        self.operators: list[S.OperatorT] = []
        self.codes: list[int] = []

    def activation(self, name: str, shape: tuple[int, ...], scale: float, zero_point: int) -> int:
        return self._tensor(name, shape, S.TensorType.INT8, 0, np.array([scale]), 0, [zero_point])

    def constant(
        self,
        name: str,
        values: np.ndarray,
        tensor_type: int,
        scale: np.ndarray | None = None,
        axis: int = 0,
    ) -> int:
        buffer = S.BufferT()
        little_endian = values.astype(values.dtype.newbyteorder("<"))  # as TFLite stores data
        buffer.data = np.frombuffer(little_endian.tobytes(), np.uint8)
        self.buffers.append(buffer)
        zero_points = None if scale is None else [0] * len(scale)
        return self._tensor(
            name, values.shape, tensor_type, len(self.buffers) - 1, scale, axis, zero_points
        )

    def quant_of(self, tensor: int) -> tuple[float, int]:
        q = self.tensors[tensor].quantization
        return float(q.scale[0]), int(q.zeroPoint[0])

    def op(
        self,
        code: int,
        inputs: list[int],
        output: int,
        options_type: int = S.BuiltinOptions.NONE,
        options: object = None,
    ) -> None:
        if code not in self.codes:
            self.codes.append(code)
        op = S.OperatorT()
        op.opcodeIndex = self.codes.index(code)
        op.inputs, op.outputs = inputs, [output]
        op.builtinOptionsType, op.builtinOptions = options_type, options
        self.operators.append(op)

    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        graph = S.SubGraphT()
        graph.name = "main"
        graph.tensors, graph.operators = self.tensors, self.operators
        graph.inputs, graph.outputs = inputs, outputs
        model = S.ModelT()
        model.version = 3
        model.description = SYNTHETIC_LABEL
        model.subgraphs, model.buffers = [graph], self.buffers
        model.operatorCodes = []
        for code in self.codes:
            op_code = S.OperatorCodeT()
            op_code.builtinCode = op_code.deprecatedBuiltinCode = code
            op_code.version = _OP_VERSIONS[code]
            model.operatorCodes.append(op_code)
        builder = flatbuffers.Builder(1 << 16)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    def _tensor(
        self,
        name: str,
        shape: tuple[int, ...],
        tensor_type: int,
        buffer: int,
        scale: np.ndarray | None,
        axis: int,
        zero_points: list[int] | None,
    ) -> int:
        tensor = S.TensorT()
        tensor.name, tensor.shape = name, list(shape)
        tensor.type, tensor.buffer = tensor_type, buffer
        if scale is not None:
            tensor.quantization = S.QuantizationParametersT()
            tensor.quantization.scale = [float(s) for s in np.asarray(scale, np.float32)]
            tensor.quantization.zeroPoint = zero_points
            tensor.quantization.quantizedDimension = axis
        self.tensors.append(tensor)
        return len(self.tensors) - 1
