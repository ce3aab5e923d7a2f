"""The firmware's C kernels against the tflite-micro runtime: outputs must be bit-identical.

The benchmark firmware runs our own int8 kernels (``firmware/nn``), so its energy numbers are
only comparable with other submissions if it computes exactly what TFLite Micro computes.
Each op is checked on many seeded random shapes and quantisation parameters, as tiny
single-op models built with the flatbuffers schema, then the MLPerf Tiny reference models
and the synthetic KWS model are checked end to end on random and real sample inputs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from tflite_micro import runtime
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

from tinypower import firmware_nn
from tinypower.firmware_nn import KernelBuildError, KernelInterpreter, KernelModelError
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.synthetic import synthetic_kws_model

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "mlperf-tiny"
INT8, INT32, FLOAT32 = S.TensorType.INT8, S.TensorType.INT32, S.TensorType.FLOAT32
OP = S.BuiltinOperator
ACTIVATIONS = (
    S.ActivationFunctionType.NONE,
    S.ActivationFunctionType.RELU,
    S.ActivationFunctionType.RELU6,
    S.ActivationFunctionType.RELU_N1_TO_1,
)
RUNS_PER_MODEL = 3  # random inputs per single-op model


# Build the kernels once, at collection: without gcc the whole module fails in CI and is
# skipped (with the reason) on a developer's machine, with one message either way.
try:
    firmware_nn.load_kernels()
except KernelBuildError as exc:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI needs the host C compiler to test the firmware kernels: {exc}",
                    pytrace=False)
    pytest.skip(f"cannot build the firmware kernels: {exc}", allow_module_level=True)


# ---- single-op models ---------------------------------------------------------------------


class Model:
    """A one-operator .tflite model, built tensor by tensor with the schema's object API."""

    def __init__(self) -> None:
        self.tensors: list[S.TensorT] = []
        self.buffers: list[S.BufferT] = [S.BufferT()]  # buffer 0: the empty sentinel
        self.inputs: list[int] = []

    def tensor(
        self,
        shape: tuple[int, ...],
        ttype: int = INT8,
        scale: float | np.ndarray | None = None,
        zero_point: int | np.ndarray = 0,
        data: np.ndarray | None = None,
        axis: int = 0,
    ) -> int:
        """Add a tensor: constant if ``data`` is given, else a graph input or activation."""
        t = S.TensorT()
        t.name, t.shape, t.type = f"t{len(self.tensors)}", list(shape), ttype
        buffer = S.BufferT()
        if data is not None:
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        self.buffers.append(buffer)
        t.buffer = len(self.buffers) - 1
        if scale is not None:
            scales = np.atleast_1d(np.asarray(scale, np.float32))
            q = S.QuantizationParametersT()
            q.scale = [float(s) for s in scales]
            q.zeroPoint = [int(z) for z in np.broadcast_to(zero_point, scales.shape)]
            q.quantizedDimension = axis
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def input(self, *args, **kwargs) -> int:
        index = self.tensor(*args, **kwargs)
        self.inputs.append(index)
        return index

    def build(
        self, code: int, inputs: list[int], output: int, options_type: int = 0, options=None
    ) -> bytes:
        op_code = S.OperatorCodeT()
        op_code.builtinCode = op_code.deprecatedBuiltinCode = code
        op_code.version = 1
        op = S.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, inputs, [output]
        op.builtinOptionsType, op.builtinOptions = options_type, options
        graph = S.SubGraphT()
        graph.tensors, graph.operators = self.tensors, [op]
        graph.inputs, graph.outputs = self.inputs, [output]
        model = S.ModelT()
        model.version, model.operatorCodes = 3, [op_code]
        model.subgraphs, model.buffers = [graph], self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def assert_bit_identical(model: bytes, inputs: list[list[np.ndarray]], what: str) -> None:
    """Run every input set through tflite-micro and the C kernels; compare all outputs."""
    reference = runtime.Interpreter.from_bytes(model, arena_size=max(10 * len(model), 1 << 20))
    # Both builds of the kernels: the plain C one (Cortex-M0+, the host) and the Cortex-M DSP
    # one with its instructions modelled in C (the M4's own is checked under QEMU).
    variants = [KernelInterpreter(model), KernelInterpreter(model, emulate_dsp=True)]
    for run, values in enumerate(inputs):
        for index, value in enumerate(values):
            reference.set_input(value.reshape(variants[0].inputs[index].shape), index)
        reference.invoke()
        for ours, path in zip(variants, ("plain C", "DSP"), strict=True):
            got = ours.invoke(*values)
            for index, actual in enumerate(got):
                expected = reference.get_output(index)
                assert actual.dtype == expected.dtype
                np.testing.assert_array_equal(
                    actual.reshape(expected.shape), expected,
                    err_msg=f"{what}, input set {run}, {path} path"
                )


