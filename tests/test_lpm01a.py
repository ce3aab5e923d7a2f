"""The real LPM01A driver against the simulator, over a real pty: commands, both stream
formats (ASCII up to 5 kHz, binary up to 100 kHz), faults, and a full run through the runner."""

from __future__ import annotations

import dataclasses
import os
import time
import tty
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_monitor.lpm01a import SAMPLES_LINE_RE, Lpm01a
from energy_monitor.lpm01a_format import (
    F_END,
    F_ERROR,
    F_INFO,
    F_POWER,
    F_TIMESTAMP,
    F_VOLTAGE,
    SAMPLE_RE,
    BinaryDecoder,
    Frame,
    Garbled,
    decode_words,
    encode_currents,
    expected_samples,
    format_frequency,
    format_sample,
    frame,
    parse_number,
    parse_sample,
    text_frame,
    timestamp_frame,
)
from energy_monitor.meter import MeterError
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.sim.lpm01a_sim import Lpm01aSimulator
from energy_monitor.trace import SampleDropError, integrate, window_from_events

VOLTAGE_V = 1.8
ACTIVE_A = 0.0095
IDLE_A = 0.0012


class Bench:
    """A timeline, its simulator and the real driver, wired on a pty."""

    def __init__(
        self, faults: SimFaults | None = None, stall_timeout_s: float = 3.0,
        output: str = "energy", fmt: str = "auto",
    ) -> None:
        self.clock = VirtualClock()
        self.timeline = LoadTimeline(self.clock, IDLE_A)
        self.sim = Lpm01aSimulator(self.timeline, faults=faults)
        self.transcript: list[tuple[str, str]] = []
        self.meter = Lpm01a(self.sim.start(), measured_as="simulated", output=output, format=fmt,
                            stall_timeout_s=stall_timeout_s,
                            on_command=lambda d, t: self.transcript.append((d, t)))

    def burst(self, seconds: float, current_a: float = ACTIVE_A) -> tuple[float, float]:
        """A DUT window: a falling edge, ``seconds`` of inference, a falling edge."""
        with self.timeline.lock:
            t = self.clock.now()
            self.timeline.set_current(t, current_a)
            self.timeline.add_edge(t + 0.0005, "fall")
            self.timeline.add_edge(t + 0.0006, "rise")
            self.timeline.add_edge(t + 0.0005 + seconds, "fall")
            self.timeline.set_current(t + 0.001 + seconds, IDLE_A)
            self.clock.advance(seconds + 0.002)
        return t + 0.0005, t + 0.0005 + seconds

    def close(self) -> None:
        self.meter.close()
        self.sim.close()


@pytest.fixture
def bench() -> Iterator[Bench]:
    b = Bench()
    yield b
    b.close()


def test_number_format_round_trips() -> None:
    assert parse_sample("6409-07") == pytest.approx(640.9e-6)
    assert parse_sample("3333-09") == pytest.approx(3.333e-6)  # 3.333 uJ
    assert format_sample(3.333e-6) == "3333-09"
    assert format_sample(0.0) == "0000+00"
    for v in (1e-12, 9.9995e-6, 0.0171, 12.5):
        assert parse_sample(format_sample(v)) == pytest.approx(v, rel=5e-4)
    assert format_frequency(1000) == "1k" and format_frequency(100_000) == "100k"
    assert format_frequency(500) == "500"
    assert parse_number("3300m") == pytest.approx(3.3) and parse_number("2-3") == 0.002
    with pytest.raises(ValueError):
        parse_sample("12x4-05")


def test_identify_and_configure(bench: Bench) -> None:
    ident = bench.meter.identify()
    assert ident.serial == "tinypowersim-LPM01A-0001" and ident.firmware == "1.0.6"
    assert ident.measured_as == "simulated"
    bench.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=1000)
    assert bench.sim.voltage_v == pytest.approx(VOLTAGE_V)
    assert bench.sim.freq_hz == 1000 and bench.sim.output == "energy"
    assert bench.sim.event_polarity == "fall" and bench.sim.host_control


