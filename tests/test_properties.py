"""Property-based tests (hypothesis) for what reads or writes text and bytes from outside: the
LPM01A's sample formats and binary stream decoder, the DUT protocol's reply parsers, and the
board and SUT file loaders. Each property says what must hold for *any* input: a value
round-trips, a stream decodes the same however it is split, and a malformed input is the
loader's own error, never another exception (which would reach a user as a traceback)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energy_monitor.lpm01a_format import (
    F_TIMESTAMP,
    RANGE_MAX_A,
    SAMPLE_LINES_RE,
    BinaryDecoder,
    Frame,
    decode_words,
    encode_currents,
    format_sample,
    parse_sample,
    parse_sample_lines,
    timestamp_frame,
)
from energy_monitor.series_meters import SERIES_METERS
from tinypower.boards import BoardError, load_board
from tinypower.dut.protocol import DutProtocolError, _floats, _laps
from tinypower.scale.sut import SutError, sut_from_dict

# No deadlines: a slow example on a busy machine is not a failed property.
NO_DEADLINE = settings(deadline=None)
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- LPM01A ASCII samples ---------------------------------------------------------------------


@NO_DEADLINE
@given(st.floats(min_value=1e-90, max_value=1e90))
def test_a_sample_round_trips_to_four_significant_digits(value: float) -> None:
    text = format_sample(value)
    assert len(text) == 7
    assert parse_sample(text) == pytest.approx(value, rel=5.001e-4)


@NO_DEADLINE
@given(st.sampled_from([math.nan, math.inf, -math.inf, 1e300, 1e-300]))
def test_a_value_the_format_cannot_hold_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="LPM01A sample"):
        format_sample(value)


@NO_DEADLINE
@given(st.text(max_size=12))
def test_parsing_any_text_gives_a_finite_sample_or_a_value_error(text: str) -> None:
    try:
        value = parse_sample(text)
    except ValueError:
        return
    assert math.isfinite(value) and value >= 0


sample_texts = st.builds(lambda m, sign, e: f"{m:04d}{sign}{e:02d}",
                         st.integers(0, 9999), st.sampled_from("+-"), st.integers(0, 99))


@NO_DEADLINE
@given(st.lists(sample_texts, min_size=1, max_size=60))
def test_a_run_of_sample_lines_parses_as_each_line_does(texts: list[str]) -> None:
    """The driver's block parser gives the very floats the per-line parser gives."""
    lines = "".join(f"{t}\r\n" for t in texts).encode("ascii")
    assert SAMPLE_LINES_RE.fullmatch(lines)
    assert parse_sample_lines(lines).tolist() == [parse_sample(t) for t in texts]


@NO_DEADLINE
@given(st.binary(max_size=60), st.lists(sample_texts, min_size=1, max_size=5))
def test_a_sample_run_starts_only_at_a_line_start(prefix: bytes, texts: list[str]) -> None:
    """Samples after other text on the same line are not taken for a run of sample lines."""
    lines = "".join(f"{t}\r\n" for t in texts).encode("ascii")
    for run in SAMPLE_LINES_RE.finditer(prefix + lines):
        assert run.start() == 0 or (prefix + lines)[run.start() - 1] == ord("\n")


# --- LPM01A bin_hexa stream -------------------------------------------------------------------

currents = st.lists(st.floats(min_value=0, max_value=RANGE_MAX_A), min_size=1, max_size=40)


@st.composite
def binary_streams(draw) -> tuple[bytes, np.ndarray, list[int]]:
    """Sample blocks with timestamp frames between them: the bytes, the samples, the stamps."""
    blocks = draw(st.lists(currents, min_size=1, max_size=5))
    stamps = draw(st.lists(st.integers(0, 2**31 - 1), min_size=len(blocks),
                           max_size=len(blocks)))
    data, words = b"", []
    for block, ms in zip(blocks, stamps, strict=True):
        encoded = encode_currents(np.array(block))
        data += encoded.astype(">u2").tobytes() + timestamp_frame(ms)
        words.append(encoded)
    return data, decode_words(np.concatenate(words)), stamps


def decode(chunks: list[bytes]) -> tuple[np.ndarray, list[int]]:
    decoder = BinaryDecoder()
    samples, stamps = [], []
    for chunk in chunks:
        for item in decoder.feed(chunk):
            if isinstance(item, Frame):
                assert item.kind == F_TIMESTAMP
                stamps.append(item.timestamp_ms)
            else:
                assert isinstance(item, np.ndarray)
                samples.append(item)
    return (np.concatenate(samples) if samples else np.empty(0)), stamps


@NO_DEADLINE
@given(binary_streams(), st.lists(st.integers(0, 400), max_size=8))
def test_a_binary_stream_decodes_the_same_however_the_reads_split_it(stream, cuts) -> None:
    data, samples, stamps = stream
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    got_samples, got_stamps = decode(chunks)
    assert np.array_equal(got_samples, samples)
    assert got_stamps == stamps