def random_inputs(model: bytes, rng: np.random.Generator) -> list[list[np.ndarray]]:
    specs = KernelInterpreter(model).inputs
    return [
        [
            rng.integers(-128, 128, s.shape, dtype=np.int8) if s.dtype == np.int8
            else (rng.standard_normal(s.shape) * 4).astype(np.float32)
            for s in specs
        ]
        for _ in range(RUNS_PER_MODEL)
    ]


def scale(rng: np.random.Generator, low: float = 1e-3, high: float = 1.0) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def output_scale(rng: np.random.Generator, accumulator_scale: float, terms: int) -> float:
    """An output scale that spreads the typical accumulator over the int8 range, or sometimes
    one small enough that the requantisation multiplier exceeds one (a positive shift)."""
    if rng.random() < 0.15:
        return accumulator_scale * float(rng.uniform(0.3, 1.0))
    spread = 60.0 * 60.0 * np.sqrt(terms) * accumulator_scale
    return float(spread / rng.uniform(8, 100))


def conv_geometry(rng: np.random.Generator, size: int, k: int) -> tuple[int, int]:
    """A stride and dilation for which VALID padding still leaves an output."""
    stride, dilation = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    while (k - 1) * dilation + 1 > size and dilation > 1:
        dilation -= 1
    return stride, dilation


def padding_for(rng: np.random.Generator, sizes: list[tuple[int, int, int]]) -> int:
    """SAME, or VALID where every (size, kernel, dilation) leaves an output."""
    fits = all((k - 1) * d + 1 <= n for n, k, d in sizes)
    return S.Padding.VALID if fits and rng.random() < 0.5 else S.Padding.SAME


def out_size(padding: int, size: int, k: int, stride: int, dilation: int) -> int:
    return firmware_nn.padding(padding, size, k, stride, dilation)[0]


def bias(
    rng: np.random.Generator, channels: int, accumulator_scale: float, out_scale: float,
    optional: bool = True,
) -> np.ndarray | None:
    if optional and rng.random() < 0.15:
        return None
    spread = max(1, int(30 * out_scale / accumulator_scale))
    return rng.integers(-spread, spread + 1, channels).astype(np.int32)


# ---- one test per op, many seeded cases each ----------------------------------------------


