"""The synthetic KWS model: deterministic, runs in TFLM, and costs what the reference costs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tflite_micro
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

from tinypower.suites.model_info import read_model_info
from tinypower.suites.synthetic import SYNTHETIC_LABEL, synthetic_kws_model

REFERENCE_KWS_MACS = 2.66e6
REFERENCE_KWS_OPS = (
    ("CONV_2D",)
    + ("DEPTHWISE_CONV_2D", "CONV_2D") * 4
    + ("AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX")
)


@pytest.fixture(scope="module")
def model() -> bytes:
    return synthetic_kws_model()


def test_same_bytes_on_every_call(model: bytes) -> None:
    again = synthetic_kws_model()
    assert hashlib.sha256(again).hexdigest() == hashlib.sha256(model).hexdigest()


def test_matches_reference_ops_and_cost(model: bytes) -> None:
    info = read_model_info(model)
    assert info.ops == REFERENCE_KWS_OPS
    assert info.macs == pytest.approx(REFERENCE_KWS_MACS, rel=0.01)
    assert info.input_shape == (1, 49, 10, 1)
    assert info.input_dtype == "int8"
    assert info.output_shape == (1, 12)


def test_structure_follows_tflite_conventions(model: bytes) -> None:
    parsed = S.ModelT.InitFromPackedBuf(model, 0)
    assert parsed.description.decode() == SYNTHETIC_LABEL
    assert parsed.buffers[0].data is None
    tensors = parsed.subgraphs[0].tensors
    output = tensors[parsed.subgraphs[0].outputs[0]].quantization
    assert (output.scale[0], output.zeroPoint[0]) == (1 / 256, -128)
    for op in parsed.subgraphs[0].operators:
        code = parsed.operatorCodes[op.opcodeIndex].builtinCode
        if code in (S.BuiltinOperator.CONV_2D, S.BuiltinOperator.DEPTHWISE_CONV_2D):
            weights, bias = tensors[op.inputs[1]], tensors[op.inputs[2]]
            axis = 0 if code == S.BuiltinOperator.CONV_2D else 3
            assert weights.type == S.TensorType.INT8 and bias.type == S.TensorType.INT32
            assert weights.quantization.quantizedDimension == axis
            assert len(weights.quantization.scale) == weights.shape[axis] == 64
            assert not np.any(weights.quantization.zeroPoint)
            input_scale = tensors[op.inputs[0]].quantization.scale[0]
            np.testing.assert_allclose(
                bias.quantization.scale, input_scale * weights.quantization.scale, rtol=1e-5
            )


def test_runs_in_tflm_with_varying_int8_output(model: bytes) -> None:
    interpreter = tflite_micro.runtime.Interpreter.from_bytes(model)
    rng = np.random.default_rng(0)
    outputs = []
    for _ in range(4):
        interpreter.set_input(rng.integers(-128, 128, (1, 49, 10, 1), dtype=np.int8), 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0).copy())
    assert all(out.dtype == np.int8 and out.shape == (1, 12) for out in outputs)
    assert len({out.tobytes() for out in outputs}) > 1
    assert all(len(np.unique(out)) > 1 for out in outputs)