@NO_DEADLINE
@given(st.binary(max_size=300), st.integers(1, 64))
def test_garbage_never_breaks_the_binary_decoder(data: bytes, read_size: int) -> None:
    decoder = BinaryDecoder()
    for i in range(0, len(data), read_size):
        for item in decoder.feed(data[i:i + read_size]):
            if isinstance(item, np.ndarray):
                assert np.all(np.isfinite(item)) and np.all(item >= 0)


# --- DUT protocol replies ---------------------------------------------------------------------


@NO_DEADLINE
@given(st.text(max_size=60))
def test_results_payload_gives_finite_numbers_or_a_protocol_error(payload: str) -> None:
    try:
        values = _floats(payload, "results")
    except DutProtocolError as exc:
        assert "results" in str(exc)
        return
    assert values and all(math.isfinite(v) for v in values)


@NO_DEADLINE
@given(st.lists(st.one_of(st.integers(0, 2**40).map(lambda n: f"m-lap-us-{n}"), st.text()),
                max_size=8))
def test_laps_are_read_from_lap_lines_only(lines: list[str]) -> None:
    expected = [int(line[9:]) for line in lines
                if line.startswith("m-lap-us-") and line[9:].isascii()
                and line[9:].isdigit()]
    assert _laps(lines) == expected


# --- board and SUT files ----------------------------------------------------------------------

scalars = st.one_of(
    st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3))
BOARD_KEYS = ["name", "description", "kind", "core", "clock_hz", "extra"]
TABLES = {
    "memory": ["flash_bytes", "ram_bytes"],
    "cycle_model": ["cycles_per_mac", "overhead_cycles"],
    "energy_model": ["idle_current_a", "io_current_a", "active_current_a", "timestamp_hold_s"],
    "uart": ["performance", "energy"],
    "monitor": ["kind", "voltage_v", "sample_rate_hz", "io_manager"],
    "usb": ["vid", "pid"],
}


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


@st.composite
def board_files(draw) -> str:
    lines = [f"{k} = {toml_value(draw(values))}"
             for k in draw(st.lists(st.sampled_from(BOARD_KEYS), unique=True))]
    for table in draw(st.lists(st.sampled_from(sorted(TABLES)), unique=True)):
        keys = draw(st.lists(st.sampled_from(TABLES[table]), unique=True))
        lines += [f"[{table}]"] + [f"{k} = {toml_value(draw(values))}" for k in keys]
    return "\n".join(lines) + "\n"


@SETTINGS
@given(board_files())
def test_any_board_file_loads_or_is_a_board_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "board.toml"
    path.write_text(text)
    try:
        board = load_board(str(path))
    except BoardError as exc:
        assert str(exc).startswith(str(path))
        return
    assert board.clock_hz > 0 and math.isfinite(board.monitor_voltage_v)
    assert board.monitor_voltage_v > 0 and board.monitor_sample_rate_hz > 0


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_as_a_board_file_are_a_board_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "board.toml"
    path.write_bytes(data)
    with pytest.raises(BoardError):
        load_board(str(path))


SUT_SECTIONS = {
    "workload": ["command", "log_dir", "model", "scenario", "samples"],
    "ranging": ["mode", "max_volts", "max_amps", "current_margin", "settle_s"],
    "limits": ["max_skew_s", "max_skew_ms", "max_uncertainty", "max_gap_s"],
    "director": ["listen", "connect", "token_env", "output"],
}
meters = st.lists(st.dictionaries(
    st.sampled_from(["kind", "address", "name", "timeout_s", "verify_tls", "vendor"]),
    st.one_of(values, st.sampled_from(["ptd", "redfish", "snmp_pdu", "nvml"]))), max_size=2)


@st.composite
def sut_dicts(draw) -> dict:
    data: dict = {}
    for section in draw(st.lists(st.sampled_from(sorted(SUT_SECTIONS)), unique=True)):
        data[section] = draw(st.one_of(values, st.dictionaries(
            st.sampled_from(SUT_SECTIONS[section]), values, max_size=4)))
    if draw(st.booleans()):
        data["meters"] = draw(st.one_of(values, meters))
    if draw(st.booleans()):
        data["name"] = draw(values)
    return data


@SETTINGS
@given(sut_dicts())
def test_any_sut_file_loads_or_is_a_sut_error(tmp_path: Path, data: dict) -> None:
    try:
        sut = sut_from_dict(data, tmp_path / "sut.toml")
    except SutError as exc:
        assert str(exc)
        return
    assert sut.meters and all(m.kind in SERIES_METERS for m in sut.meters)
    assert math.isfinite(sut.ranging.settle_s) and sut.ranging.settle_s >= 0
    assert all(math.isfinite(v) and v >= 0 for v in (
        sut.limits.max_skew_s, sut.limits.max_uncertainty, sut.limits.max_gap_s))