def conv_model(seed: int, depthwise: bool) -> bytes:
    rng = np.random.default_rng(seed)
    n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 13)), int(rng.integers(1, 13))
    in_c = int(rng.integers(1, 9))
    k_h, k_w = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    stride_h, dilation_h = conv_geometry(rng, h, k_h)
    stride_w, dilation_w = conv_geometry(rng, w, k_w)
    pad = padding_for(rng, [(h, k_h, dilation_h), (w, k_w, dilation_w)])
    out_h, out_w = (out_size(pad, h, k_h, stride_h, dilation_h),
                    out_size(pad, w, k_w, stride_w, dilation_w))
    if depthwise:
        multiplier = int(rng.integers(1, 4))
        out_c, filter_shape, axis, terms = in_c * multiplier, (1, k_h, k_w, in_c * multiplier), 3, 1
    else:
        groups = int(rng.integers(2, 4)) if seed % 4 == 3 else 1  # grouped convolution
        out_c = groups * int(rng.integers(1, 5))
        filter_shape, axis, terms = (out_c, k_h, k_w, in_c), 0, in_c
        in_c *= groups
    terms *= k_h * k_w
    in_scale, in_zp = scale(rng), int(rng.integers(-128, 128))
    per_tensor = seed % 5 == 4  # one filter scale broadcast over the output channels
    w_scales = np.array([scale(rng, 1e-3, 0.1) for _ in range(1 if per_tensor else out_c)],
                        np.float32)
    acc_scale = in_scale * float(np.median(w_scales))
    o_scale, o_zp = output_scale(rng, acc_scale, terms), int(rng.integers(-128, 128))
    m = Model()
    x = m.input((n, h, w, in_c), INT8, in_scale, in_zp)
    filt = m.tensor(filter_shape, INT8, w_scales, 0,
                    rng.integers(-127, 128, filter_shape, dtype=np.int8), axis)
    # tflite-micro crashes (SIGSEGV) on a DEPTHWISE_CONV_2D without bias, so it always has one.
    b = bias(rng, out_c, acc_scale, o_scale, optional=not depthwise)
    inputs = [x, filt, -1 if b is None else m.tensor((out_c,), INT32, in_scale * w_scales, 0, b)]
    y = m.tensor((n, out_h, out_w, out_c), INT8, o_scale, o_zp)
    if depthwise:
        options, options_type = S.DepthwiseConv2DOptionsT(), S.BuiltinOptions.DepthwiseConv2DOptions
        options.depthMultiplier = multiplier
        code = OP.DEPTHWISE_CONV_2D
    else:
        options, options_type = S.Conv2DOptionsT(), S.BuiltinOptions.Conv2DOptions
        code = OP.CONV_2D
    options.padding, options.strideH, options.strideW = pad, stride_h, stride_w
    options.dilationHFactor, options.dilationWFactor = dilation_h, dilation_w
    options.fusedActivationFunction = ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]
    return m.build(code, inputs, y, options_type, options)


@pytest.mark.parametrize("seed", range(150))
def test_conv_2d(seed: int) -> None:
    model = conv_model(seed, depthwise=False)
    assert_bit_identical(model, random_inputs(model, np.random.default_rng(seed)), "CONV_2D")


@pytest.mark.parametrize("seed", range(150))
def test_depthwise_conv_2d(seed: int) -> None:
    model = conv_model(seed, depthwise=True)
    assert_bit_identical(model, random_inputs(model, np.random.default_rng(seed)), "DW_CONV_2D")


@pytest.mark.parametrize("seed", range(150))
def test_fully_connected(seed: int) -> None:
    rng = np.random.default_rng(seed)
    batches, depth = int(rng.integers(1, 4)), int(rng.integers(1, 65))
    units = int(rng.integers(1, 33))
    per_channel = seed % 2 == 1
    filter_zp = int(rng.integers(-10, 11)) if seed % 4 == 0 else 0  # asymmetric weights
    in_shape = (batches, 1, 1, depth) if seed % 3 == 2 else (batches, depth)  # flattened
    in_scale, in_zp = scale(rng), int(rng.integers(-128, 128))
    w_scales = np.array([scale(rng, 1e-3, 0.1) for _ in range(units if per_channel else 1)])
    acc_scale = in_scale * float(np.median(w_scales))
    o_scale = output_scale(rng, acc_scale, depth)
    m = Model()
    x = m.input(in_shape, INT8, in_scale, in_zp)
    w = m.tensor((units, depth), INT8, w_scales, filter_zp,
                 rng.integers(-127, 128, (units, depth), dtype=np.int8))
    b = bias(rng, units, acc_scale, o_scale)
    bias_scales = in_scale * w_scales.astype(np.float32)
    inputs = [x, w, -1 if b is None else m.tensor((units,), INT32, bias_scales, 0, b)]
    y = m.tensor((batches, units), INT8, o_scale, int(rng.integers(-128, 128)))
    options = S.FullyConnectedOptionsT()
    options.fusedActivationFunction = ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]
    model = m.build(OP.FULLY_CONNECTED, inputs, y, S.BuiltinOptions.FullyConnectedOptions,
                    options)
    assert_bit_identical(model, random_inputs(model, rng), f"FULLY_CONNECTED {per_channel=}")