def test_refusals_carry_the_instruments_detail(bench: Bench) -> None:
    with pytest.raises(MeterError, match="refused 'volt 1800m': host control required"):
        bench.meter._command("volt 1800m")
    bench.meter._command("htc")
    with pytest.raises(MeterError, match="voltage out of range"):
        bench.meter._command("volt 5000m")
    with pytest.raises(MeterError, match="frequency not in"):
        bench.meter._command("freq 3k")
    with pytest.raises(MeterError, match="unknown command"):
        bench.meter._command("frobnicate")
    bench.meter._command("freq 20k")
    with pytest.raises(MeterError, match="limited"):
        bench.meter._command("start")  # 20 kHz ascii with infinite acquisition


def test_stream_gives_exact_energy_and_edges(bench: Bench) -> None:
    bench.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=1000)
    bench.meter.start()
    truth = []
    for k in range(3):
        time.sleep(0.02)
        t0, t1 = bench.burst(10.0)
        truth.append(bench.timeline.charge_between(t0, t1) * VOLTAGE_V)
        bench.meter.wait_for_events(2 * (k + 1), 5)
    trace = bench.meter.stop()
    assert len(trace.events) == 6 and all(e.polarity == "fall" for e in trace.events)
    assert not trace.drops
    # The simulator's quirks (NULs, run-together samples) did not cost a sample.
    assert len(trace) >= 30_000
    for k in range(3):
        w = window_from_events(trace.events[2 * k : 2 * k + 2], trace, 100)
        energy = integrate(trace, w).energy_j
        assert energy == pytest.approx(truth[k], rel=1e-3)
        assert w.duration_s == pytest.approx(10.0, abs=0.002)


@pytest.mark.parametrize("output", ["energy", "current"])
def test_both_outputs_give_the_same_energy(output: str) -> None:
    b = Bench(output=output)
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=1000)
        b.meter.start()
        t0, t1 = b.burst(3.0)
        b.meter.wait_for_events(2, 5)
        trace = b.meter.stop()
    finally:
        b.close()
    assert trace.kind == output
    energy = integrate(trace, window_from_events(trace.events, trace, 1)).energy_j
    assert energy == pytest.approx(b.timeline.charge_between(t0, t1) * VOLTAGE_V, rel=1e-3)
    assert (">", f"output {output}") in b.transcript
    assert ("<", f"PowerShield > ack output {output}") in b.transcript


def test_raw_stream_and_samples_are_written_while_measuring(bench: Bench, tmp_path) -> None:
    bench.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=1000)
    bench.meter.start(tmp_path)
    bench.burst(2.0)
    bench.meter.wait_for_events(2, 5)
    trace = bench.meter.stop()
    samples = np.fromfile(tmp_path / "lpm01a-samples.f64", dtype="<f8")
    assert len(samples) == len(trace) and np.array_equal(samples, trace.energy_j)
    text = (tmp_path / "lpm01a-raw.txt").read_text(errors="replace")
    assert "PowerShield > ack start" in text and "TimeStamp: 001s 000ms" in text
    assert "event 00 ris" in text  # as the MLCommons runner parses it


def measure_with(
    faults: SimFaults, stall_timeout_s: float = 3.0, rate_hz: float = 1000,
    edge_timeout_s: float = 15.0,
):
    """Stream one 5 s window; the edge wait returns as soon as both edges arrive, and is long
    so that 500,000 samples at 100 kS/s get through on a loaded 2-core machine."""
    b = Bench(faults, stall_timeout_s, output="auto")
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=rate_hz)
        b.meter.start()
        time.sleep(0.02)
        b.burst(5.0)
        try:
            b.meter.wait_for_events(2, edge_timeout_s)
            return b.meter.stop(), None
        except MeterError as exc:
            return b.meter.trace(), exc
    finally:
        b.close()


def test_lost_samples_are_detected_and_refused() -> None:
    trace, error = measure_with(SimFaults(drop_at=2500, drop_count=7))
    assert error is None
    assert len(trace.drops) == 1 and trace.drops[0].missing == 7
    w = window_from_events(trace.events[-2:], trace, 10)
    with pytest.raises(SampleDropError, match="7 samples lost"):
        integrate(trace, w)


