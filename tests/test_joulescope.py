"""The real Joulescope driver against the simulated vendor API: settings, merged streams, exact
energy, timestamp edges of either polarity, losses and faults, and one run through the runner.

USB cannot run here, so the simulator stands in for ``pyjoulescope_driver.Driver`` (the one
instrument mocked at a library boundary); everything above that boundary is the real code.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from energy_monitor.joulescope import Joulescope, output_rates
from energy_monitor.meter import MeterError
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.joulescope_sim import JoulescopeSimulator
from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.trace import (
    SampleDropError,
    Trace,
    integrate,
    load_trace,
    window_from_events,
)

VOLTAGE_V = 1.8
ACTIVE_A = 0.0095
IDLE_A = 0.0012
RATE_HZ = 10_000


class Bench:
    """A timeline, the simulated instrument and the real driver on top of it."""

    def __init__(self, faults: SimFaults | None = None, *, model: str = "js220",
                 stall_timeout_s: float = 3.0, edge: str = "fall") -> None:
        self.clock = VirtualClock()
        self.timeline = LoadTimeline(self.clock, IDLE_A)
        self.sim = JoulescopeSimulator(self.timeline, faults, model=model)
        self.transcript: list[tuple[str, str]] = []
        self.meter = Joulescope(
            driver_factory=self.sim.factory, measured_as="simulated", edge=edge,
            stall_timeout_s=stall_timeout_s,
            on_command=lambda d, t: self.transcript.append((d, t)),
        )

    def burst(self, seconds: float, pulse_s: float = 0.0001) -> tuple[float, float]:
        """A DUT window: a timestamp pulse, ``seconds`` of inference, a timestamp pulse."""
        with self.timeline.lock:
            t = self.clock.now() + 0.00053
            self.timeline.set_current(t, ACTIVE_A)
            for at in (t, t + seconds):
                self.timeline.add_edge(at, "fall")
                self.timeline.add_edge(at + pulse_s, "rise")
            self.timeline.set_current(t + seconds, IDLE_A)
            self.clock.advance(seconds + pulse_s + 0.002)
        return t, t + seconds

    def measure(self, seconds: float = 2.0, bursts: int = 1) -> tuple[Trace, list[float]]:
        self.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=RATE_HZ)
        self.meter.start()
        truth = []
        for k in range(bursts):
            time.sleep(0.01)
            t0, t1 = self.burst(seconds)
            truth.append(self.timeline.charge_between(t0, t1) * VOLTAGE_V)
            self.meter.wait_for_events(2 * (k + 1), 5)
        return self.meter.stop(), truth

    def close(self) -> None:
        self.meter.close()
        self.sim.close()


@pytest.fixture
def bench() -> Iterator[Bench]:
    b = Bench()
    yield b
    b.close()


def test_identify_and_configure(bench: Bench) -> None:
    ident = bench.meter.identify()
    assert (ident.kind, ident.model, ident.serial) == (
        "joulescope", "JS220", "tps000001-tinypowersim")
    assert ident.firmware == "1.2.3" and ident.measured_as == "simulated"
    bench.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=RATE_HZ)
    assert bench.sim.published == [
        ("h/fs", 10_000), ("s/i/range/mode", "auto"), ("s/v/range/select", "2 V"),
        ("s/v/range/mode", "manual"), ("c/gpio/vref", "external"),
    ]
    bench.meter.configure(voltage_v=3.3, sample_rate_hz=1_000_000)
    assert bench.sim.values["s/v/range/select"] == "15 V" and bench.sim.sample_rate_hz == 10**6
    assert (">", "publish u/js220/tps000001-tinypowersim/h/fs 1000000") in bench.transcript


@pytest.mark.parametrize("rate", [3000, 1500, 2_000_000, 0, 0.5])
def test_configure_refuses_rates_the_js220_lacks(bench: Bench, rate: float) -> None:
    with pytest.raises(MeterError, match="not a JS220 output rate: use a 1-2-5 step"):
        bench.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=rate)
    assert bench.sim.published == []


@pytest.mark.parametrize("volts", [0.0, -1.8, 16.0])
def test_configure_refuses_voltages_outside_the_input(bench: Bench, volts: float) -> None:
    with pytest.raises(MeterError, match="outside the Joulescope's 0-15 V input"):
        bench.meter.configure(voltage_v=volts, sample_rate_hz=RATE_HZ)


def test_js110_gets_its_own_settings() -> None:
    b = Bench(model="js110")
    try:
        assert output_rates(2_000_000)[-1] == 2_000_000 and len(output_rates(1_000_000)) == 19
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=2_000_000)
        assert b.sim.published == [
            ("h/fs", 2_000_000), ("s/i/range/select", "auto"), ("s/v/range/select", "5 V"),
            ("s/extio/voltage", "1.8 V"),
        ]
        assert b.meter.identify().model == "JS110"
    finally:
        b.close()


def test_bursts_give_exact_energy_and_files(bench: Bench, tmp_path) -> None:
    bench.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=RATE_HZ)
    bench.meter.start(tmp_path)
    truth = []
    for k in range(3):
        time.sleep(0.02)
        t0, t1 = bench.burst(2.0 + k)
        truth.append(bench.timeline.charge_between(t0, t1) * VOLTAGE_V)
        bench.meter.wait_for_events(2 * (k + 1), 5)
    trace = bench.meter.stop()
    assert len(trace.events) == 6 and not trace.drops
    assert all(e.polarity == "fall" for e in trace.events)
    for k in range(3):
        w = window_from_events(trace.events[2 * k : 2 * k + 2], trace, 1)
        assert integrate(trace, w).energy_j == pytest.approx(truth[k], rel=1e-3)
        assert w.duration_s == pytest.approx(2.0 + k, abs=1 / RATE_HZ)
    assert np.all(trace.voltage_v == np.float32(VOLTAGE_V))
    current = np.fromfile(tmp_path / "joulescope-current.f32", dtype="<f4")
    voltage = np.fromfile(tmp_path / "joulescope-voltage.f32", dtype="<f4")
    assert len(current) == len(voltage) == len(trace) > 9 * RATE_HZ
    assert np.array_equal(current, trace.current_a)


@pytest.mark.parametrize("edge", ["fall", "rise"])
def test_edges_land_on_the_sample_holding_them(edge: str) -> None:
    """A 5 ms pulse with a current step at each edge: the event's sample is the first one the
    step reaches, so the index is the sample holding the edge, for either polarity."""
    b = Bench(edge=edge)
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=RATE_HZ)
        b.meter.start()
        time.sleep(0.01)
        with b.timeline.lock:
            t = b.clock.now() + 0.00037
            b.timeline.add_edge(t, "fall")
            b.timeline.set_current(t, ACTIVE_A)
            b.timeline.add_edge(t + 0.005, "rise")
            b.timeline.set_current(t + 0.005, IDLE_A)
            b.clock.advance(0.01)
        b.meter.wait_for_events(1, 5)
        trace = b.meter.stop()
    finally:
        b.close()
    assert [e.polarity for e in trace.events] == [edge]
    k = trace.events[0].index
    before, at = (ACTIVE_A, IDLE_A) if edge == "rise" else (IDLE_A, ACTIVE_A)
    assert trace.current_a[k - 1] == pytest.approx(before)
    assert trace.current_a[k] != pytest.approx(before)  # the step begins inside sample k
    assert trace.current_a[k + 1] == pytest.approx(at)
    assert trace.events[0].time_s == pytest.approx(k / RATE_HZ)


def test_a_pulse_shorter_than_a_sample_is_seen() -> None:
    b = Bench()
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=100)  # 10 ms samples
        b.meter.start()
        time.sleep(0.01)
        t0, t1 = b.burst(3.0, pulse_s=0.0001)
        b.meter.wait_for_events(2, 5)
        trace = b.meter.stop()
    finally:
        b.close()
    assert len(trace.events) == 2
    assert trace.events[1].index - trace.events[0].index == pytest.approx(300, abs=1)


def measure_with(faults: SimFaults, stall_timeout_s: float = 3.0, wait_s: float = 2.0):
    b = Bench(faults, stall_timeout_s=stall_timeout_s)
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=RATE_HZ)
        b.meter.start()
        time.sleep(0.01)
        b.burst(2.0)
        try:
            b.meter.wait_for_events(2, wait_s)
            return b.meter.stop(), None
        except MeterError as exc:
            return b.meter.trace(), exc
    finally:
        b.close()


def test_a_sample_id_jump_is_a_drop_and_refused() -> None:
    trace, error = measure_with(SimFaults(drop_at=5000, drop_count=7))
    assert error is None
    assert len(trace.drops) == 1
    drop = trace.drops[0]
    assert drop.missing == 7 and drop.index - drop.first_possible == 7
    assert np.isnan(trace.current_a[drop.first_possible : drop.index]).all()
    assert not np.isnan(trace.current_a[: drop.first_possible]).any()
    with pytest.raises(SampleDropError, match="7 samples lost"):
        integrate(trace, window_from_events(trace.events, trace, 1))


def test_unplugged_meter_is_a_clear_error_and_keeps_data() -> None:
    trace, error = measure_with(SimFaults(unplug_after=12_000))
    assert error is not None and "unplugged" in str(error) and "kept" in str(error)
    assert 11_000 <= len(trace) <= 12_000


def test_stalled_stream_is_a_clear_error_and_keeps_data() -> None:
    trace, error = measure_with(SimFaults(stall_after=8000), stall_timeout_s=0.3)
    assert error is not None and "stopped streaming" in str(error)
    assert 7900 <= len(trace) <= 8000


def test_a_lost_timestamp_pulse_is_missing_from_the_events() -> None:
    trace, error = measure_with(SimFaults(lose_event=1), wait_s=0.3)
    assert error is None
    assert len(trace.events) == 1


def test_unplugged_before_stop_fails_stop_but_keeps_the_samples(tmp_path) -> None:
    b = Bench(SimFaults(unplug_after=3000))
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=RATE_HZ)
        b.meter.start(tmp_path)
        with b.timeline.lock:
            b.clock.advance(1.0)
        deadline = time.monotonic() + 2
        while not b.sim.unplugged and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(MeterError,
                           match="lost the Joulescope u/js220/tps000001-tinypowersim after"):
            b.meter.stop()
        assert b.meter.sample_count() == 3000
        assert len(np.fromfile(tmp_path / "joulescope-current.f32", dtype="<f4")) == 3000
        with pytest.raises(MeterError, match="no Joulescope JS220/JS110 found"):
            Joulescope(driver_factory=b.sim.factory)
    finally:
        b.close()


def test_a_device_that_is_not_there_is_named(bench: Bench) -> None:
    with pytest.raises(MeterError, match=r"no Joulescope '123456' found \(connected: u/js220/tps0"):
        Joulescope("123456", driver_factory=bench.sim.factory)


def test_missing_vendor_package_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyjoulescope_driver", None)
    with pytest.raises(MeterError, match="pip install pyjoulescope-driver"):
        Joulescope()


def test_energy_run_through_the_runner_matches_ground_truth(tmp_path) -> None:
    from tinypower.boards import load_board
    from tinypower.models import resolve_model
    from tinypower.runner import RunRequest, run
    from tinypower.suites.benchmarks import get_suite
    from tinypower.suites.datasets import synthetic_inputs

    board, suite = load_board("sim-m4"), get_suite("kws01")
    model = resolve_model(suite, "synthetic")
    outcome = run(RunRequest(
        board=board, suite=suite, model=model, dataset=synthetic_inputs(suite), mode="energy",
        runs_dir=tmp_path, monitor="joulescope",
    ))
    assert outcome.ok, outcome.error
    latency_s = board.cycle_model.latency_s(model.info.macs, board.clock_hz, model.data)
    n = outcome.result.extras["iterations"]
    power_w = board.monitor_voltage_v * board.energy_model.active_current_a
    truth_uj = power_w * (n * latency_s + board.energy_model.timestamp_hold_s) * 1e6
    assert len(outcome.result.windows) == 5
    for w in outcome.result.windows:
        assert w["energy_uj"] == pytest.approx(truth_uj, rel=1e-3)
        assert w["alignment_bound_s"] == pytest.approx(1 / 10_000)
    # The float32 columns written while measuring gave way to trace.npz, float32 as they came.
    trace = load_trace(outcome.session.folder / "trace.npz")
    assert trace.current_a.dtype == trace.voltage_v.dtype == np.float32
    assert not (outcome.session.folder / "joulescope-current.f32").exists()


class _Proxy:
    """The simulated vendor driver with one behaviour changed, for faults the device lacks."""

    def __init__(self, drv: object) -> None:
        self._drv = drv

    def __getattr__(self, name: str) -> object:
        return getattr(self._drv, name)


def test_streams_that_start_apart_are_aligned_on_sample_id() -> None:
    b = Bench()

    class SlowStart(_Proxy):
        def publish(self, topic: str, value: object, timeout: float | None = None) -> None:
            self._drv.publish(topic, value)
            if topic.endswith("/ctrl") and value == 1:  # let the instrument run 20 ms between
                with b.timeline.lock:
                    b.clock.advance(0.02)
                time.sleep(0.03)

    b.meter.close()
    b.meter = Joulescope(driver_factory=lambda: SlowStart(b.sim.factory()))
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=RATE_HZ)
        b.meter.start()
        t0, t1 = b.burst(1.0)
        b.meter.wait_for_events(2, 5)
        trace = b.meter.stop()
    finally:
        b.close()
    assert not trace.drops and not np.isnan(trace.current_a).any()
    energy = integrate(trace, window_from_events(trace.events, trace, 1)).energy_j
    assert energy == pytest.approx(b.timeline.charge_between(t0, t1) * VOLTAGE_V, rel=1e-3)


def test_a_repeated_block_is_refused_as_out_of_order() -> None:
    b = Bench()

    class Repeat(_Proxy):
        def subscribe(self, topic: str, flags: object, fn, timeout: float | None = None) -> None:
            seen = []

            def twice(t: str, value: dict) -> None:
                fn(t, value)
                seen.append(1)
                if t.endswith("/s/i/!data") and len(seen) == 3:
                    fn(t, value)

            self._drv.subscribe(topic, flags, twice if topic.endswith("!data") else fn)

    b.meter.close()
    b.meter = Joulescope(driver_factory=lambda: Repeat(b.sim.factory()))
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=RATE_HZ)
        b.meter.start()
        b.burst(0.5)
        with pytest.raises(MeterError, match="i stream went back from sample .* out of order"):
            b.meter.wait_for_events(2, 2)
    finally:
        b.close()


def test_an_asynchronous_device_error_fails_the_run(bench: Bench) -> None:
    bench.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=RATE_HZ)
    bench.meter.start()
    bench.sim.report_error("sensor: ADC overflow")
    with pytest.raises(MeterError, match="reported an error: sensor: ADC overflow"):
        bench.meter.wait_for_events(2, 1)