@pytest.mark.parametrize("seed", range(100))
def test_average_pool_2d(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, h, w, c = (int(rng.integers(1, 3)), int(rng.integers(1, 13)), int(rng.integers(1, 13)),
                  int(rng.integers(1, 9)))
    f_h, f_w = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    s_h, s_w = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    pad = padding_for(rng, [(h, f_h, 1), (w, f_w, 1)])
    q = (scale(rng), int(rng.integers(-128, 128)))  # TFLite pools keep the input quantisation
    m = Model()
    x = m.input((n, h, w, c), INT8, *q)
    y = m.tensor((n, out_size(pad, h, f_h, s_h, 1), out_size(pad, w, f_w, s_w, 1), c), INT8, *q)
    options = S.Pool2DOptionsT()
    options.padding, options.strideH, options.strideW = pad, s_h, s_w
    options.filterHeight, options.filterWidth = f_h, f_w
    options.fusedActivationFunction = ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]
    model = m.build(OP.AVERAGE_POOL_2D, [x], y, S.BuiltinOptions.Pool2DOptions, options)
    assert_bit_identical(model, random_inputs(model, rng), "AVERAGE_POOL_2D")


@pytest.mark.parametrize("seed", range(150))
def test_add(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 5, int(rng.integers(1, 7))))
    shapes = [shape, shape]
    if seed % 3 == 2:  # broadcast: drop leading dims and set some to 1 in one input
        other = [1 if rng.random() < 0.5 else d for d in shape][int(rng.integers(len(shape))):]
        shapes[int(rng.integers(2))] = tuple(other) or (1,)
    scales = [scale(rng, 1e-2, 1.0) for _ in range(2)]
    m = Model()
    operands = []
    for i, s in enumerate(shapes):
        zp = int(rng.integers(-128, 128))
        if i == 1 and seed % 4 == 3:  # a constant operand, as a folded bias would be
            operands.append(m.tensor(s, INT8, scales[i], zp,
                                     rng.integers(-128, 128, s, dtype=np.int8)))
        else:
            operands.append(m.input(s, INT8, scales[i], zp))
    out_scale = (scales[0] + scales[1]) * float(rng.uniform(0.3, 1.5))
    y = m.tensor(shape, INT8, out_scale, int(rng.integers(-128, 128)))
    options = S.AddOptionsT()
    options.fusedActivationFunction = ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]
    model = m.build(OP.ADD, operands, y, S.BuiltinOptions.AddOptions, options)
    assert_bit_identical(model, random_inputs(model, rng), f"ADD {shapes}")


@pytest.mark.parametrize("seed", range(100))
def test_softmax(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 65)), int(rng.integers(1, 40)))
    m = Model()
    x = m.input(shape, INT8, scale(rng, 1e-3, 2.0), int(rng.integers(-128, 128)))
    y = m.tensor(shape, INT8, 1 / 256, -128)
    options = S.SoftmaxOptionsT()
    options.beta = 1.0 if seed % 2 else float(rng.uniform(0.1, 3.0))
    model = m.build(OP.SOFTMAX, [x], y, S.BuiltinOptions.SoftmaxOptions, options)
    assert_bit_identical(model, random_inputs(model, rng), "SOFTMAX")


