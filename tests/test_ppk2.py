"""The real PPK2 driver against the simulator, over a real pty: metadata, the 4-byte sample words,
calibration, timestamp edges on D0, faults, and one `tinypower measure` run through it."""

from __future__ import annotations

import json
import math
import os
import threading
import time
import tty
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_monitor.meter import MeterError
from energy_monitor.ppk2 import (
    Ppk2,
    Ppk2Calibration,
    Ppk2Decoder,
    SpikeFilter,
    parse_metadata,
    spike_windows,
)
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.sim.ppk2_sim import Ppk2Simulator
from energy_monitor.trace import SampleDropError, integrate, load_trace, window_from_events

RATE = 100_000
VOLTAGE_V = 1.8
ACTIVE_A = 0.0095
IDLE_A = 0.0012
ADC_MULT = 1.8 / 163840
# A calibration unlike the defaults (GS = 0 as on calibrated units), so every constant counts.
CUSTOM = {
    **{f"GS{r}": "0.000000" for r in range(5)},
    **{f"GI{r}": "1.012000" for r in range(5)},
    **{f"O{r}": f"{20 + 4 * r}.000000" for r in range(5)},
    **{f"UG{r}": "0.995000" for r in range(5)},
    "S2": "0.000002", "I3": "0.000150",
}


class Bench:
    """A timeline, its simulator and the real driver, wired on a pty."""

    def __init__(
        self, faults: SimFaults | None = None, *, metadata: dict | None = None,
        stall_timeout_s: float = 3.0, edges: str = "fall",
    ) -> None:
        self.clock = VirtualClock()
        self.timeline = LoadTimeline(self.clock, IDLE_A)
        self.sim = Ppk2Simulator(self.timeline, faults, metadata=metadata)
        self.transcript: list[tuple[str, str]] = []
        self.meter = Ppk2(self.sim.start(), measured_as="simulated", edges=edges,
                          stall_timeout_s=stall_timeout_s,
                          on_command=lambda d, t: self.transcript.append((d, t)))

    def begin(self, folder=None) -> None:
        self.meter.identify()
        self.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=RATE)
        self.meter.start(folder)

    def burst(self, seconds: float) -> tuple[float, float]:
        """A DUT window: a 100 us low pulse, ``seconds`` of inference, another pulse."""
        with self.timeline.lock:
            t = self.clock.now()
            self.timeline.set_current(t, ACTIVE_A)
            for at in (t + 0.000503, t + 0.000503 + seconds):
                self.timeline.add_edge(at, "fall")
                self.timeline.add_edge(at + 0.0001, "rise")
            self.timeline.set_current(t + 0.001 + seconds, IDLE_A)
            self.clock.advance(seconds + 0.002)
        return t + 0.000503, t + 0.000503 + seconds

    def index_of(self, t: float) -> float:
        """Sample position of virtual time ``t`` on the meter's clock."""
        return (t - self.sim.acquisition_start_s) * RATE

    def close(self) -> None:
        self.meter.close()
        self.sim.close()


@pytest.fixture
def bench() -> Iterator[Bench]:
    b = Bench()
    yield b
    b.close()


def test_metadata_block_parses_with_nan_and_defaults() -> None:
    meta = parse_metadata(
        "Calibrated: 1\nR0: 1000.5\nR1: 0\nGS2: -nan\nO3: 16\nIA: -nan\nEND\nX: 9"
    )
    assert meta["IA"] == "-nan" and "X" not in meta
    cal = Ppk2Calibration.from_metadata(meta)
    assert cal.r[0] == 1000.5
    assert cal.r[1] == 101.65  # R = 0 is ignored, as ppk2-api does
    assert cal.gs[2] == 1.0 and cal.o[3] == 16.0  # -nan keeps the default
    assert cal.r[4] == 0.043 and cal.ug == (1.0,) * 5  # missing keys keep the defaults
    # The formula: range 1, ADC 1000 with default constants.
    x = 4000 * ADC_MULT / 101.65
    got = cal.amperes(np.array([1000]), np.array([1]), 3300)
    assert got[0] == pytest.approx(x * x + x, rel=1e-12)