def test_unknown_line_is_skipped_and_noted_as_the_mlcommons_runner_does() -> None:
    b = Bench(SimFaults(garble_at=1500))
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=1000)
        b.meter.start()
        b.burst(5.0)
        b.meter.wait_for_events(2, 5.0)
        trace = b.meter.stop()
    finally:
        b.close()
    assert not trace.drops and len(trace) >= 5000 and np.isfinite(trace.energy_j).all()
    notes = [t for d, t in b.transcript if "skipped" in t]
    assert len(notes) == 1 and "after sample 1500" in notes[0] and "rbl3d" in notes[0]
    integrate(trace, window_from_events(trace.events[-2:], trace, 10))  # nothing refused


def test_garbled_sample_is_one_known_drop_refusing_only_its_window() -> None:
    b = Bench(SimFaults(garble_sample_at=3000))
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=1000)
        b.meter.start()
        b.burst(2.0)  # samples ~0..2000
        b.burst(2.0)  # samples ~2000..4000: holds sample 3000
        b.meter.wait_for_events(4, 5.0)
        trace = b.meter.stop()
    finally:
        b.close()
    assert [(d.index, d.missing, d.earliest) for d in trace.drops] == [(3001, 1, 3000)]
    assert np.isnan(trace.energy_j[3000]) and np.isfinite(np.delete(trace.energy_j, 3000)).all()
    first = integrate(trace, window_from_events(trace.events[:2], trace, 10))
    assert first.energy_j > 0
    with pytest.raises(SampleDropError, match="1 samples? lost"):
        integrate(trace, window_from_events(trace.events[2:4], trace, 10))
    assert any("garbled sample 3000" in t for _, t in b.transcript)


def test_timestamps_count_from_the_first_one_after_start() -> None:
    """A board whose TimeStamp counter does not restart at `start` loses nothing."""
    b = Bench()
    b.sim.timestamp_base_ms = 281_000
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=1000)
        b.meter.start()
        b.burst(3.5)
        b.meter.wait_for_events(2, 5.0)
        trace = b.meter.stop()
    finally:
        b.close()
    assert not trace.drops and np.isfinite(trace.energy_j).all() and 3500 <= len(trace) < 4000


def test_unplugged_meter_is_a_clear_error_and_keeps_data() -> None:
    trace, error = measure_with(SimFaults(unplug_after=1200))
    assert error is not None and "unplugged" in str(error)
    assert 1000 <= len(trace) <= 1200


def test_stalled_stream_is_a_clear_error() -> None:
    trace, error = measure_with(SimFaults(stall_after=800), stall_timeout_s=0.5)
    assert error is not None and "stopped streaming" in str(error)
    assert len(trace) == 800


def test_nothing_on_the_port_times_out_clearly(tmp_path) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    meter = Lpm01a(os.ttyname(slave), command_timeout_s=0.3)
    try:
        with pytest.raises(MeterError, match="did not answer 'powershield'"):
            meter.identify()
    finally:
        meter.close()
        os.close(master)
        os.close(slave)


def test_bad_port_is_a_clear_error() -> None:
    with pytest.raises(MeterError, match="cannot open the LPM01A"):
        Lpm01a("/dev/does-not-exist")


# -- binary (bin_hexa) ------------------------------------------------------------------------

FAST_HZ = 100_000


def test_binary_words_round_trip_at_every_exponent() -> None:
    # The manual's examples: 52 A0 = 640.9 uA, 31 45 = 79.35 mA.
    assert decode_words(np.array([0x52A0, 0x3145])) == pytest.approx([640.87e-6, 79.346e-3],
                                                                      rel=1e-4)
    assert list(encode_currents(np.array([640.9e-6, 79.35e-3, 0.0]))) == [0x52A0, 0x3145, 0xE000]
    for e in range(15):
        mantissas = np.arange(0 if e == 14 else 256, 4096)  # the most precise encoding
        amperes = mantissas / 16.0**e
        words = encode_currents(amperes)
        assert np.array_equal(words, (e << 12) | mantissas), e
        assert np.array_equal(decode_words(words), amperes), e
    rng = np.random.default_rng(7)
    currents = rng.uniform(1e-9, 0.05, 10_000)
    assert np.max(np.abs(decode_words(encode_currents(currents)) / currents - 1)) < 1 / 500