def test_softmax_is_tflites_fixed_point_not_float() -> None:
    """A row where the exact float softmax rounds to -26 but TFLite's fixed-point exp and
    reciprocal give -25: tflite-micro runs the fixed-point algorithm, and so must we."""
    row = np.array([[78, -100, 44, -87, -115, -2, 68, 27, -34, -126,
                     45, -46, 12, 7, -85, -105, 65, 123, -59, 119]], np.int8)
    m = Model()
    x = m.input(row.shape, INT8, 0.05634869635105133, 0)
    options = S.SoftmaxOptionsT()
    options.beta = 1.0
    model = m.build(OP.SOFTMAX, [x], m.tensor(row.shape, INT8, 1 / 256, -128),
                    S.BuiltinOptions.SoftmaxOptions, options)
    assert KernelInterpreter(model).invoke(row)[0][0, -1] == -25
    assert_bit_identical(model, [[row]], "SOFTMAX fixed point")


def test_softmax_of_a_wide_flat_row_rounds_to_zero() -> None:
    """1000 equal logits: each probability 1/1000 is below half of 1/256, so -128. (tflite-micro
    aborts on rows whose exps sum past 512, so there is no reference output to compare.)"""
    m = Model()
    x = m.input((1, 1000), INT8, 0.01, 0)
    options = S.SoftmaxOptionsT()
    options.beta = 1.0
    model = m.build(OP.SOFTMAX, [x], m.tensor((1, 1000), INT8, 1 / 256, -128),
                    S.BuiltinOptions.SoftmaxOptions, options)
    out = KernelInterpreter(model).invoke(np.full((1, 1000), 100, np.int8))[0]
    assert (out == -128).all()


@pytest.mark.parametrize("seed", range(5))
def test_reshape(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 6, 4))
    new_shape = (1, int(np.prod(shape)))
    q = (scale(rng), int(rng.integers(-128, 128)))
    m = Model()
    x = m.input(shape, INT8, *q)
    target = m.tensor((2,), INT32, data=np.array(new_shape, np.int32))
    model = m.build(OP.RESHAPE, [x, target], m.tensor(new_shape, INT8, *q))
    assert_bit_identical(model, random_inputs(model, rng), "RESHAPE")


