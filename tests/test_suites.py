"""The MLPerf Tiny suites and their inputs (tinypower.suites.benchmarks and .datasets): wire
bytes to model tensors, AD's sliding windows, the DUT's result payload and outputs, seeded
synthetic inputs, and dataset folders with and without y_labels.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinypower.suites.benchmarks import (
    SuiteError,
    dut_outputs,
    format_results,
    get_suite,
)
from tinypower.suites.datasets import DatasetError, load_dataset, synthetic_inputs

KWS = get_suite("kws01")
VWW = get_suite("vww01")
IC = get_suite("ic01")
AD = get_suite("ad01")


def kws_input(seed: int) -> bytes:
    return bytes((seed + i) % 256 for i in range(490))


def test_int8_wire_bytes_are_the_tensor() -> None:
    data = bytes(range(256)) + bytes(234)
    tensor = KWS.to_tensor(data, scale=0.5, zero_point=83)  # int8 ignores the quantisation
    assert tensor.dtype == np.int8
    np.testing.assert_array_equal(tensor, np.frombuffer(data, dtype=np.int8))
    assert tensor[127] == 127 and tensor[128] == -128 and tensor[255] == -1


@pytest.mark.parametrize("suite", [VWW, IC], ids=lambda s: s.name)
def test_uint8_wire_bytes_are_shifted_by_128(suite) -> None:
    data = bytes([0, 255, 128, 1]) + bytes(suite.input_bytes - 4)
    tensor = suite.to_tensor(data, scale=1.0, zero_point=0)
    assert tensor.dtype == np.int8
    assert tensor.shape == (suite.input_bytes,)
    assert tensor[:4].tolist() == [-128, 127, 0, -127]
    assert set(tensor[4:].tolist()) == {-128}


def test_float32_wire_values_are_quantised_and_clipped() -> None:
    values = np.zeros(640, dtype="<f4")
    values[:6] = [0.0, 1.0, -1.0, 2.6, 100.0, -100.0]
    tensor = AD.to_tensor(values.tobytes(), scale=0.5, zero_point=3)
    assert tensor.dtype == np.int8
    # round(v / 0.5) + 3, clipped to int8
    assert tensor[:6].tolist() == [3, 5, 1, 8, 127, -128]
    assert set(tensor[6:].tolist()) == {3}


def test_float32_quantisation_is_c_round_of_a_float32_quotient() -> None:
    values = np.zeros(640, dtype="<f4")
    # ties go away from zero (C round), not to even (numpy.round)
    values[:6] = [0.25, 0.75, -0.25, -0.75, 1.25, np.nan]
    # 0.058949996 / 0.0393 is 1.5 in float32 arithmetic (rounds to 2) but 1.49999995 in float64
    values[6] = np.float32(0.058949996)
    # just below a tie: float32(0.5) - one ulp stays below 0.5 after the division by 1
    values[7] = np.nextafter(np.float32(0.5), np.float32(0))
    half = AD.to_tensor(values.tobytes(), scale=0.5, zero_point=0)
    assert half[:6].tolist() == [1, 2, -1, -2, 3, 0]  # NaN -> the zero point
    scale = float(np.float32(0.0393))
    assert values[6] / np.float32(scale) == np.float32(1.5) and float(values[6]) / scale < 1.5
    assert AD.to_tensor(values.tobytes(), scale=scale, zero_point=0)[6] == 2
    one = AD.to_tensor(values.tobytes(), scale=1.0, zero_point=0)
    assert one[7] == 0


def test_wrong_input_size_names_the_suite() -> None:
    with pytest.raises(SuiteError, match=r"kws01 inputs are 490 bytes \(int8\), got 489"):
        KWS.to_tensor(bytes(489), 1.0, 0)


def test_ad_file_slides_2560_byte_windows_with_512_byte_stride() -> None:
    data = (np.arange(102_400) % 251).astype(np.uint8).tobytes()
    windows = AD.windows_of(data)
    assert len(windows) == 196  # (102400 - 2560) // 512 + 1
    assert {len(w) for w in windows} == {2560}
    assert windows[0] == data[:2560]
    assert windows[1] == data[512:3072]
    assert windows[-1] == data[195 * 512 : 195 * 512 + 2560]


def test_ad_file_shorter_than_a_window_is_refused() -> None:
    with pytest.raises(SuiteError, match="ad01 file of 2556 bytes is shorter than one window"):
        AD.windows_of(bytes(2556))


def test_classifier_file_is_its_own_single_window() -> None:
    data = kws_input(5)
    assert KWS.windows_of(data) == [data]
    with pytest.raises(SuiteError):
        KWS.windows_of(data + b"\0")


def test_unknown_suite_lists_the_suites() -> None:
    with pytest.raises(SuiteError, match="unknown suite 'kws02'; choose one of kws01, vww01"):
        get_suite("kws02")


def test_format_results_three_decimals_comma_separated() -> None:
    assert format_results(np.array([[0.12345, 1.0], [-2.5, 10.0006]])) == (
        "0.123,1.000,-2.500,10.001"
    )
    assert format_results(np.array([7.0])) == "7.000"


def test_classifier_outputs_are_dequantised() -> None:
    output = np.array([[-128, 0, 127]], dtype=np.int8)
    out = dut_outputs(KWS, bytes(490), output, out_q=(0.25, -128))
    np.testing.assert_allclose(out, [0.0, 32.0, 63.75])


def test_ad_output_is_the_float32_mse_against_the_original_input() -> None:
    wire = np.array([0.0, 5.2, 10.0, 15.0], dtype="<f4").tobytes()
    output = np.array([0, 4, 8, 12], dtype=np.int8)
    # output (y - 0) * 2.0 = [0, 8, 16, 24]; squared errors against the floats as sent
    # [0, 2.8^2, 36, 81] -> mean (0 + 7.84 + 36 + 81) / 4, in float32
    out = dut_outputs(AD, wire, output, out_q=(2.0, 0))
    assert out.shape == (1,)
    d = np.float32(8) - np.float32(5.2)
    expected = (np.float32(0) + d * d + np.float32(36) + np.float32(81)) / np.float32(4)
    assert out[0] == float(expected) and out[0] != pytest.approx(31.5)


def test_ad_sum_runs_in_order_in_float32() -> None:
    # one large error then many small ones: a float32 sum in order loses the small ones
    # that a float64 (or pairwise) sum keeps
    x = np.zeros(640, dtype="<f4")
    x[0] = 4096.0
    x[1:] = 0.001
    out = dut_outputs(AD, x.tobytes(), np.zeros(640, np.int8), out_q=(1.0, 0))
    sq = x.astype(np.float32) ** 2
    total = np.float32(0)
    for v in sq:
        total = np.float32(total + v)
    assert out[0] == float(total / np.float32(640))
    assert out[0] != np.mean(x.astype(np.float64) ** 2)


@pytest.mark.parametrize("suite", [KWS, VWW, IC, AD], ids=lambda s: s.name)
def test_synthetic_inputs_are_seeded_and_sized_per_suite(suite) -> None:
    first, second = synthetic_inputs(suite), synthetic_inputs(suite)
    assert first.source == "synthetic" and not first.labelled
    assert first.listed == 0
    assert [s.name for s in first.samples] == [f"synthetic_{i:03d}.bin" for i in range(5)]
    assert [s.data for s in first.samples] == [s.data for s in second.samples]
    assert {len(s.data) for s in first.samples} == {suite.input_bytes}
    assert len({s.data for s in first.samples}) == 5
    assert all(s.label is None for s in first.samples)


def test_synthetic_ad_inputs_are_finite_float32() -> None:
    values = np.frombuffer(synthetic_inputs(AD, count=1).samples[0].data, dtype="<f4")
    assert values.shape == (640,)
    assert np.isfinite(values).all()


def make_dataset(folder: Path, rows: list[str], present: list[str]) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "y_labels.csv").write_text("\n".join(rows) + "\n")
    for i, name in enumerate(present):
        (folder / name).write_bytes(kws_input(i))
    return folder


def test_dataset_keeps_present_files_in_list_order(tmp_path: Path) -> None:
    rows = ["c.bin,12,3", "missing.bin,12,4", "a.bin,12,7", "", "b.bin,12,0"]
    folder = make_dataset(tmp_path / "ds", rows, ["a.bin", "b.bin", "c.bin"])
    ds = load_dataset(folder, KWS)
    assert ds.source == "dataset" and ds.labelled
    assert ds.path == folder
    assert ds.listed == 4
    assert [(s.name, s.label) for s in ds.samples] == [("c.bin", 3), ("a.bin", 7), ("b.bin", 0)]
    assert ds.samples[1].data == kws_input(0)


def test_dataset_limit_stops_after_that_many_present_files(tmp_path: Path) -> None:
    rows = ["missing.bin,12,1", "a.bin,12,2", "b.bin,12,3", "c.bin,12,4"]
    folder = make_dataset(tmp_path / "ds", rows, ["a.bin", "b.bin", "c.bin"])
    ds = load_dataset(folder, KWS, limit=2)
    assert [s.name for s in ds.samples] == ["a.bin", "b.bin"]
    assert ds.listed == 4


@pytest.mark.parametrize("bad_row", ["b.bin,12", "b.bin,12,yes"])
def test_malformed_row_names_file_and_line(tmp_path: Path, bad_row: str) -> None:
    folder = make_dataset(tmp_path / "ds", ["a.bin,12,1", bad_row], ["a.bin", "b.bin"])
    with pytest.raises(DatasetError, match="expected 'file,classes,label'") as exc:
        load_dataset(folder, KWS)
    assert f"{folder / 'y_labels.csv'}:2:" in str(exc.value)


def test_no_listed_file_present_is_an_error(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "ds", ["a.bin,12,1", "b.bin,12,2"], ["other.bin"])
    with pytest.raises(DatasetError, match="none of the 2 files listed"):
        load_dataset(folder, KWS)


def test_folder_of_bin_files_without_labels_is_unlabelled(tmp_path: Path) -> None:
    (tmp_path / "b.bin").write_bytes(kws_input(1))
    (tmp_path / "a.bin").write_bytes(kws_input(2))
    (tmp_path / "notes.txt").write_text("not an input")
    ds = load_dataset(tmp_path, KWS)
    assert ds.source == "files" and not ds.labelled
    assert [(s.name, s.label) for s in ds.samples] == [("a.bin", None), ("b.bin", None)]
    assert ds.samples[0].data == kws_input(2)
    assert ds.listed == 2


def test_folder_without_labels_or_bin_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="neither y_labels.csv nor .bin"):
        load_dataset(tmp_path, KWS)


def test_wrong_size_labelled_file_names_the_file(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "ds", ["a.bin,12,1"], [])
    (folder / "a.bin").write_bytes(bytes(491))
    with pytest.raises(DatasetError, match="kws01 inputs are 490 bytes") as exc:
        load_dataset(folder, KWS)
    assert str(exc.value).startswith(f"{folder / 'a.bin'}:")


def test_wrong_size_unlabelled_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "short.bin").write_bytes(bytes(100))
    with pytest.raises(DatasetError, match="100 bytes is shorter than one window") as exc:
        load_dataset(tmp_path, AD)
    assert str(exc.value).startswith(f"{tmp_path / 'short.bin'}:")


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nowhere", KWS)