def binary_stream() -> tuple[bytes, np.ndarray]:
    """Samples with every kind of frame between them, then the end and a text reply."""
    rng = np.random.default_rng(3)
    currents = decode_words(encode_currents(rng.uniform(1e-7, 0.05, 3000)))
    words = encode_currents(currents).astype(">u2").tobytes()
    data = (
        frame(F_VOLTAGE, (1800).to_bytes(2, "big")) + frame(F_POWER, b"\x01") + words[:2000]
        + timestamp_frame(10) + words[2000:3000] + text_frame(F_INFO, "event 00 fal")
        + words[3000:4000] + timestamp_frame(0x8000_0014, 3) + words[4000:]
        + frame(F_END) + b"PowerShield > Acquisition completed\r\n"
    )
    return data, currents


def decode_in_pieces(data: bytes, sizes: list[int]) -> tuple[list, BinaryDecoder]:
    decoder, items, pos = BinaryDecoder(), [], 0
    for size in sizes:
        if decoder.ended:
            break
        items += decoder.feed(data[pos : pos + size])
        pos += size
    return items, decoder


def test_binary_stream_decodes_the_same_however_it_is_split() -> None:
    data, currents = binary_stream()
    whole, decoder = decode_in_pieces(data, [len(data)])
    frames = [i for i in whole if isinstance(i, Frame)]
    assert [f.kind for f in frames] == [0xF7, 0xF9, F_TIMESTAMP, F_INFO, F_TIMESTAMP, F_END]
    assert frames[0].describe() == "voltage 1800 mV" and frames[3].text == "event 00 fal"
    assert frames[2].timestamp_ms == 10 and frames[4].timestamp_ms == 20  # overflow bit masked
    assert decoder.remainder == b"PowerShield > Acquisition completed\r\n"
    samples = np.concatenate([i for i in whole if isinstance(i, np.ndarray)])
    assert np.array_equal(samples, currents)
    rng = np.random.default_rng(11)
    for sizes in ([1] * len(data), list(rng.integers(1, 40, len(data)))):
        items, decoder = decode_in_pieces(data, sizes)  # every frame and sample split somewhere
        assert [f for f in items if isinstance(f, Frame)] == frames
        assert np.array_equal(np.concatenate([i for i in items if isinstance(i, np.ndarray)]),
                              currents)
        assert decoder.ended


def test_binary_garbage_is_reported_and_the_stream_found_again() -> None:
    words = encode_currents(np.full(1000, 0.001)).astype(">u2").tobytes()
    data = words[:600] + b"\xf0\xfa\x47" + words[600:] + timestamp_frame(10) + words
    items, _ = decode_in_pieces(data, [500] * 20)
    kinds = [type(i).__name__ for i in items if not isinstance(i, np.ndarray)]
    assert kinds == ["Garbled", "Frame"]
    garbled = next(i for i in items if isinstance(i, Garbled))
    assert garbled.data.startswith(b"\xf0\xfa")
    # 300 samples before the garbage, the 1000 after the timestamp; the rest was skipped.
    assert sum(len(i) for i in items if isinstance(i, np.ndarray)) == 1300


def test_binary_timestamps_give_the_exact_sample_count() -> None:
    assert expected_samples(10, 100_000) == (1000, 1)  # every 1000th sample: exact
    assert expected_samples(1000, 1000) == (1000, 1)
    assert expected_samples(13, 100_000) == (1300, 100)  # off the cadence: 1 ms resolution


def test_binary_refusals_match_the_instrument() -> None:
    with pytest.raises(ValueError, match="binary format carries current only"):
        Lpm01a("/dev/null", format="binary", output="energy")
    b = Bench(output="energy")
    try:
        with pytest.raises(MeterError, match="energy output at 100000 Hz needs the binary"):
            b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=FAST_HZ)
        for cmd in ("htc", "output energy", "format bin_hexa"):
            b.meter._command(cmd)
        with pytest.raises(MeterError, match="output energy is not available in bin_hexa"):
            b.meter._command("start")  # the simulator refuses it as the driver does
    finally:
        b.close()
    b = Bench(fmt="ascii")
    try:
        with pytest.raises(MeterError, match="ASCII at most at 5000 Hz"):
            b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=10_000)
        with pytest.raises(MeterError, match="cannot sample at 200000 Hz: pick one of 100k, 50k"):
            b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=200_000)
        assert not b.sim.host_control  # refused before any command was sent
    finally:
        b.close()