@pytest.mark.parametrize("seed", range(60))
def test_quantize(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (1, int(rng.integers(1, 200)))
    out_q = (scale(rng, 1e-2, 1.0), int(rng.integers(-128, 128)))
    m = Model()
    if seed % 2:  # int8 -> int8 requantisation
        x = m.input(shape, INT8, scale(rng, 1e-2, 1.0), int(rng.integers(-128, 128)))
    else:
        x = m.input(shape, FLOAT32)
    model = m.build(OP.QUANTIZE, [x], m.tensor(shape, INT8, *out_q))
    inputs = random_inputs(model, rng)
    if not seed % 2:  # float -> int8: exact halves check the rounding of ties
        ties = (rng.integers(-140, 140, shape) + 0.5) * np.float32(out_q[0])
        inputs.append([ties.astype(np.float32)])
    assert_bit_identical(model, inputs, "QUANTIZE")


@pytest.mark.parametrize("seed", range(30))
def test_dequantize(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (1, int(rng.integers(1, 300)))
    m = Model()
    x = m.input(shape, INT8, scale(rng, 1e-4, 10.0), int(rng.integers(-128, 128)))
    model = m.build(OP.DEQUANTIZE, [x], m.tensor(shape, FLOAT32))
    assert_bit_identical(model, random_inputs(model, rng), "DEQUANTIZE")


# ---- whole models ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> Path:
    if not MODELS.is_dir():
        pytest.skip(f"MLPerf Tiny reference models not found at {MODELS} (shared data folder)")
    return MODELS


def model_inputs(model: bytes, seed: int, count: int, samples: list[np.ndarray]):
    shape = KernelInterpreter(model).inputs[0].shape
    rng = np.random.default_rng(seed)
    randoms = [rng.integers(-128, 128, shape, dtype=np.int8) for _ in range(count)]
    return [[x.reshape(shape)] for x in (*samples, *randoms)]


def suite_samples(suite: str, model: bytes, files: list[Path]) -> list[np.ndarray]:
    """Sample files as the reference firmware's th_load_tensor turns them into inputs."""
    details = KernelInterpreter(model).inputs[0]
    s = get_suite(suite)
    return [
        s.to_tensor(window, details.scale, details.zero_point)
        for path in files for window in s.windows_of(path.read_bytes())
    ]


@pytest.mark.parametrize(
    ("file", "suite", "sample"),
    [
        ("kws_ref_model.tflite", "kws01", "kws01_sample0.bin"),
        ("vww_96_int8.tflite", "vww01", None),
        ("pretrainedResnet_quant.tflite", "ic01", "ic01_sample0.bin"),
        ("ad01_int8.tflite", "ad01", "ad01_normal_id_01_00000000_hist_librosa.bin"),
    ],
)
def test_reference_models(models: Path, file: str, suite: str, sample: str | None) -> None:
    model = (models / file).read_bytes()
    files = [] if sample is None else [models / "samples" / sample]
    samples = suite_samples(suite, model, files)
    assert_bit_identical(model, model_inputs(model, 7, 4, samples), file)


def test_synthetic_kws_model() -> None:
    model = synthetic_kws_model()
    sample = MODELS / "samples" / "kws01_sample0.bin"
    samples = suite_samples("kws01", model, [sample] if sample.exists() else [])
    assert_bit_identical(model, model_inputs(model, 11, 6, samples), "synthetic KWS")


# ---- building and errors ------------------------------------------------------------------


def test_sources_stay_freestanding_c99() -> None:
    """Only the headers a bare-metal Cortex-M build has; strict flags, freestanding."""
    allowed = {"<stdint.h>", "<stddef.h>", '"tp_nn.h"', '"tp_nn_fast.h"'}
    for path in firmware_nn.SOURCE_DIR.glob("*.[ch]"):
        includes = {line.split()[1] for line in path.read_text().splitlines()
                    if line.startswith("#include")}
        assert includes <= allowed, f"{path.name} includes {includes - allowed}"
    sources = [str(p) for p in firmware_nn.SOURCE_DIR.glob("*.c")]
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2",
                    "-ffreestanding", "-fsyntax-only", *sources], check=True)


def test_build_is_cached_and_follows_the_sources(tmp_path: Path, monkeypatch) -> None:
    first = firmware_nn.build_kernels(tmp_path)
    assert firmware_nn.build_kernels(tmp_path) == first
    edited = tmp_path / "src"
    edited.mkdir()
    for path in firmware_nn.SOURCE_DIR.glob("*.[ch]"):
        (edited / path.name).write_text(path.read_text() + "\n/* edited */\n")
    monkeypatch.setattr(firmware_nn, "SOURCE_DIR", edited)
    second = firmware_nn.build_kernels(tmp_path)
    assert second != first and second.exists()


def test_missing_gcc_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(firmware_nn.shutil, "which", lambda name: None)
    with pytest.raises(KernelBuildError, match="gcc not found"):
        firmware_nn.build_kernels(tmp_path)


def test_unsupported_op_is_named() -> None:
    m = Model()
    x = m.input((1, 4, 4, 1), INT8, 0.1, 0)
    options = S.Pool2DOptionsT()
    options.strideH = options.strideW = options.filterHeight = options.filterWidth = 2
    model = m.build(OP.MAX_POOL_2D, [x], m.tensor((1, 2, 2, 1), INT8, 0.1, 0),
                    S.BuiltinOptions.Pool2DOptions, options)
    with pytest.raises(KernelModelError, match="MAX_POOL_2D"):
        KernelInterpreter(model)
