"""read_model_info against the MLPerf Tiny reference models, and its errors on bad files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import flatbuffers
import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

from tinypower.suites.model_info import ModelError, model_info, read_model_info

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "mlperf-tiny"

KWS_OPS = (
    ("CONV_2D",)
    + ("DEPTHWISE_CONV_2D", "CONV_2D") * 4
    + ("AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX")
)


@pytest.fixture
def models() -> Path:
    if not MODELS.is_dir():
        pytest.skip(f"MLPerf Tiny reference models not found at {MODELS} (shared data folder)")
    return MODELS


def test_kws_reference_ops_params_and_io(models: Path) -> None:
    info = model_info(models / "kws_ref_model.tflite")
    assert info.ops == KWS_OPS
    assert info.params == pytest.approx(22.6e3, rel=0.01)
    assert info.input_shape == (1, 49, 10, 1)
    assert info.input_dtype == "int8"
    assert info.input_scale == pytest.approx(0.5847, rel=1e-3)
    assert info.input_zero_point == 83
    assert info.output_shape == (1, 12)


@pytest.mark.parametrize(
    ("name", "macs"),
    [
        ("kws_ref_model.tflite", 2.66e6),
        ("vww_96_int8.tflite", 7.49e6),
        ("pretrainedResnet_quant.tflite", 12.50e6),
        ("ad01_int8.tflite", 0.264e6),
    ],
)
def test_reference_macs(models: Path, name: str, macs: float) -> None:
    assert model_info(models / name).macs == pytest.approx(macs, rel=0.01)


def test_size_and_sha256_identify_the_file(models: Path) -> None:
    data = (models / "ad01_int8.tflite").read_bytes()
    info = read_model_info(data)
    assert info.size_bytes == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.input_shape == info.output_shape == (1, 640)


@pytest.mark.parametrize("data", [b"", b"hello world, not a model", b"\0" * 64])
def test_non_tflite_bytes_raise_model_error(data: bytes) -> None:
    with pytest.raises(ModelError, match="missing TFL3 identifier.*pass a .tflite model file"):
        read_model_info(data)


def test_truncated_model_raises_model_error(models: Path) -> None:
    data = (models / "kws_ref_model.tflite").read_bytes()
    with pytest.raises(ModelError, match="corrupt or truncated"):
        read_model_info(data[: len(data) // 2])


def test_model_without_subgraphs_raises_model_error() -> None:
    builder = flatbuffers.Builder(64)
    model = S.ModelT()
    model.version = 3
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ModelError, match="no subgraphs"):
        read_model_info(bytes(builder.Output()))


def test_model_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.tflite"
    path.write_text("just some text")
    with pytest.raises(ModelError, match=r"notes\.tflite: not a TFLite flatbuffer") as caught:
        model_info(path)
    assert isinstance(caught.value, ValueError)