def test_binary_stream_at_100k_gives_exact_energy_and_edges(tmp_path) -> None:
    b = Bench(output="auto")
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=FAST_HZ)
        assert (b.meter.format, b.meter.output) == ("binary", "current")
        b.meter.start(tmp_path)
        truth = []
        for k in range(3):
            time.sleep(0.02)
            t0, t1 = b.burst(2.0)
            truth.append(b.timeline.charge_between(t0, t1) * VOLTAGE_V)
            b.meter.wait_for_events(2 * (k + 1), 5)
        trace = b.meter.stop()
    finally:
        b.close()
    assert ("<", "PowerShield > ack format bin_hexa") in b.transcript
    assert ("<", "PowerShield > ack output current") in b.transcript
    assert ("<", "[frame F7] voltage 1800 mV") in b.transcript
    assert ("<", "[frame F9] target power on") in b.transcript
    assert trace.kind == "current" and not trace.drops and len(trace) >= 600_000
    assert len(trace.events) == 6
    for k in range(3):
        w = window_from_events(trace.events[2 * k : 2 * k + 2], trace, 1)
        assert integrate(trace, w).energy_j == pytest.approx(truth[k], rel=1e-3)
        assert w.duration_s == pytest.approx(2.0, abs=2e-5)
    samples = np.fromfile(tmp_path / "lpm01a-samples.f64", dtype="<f8")
    assert np.array_equal(samples, trace.current_a)
    raw = (tmp_path / "lpm01a-raw.bin").read_bytes()
    assert b"PowerShield > ack start\r\n" in raw and b"\xf0\xf4\xff\xff" in raw
    assert len(raw) > 2 * len(trace)
    assert not (tmp_path / "lpm01a-raw.txt").exists()


def test_binary_lost_samples_are_detected_exactly() -> None:
    trace, error = measure_with(SimFaults(drop_at=2500, drop_count=7), rate_hz=FAST_HZ)
    assert error is None
    assert [(d.index, d.missing, d.earliest) for d in trace.drops] == [(3000, 7, 2000)]
    assert np.isnan(trace.current_a[2993:3000]).all()
    with pytest.raises(SampleDropError, match="7 samples lost"):
        integrate(trace, window_from_events(trace.events[-2:], trace, 10))


def test_binary_garbage_is_a_clear_error_and_keeps_data() -> None:
    b = Bench(SimFaults(garble_at=1500), output="auto")
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=FAST_HZ)
        b.meter.start()
        time.sleep(0.02)
        b.burst(1.0)
        with pytest.raises(MeterError, match="unreadable bytes .* after sample 1500: f0 fa 47"):
            b.meter.wait_for_events(2, 2)
        deadline = time.monotonic() + 2
        while b.meter.sample_count() <= 1500 and time.monotonic() < deadline:
            time.sleep(0.005)  # the reader goes on after the failure
        trace = b.meter.trace()
    finally:
        b.close()
    # The samples skipped until the next timestamp are a known drop; what followed is kept.
    assert [(d.index, d.missing) for d in trace.drops] == [(2000, 500)]
    assert np.isnan(trace.current_a[1500:2000]).all() and len(trace) > 2000


def test_binary_unplug_stall_and_lost_edge() -> None:
    trace, error = measure_with(SimFaults(unplug_after=1200), rate_hz=FAST_HZ)
    assert error is not None and "unplugged" in str(error)
    assert 1000 <= len(trace) <= 1200
    trace, error = measure_with(SimFaults(stall_after=800), 0.5, rate_hz=FAST_HZ)
    assert error is not None and "stopped streaming" in str(error)
    assert len(trace) == 800
    trace, error = measure_with(SimFaults(lose_event=1), rate_hz=FAST_HZ, edge_timeout_s=0.3)
    assert error is None and len(trace.events) == 1