def test_identify_reads_the_block_split_over_reads_with_nan() -> None:
    b = Bench(metadata={**CUSTOM, "GS4": "-nan", "IA": "-nan", "HW": "9174"})
    try:
        ident = b.meter.identify()
    finally:
        b.close()
    assert ident.kind == "ppk2" and ident.firmware == "HW 9174"
    assert ident.measured_as == "simulated"
    cal = b.meter.calibration
    assert cal.gs[4] == 1.0 and cal.gs[3] == 0.0  # -nan fell back to the default
    assert cal.o == (20.0, 24.0, 28.0, 32.0, 36.0) and cal.ug[2] == 0.995
    assert cal.s[2] == 2e-6 and cal.i[3] == 1.5e-4
    assert b.meter.metadata["IA"] == "-nan" and b.meter.metadata["mode"] == "1"
    assert ("<", "Calibrated: 1") in b.transcript and (">", "GetMetadata (19)") in b.transcript


def test_configure_sends_the_instruments_bytes(bench: Bench) -> None:
    bench.meter.identify()
    bench.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=RATE)
    time.sleep(0.05)
    assert bench.sim.commands == [b"\x07", b"\x19", b"\x11\x02", b"\x0d\x07\x08", b"\x0c\x01"]
    assert bench.sim.mode == 2 and bench.sim.regulator_mv == 1800 and bench.sim.dut_power
    assert bench.meter.identify() and bench.meter.metadata["VDD"] == "1800"
    with pytest.raises(MeterError, match="100000 Hz only, not 50000 Hz"):
        bench.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=50_000)
    with pytest.raises(MeterError, match="800..5000 mV, not 5500 mV"):
        bench.meter.configure(voltage_v=5.5, sample_rate_hz=RATE)


@pytest.mark.parametrize(
    ("metadata", "ranges"),
    [({}, [0, 1, 2, 3, 3]), (CUSTOM, [0, 1, 2, 3, 4])],
    ids=["default-constants", "custom-calibration"],
)
def test_conversion_round_trips_in_every_range(tmp_path, metadata, ranges) -> None:
    currents = [150e-6, 3.1e-3, 41e-3, 0.52, 0.93]
    b = Bench(metadata=metadata)
    try:
        b.begin(tmp_path)
        with b.timeline.lock:
            t = b.clock.now()
            for k, amps in enumerate(currents):
                b.timeline.set_current(t + 0.01 * k, amps)
            b.timeline.set_current(t + 0.05, IDLE_A)
            b.clock.advance(0.06)
        time.sleep(0.02)
        trace = b.meter.stop()
        start = round(b.index_of(t))
    finally:
        b.close()
    words = np.fromfile(tmp_path / "ppk2-raw.bin", dtype="<u4")
    cal = Ppk2Calibration.from_metadata(b.meter.metadata)
    for k, amps in enumerate(currents):
        sl = slice(start + 1000 * k + 2, start + 1000 * (k + 1) - 2)  # whole samples of segment k
        rng = (words[sl] >> 14) & 7
        assert set(rng.tolist()) == {ranges[k]}, f"segment {k}: auto-ranging"
        r = ranges[k]
        x = (4 * ((words[sl] & 0x3FFF).astype(float)) - cal.o[r]) * ADC_MULT / cal.r[r]
        one_lsb = cal.ug[r] * (2 * cal.gs[r] * x + cal.gi[r]) * 4 * ADC_MULT / cal.r[r]
        assert np.all(np.abs(trace.current_a[sl] - amps) <= one_lsb), f"segment {k}"
    assert np.all(trace.voltage_v == VOLTAGE_V)


def test_no_current_while_dut_power_is_off(bench: Bench) -> None:
    bench.meter.identify()
    bench.meter.start()  # not configured: the DUT is not powered
    bench.burst(0.05)
    bench.meter.wait_for_events(2, 2)
    trace = bench.meter.stop()
    assert len(trace.events) == 2 and len(trace) > 5000
    assert np.all(trace.current_a == 0.0)


