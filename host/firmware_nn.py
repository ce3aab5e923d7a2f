"""Build the firmware's int8 kernels for the host and run .tflite models through them.

The benchmark firmware computes inferences with our own C kernels (``firmware/nn``), not with
TFLite Micro, so its outputs are only trustworthy if they are bit-identical to TFLite's. This
module compiles those same C sources into a shared library with the host's gcc, and walks a
model's operators the way TFLite Micro's interpreter does: it computes each operator's
prepare-time parameters (Q31 multipliers and shifts, activation clamps, padding, softmax
scaling) in Python with TFLite's exact formulas, then calls the C kernel for each op. The
firmware's code generator will emit the same parameters as constants, so what the host
checks here is what the board runs.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

SOURCE_DIR = Path(__file__).resolve().parents[1] / "firmware" / "nn"
CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC")

_OP_NAMES = {code: name for name, code in vars(S.BuiltinOperator).items() if name[0] != "_"}
_DTYPES = {
    S.TensorType.INT8: np.dtype(np.int8),
    S.TensorType.INT32: np.dtype(np.int32),
    S.TensorType.INT64: np.dtype(np.int64),
    S.TensorType.FLOAT32: np.dtype(np.float32),
}
_MAX_DIMS = 6  # TP_MAX_DIMS in tp_nn.h


class KernelBuildError(RuntimeError):
    """The C kernels could not be compiled on this machine."""


class KernelModelError(ValueError):
    """The model uses an operator or tensor layout the kernels do not implement."""


# ---- building and loading the shared library ---------------------------------------------


def build_kernels(cache_dir: Path | None = None) -> Path:
    """Compile ``firmware/nn/*.c`` into a shared library, reusing it while the sources match.

    The file name carries a hash of the sources and flags, so an edited kernel is rebuilt and
    concurrent builders never see a half-written library (each writes a temporary file and
    renames it into place).
    """
    gcc = shutil.which("gcc")
    if gcc is None:
        raise KernelBuildError(
            "gcc not found on PATH: install a C compiler (e.g. apt-get install gcc) "
            "to build the firmware kernels for the host"
        )
    sources = sorted(SOURCE_DIR.glob("*.c"))
    if not sources:
        raise KernelBuildError(
            f"no kernel sources in {SOURCE_DIR}: use a source checkout of tinypower "
            "(pip install -e .) so firmware/nn is available"
        )
    digest = hashlib.sha256(" ".join(CFLAGS).encode())
    for path in sorted(SOURCE_DIR.glob("*.[ch]")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    folder = cache_dir or Path(tempfile.gettempdir()) / "tinypower-nn"
    target = folder / f"libtp_nn-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        result = subprocess.run(
            [gcc, *CFLAGS, "-o", scratch, *map(str, sources)],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise KernelBuildError(f"gcc failed to build {SOURCE_DIR}:\n{result.stderr}")
        os.replace(scratch, target)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    return target


class Shape4(ctypes.Structure):
    _fields_ = [("n", ctypes.c_int32), ("h", ctypes.c_int32), ("w", ctypes.c_int32),
                ("c", ctypes.c_int32)]


class Requant(ctypes.Structure):
    _fields_ = [("multiplier", ctypes.c_void_p), ("shift", ctypes.c_void_p),
                ("per_channel", ctypes.c_int32), ("output_offset", ctypes.c_int32),
                ("act_min", ctypes.c_int32), ("act_max", ctypes.c_int32)]


class ConvParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in (
        "stride_h", "stride_w", "dilation_h", "dilation_w", "pad_h", "pad_w",
        "depth_multiplier", "input_offset")] + [("out", Requant)]


class FcParams(ctypes.Structure):
    _fields_ = [("input_offset", ctypes.c_int32), ("filter_offset", ctypes.c_int32),
                ("out", Requant)]


class PoolParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in (
        "stride_h", "stride_w", "filter_h", "filter_w", "pad_h", "pad_w", "act_min", "act_max")]


class AddParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in (
        "input1_offset", "input2_offset", "output_offset", "left_shift",
        "input1_multiplier", "input1_shift", "input2_multiplier", "input2_shift",
        "output_multiplier", "output_shift", "act_min", "act_max")]


class Broadcast(ctypes.Structure):
    _fields_ = [("ndim", ctypes.c_int32), ("dims", ctypes.c_int32 * _MAX_DIMS),
                ("stride1", ctypes.c_int32 * _MAX_DIMS), ("stride2", ctypes.c_int32 * _MAX_DIMS)]


class SoftmaxParams(ctypes.Structure):
    _fields_ = [("input_multiplier", ctypes.c_int32), ("input_left_shift", ctypes.c_int32),
                ("diff_min", ctypes.c_int32)]


def _signatures() -> dict[str, list[type]]:
    ptr, i32, size = ctypes.c_void_p, ctypes.c_int32, ctypes.c_size_t
    conv = [ctypes.POINTER(ConvParams), ctypes.POINTER(Shape4), ptr, ctypes.POINTER(Shape4),
            ptr, ptr, ctypes.POINTER(Shape4), ptr]
    return {
        "tp_conv2d_s8": conv,
        "tp_depthwise_conv2d_s8": conv,
        "tp_fully_connected_s8": [ctypes.POINTER(FcParams), i32, i32, i32, ptr, ptr, ptr, ptr],
        "tp_average_pool2d_s8": [ctypes.POINTER(PoolParams), ctypes.POINTER(Shape4), ptr,
                                 ctypes.POINTER(Shape4), ptr],
        "tp_add_s8": [ctypes.POINTER(AddParams), size, ptr, ptr, ptr],
        "tp_add_broadcast_s8": [ctypes.POINTER(AddParams), ctypes.POINTER(Broadcast), ptr, ptr,
                                ptr],
        "tp_softmax_s8": [ctypes.POINTER(SoftmaxParams), i32, i32, ptr, ptr],
        "tp_reshape": [ptr, ptr, size],
        "tp_requantize_s8": [i32, i32, i32, i32, size, ptr, ptr],
        "tp_quantize_f32_s8": [ctypes.c_float, i32, size, ptr, ptr],
        "tp_dequantize_s8_f32": [ctypes.c_float, i32, size, ptr, ptr],
    }


@functools.cache
def load_kernels() -> ctypes.CDLL:
    """The kernels as a ctypes library (built on first use), with argument types declared."""
    lib = ctypes.CDLL(str(build_kernels()))
    for name, argtypes in _signatures().items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, None
    return lib


# ---- TFLite's prepare-time arithmetic -----------------------------------------------------


def _round_half_away(x: float) -> int:
    """TfLiteRound (std::round): nearest integer, halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: ``real ~= multiplier * 2^(shift - 31)``, multiplier in Q31."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = _round_half_away(q * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:  # everything would be shifted out: TFLite flushes to zero
        return 0, 0
    return q_fixed, shift


def activation_range(activation: int, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized for int8 (``f / scale`` in float32)."""
    def quantize(f: float) -> int:
        return zero_point + _round_half_away(float(np.float32(f) / np.float32(scale)))

    if activation == S.ActivationFunctionType.NONE:
        return -128, 127
    if activation == S.ActivationFunctionType.RELU:
        return max(-128, quantize(0.0)), 127
    if activation == S.ActivationFunctionType.RELU6:
        return max(-128, quantize(0.0)), min(127, quantize(6.0))
    if activation == S.ActivationFunctionType.RELU_N1_TO_1:
        return max(-128, quantize(-1.0)), min(127, quantize(1.0))
    raise KernelModelError(f"fused activation {activation} is not supported by the int8 kernels")


def padding(
    scheme: int, size: int, filter_size: int, stride: int, dilation: int
) -> tuple[int, int]:
    """TFLite ComputeOutSize and ComputePaddingWithOffset: (output size, top/left padding)."""
    effective = (filter_size - 1) * dilation + 1
    if scheme == S.Padding.SAME:
        out = (size + stride - 1) // stride
    else:
        out = (size + stride - effective) // stride
    total = max((out - 1) * stride + effective - size, 0)
    return out, total // 2


def softmax_params(beta: float, input_scale: float) -> tuple[int, int, int]:
    """TFLite PreprocessSoftmaxScaling and CalculateInputRadius with 5 integer bits.

    Returns (input_multiplier, input_left_shift, diff_min).
    """
    integer_bits = 5
    real = min(beta * input_scale * (1 << (31 - integer_bits)), (1 << 31) - 1.0)
    multiplier, left_shift = quantize_multiplier(real)
    radius = math.floor(
        1.0 * ((1 << integer_bits) - 1) * (1 << (31 - integer_bits)) / (1 << left_shift)
    )
    return multiplier, left_shift, -radius


# ---- the graph runner ---------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: what to feed or expect."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int


class _Step:
    """One prepared operator: a kernel and its arguments.

    Structs are passed with ``ctypes.byref``, which keeps them alive; ``keep`` holds the numpy
    arrays whose addresses sit inside those structs (per-channel multipliers and shifts).
    """

    def __init__(self, kernel: Callable[..., None], args: tuple, keep: object = None) -> None:
        self.kernel, self.args, self.keep = kernel, args, keep

    def __call__(self) -> None:
        self.kernel(*self.args)


def _op_name(code: S.OperatorCodeT) -> str:
    # TFLite takes the larger of the 8-bit deprecated field and the 32-bit one.
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _ptr(array: np.ndarray | None) -> int | None:
    return None if array is None else array.ctypes.data


class KernelInterpreter:
    """Runs a .tflite model's main subgraph op by op through the firmware's C kernels."""

    def __init__(self, model: bytes) -> None:
        self._lib = load_kernels()
        try:
            parsed = S.ModelT.InitFromPackedBuf(model, 0)
        except Exception as exc:  # the generated reader raises assorted errors on bad bytes
            raise KernelModelError(f"not a readable TFLite model ({exc})") from exc
        if not parsed.subgraphs:
            raise KernelModelError("the TFLite model has no subgraphs")
        graph = parsed.subgraphs[0]
        self._graph = graph
        self._tensors = [self._allocate(t, parsed.buffers[t.buffer]) for t in graph.tensors]
        self._steps: list[_Step] = []
        for index, op in enumerate(graph.operators or []):
            name = _op_name(parsed.operatorCodes[op.opcodeIndex])
            prepare = getattr(self, f"_prepare_{name.lower()}", None)
            if prepare is None:
                raise KernelModelError(
                    f"operator {index} is {name}, which the firmware kernels do not implement"
                )
            self._steps.append(prepare(op, op.builtinOptions))
        self.inputs = [self._spec(i) for i in graph.inputs]
        self.outputs = [self._spec(i) for i in graph.outputs]

    @classmethod
    def from_file(cls, path: Path) -> KernelInterpreter:
        """Load the .tflite file at ``path``."""
        return cls(Path(path).read_bytes())

    def invoke(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run one inference; inputs in the model's order, outputs returned as copies."""
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the model takes {len(self.inputs)} inputs, got {len(inputs)}")
        for spec, index, value in zip(self.inputs, self._graph.inputs, inputs, strict=True):
            value = np.asarray(value)
            if value.dtype != spec.dtype or value.size != math.prod(spec.shape):
                raise ValueError(
                    f"input {spec.name!r} takes {math.prod(spec.shape)} {spec.dtype} values "
                    f"(shape {spec.shape}), got {value.size} {value.dtype}"
                )
            self._tensors[index][...] = value.reshape(spec.shape)
        for step in self._steps:
            step()
        return [self._tensors[i].copy() for i in self._graph.outputs]

    # -- tensors --

    def _allocate(self, tensor: S.TensorT, buffer: S.BufferT) -> np.ndarray:
        dtype = _DTYPES.get(tensor.type)
        if dtype is None:
            raise KernelModelError(f"tensor {tensor.name!r} has unsupported type {tensor.type}")
        shape = () if tensor.shape is None else tuple(int(d) for d in tensor.shape)
        if buffer.data is not None and len(buffer.data):
            data = np.frombuffer(bytes(buffer.data), dtype.newbyteorder("<"))
            return data.astype(dtype).reshape(shape)
        if buffer.offset > 1:
            raise KernelModelError(f"tensor {tensor.name!r} is stored outside the flatbuffer")
        return np.zeros(shape, dtype)

    def _quant(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        q = self._graph.tensors[index].quantization
        if q is None or q.scale is None or not len(q.scale):
            return np.array([0.0]), np.array([0])
        zero_points = q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0]
        return np.asarray(q.scale, np.float64), np.asarray(zero_points, np.int64)

    def _scale_zp(self, index: int) -> tuple[float, int]:
        scales, zero_points = self._quant(index)
        return float(scales[0]), int(zero_points[0])

    def _spec(self, index: int) -> TensorSpec:
        tensor = self._tensors[index]
        name = self._graph.tensors[index].name
        return TensorSpec(
            name.decode() if isinstance(name, bytes) else str(name),
            tensor.shape, tensor.dtype, *self._scale_zp(index),
        )

    def _int8(self, index: int, op: str) -> np.ndarray:
        tensor = self._tensors[index]
        if tensor.dtype != np.int8:
            raise KernelModelError(f"{op} is implemented for int8 tensors, got {tensor.dtype}")
        if not self._quant(index)[0][0] > 0:
            raise KernelModelError(f"{op} has an int8 tensor without a positive scale")
        return tensor

    def _requant(self, op: S.OperatorT, activation: int) -> tuple[Requant, list[np.ndarray]]:
        """Output stage of CONV/DWCONV/FC: PopulateConvolutionQuantizationParams' multipliers,
        one per filter scale (a single scale is per-tensor quantisation)."""
        input_scale, _ = self._scale_zp(op.inputs[0])
        filter_scales, _ = self._quant(op.inputs[1])
        output_scale, output_zp = self._scale_zp(op.outputs[0])
        pairs = [quantize_multiplier(input_scale * float(s) / output_scale) for s in filter_scales]
        per_channel = len(pairs) > 1
        if per_channel and len(pairs) != self._tensors[op.outputs[0]].shape[-1]:
            raise KernelModelError("filter scales do not match the output channels")
        multipliers = np.array([m for m, _ in pairs], np.int32)
        shifts = np.array([s for _, s in pairs], np.int32)
        low, high = activation_range(activation, output_scale, output_zp)
        requant = Requant(multipliers.ctypes.data, shifts.ctypes.data, int(per_channel),
                          output_zp, low, high)
        return requant, [multipliers, shifts]

    # -- operators: each returns the call that computes it --

    def _prepare_conv_2d(self, op: S.OperatorT, options: S.Conv2DOptionsT | None) -> _Step:
        return self._conv(op, options or S.Conv2DOptionsT(), depthwise=False)

    def _prepare_depthwise_conv_2d(
        self, op: S.OperatorT, options: S.DepthwiseConv2DOptionsT | None
    ) -> _Step:
        return self._conv(op, options or S.DepthwiseConv2DOptionsT(), depthwise=True)

    def _conv(
        self,
        op: S.OperatorT,
        options: S.Conv2DOptionsT | S.DepthwiseConv2DOptionsT,
        depthwise: bool,
    ) -> _Step:
        name = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
        x, w = self._int8(op.inputs[0], name), self._int8(op.inputs[1], name)
        y = self._int8(op.outputs[0], name)
        bias = self._tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        if bias is not None and bias.dtype != np.int32:
            raise KernelModelError(f"{name} needs an int32 bias, got {bias.dtype}")
        if x.ndim != 4 or w.ndim != 4 or y.ndim != 4:
            raise KernelModelError(f"{name} needs 4-D input, filter and output")
        geometry = []
        for size, k, stride, dilation, out in (
            (x.shape[1], w.shape[1], options.strideH, options.dilationHFactor, y.shape[1]),
            (x.shape[2], w.shape[2], options.strideW, options.dilationWFactor, y.shape[2]),
        ):
            expected, pad = padding(options.padding, size, k, stride, dilation)
            if expected != out:
                raise KernelModelError(f"{name} output size {out} does not match {expected}")
            geometry.append(pad)
        if depthwise:
            if y.shape[3] % x.shape[3]:
                raise KernelModelError("DEPTHWISE_CONV_2D output channels not a multiple of input")
            multiplier = y.shape[3] // x.shape[3]
        else:
            if x.shape[3] % w.shape[3] or y.shape[3] % (x.shape[3] // w.shape[3]):
                raise KernelModelError("CONV_2D channels do not divide into groups")
            multiplier = 1
        _, input_zp = self._scale_zp(op.inputs[0])
        # Filter zero points are not read: TFLite's int8 conv kernels ignore them (int8 filters
        # are meant to be symmetric), and so do ours (checked against tflite-micro).
        requant, keep = self._requant(op, options.fusedActivationFunction)
        params = ConvParams(options.strideH, options.strideW, options.dilationHFactor,
                            options.dilationWFactor, geometry[0], geometry[1], multiplier,
                            -input_zp, requant)
        shapes = [Shape4(*a.shape) for a in (x, w, y)]
        kernel = self._lib.tp_depthwise_conv2d_s8 if depthwise else self._lib.tp_conv2d_s8
        args = (ctypes.byref(params), ctypes.byref(shapes[0]), _ptr(x), ctypes.byref(shapes[1]),
                _ptr(w), _ptr(bias), ctypes.byref(shapes[2]), _ptr(y))
        return _Step(kernel, args, keep)

    def _prepare_fully_connected(
        self, op: S.OperatorT, options: S.FullyConnectedOptionsT | None
    ) -> _Step:
        options = options or S.FullyConnectedOptionsT()
        if options.weightsFormat != S.FullyConnectedOptionsWeightsFormat.DEFAULT:
            raise KernelModelError("FULLY_CONNECTED with shuffled weights is not supported")
        x, w, y = (self._int8(i, "FULLY_CONNECTED") for i in (*op.inputs[:2], op.outputs[0]))
        bias = self._tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        if bias is not None and bias.dtype != np.int32:
            raise KernelModelError(f"FULLY_CONNECTED needs an int32 bias, got {bias.dtype}")
        output_depth, accum_depth = y.shape[-1], w.shape[-1]
        batches = y.size // output_depth
        if x.size != batches * accum_depth or w.shape[0] != output_depth:
            raise KernelModelError("FULLY_CONNECTED input or output size does not match weights")
        _, input_zp = self._scale_zp(op.inputs[0])
        _, filter_zp = self._scale_zp(op.inputs[1])
        requant, keep = self._requant(op, options.fusedActivationFunction)
        params = FcParams(-input_zp, -filter_zp, requant)
        kernel = self._lib.tp_fully_connected_s8
        args = (ctypes.byref(params), batches, accum_depth, output_depth, _ptr(x), _ptr(w),
                _ptr(bias), _ptr(y))
        return _Step(kernel, args, keep)

    def _prepare_average_pool_2d(
        self, op: S.OperatorT, options: S.Pool2DOptionsT | None
    ) -> _Step:
        options = options or S.Pool2DOptionsT()
        x = self._int8(op.inputs[0], "AVERAGE_POOL_2D")
        y = self._int8(op.outputs[0], "AVERAGE_POOL_2D")
        pads = []
        for size, k, stride, out in ((x.shape[1], options.filterHeight, options.strideH,
                                      y.shape[1]),
                                     (x.shape[2], options.filterWidth, options.strideW,
                                      y.shape[2])):
            expected, pad = padding(options.padding, size, k, stride, 1)
            if expected != out:
                raise KernelModelError(f"AVERAGE_POOL_2D output size {out} is not {expected}")
            pads.append(pad)
        low, high = activation_range(options.fusedActivationFunction,
                                     *self._scale_zp(op.outputs[0]))
        params = PoolParams(options.strideH, options.strideW, options.filterHeight,
                            options.filterWidth, pads[0], pads[1], low, high)
        shapes = [Shape4(*x.shape), Shape4(*y.shape)]
        kernel = self._lib.tp_average_pool2d_s8
        args = (ctypes.byref(params), ctypes.byref(shapes[0]), _ptr(x), ctypes.byref(shapes[1]),
                _ptr(y))
        return _Step(kernel, args)

    def _prepare_add(self, op: S.OperatorT, options: S.AddOptionsT | None) -> _Step:
        options = options or S.AddOptionsT()
        a, b = self._int8(op.inputs[0], "ADD"), self._int8(op.inputs[1], "ADD")
        y = self._int8(op.outputs[0], "ADD")
        (scale1, zp1), (scale2, zp2) = self._scale_zp(op.inputs[0]), self._scale_zp(op.inputs[1])
        output_scale, output_zp = self._scale_zp(op.outputs[0])
        # TFLite's add Prepare for 8-bit outputs: rescale both inputs to twice the larger
        # input scale with 20 bits of headroom; every multiplier must be below one.
        left_shift = 20
        twice_max = 2 * max(scale1, scale2)
        reals = (scale1 / twice_max, scale2 / twice_max,
                 twice_max / ((1 << left_shift) * output_scale))
        if not all(0.0 < r < 1.0 for r in reals):
            raise KernelModelError(f"ADD scales give multipliers {reals} outside (0, 1)")
        (m1, s1), (m2, s2), (mo, so) = (quantize_multiplier(r) for r in reals)
        low, high = activation_range(options.fusedActivationFunction, output_scale, output_zp)
        params = AddParams(-zp1, -zp2, output_zp, left_shift, m1, s1, m2, s2, mo, so, low, high)
        if a.shape == b.shape:
            kernel, args = self._lib.tp_add_s8, (ctypes.byref(params), y.size, _ptr(a), _ptr(b),
                                                 _ptr(y))
        else:
            broadcast = _broadcast(a.shape, b.shape, y.shape)
            kernel = self._lib.tp_add_broadcast_s8
            args = (ctypes.byref(params), ctypes.byref(broadcast), _ptr(a), _ptr(b), _ptr(y))
        return _Step(kernel, args)

    def _prepare_softmax(
        self, op: S.OperatorT, options: S.SoftmaxOptionsT | None
    ) -> _Step:
        beta = (options or S.SoftmaxOptionsT()).beta
        x, y = self._int8(op.inputs[0], "SOFTMAX"), self._int8(op.outputs[0], "SOFTMAX")
        output_scale, output_zp = self._scale_zp(op.outputs[0])
        if output_zp != -128 or abs(output_scale - 1 / 256) > 0.001 / 256:
            raise KernelModelError("int8 SOFTMAX needs output scale 1/256 and zero point -128")
        params = SoftmaxParams(*softmax_params(beta, self._scale_zp(op.inputs[0])[0]))
        depth = x.shape[-1]
        kernel = self._lib.tp_softmax_s8
        args = (ctypes.byref(params), x.size // depth, depth, _ptr(x), _ptr(y))
        return _Step(kernel, args)

    def _prepare_reshape(self, op: S.OperatorT, _options: object) -> _Step:
        x, y = self._tensors[op.inputs[0]], self._tensors[op.outputs[0]]
        if x.nbytes != y.nbytes or x.dtype != y.dtype:
            raise KernelModelError("RESHAPE input and output differ in size or type")
        kernel, args = self._lib.tp_reshape, (_ptr(x), _ptr(y), x.nbytes)
        return _Step(kernel, args)

    def _prepare_quantize(self, op: S.OperatorT, _options: object) -> _Step:
        x, y = self._tensors[op.inputs[0]], self._int8(op.outputs[0], "QUANTIZE")
        input_scale, input_zp = self._scale_zp(op.inputs[0])
        output_scale, output_zp = self._scale_zp(op.outputs[0])
        if x.dtype == np.float32:
            kernel = self._lib.tp_quantize_f32_s8
            args: tuple = (output_scale, output_zp, x.size, _ptr(x), _ptr(y))
        elif x.dtype == np.int8:
            multiplier, shift = quantize_multiplier(input_scale / output_scale)
            kernel = self._lib.tp_requantize_s8
            args = (input_zp, multiplier, shift, output_zp, x.size, _ptr(x), _ptr(y))
        else:
            raise KernelModelError(f"QUANTIZE from {x.dtype} is not supported")
        return _Step(kernel, args)

    def _prepare_dequantize(self, op: S.OperatorT, _options: object) -> _Step:
        x, y = self._int8(op.inputs[0], "DEQUANTIZE"), self._tensors[op.outputs[0]]
        if y.dtype != np.float32:
            raise KernelModelError(f"DEQUANTIZE to {y.dtype} is not supported")
        kernel = self._lib.tp_dequantize_s8_f32
        args = (*self._scale_zp(op.inputs[0]), x.size, _ptr(x), _ptr(y))
        return _Step(kernel, args)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...], out: tuple[int, ...]) -> Broadcast:
    """Output dims and per-input element strides (0 where an input is broadcast)."""
    ndim = len(out)
    if ndim > _MAX_DIMS or len(a) > ndim or len(b) > ndim:
        raise KernelModelError(f"ADD broadcast of {a} and {b} to {out} is not supported")
    result = Broadcast(ndim=ndim)
    for field, shape in (("stride1", a), ("stride2", b)):
        full = (1,) * (ndim - len(shape)) + tuple(shape)
        strides = np.cumprod((1,) + full[:0:-1])[::-1]
        for d in range(ndim):
            if full[d] not in (1, out[d]):
                raise KernelModelError(f"ADD cannot broadcast {shape} to {out}")
            getattr(result, field)[d] = 0 if full[d] == 1 else int(strides[d])
    for d, size in enumerate(out):
        result.dims[d] = size
    return result