def test_binary_overcurrent_and_error_frames_fail_clearly_and_keep_data() -> None:
    b = Bench(output="auto")
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=FAST_HZ)
        b.meter.start()
        time.sleep(0.02)
        b.burst(0.5, current_a=0.07)
        with pytest.raises(MeterError, match="current above the LPM01A's range"):
            b.meter.wait_for_events(2, 2)
        assert len(b.meter.trace()) > 1000  # the samples before the overcurrent
        assert not b.sim.powered
    finally:
        b.close()
    b = Bench(output="auto")
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=FAST_HZ)
        b.meter.start()
        time.sleep(0.02)
        b.burst(0.5)
        b.meter.wait_for_events(2, 2)
        with pytest.raises(MeterError, match="reported an error .*acquisition running"):
            b.meter._command("volt 2500m")  # refused mid-stream: an F1 frame
        with pytest.raises(MeterError, match="reported an error"):
            b.meter.stop()
        assert len(b.meter.trace()) >= 50_000 and len(b.meter.trace().events) == 2
    finally:
        b.close()


def test_binary_finite_acquisition_ends_with_f4_and_the_driver_says_so() -> None:
    b = Bench(output="auto")
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=FAST_HZ)
        b.meter._command("acqtime 15m")  # the driver itself never limits the acquisition
        b.meter.start()
        with b.timeline.lock:
            b.clock.advance(0.1)
        with pytest.raises(MeterError, match="ended the acquisition by itself after 1500 samples"):
            b.meter.wait_for_events(1, 2)
        assert len(b.meter.trace()) == 1500
        completed = ("<", "PowerShield > Acquisition completed")  # after F4 the port is text
        deadline = time.monotonic() + 2
        while completed not in b.transcript and time.monotonic() < deadline:
            time.sleep(0.005)
        assert completed in b.transcript
    finally:
        b.close()


def test_error_frame_text_is_the_message() -> None:
    items, _ = decode_in_pieces(text_frame(F_ERROR, "error volt 2500m: busy"), [64])
    assert items == [Frame(F_ERROR, b"error volt 2500m: busy\r\n")]
    assert items[0].describe() == "error: error volt 2500m: busy"


def test_full_energy_run_at_100k_through_the_runner(tmp_path) -> None:
    from tinypower.boards import load_board
    from tinypower.models import resolve_model
    from tinypower.runner import RunRequest, run
    from tinypower.suites.benchmarks import get_suite
    from tinypower.suites.datasets import synthetic_inputs

    board = dataclasses.replace(load_board("sim-m4"), monitor_sample_rate_hz=FAST_HZ)
    suite = get_suite("kws01")
    model = resolve_model(suite, "synthetic")
    outcome = run(RunRequest(board=board, suite=suite, model=model,
                             dataset=synthetic_inputs(suite), mode="energy", runs_dir=tmp_path,
                             monitor="lpm01a"))
    assert outcome.ok, outcome.error
    assert outcome.result.extras["sample_rate_hz"] == FAST_HZ
    latency_s = board.cycle_model.latency_s(model.info.macs, board.clock_hz, model.data)
    n = outcome.result.extras["iterations"]
    power_w = board.monitor_voltage_v * board.energy_model.active_current_a
    truth_uj = power_w * (n * latency_s + board.energy_model.timestamp_hold_s) * 1e6
    assert len(outcome.result.windows) == 5
    for w in outcome.result.windows:
        assert w["energy_uj"] == pytest.approx(truth_uj, rel=1e-3)
        assert w["alignment_bound_s"] == pytest.approx(1 / FAST_HZ)
    assert outcome.session.path("lpm01a-raw.bin").stat().st_size > 2 * 50 * FAST_HZ


@pytest.mark.parametrize(
    ("firmware", "message"),
    [("1.0.0", "older than 1.0.6"), ("garbage!", "not a firmware version")],
)
def test_wrong_firmware_version_is_refused(firmware: str, message: str) -> None:
    clock = VirtualClock()
    sim = Lpm01aSimulator(LoadTimeline(clock, IDLE_A), firmware=firmware)
    meter = Lpm01a(sim.start())
    try:
        with pytest.raises(MeterError, match=message):
            meter.identify()
    finally:
        meter.close()
        sim.close()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                        max_size=20), max_size=30))