def test_burst_energy_within_0_1_percent_and_edges_on_the_right_samples(tmp_path) -> None:
    b = Bench(edges="both")
    try:
        b.begin(tmp_path)
        truth, falls = [], []
        for k in range(3):
            time.sleep(0.01)
            t0, t1 = b.burst(0.4 + 0.1 * k)
            truth.append(b.timeline.charge_between(t0, t1) * VOLTAGE_V)
            falls += [t0, t1]
            b.meter.wait_for_events(4 * (k + 1), 5)
        with b.timeline.lock:  # a pulse shorter than one sample is still seen
            short = b.sim.acquisition_start_s + (math.ceil(b.index_of(b.clock.now())) + 5.3) / RATE
            b.timeline.add_edge(short, "fall")
            b.timeline.add_edge(short + 0.000003, "rise")
            b.clock.advance(0.001)
        b.meter.wait_for_events(14, 5)
        trace = b.meter.stop()
        sim_start = b.sim.acquisition_start_s
    finally:
        b.close()
    assert not trace.drops
    assert [e.polarity for e in trace.events] == ["fall", "rise"] * 7
    expected = []
    for t in [*falls, short]:
        pos = (t - sim_start) * RATE
        pulse = 0.0001 if t != short else 0.000003
        expected += [math.floor(pos), math.ceil(pos + pulse * RATE)]
    assert [e.index for e in trace.events] == expected
    assert expected[-1] - expected[-2] == 1  # the 3 us pulse marked exactly one sample low
    fall_events = [e for e in trace.events if e.polarity == "fall"]
    for k in range(3):
        w = window_from_events(fall_events[2 * k : 2 * k + 2], trace, 1)
        assert integrate(trace, w).energy_j == pytest.approx(truth[k], rel=1e-3)
        assert w.alignment_bound_s == pytest.approx(1e-5)
    # The raw words and the current column were written while measuring.
    words = np.fromfile(tmp_path / "ppk2-raw.bin", dtype="<u4")
    assert len(words) == len(trace)
    assert np.all(np.diff((words >> 18) & 63) % 64 == 1)
    current = np.fromfile(tmp_path / "ppk2-current.f64", dtype="<f8")
    assert np.array_equal(current, trace.current_a)
    pulses = zip(trace.events[::2], trace.events[1::2], strict=True)
    low_samples = sum(rise.index - fall.index for fall, rise in pulses)
    assert np.count_nonzero(((words >> 24) & 1) == 0) == low_samples


def test_words_split_across_reads_decode_the_same() -> None:
    n = 1000
    k = np.arange(n, dtype=np.uint32)
    rng = (k // 200).astype(np.uint32)
    words = (k * 7 % 0x3FFF) | (rng << 14) | ((k % 64) << 18) | (((k // 50) % 2) << 24)
    data = words.astype("<u4").tobytes()
    cal = Ppk2Calibration()
    whole = Ppk2Decoder(cal, 1800, "both").feed(data)
    split = Ppk2Decoder(cal, 1800, "both")
    cuts = np.sort(np.random.default_rng(1).choice(len(data), 60, replace=False))
    parts = [split.feed(p.tobytes()) for p in np.split(np.frombuffer(data, np.uint8), cuts)]
    assert np.array_equal(np.concatenate([p.current_a for p in parts]), whole.current_a)
    assert [e for p in parts for e in p.events] == whole.events
    assert len(whole.events) == 19 and not whole.drops and split.received == n
    assert whole.current_a[205] == pytest.approx(
        cal.amperes(np.array([205 * 7]), np.array([1]), 1800)[0])


def stream_words(adc: list[int], ranges: list[int], start_counter: int) -> np.ndarray:
    """Sample words with consecutive counters (D0 high)."""
    k = np.arange(len(adc), dtype=np.uint32)
    counter = (k + np.uint32(start_counter)) % 64
    return (np.asarray(adc, np.uint32) | (np.asarray(ranges, np.uint32) << 14)
            | (counter << 18) | np.uint32(1 << 24))


samples = st.integers(2, 300).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 0x3FFE), min_size=n, max_size=n),
    st.lists(st.integers(0, 4), min_size=n, max_size=n),
    st.integers(0, 63),
))


