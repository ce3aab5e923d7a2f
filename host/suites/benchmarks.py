"""The four MLPerf Tiny benchmarks: what a DUT is sent, how it reads it, how it is scored.

Facts from ``shared/reference/mlperf-tiny-protocol.md`` §7, §11, §12. The conversion from the
bytes on the wire to the model's input tensor is what the reference firmware's
``th_load_tensor`` does, so the software DUT and the host reference interpreter share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SuiteError(ValueError):
    """Unknown suite or an input that does not fit it."""


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    input_bytes: int  # bytes of one window sent with `db`
    wire_dtype: str  # how those bytes are laid out: int8, uint8 or float32 (little endian)
    classes: int
    metric: str  # "top1" or "auc"
    reference_model: str  # file name of the MLPerf Tiny reference model
    default_infer_warmups: int
    stride_bytes: int | None = None  # AD: sliding window over a longer file

    def check_input(self, data: bytes) -> None:
        if len(data) != self.input_bytes:
            raise SuiteError(
                f"{self.name} inputs are {self.input_bytes} bytes ({self.wire_dtype}), "
                f"got {len(data)}: check the dataset matches the suite"
            )

    def to_tensor(self, data: bytes, scale: float, zero_point: int) -> np.ndarray:
        """Wire bytes -> int8 model input, as ``th_load_tensor`` does on the reference DUT.

        float32 inputs (ad01) are quantised as the reference's ``QuantizeFloatToInt8``:
        ``round(value / scale) + zero_point`` with the division in float32 and C ``round``
        (half away from zero), clamped to int8; a NaN input becomes the zero point."""
        self.check_input(data)
        if self.wire_dtype == "int8":
            return np.frombuffer(data, dtype=np.int8).copy()
        if self.wire_dtype == "uint8":
            return (np.frombuffer(data, dtype=np.uint8).astype(np.int16) - 128).astype(np.int8)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            q = np.frombuffer(data, dtype="<f4") / np.float32(scale)  # float32, as in C
            q = np.nan_to_num(q.astype(np.float64), nan=0.0)  # exact: a float32 fits a double
            rounded = np.sign(q) * np.floor(np.abs(q) + 0.5)  # C round(): ties away from zero
        return np.clip(rounded + zero_point, -128, 127).astype(np.int8)

    def windows_of(self, data: bytes) -> list[bytes]:
        """The inputs one dataset file yields: itself, or AD's sliding windows."""
        if self.stride_bytes is None:
            self.check_input(data)
            return [data]
        if len(data) < self.input_bytes:
            raise SuiteError(f"{self.name} file of {len(data)} bytes is shorter than one window")
        count = (len(data) - self.input_bytes) // self.stride_bytes + 1
        return [
            data[i * self.stride_bytes : i * self.stride_bytes + self.input_bytes]
            for i in range(count)
        ]


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("kws01", "Keyword spotting (DS-CNN)", 490, "int8", 12, "top1",
              "kws_ref_model.tflite", 10),
        Suite("vww01", "Visual wake words (MobileNetV1 0.25)", 27648, "uint8", 2, "top1",
              "vww_96_int8.tflite", 5),
        Suite("ic01", "Image classification (ResNet-8)", 3072, "uint8", 10, "top1",
              "pretrainedResnet_quant.tflite", 5),
        Suite("ad01", "Anomaly detection (FC autoencoder)", 2560, "float32", 2, "auc",
              "ad01_int8.tflite", 10, stride_bytes=512),
    )
}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise SuiteError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}") from None


def format_results(values: np.ndarray) -> str:
    """The DUT's ``m-results-[...]`` payload: each value with 3 decimals, comma separated."""
    return ",".join(f"{float(v):.3f}" for v in np.ravel(values))


def dut_outputs(
    suite: Suite, wire: bytes, output: np.ndarray, out_q: tuple[float, int]
) -> np.ndarray:
    """What the reference firmware prints after an inference (``th_results``).

    Classifiers print the dequantised output vector. AD prints one value, computed as the
    reference's ``calculate_result`` computes it (``reference_submissions/anomaly_detection/
    submitter_implemented.cpp``): the mean squared error between each dequantised output and
    the ORIGINAL float input (the wire's float32 values, not the quantised model input), all in
    float32, summed in order, divided by the element count.
    """
    if suite.metric == "auc":
        x = np.frombuffer(wire, dtype="<f4")
        scale = np.float32(out_q[0])
        converted = (output.ravel().astype(np.int32) - out_q[1]).astype(np.float32) * scale
        with np.errstate(over="ignore", invalid="ignore"):
            diff = converted - x
            total = np.add.accumulate(diff * diff, dtype=np.float32)[-1]  # in order, as C
            return np.array([total / np.float32(len(x))], dtype=np.float64)
    return (output.astype(np.float64).ravel() - out_q[1]) * out_q[0]