def test_any_ascii_lines_during_acquisition_never_fail_the_stream(lines: list[str]) -> None:
    """Whatever text arrives between samples, the reader keeps going: a sample line adds its
    samples, a damaged one adds one NaN and a one-sample drop, anything else is skipped."""
    notes: list[str] = []
    meter = Lpm01a("loop://", measured_as="simulated", on_command=lambda d, t: notes.append(t))
    try:
        meter._acquiring = True
        for line in lines:
            before, drops = len(meter.trace()), len(meter.trace().drops)
            meter._consume(f"{line}\r\n".encode("ascii"))
            added, trace = len(meter.trace()) - before, meter.trace()
            text = line.strip()
            if SAMPLES_LINE_RE.fullmatch(text):
                assert added == len(SAMPLE_RE.findall(text)) and len(trace.drops) == drops
            elif added:
                assert added == 1 and np.isnan(trace.energy_j[-1])
                assert trace.drops[-1].missing == 1 and len(trace.drops) == drops + 1
        meter._raise_if_failed()
    finally:
        meter._closing.set()  # no `hrc`: nothing answers on loop://
        meter.close()


class _Captured:
    """A stand-in for the simulator's pty that keeps what it was sent."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


@settings(max_examples=150, deadline=None)
@given(
    first=st.integers(0, 5000),
    values=st.lists(st.sampled_from([0.0, 1.234e-6, 9.99951e-7, 3.3e-5, 2.5e-3]), min_size=1,
                    max_size=2500),
    edges=st.lists(st.integers(-2, 2502), max_size=4),
    quirks=st.booleans(),
)
def test_the_simulators_block_sends_what_its_sample_loop_sends(
    first: int, values: list[float], edges: list[int], quirks: bool
) -> None:
    """The simulator formats a fault-free ASCII block at once; byte for byte it is what the
    per-sample loop (kept for blocks a fault touches) sends: timestamps, edges, NULs and
    run-on lines in the same places, the edge counter at the same value."""
    sent = []
    for whole_block in (True, False):
        sim = Lpm01aSimulator(LoadTimeline(VirtualClock(), 0.001), faults=SimFaults(quirks=quirks))
        sim._port, sim._emitted, sim.freq_hz, sim.timestamp_base_ms = _Captured(), first, 1000.0, 5
        edge_at: dict[int, list[str]] = {}
        for k in edges:
            edge_at.setdefault(first + k, []).append("ris")
        if whole_block:
            sim._write_bytes(sim._ascii_block(np.array(values), edge_at))
        else:
            sim._send_ascii_each(np.array(values), edge_at)
        sent.append((sim._port.data, sim._event_counter))
    assert sent[0] == sent[1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["1234-06\r\n", "0000+00\r\n", "9999-09\r\n", "event 03 ris\r\n",
                                 "\x001234-06\r\n", "5678-071234-06\r\n", "12#4-06\r\n",
                                 "TimeStamp: 001s 000ms, buff 00%\r\n", "junk\r\n"]),
                max_size=40), st.integers(1, 7))
def test_the_stream_reads_the_same_in_blocks_and_line_by_line(
    lines: list[str], chunk_lines: int
) -> None:
    """Runs of plain sample lines are parsed in one go; mixed with every other kind of line,
    the samples, edges and drops are those the line-by-line reader finds."""
    results = []
    for by_line in (True, False):
        meter = Lpm01a("loop://", measured_as="simulated")
        try:
            meter._acquiring = True
            if by_line:  # the reader's line-by-line path alone
                meter._handle_lines("".join(lines).encode("ascii"))
            else:
                for i in range(0, len(lines), chunk_lines):
                    meter._consume("".join(lines[i : i + chunk_lines]).encode("ascii"))
            trace = meter.trace()
            results.append((trace.energy_j.tobytes(), [e.index for e in meter.events()],
                            [(d.index, d.missing) for d in trace.drops]))
        finally:
            meter._closing.set()
            meter.close()
    assert results[0] == results[1]
