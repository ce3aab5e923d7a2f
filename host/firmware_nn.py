"""Build the firmware's int8 kernels for the host and run .tflite models through them.

The benchmark firmware computes inferences with our own C kernels (``firmware/nn``), not with
TFLite Micro, so its outputs are only trustworthy if they are bit-identical to TFLite's. This
module compiles those same C sources into a shared library with the host's gcc, and walks a
model's operators the way TFLite Micro's interpreter does: it computes each operator's
prepare-time parameters (Q31 multipliers and shifts, activation clamps, padding, softmax
scaling) in Python with TFLite's exact formulas, then calls the C kernel for each op. The
firmware's code generator will emit the same parameters as constants, so what the host
checks here is what the board runs.

The prepare step (``prepare``) is kernel-neutral: it turns each operator into the name of a
``tp_nn`` function and its arguments (scalars, parameter structs, tensor references). The
ctypes runner here binds those arguments to numpy buffers; the code generator
(``tinypower.codegen``) prints the very same arguments as C constants, so the two cannot drift.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

from tinypower.resources import data_dir

SOURCE_DIR = data_dir("firmware") / "nn"
CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC")

_OP_NAMES = {code: name for name, code in vars(S.BuiltinOperator).items() if name[0] != "_"}
_TYPE_NAMES = {code: name for name, code in vars(S.TensorType).items() if name[0] != "_"}
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


def build_kernels(cache_dir: Path | None = None, emulate_dsp: bool = False) -> Path:
    """Compile ``firmware/nn/*.c`` into a shared library, reusing it while the sources match.

    The file name carries a hash of the sources and flags, so an edited kernel is rebuilt and
    concurrent builders never see a half-written library (each writes a temporary file and
    renames it into place). ``emulate_dsp`` builds the kernels' Cortex-M DSP path, with C
    models of its instructions (``TP_NN_EMULATE_DSP``), so the host can check that path too.
    """
    flags = (*CFLAGS, "-DTP_NN_EMULATE_DSP") if emulate_dsp else CFLAGS
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
    digest = hashlib.sha256(" ".join(flags).encode())
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
            [gcc, *flags, "-o", scratch, *map(str, sources)],
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
                ("act_min", ctypes.c_int32), ("act_max", ctypes.c_int32),
                ("shifts_left", ctypes.c_int32)]


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


# The C typedef name of each parameter struct, as the prepared arguments name them.
_STRUCTS: dict[str, type[ctypes.Structure]] = {
    "tp_shape4_t": Shape4, "tp_requant_t": Requant, "tp_conv_params_t": ConvParams,
    "tp_fc_params_t": FcParams, "tp_pool_params_t": PoolParams, "tp_add_params_t": AddParams,
    "tp_broadcast_t": Broadcast, "tp_softmax_params_t": SoftmaxParams,
}


def _signatures() -> dict[str, list[type]]:
    ptr, i32, size = ctypes.c_void_p, ctypes.c_int32, ctypes.c_size_t
    conv = [ctypes.POINTER(ConvParams), ctypes.POINTER(Shape4), ptr, ctypes.POINTER(Shape4),
            ptr, ptr, ctypes.POINTER(Shape4), ptr]
    return {
        "tp_conv2d_s8": conv,
        "tp_conv2d_gemm_s8": [*conv, ptr],
        "tp_depthwise_conv2d_s8": conv,
        "tp_depthwise_conv2d_dm1_s8": conv,
        "tp_fully_connected_s8": [ctypes.POINTER(FcParams), i32, i32, i32, ptr, ptr, ptr, ptr],
        "tp_fully_connected_gemm_s8": [ctypes.POINTER(FcParams), i32, i32, i32, ptr, ptr, ptr,
                                       ptr, ptr],
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
def load_kernels(emulate_dsp: bool = False) -> ctypes.CDLL:
    """The kernels as a ctypes library (built on first use), with argument types declared."""
    lib = ctypes.CDLL(str(build_kernels(emulate_dsp=emulate_dsp)))
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


# ---- the prepared graph: what the ctypes runner and the C code generator both consume ------


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the main subgraph: shape, type, quantisation, and data if constant."""

    index: int
    name: str
    shape: tuple[int, ...]
    type_name: str  # the schema's name, e.g. "INT8"
    dtype: np.dtype | None  # None: a type the kernels do not handle
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    data: np.ndarray | None  # constant contents in native byte order; None for activations

    @property
    def scale(self) -> float:
        return self.scales[0] if self.scales else 0.0

    @property
    def zero_point(self) -> int:
        return self.zero_points[0] if self.zero_points else 0

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * (self.dtype.itemsize if self.dtype is not None else 0)


@dataclass(frozen=True)
class TensorArg:
    """A kernel argument pointing at a tensor's data."""

    index: int


@dataclass(frozen=True)
class Int32Array:
    """A kernel argument (or struct field) pointing at int32 values computed at prepare time."""

    values: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class PackedArray:
    """A kernel argument pointing at constants made at prepare time (weights rearranged)."""

    data: np.ndarray  # int8 or int16, one dimension


@dataclass(frozen=True)
class Scratch:
    """A kernel argument pointing at ``nbytes`` of working memory, live during its op only."""

    nbytes: int


@dataclass(frozen=True)
class Struct:
    """A parameter struct of ``tp_nn.h``, passed by pointer; fields in declaration order.

    A field value is an int, a tuple of ints (a C array member), an Int32Array (a pointer
    member) or a nested Struct (a member by value).
    """

    ctype: str  # the C typedef name, e.g. "tp_conv_params_t"
    fields: tuple[tuple[str, object], ...]


# A kernel argument: int or float scalars, None (NULL, an omitted optional tensor), or the above.
KernelArg = int | float | None | TensorArg | Int32Array | PackedArray | Scratch | Struct


@dataclass(frozen=True)
class PreparedOp:
    """One operator with everything TFLite's Prepare computes: the kernel call to make."""

    index: int  # position in the model's execution order
    name: str  # the TFLite builtin, e.g. "CONV_2D"
    kernel: str  # the tp_nn function, e.g. "tp_conv2d_s8"
    args: tuple[KernelArg, ...]
    reads: tuple[int, ...]  # tensor indices the operator reads (its flatbuffer inputs)
    writes: tuple[int, ...]  # tensor indices it writes


@dataclass(frozen=True)
class PreparedGraph:
    """A model's main subgraph, every operator prepared, in execution order."""

    tensors: tuple[TensorInfo, ...]
    ops: tuple[PreparedOp, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def prepare(model: bytes) -> PreparedGraph:
    """Read a .tflite model and prepare every operator of its main subgraph.

    Raises KernelModelError naming the operator (position and builtin) when the kernels do not
    implement it, or its tensor types, shapes or quantisation.
    """
    try:
        parsed = S.ModelT.InitFromPackedBuf(model, 0)
    except Exception as exc:  # the generated reader raises assorted errors on bad bytes
        raise KernelModelError(f"not a readable TFLite model ({exc})") from exc
    if not parsed.subgraphs:
        raise KernelModelError("the TFLite model has no subgraphs")
    graph = parsed.subgraphs[0]
    tensors = tuple(_tensor_info(i, t, parsed.buffers[t.buffer])
                    for i, t in enumerate(graph.tensors or []))
    for kind, indices in (("input", graph.inputs), ("output", graph.outputs)):
        for i in indices if indices is not None else []:
            if tensors[i].dtype is None:
                raise KernelModelError(
                    f"model {kind} {tensors[i].name!r} has type {tensors[i].type_name}, "
                    "which the firmware kernels do not handle"
                )
    preparer = _Preparer(tensors)
    ops = []
    for index, op in enumerate(graph.operators or []):
        name = _op_name(parsed.operatorCodes[op.opcodeIndex])
        method = getattr(preparer, f"prepare_{name.lower()}", None)
        if method is None:
            raise KernelModelError(
                f"operator {index} is {name}, which the firmware kernels do not implement"
            )
        try:
            kernel, args = method(op, op.builtinOptions)
        except KernelModelError as exc:
            raise KernelModelError(f"operator {index} ({name}): {exc}") from exc
        reads = tuple(int(i) for i in op.inputs if i >= 0)
        ops.append(PreparedOp(index, name, kernel, tuple(args), reads,
                              tuple(int(i) for i in op.outputs)))
    return PreparedGraph(tensors, tuple(ops), tuple(int(i) for i in graph.inputs),
                         tuple(int(i) for i in graph.outputs))


def _op_name(code: S.OperatorCodeT) -> str:
    # TFLite takes the larger of the 8-bit deprecated field and the 32-bit one.
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _tensor_info(index: int, tensor: S.TensorT, buffer: S.BufferT) -> TensorInfo:
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
    dtype = _DTYPES.get(tensor.type)
    shape = () if tensor.shape is None else tuple(int(d) for d in tensor.shape)
    data = None
    if buffer.data is not None and len(buffer.data) and dtype is not None:
        raw = np.frombuffer(bytes(buffer.data), dtype.newbyteorder("<"))
        data = raw.astype(dtype).reshape(shape)
    elif buffer.offset > 1:
        raise KernelModelError(f"tensor {name!r} is stored outside the flatbuffer")
    q = tensor.quantization
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    if q is not None and q.scale is not None and len(q.scale):
        scales = tuple(float(s) for s in q.scale)
        zero_points = tuple(int(z) for z in q.zeroPoint) if q.zeroPoint is not None and len(
            q.zeroPoint) else (0,)
    type_name = _TYPE_NAMES.get(tensor.type, f"type {tensor.type}")
    return TensorInfo(index, name, shape, type_name, dtype, scales, zero_points, data)


class _Preparer:
    """TFLite's Prepare step per operator: checks, then the kernel name and its arguments."""

    def __init__(self, tensors: tuple[TensorInfo, ...]) -> None:
        self._tensors = tensors

    # -- tensors --

    def _typed(self, index: int) -> TensorInfo:
        tensor = self._tensors[index]
        if tensor.dtype is None:
            raise KernelModelError(
                f"tensor {tensor.name!r} has type {tensor.type_name}, which the kernels do "
                "not handle"
            )
        return tensor

    def _int8(self, index: int) -> TensorInfo:
        tensor = self._typed(index)
        if tensor.dtype != np.int8:
            raise KernelModelError(f"implemented for int8 tensors, got {tensor.type_name} "
                                   f"tensor {tensor.name!r}")
        if not tensor.scale > 0:
            raise KernelModelError(f"int8 tensor {tensor.name!r} has no positive scale")
        return tensor

    def _bias(self, op: S.OperatorT) -> TensorArg | None:
        if len(op.inputs) <= 2 or op.inputs[2] < 0:
            return None
        bias = self._typed(op.inputs[2])
        if bias.dtype != np.int32:
            raise KernelModelError(f"needs an int32 bias, got {bias.type_name}")
        return TensorArg(bias.index)

    def _requant(self, op: S.OperatorT, activation: int) -> Struct:
        """Output stage of CONV/DWCONV/FC: PopulateConvolutionQuantizationParams' multipliers,
        one per filter scale (a single scale is per-tensor quantisation)."""
        x, w, y = (self._tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
        pairs = [quantize_multiplier(x.scale * s / y.scale) for s in w.scales]
        per_channel = len(pairs) > 1
        if per_channel and len(pairs) != y.shape[-1]:
            raise KernelModelError("filter scales do not match the output channels")
        low, high = activation_range(activation, y.scale, y.zero_point)
        return Struct("tp_requant_t", (
            ("multiplier", Int32Array(tuple(m for m, _ in pairs))),
            ("shift", Int32Array(tuple(s for _, s in pairs))),
            ("per_channel", int(per_channel)),
            ("output_offset", y.zero_point),
            ("act_min", low),
            ("act_max", high),
            ("shifts_left", int(any(s > 0 for _, s in pairs))),
        ))

    # -- operators: each returns (kernel name, arguments) --

    def prepare_conv_2d(self, op: S.OperatorT, options: S.Conv2DOptionsT | None) -> _Call:
        return self._conv(op, options or S.Conv2DOptionsT(), depthwise=False)

    def prepare_depthwise_conv_2d(
        self, op: S.OperatorT, options: S.DepthwiseConv2DOptionsT | None
    ) -> _Call:
        return self._conv(op, options or S.DepthwiseConv2DOptionsT(), depthwise=True)

    def _conv(
        self,
        op: S.OperatorT,
        options: S.Conv2DOptionsT | S.DepthwiseConv2DOptionsT,
        depthwise: bool,
    ) -> _Call:
        x, w, y = (self._int8(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
        bias = self._bias(op)
        if len(x.shape) != 4 or len(w.shape) != 4 or len(y.shape) != 4:
            raise KernelModelError("needs 4-D input, filter and output")
        geometry = []
        for size, k, stride, dilation, out in (
            (x.shape[1], w.shape[1], options.strideH, options.dilationHFactor, y.shape[1]),
            (x.shape[2], w.shape[2], options.strideW, options.dilationWFactor, y.shape[2]),
        ):
            expected, pad = padding(options.padding, size, k, stride, dilation)
            if expected != out:
                raise KernelModelError(f"output size {out} does not match {expected}")
            geometry.append(pad)
        if depthwise:
            if y.shape[3] % x.shape[3]:
                raise KernelModelError("output channels not a multiple of input channels")
            multiplier = y.shape[3] // x.shape[3]
        else:
            if x.shape[3] % w.shape[3] or y.shape[3] % (x.shape[3] // w.shape[3]):
                raise KernelModelError("channels do not divide into groups")
            multiplier = 1
        # Filter zero points are not read: TFLite's int8 conv kernels ignore them (int8 filters
        # are meant to be symmetric), and so do ours (checked against tflite-micro).
        params = Struct("tp_conv_params_t", (
            ("stride_h", options.strideH), ("stride_w", options.strideW),
            ("dilation_h", options.dilationHFactor), ("dilation_w", options.dilationWFactor),
            ("pad_h", geometry[0]), ("pad_w", geometry[1]),
            ("depth_multiplier", multiplier),
            ("input_offset", -x.zero_point),
            ("out", self._requant(op, options.fusedActivationFunction)),
        ))
        if depthwise:
            fast = (multiplier == 1 and options.dilationHFactor == options.dilationWFactor == 1
                    and w.data is not None)
            if fast:
                return "tp_depthwise_conv2d_dm1_s8", (
                    params, _shape4(x), TensorArg(x.index), _shape4(w),
                    PackedArray(pack_depthwise(w.data)), bias, _shape4(y), TensorArg(y.index))
            kernel = "tp_depthwise_conv2d_s8"
        elif w.shape[3] == x.shape[3] and w.data is not None:  # no groups: packed GEMM
            k_h, k_w = w.shape[1], w.shape[2]
            direct = k_h == k_w == 1 and geometry == [0, 0]
            steps = (k_h * k_w * x.shape[3] + 3) // 4
            # two rows widened to int16 (16 bytes a step), plus two im2col rows unless 1x1
            scratch = 16 * steps + (0 if direct else 8 * steps)
            return "tp_conv2d_gemm_s8", (
                params, _shape4(x), TensorArg(x.index), _shape4(w),
                PackedArray(pack_weights(w.data)), Int32Array(fold_bias(w.data, bias, -x.zero_point,
                                                                      self._tensors)),
                _shape4(y), TensorArg(y.index), Scratch(scratch))
        else:
            kernel = "tp_conv2d_s8"
        return kernel, (params, _shape4(x), TensorArg(x.index), _shape4(w), TensorArg(w.index),
                        bias, _shape4(y), TensorArg(y.index))

    def prepare_fully_connected(
        self, op: S.OperatorT, options: S.FullyConnectedOptionsT | None
    ) -> _Call:
        options = options or S.FullyConnectedOptionsT()
        if options.weightsFormat != S.FullyConnectedOptionsWeightsFormat.DEFAULT:
            raise KernelModelError("shuffled weights are not supported")
        x, w, y = (self._int8(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
        bias = self._bias(op)
        output_depth, accum_depth = y.shape[-1], w.shape[-1]
        batches = y.size // output_depth
        if x.size != batches * accum_depth or w.shape[0] != output_depth:
            raise KernelModelError("input or output size does not match the weights")
        params = Struct("tp_fc_params_t", (
            ("input_offset", -x.zero_point),
            ("filter_offset", -w.zero_point),
            ("out", self._requant(op, options.fusedActivationFunction)),
        ))
        if w.zero_point == 0 and w.data is not None:  # symmetric weights: packed and folded
            rows = min(batches, 2)  # rows widened to int16 at a time, 8 bytes a step each
            return "tp_fully_connected_gemm_s8", (
                params, batches, accum_depth, output_depth, TensorArg(x.index),
                PackedArray(pack_weights(w.data)),
                Int32Array(fold_bias(w.data, bias, -x.zero_point, self._tensors)),
                TensorArg(y.index), Scratch(8 * rows * ((accum_depth + 3) // 4)))
        return "tp_fully_connected_s8", (params, batches, accum_depth, output_depth,
                                         TensorArg(x.index), TensorArg(w.index), bias,
                                         TensorArg(y.index))

    def prepare_average_pool_2d(self, op: S.OperatorT, options: S.Pool2DOptionsT | None) -> _Call:
        options = options or S.Pool2DOptionsT()
        x, y = self._int8(op.inputs[0]), self._int8(op.outputs[0])
        if len(x.shape) != 4 or len(y.shape) != 4:
            raise KernelModelError("needs 4-D input and output")
        pads = []
        for size, k, stride, out in ((x.shape[1], options.filterHeight, options.strideH,
                                      y.shape[1]),
                                     (x.shape[2], options.filterWidth, options.strideW,
                                      y.shape[2])):
            expected, pad = padding(options.padding, size, k, stride, 1)
            if expected != out:
                raise KernelModelError(f"output size {out} is not {expected}")
            pads.append(pad)
        low, high = activation_range(options.fusedActivationFunction, y.scale, y.zero_point)
        params = Struct("tp_pool_params_t", (
            ("stride_h", options.strideH), ("stride_w", options.strideW),
            ("filter_h", options.filterHeight), ("filter_w", options.filterWidth),
            ("pad_h", pads[0]), ("pad_w", pads[1]),
            ("act_min", low), ("act_max", high),
        ))
        return "tp_average_pool2d_s8", (params, _shape4(x), TensorArg(x.index), _shape4(y),
                                        TensorArg(y.index))

    def prepare_add(self, op: S.OperatorT, options: S.AddOptionsT | None) -> _Call:
        options = options or S.AddOptionsT()
        a, b, y = (self._int8(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
        # TFLite's add Prepare for 8-bit outputs: rescale both inputs to twice the larger
        # input scale with 20 bits of headroom; every multiplier must be below one.
        left_shift = 20
        twice_max = 2 * max(a.scale, b.scale)
        reals = (a.scale / twice_max, b.scale / twice_max,
                 twice_max / ((1 << left_shift) * y.scale))
        if not all(0.0 < r < 1.0 for r in reals):
            raise KernelModelError(f"scales give multipliers {reals} outside (0, 1)")
        (m1, s1), (m2, s2), (mo, so) = (quantize_multiplier(r) for r in reals)
        low, high = activation_range(options.fusedActivationFunction, y.scale, y.zero_point)
        params = Struct("tp_add_params_t", (
            ("input1_offset", -a.zero_point), ("input2_offset", -b.zero_point),
            ("output_offset", y.zero_point), ("left_shift", left_shift),
            ("input1_multiplier", m1), ("input1_shift", s1),
            ("input2_multiplier", m2), ("input2_shift", s2),
            ("output_multiplier", mo), ("output_shift", so),
            ("act_min", low), ("act_max", high),
        ))
        operands = (TensorArg(a.index), TensorArg(b.index), TensorArg(y.index))
        if a.shape == b.shape:
            return "tp_add_s8", (params, y.size, *operands)
        return "tp_add_broadcast_s8", (params, _broadcast(a.shape, b.shape, y.shape), *operands)

    def prepare_softmax(self, op: S.OperatorT, options: S.SoftmaxOptionsT | None) -> _Call:
        beta = (options or S.SoftmaxOptionsT()).beta
        x, y = self._int8(op.inputs[0]), self._int8(op.outputs[0])
        if y.zero_point != -128 or abs(y.scale - 1 / 256) > 0.001 / 256:
            raise KernelModelError("int8 SOFTMAX needs output scale 1/256 and zero point -128")
        multiplier, left_shift, diff_min = softmax_params(beta, x.scale)
        params = Struct("tp_softmax_params_t", (
            ("input_multiplier", multiplier), ("input_left_shift", left_shift),
            ("diff_min", diff_min),
        ))
        depth = x.shape[-1]
        return "tp_softmax_s8", (params, x.size // depth, depth, TensorArg(x.index),
                                 TensorArg(y.index))

    def prepare_reshape(self, op: S.OperatorT, _options: object) -> _Call:
        x, y = self._typed(op.inputs[0]), self._typed(op.outputs[0])
        if x.nbytes != y.nbytes or x.dtype != y.dtype:
            raise KernelModelError("input and output differ in size or type")
        return "tp_reshape", (TensorArg(x.index), TensorArg(y.index), x.nbytes)

    def prepare_quantize(self, op: S.OperatorT, _options: object) -> _Call:
        x, y = self._typed(op.inputs[0]), self._int8(op.outputs[0])
        if x.dtype == np.float32:
            return "tp_quantize_f32_s8", (y.scale, y.zero_point, x.size, TensorArg(x.index),
                                          TensorArg(y.index))
        if x.dtype == np.int8:
            multiplier, shift = quantize_multiplier(x.scale / y.scale)
            return "tp_requantize_s8", (x.zero_point, multiplier, shift, y.zero_point, x.size,
                                        TensorArg(x.index), TensorArg(y.index))
        raise KernelModelError(f"QUANTIZE from {x.type_name} is not supported")

    def prepare_dequantize(self, op: S.OperatorT, _options: object) -> _Call:
        x, y = self._int8(op.inputs[0]), self._typed(op.outputs[0])
        if y.dtype != np.float32:
            raise KernelModelError(f"DEQUANTIZE to {y.type_name} is not supported")
        return "tp_dequantize_s8_f32", (x.scale, x.zero_point, x.size, TensorArg(x.index),
                                        TensorArg(y.index))


_Call = tuple[str, tuple[KernelArg, ...]]


def pack_weights(weights: np.ndarray) -> np.ndarray:
    """Weights [out, ...] as tp_conv2d_gemm_s8 reads them: per pair of output channels, 4 int8
    of the first, 4 of the second, for each step of 4 along the depth (zero-padded to a multiple
    of 4; the channels zero-padded to a multiple of 4, which the kernel reads four at a
    time)."""
    rows = weights.reshape(weights.shape[0], -1).astype(np.int8)
    out, depth = rows.shape
    padded = np.zeros(((out + 3) & ~3, (depth + 3) & ~3), np.int8)
    padded[:out, :depth] = rows
    pairs = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 4, 4)
    return np.ascontiguousarray(pairs.transpose(0, 2, 1, 3)).reshape(-1)


def pack_depthwise(weights: np.ndarray) -> np.ndarray:
    """Depthwise weights [1, k_h, k_w, C] as tp_depthwise_conv2d_dm1_s8 reads them: int16,
    per group of 4 channels (zero-padded to a multiple of 4), every tap's weights in turn in
    the lanes SMLABB/SMLATT meet them: channels 0, 2, then 1, 3 of the group."""
    taps = weights.reshape(-1, weights.shape[-1]).astype(np.int16)  # [k_h * k_w, C]
    channels = taps.shape[1]
    padded = np.zeros((taps.shape[0], (channels + 3) & ~3), np.int16)
    padded[:, :channels] = taps
    groups = padded.reshape(taps.shape[0], -1, 4)[:, :, [0, 2, 1, 3]].transpose(1, 0, 2)
    return np.ascontiguousarray(groups).reshape(-1)


def fold_bias(weights: np.ndarray, bias: TensorArg | None, input_offset: int,
              tensors: tuple[TensorInfo, ...]) -> tuple[int, ...]:
    """bias + input_offset * sum of each output channel's weights, wrapped to int32 as the
    kernels' accumulators wrap, zero-padded to a multiple of 4 as the packed weights.

    With it, sum(w * x) + folded == bias + sum(w * (x + input_offset)), TFLite's sum; padding
    taps, written as the input zero point, then contribute w * (zp - zp) = 0 as in TFLite.
    """
    rows = weights.reshape(weights.shape[0], -1).astype(np.int64)
    total = rows.sum(axis=1) * input_offset
    if bias is not None:
        total = total + tensors[bias.index].data.astype(np.int64)
    wrapped = (total + (1 << 31)) % (1 << 32) - (1 << 31)
    values = tuple(int(v) for v in wrapped)
    return values + (0,) * (-len(values) % 4)


def _shape4(tensor: TensorInfo) -> Struct:
    return Struct("tp_shape4_t", tuple(zip("nhwc", tensor.shape, strict=True)))


def _broadcast(a: tuple[int, ...], b: tuple[int, ...], out: tuple[int, ...]) -> Struct:
    """Output dims and per-input element strides (0 where an input is broadcast)."""
    ndim = len(out)
    if ndim > _MAX_DIMS or len(a) > ndim or len(b) > ndim:
        raise KernelModelError(f"broadcast of {a} and {b} to {out} is not supported")
    strides = {}
    for field, shape in (("stride1", a), ("stride2", b)):
        full = (1,) * (ndim - len(shape)) + tuple(shape)
        running = np.cumprod((1,) + full[:0:-1])[::-1]
        for d in range(ndim):
            if full[d] not in (1, out[d]):
                raise KernelModelError(f"cannot broadcast {shape} to {out}")
        strides[field] = _padded([0 if full[d] == 1 else int(running[d]) for d in range(ndim)])
    return Struct("tp_broadcast_t", (("ndim", ndim), ("dims", _padded(list(out))),
                                     ("stride1", strides["stride1"]),
                                     ("stride2", strides["stride2"])))


def _padded(values: list[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in values) + (0,) * (_MAX_DIMS - len(values))


# ---- the ctypes runner --------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: what to feed or expect."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int


class KernelInterpreter:
    """Runs a .tflite model's main subgraph op by op through the firmware's C kernels."""

    def __init__(self, model: bytes, emulate_dsp: bool = False) -> None:
        """``emulate_dsp``: run the kernels' Cortex-M DSP path (see ``build_kernels``)."""
        self._lib = load_kernels(emulate_dsp)
        self.graph = prepare(model)
        self._tensors = [self._allocate(t) for t in self.graph.tensors]
        self._keep: list[object] = []  # arrays whose addresses sit inside argument structs
        self._steps = [
            (getattr(self._lib, op.kernel), tuple(self._bind(a) for a in op.args))
            for op in self.graph.ops
        ]
        self.inputs = [self._spec(i) for i in self.graph.inputs]
        self.outputs = [self._spec(i) for i in self.graph.outputs]

    @classmethod
    def from_file(cls, path: Path) -> KernelInterpreter:
        """Load the .tflite file at ``path``."""
        return cls(Path(path).read_bytes())

    def invoke(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run one inference; inputs in the model's order, outputs returned as copies."""
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the model takes {len(self.inputs)} inputs, got {len(inputs)}")
        for spec, index, value in zip(self.inputs, self.graph.inputs, inputs, strict=True):
            value = np.asarray(value)
            if value.dtype != spec.dtype or value.size != math.prod(spec.shape):
                raise ValueError(
                    f"input {spec.name!r} takes {math.prod(spec.shape)} {spec.dtype} values "
                    f"(shape {spec.shape}), got {value.size} {value.dtype}"
                )
            self._tensors[index][...] = value.reshape(spec.shape)
        for kernel, args in self._steps:
            kernel(*args)
        return [self._tensors[i].copy() for i in self.graph.outputs]

    @staticmethod
    def _allocate(tensor: TensorInfo) -> np.ndarray | None:
        if tensor.dtype is None:  # never an operand of a prepared op, nor an input or output
            return None
        if tensor.data is not None:
            return tensor.data.copy()
        return np.zeros(tensor.shape, tensor.dtype)

    def _spec(self, index: int) -> TensorSpec:
        t = self.graph.tensors[index]
        return TensorSpec(t.name, t.shape, t.dtype, t.scale, t.zero_point)

    def _bind(self, arg: KernelArg) -> object:
        """A prepared argument as ctypes passes it: pointers for tensors, arrays and structs."""
        if isinstance(arg, TensorArg):
            return self._tensors[arg.index].ctypes.data
        if isinstance(arg, Int32Array):
            array = np.array(arg.values, np.int32)
            self._keep.append(array)
            return array.ctypes.data
        if isinstance(arg, PackedArray | Scratch):
            array = (arg.data.copy() if isinstance(arg, PackedArray)
                     else np.zeros(arg.nbytes, np.int8))
            self._keep.append(array)
            return array.ctypes.data
        if isinstance(arg, Struct):
            return ctypes.byref(self._struct(arg))  # byref keeps the struct alive
        return arg

    def _struct(self, struct: Struct) -> ctypes.Structure:
        values = {name: self._struct(v) if isinstance(v, Struct) else self._bind(v)
                  for name, v in struct.fields}
        return _STRUCTS[struct.ctype](**values)