@settings(max_examples=80, deadline=None)
@given(samples, st.data())
def test_garbled_words_never_shift_samples_and_a_replaced_one_is_one_drop(stream, data) -> None:
    adc, ranges, start = stream
    words = stream_words(adc, ranges, start)
    clean = Ppk2Decoder(Ppk2Calibration(), 3300, "fall").feed(words.astype("<u4").tobytes())
    garble = st.integers(5, 7).map(lambda r: np.uint32(r << 14))
    # extra words with a range field above 4, anywhere: nothing lost, nothing moved
    spots = data.draw(st.lists(st.integers(0, len(words)), max_size=5))
    noisy = words
    for at in sorted(spots, reverse=True):
        noise = np.uint32(data.draw(st.integers(0, (1 << 14) - 1)))  # any ADC bits
        noisy = np.insert(noisy, at, data.draw(garble) | noise)
    cuts = sorted(data.draw(st.lists(st.integers(0, 4 * len(noisy)), max_size=4)))
    raw = noisy.astype("<u4").tobytes()
    decoder = Ppk2Decoder(Ppk2Calibration(), 3300, "fall")
    parts = [decoder.feed(raw[a:b]) for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    got = np.concatenate([p.current_a for p in parts])
    assert np.array_equal(got, clean.current_a) and not any(p.drops for p in parts)
    assert decoder.garbled == len(spots)
    # one sample's word garbled in place (its counter kept): a one-sample drop there
    j = data.draw(st.integers(1, len(words) - 1))
    hit = words.copy()
    hit[j] |= data.draw(garble)
    block = Ppk2Decoder(Ppk2Calibration(), 3300, "fall").feed(hit.astype("<u4").tobytes())
    if j < len(words) - 1:
        assert [(d.index, d.missing) for d in block.drops] == [(j + 1, 1)]
        assert np.flatnonzero(np.isnan(block.current_a)).tolist() == [j]
        assert np.array_equal(np.delete(block.current_a, j), np.delete(clean.current_a, j))
    else:  # the last word: nothing after it shows the gap yet
        assert not block.drops
        assert np.array_equal(block.current_a, clean.current_a[:-1])


def measure_with(faults: SimFaults, stall_timeout_s: float = 3.0, edges: int = 2):
    """One 0.3 s burst; returns the trace (kept after a failure) and the error."""
    b = Bench(faults, stall_timeout_s=stall_timeout_s)
    try:
        b.begin()
        time.sleep(0.02)
        b.burst(0.3)
        try:
            b.meter.wait_for_events(edges, 2)
            return b.meter.stop(), None
        except MeterError as exc:
            return b.meter.trace(), exc
    finally:
        b.close()


def test_counter_gap_is_a_drop_that_refuses_integration() -> None:
    trace, error = measure_with(SimFaults(drop_at=20_000, drop_count=7))
    assert error is None
    assert [(d.index, d.missing, d.first_possible) for d in trace.drops] == [(20_007, 7, 20_000)]
    assert np.isnan(trace.current_a[20_000:20_007]).all()
    assert not np.isnan(trace.current_a[19_999]) and not np.isnan(trace.current_a[20_007])
    w = window_from_events(trace.events[-2:], trace, 10)
    assert w.start_index < 20_000 < w.end_index
    assert w.duration_s == pytest.approx(0.3, abs=2e-5)  # the edges stayed on the meter's clock
    with pytest.raises(SampleDropError, match="7 samples lost"):
        integrate(trace, w)


def test_garbled_word_is_a_one_sample_drop_and_the_run_goes_on() -> None:
    trace, error = measure_with(SimFaults(garble_at=3000))
    assert error is None  # Nordic's app shows no value for it and goes on; so do we
    assert [(d.index, d.missing) for d in trace.drops] == [(3001, 1)]
    assert np.flatnonzero(np.isnan(trace.current_a)).tolist() == [3000]
    assert len(trace.events) == 2 and len(trace) > 30_000


def test_garbled_word_between_samples_costs_nothing() -> None:
    k = np.arange(200, dtype=np.uint32)
    words = (k * 11 % 0x3FFF) | (((k // 50) % 5) << 14) | ((k % 64) << 18)
    noisy = np.insert(words, 120, np.uint32((7 << 14) | 0x1234))  # an extra word, range 7
    clean = Ppk2Decoder(Ppk2Calibration(), 3300, "fall").feed(words.astype("<u4").tobytes())
    decoder = Ppk2Decoder(Ppk2Calibration(), 3300, "fall")
    block = decoder.feed(noisy.astype("<u4").tobytes())
    assert block.garbled == 1 and decoder.garbled == 1 and not block.drops
    assert np.array_equal(block.current_a, clean.current_a)


def test_unplugged_meter_is_a_clear_error_and_keeps_data() -> None:
    trace, error = measure_with(SimFaults(unplug_after=4000))
    assert error is not None and "unplugged" in str(error)
    assert len(trace) == 4000


def test_stalled_stream_is_a_clear_error() -> None:
    trace, error = measure_with(SimFaults(stall_after=2500), stall_timeout_s=0.2)
    assert error is not None and "stopped streaming" in str(error) and "2500" in str(error)
    assert len(trace) == 2500


def test_current_above_the_range_is_a_clear_error() -> None:
    # The over-range current comes between the window's edges, so the driver meets it before
    # the closing edge it waits for. (Booked after the window, it raced the AverageStop: a
    # PPK2 whose host stops reading drops what it still holds, and on a loaded machine the
    # over-range samples were dropped unseen.)
    b = Bench()
    try:
        b.begin()
        time.sleep(0.02)
        with b.timeline.lock:
            t = b.clock.now()
            b.timeline.set_current(t, ACTIVE_A)
            for at in (t + 0.0005, t + 0.2):
                b.timeline.add_edge(at, "fall")
                b.timeline.add_edge(at + 0.0001, "rise")
            b.timeline.set_current(t + 0.1, 1.5)
            b.timeline.set_current(t + 0.201, IDLE_A)
            b.clock.advance(0.21)
        with pytest.raises(MeterError, match="current above the PPK2's range"):
            b.meter.wait_for_events(2, 5)
        trace = b.meter.trace()
    finally:
        b.close()
    assert len(trace) > 0 and np.nanmax(trace.current_a) < 1.0


def test_lost_pulse_gives_no_edge() -> None:
    trace, error = measure_with(SimFaults(lose_event=0), edges=1)
    assert error is None and len(trace.events) == 1


def test_a_ppk2_left_streaming_is_stopped_before_identify() -> None:
    import serial

    b = Bench()
    try:
        with serial.Serial(b.meter.url) as crashed_program:  # started it and went away
            crashed_program.write(b"\x06")
        time.sleep(0.1)
        assert b.sim.streaming
        assert b.meter.identify().firmware == "HW 9173-tinypowersim"
        assert not b.sim.streaming and b.meter.metadata["R4"] == "0.043000"
    finally:
        b.close()


@pytest.mark.parametrize(("calibrated", "said"), [("0", "'Calibrated: 0'"),
                                                   (None, "no Calibrated key")])
def test_uncalibrated_unit_is_used_with_a_warning_in_its_identity(calibrated, said) -> None:
    b = Bench(metadata={**CUSTOM, "Calibrated": calibrated})
    try:
        ident = b.meter.identify()
    finally:
        b.close()
    assert len(ident.warnings) == 1 and said in ident.warnings[0]
    assert b.meter.calibration.o == (20.0, 24.0, 28.0, 32.0, 36.0)  # its constants are used
    assert ("#", ident.warnings[0]) in b.transcript


def test_calibrated_unit_has_no_warning_unless_the_spike_filter_is_on() -> None:
    b = Bench()
    try:
        assert b.meter.identify().warnings == ()
        b.meter.spike_filter = True
        (warning,) = b.meter.identify().warnings
        assert "spike filter is on" in warning
    finally:
        b.close()


def test_spike_filter_averages_the_three_samples_from_each_range_switch() -> None:
    # ranges 0,0,0,1,1,1,1,4,4,4,4: switches at 3 and 7
    rng = np.array([0, 0, 0, 1, 1, 1, 1, 4, 4, 4, 4])
    assert spike_windows(rng).tolist() == [False] * 3 + [True] * 3 + [False] + [True] * 3 + [False]
    amps = np.array([1.0, 1.0, 1.0, 10, 10, 10, 10, 100, 100, 100, 100])
    out = SpikeFilter().apply(amps, rng)
    assert out[:3].tolist() == [1.0, 1.0, 1.0] and out[6] == 10 and out[10] == 100
    assert out[3] == pytest.approx(0.18 * 10 + 0.82 * 1.0)  # the fast average
    top = 1.0
    for value in amps[1:7]:  # the range-4 average after sample 6
        top = 0.06 * value + 0.94 * top
    assert out[7] == out[8] == pytest.approx(top)  # range 4's first two are left out
    assert out[9] == pytest.approx(0.06 * 100 + 0.94 * top)


def test_reply_without_end_is_not_a_ppk2() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)

    def device() -> None:  # answers GetMetadata like something else, half now, half later
        os.read(master, 1)
        os.write(master, b"Calibrated: 1\nR0: 10")
        time.sleep(0.1)
        os.write(master, b"31.64\nHello from a modem\n")

    thread = threading.Thread(target=device, daemon=True)
    meter = Ppk2(os.ttyname(slave), command_timeout_s=0.25)
    thread.start()
    try:
        with pytest.raises(MeterError, match="no metadata block ending in END") as info:
            meter.identify()
        assert "Hello from a modem" in str(info.value)
    finally:
        meter.close()
        thread.join()
        os.close(master)
        os.close(slave)


def test_bad_port_is_a_clear_error() -> None:
    with pytest.raises(MeterError, match="cannot open the PPK2"):
        Ppk2("/dev/does-not-exist")


def test_energy_mode_through_the_runner_scores_within_0_1_percent(tmp_path) -> None:
    from tinypower.boards import load_board
    from tinypower.models import resolve_model
    from tinypower.runner import RunRequest, run
    from tinypower.suites.benchmarks import get_suite
    from tinypower.suites.datasets import synthetic_inputs

    board, suite = load_board("sim-m4"), get_suite("kws01")
    model = resolve_model(suite, "synthetic")
    outcome = run(RunRequest(
        board=board, suite=suite, model=model, dataset=synthetic_inputs(suite), mode="energy",
        runs_dir=tmp_path, monitor="ppk2",
    ))
    assert outcome.ok, outcome.error
    latency_s = board.cycle_model.latency_s(model.info.macs, board.clock_hz, model.data)
    power_w = board.monitor_voltage_v * board.energy_model.active_current_a
    n = outcome.result.extras["iterations"]
    # Between the two falling edges the DUT runs N inferences and one timestamp pulse.
    truth_uj = power_w * (n * latency_s + board.energy_model.timestamp_hold_s) * 1e6
    windows = outcome.result.windows
    assert len(windows) == 5 and all(w["duration_s"] >= 10 for w in windows)
    for w in windows:
        assert w["energy_uj"] == pytest.approx(truth_uj, rel=1e-3)
        assert w["alignment_bound_s"] == pytest.approx(1e-5)
    assert outcome.result.value == pytest.approx(truth_uj / n, rel=1e-3)
    assert outcome.result.extras["sample_rate_hz"] == RATE
    folder = outcome.session.folder
    # The raw words stay (4 bytes a sample); the float64 column written while measuring gave
    # way to trace.npz, which holds every sample of it.
    words = (folder / "ppk2-raw.bin").stat().st_size // 4
    trace = load_trace(folder / "trace.npz")
    assert words == len(trace) > 5_000_000 and trace.current_a.dtype == np.float64
    assert not (folder / "ppk2-current.f64").exists()
    assert "> [ppk2] AverageStart (06)" in (folder / "transcript.log").read_text()
    meter = json.loads((folder / "session.json").read_text())["meter"]
    assert meter["kind"] == "ppk2" and meter["warnings"] == []  # a calibrated unit
