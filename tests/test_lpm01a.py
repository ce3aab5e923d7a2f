"""The real LPM01A driver against the simulator, over a real pty: commands, stream, faults."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from energy_monitor.lpm01a import Lpm01a
from energy_monitor.lpm01a_format import format_frequency, format_sample, parse_number, parse_sample
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
        output: str = "energy",
    ) -> None:
        self.clock = VirtualClock()
        self.timeline = LoadTimeline(self.clock, IDLE_A)
        self.sim = Lpm01aSimulator(self.timeline, faults=faults)
        self.transcript: list[tuple[str, str]] = []
        self.meter = Lpm01a(self.sim.start(), measured_as="simulated", output=output,
                            stall_timeout_s=stall_timeout_s,
                            on_command=lambda d, t: self.transcript.append((d, t)))

    def burst(self, seconds: float) -> tuple[float, float]:
        """A DUT window: a falling edge, ``seconds`` of inference, a falling edge."""
        with self.timeline.lock:
            t = self.clock.now()
            self.timeline.set_current(t, ACTIVE_A)
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
    assert ident.serial == "SIM-LPM01A-0001" and ident.firmware == "1.0.6"
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
    assert "event 00 fal" in text


def measure_with(faults: SimFaults, stall_timeout_s: float = 3.0):
    b = Bench(faults, stall_timeout_s)
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=1000)
        b.meter.start()
        time.sleep(0.02)
        b.burst(5.0)
        try:
            b.meter.wait_for_events(2, 2)
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


def test_garbled_line_is_a_clear_error_and_keeps_data() -> None:
    trace, error = measure_with(SimFaults(garble_at=1500))
    assert error is not None and "unreadable line" in str(error) and "1500" in str(error)
    assert len(trace) >= 1500  # what came before and after is kept


def test_unplugged_meter_is_a_clear_error_and_keeps_data() -> None:
    trace, error = measure_with(SimFaults(unplug_after=1200))
    assert error is not None and "unplugged" in str(error)
    assert 1000 <= len(trace) <= 1200


def test_stalled_stream_is_a_clear_error() -> None:
    trace, error = measure_with(SimFaults(stall_after=800), stall_timeout_s=0.5)
    assert error is not None and "stopped streaming" in str(error)
    assert len(trace) == 800


def test_nothing_on_the_port_times_out_clearly(tmp_path) -> None:
    import os
    import tty

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
