"""The timing core: windows from edges, integration of every sample kind, drops refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from energy_monitor.trace import (
    Drop,
    Event,
    MissingTimestampError,
    SampleDropError,
    Trace,
    TraceError,
    Window,
    integrate,
    load_trace,
    save_trace,
    window_from_events,
)


def ramp_trace(n: int = 1000, rate: float = 1000.0, **kw) -> Trace:
    return Trace(sample_rate_hz=rate, energy_j=np.arange(n, dtype=np.float64), **kw)


def test_window_uses_last_two_edges_of_either_polarity() -> None:
    trace = ramp_trace()
    events = [Event(5, 0.005, "fall"), Event(100, 0.1, "rise"), Event(300, 0.3, "fall")]
    w = window_from_events(events, trace, work_count=10, label="w")
    assert (w.start_index, w.end_index) == (100, 300)
    assert w.start_s == pytest.approx(0.1) and w.end_s == pytest.approx(0.3)
    assert w.alignment_bound_s == pytest.approx(0.001)  # one sample period
    we = integrate(trace, w)
    assert we.energy_j == sum(range(100, 300))
    assert we.samples == 200 and we.duration_s == pytest.approx(0.2)
    assert we.energy_per_work_j == pytest.approx(sum(range(100, 300)) / 10)


def test_missing_timestamp_is_an_error() -> None:
    with pytest.raises(MissingTimestampError, match="1 timestamp edge"):
        window_from_events([Event(5, 0.005)], ramp_trace(), 1)


def test_power_and_current_traces_integrate_to_energy() -> None:
    power = Trace(sample_rate_hz=100.0, power_w=np.full(100, 2.0))
    current = Trace(sample_rate_hz=100.0, current_a=np.full(100, 0.5), voltage_v=np.full(100, 4.0))
    for trace in (power, current):
        we = integrate(trace, Window(0.0, 0.5, 1, "test", 0.01))
        assert we.energy_j == pytest.approx(1.0)  # 2 W for 0.5 s
        assert we.mean_power_w == pytest.approx(2.0)


def test_trace_needs_exactly_one_sample_kind() -> None:
    with pytest.raises(TraceError, match="exactly one"):
        Trace(sample_rate_hz=1.0, energy_j=np.zeros(2), power_w=np.zeros(2))
    with pytest.raises(TraceError, match="voltage"):
        Trace(sample_rate_hz=1.0, current_a=np.zeros(2))
    with pytest.raises(TraceError, match="positive"):
        Trace(sample_rate_hz=0.0, energy_j=np.zeros(2))


def test_drop_inside_window_refuses_to_integrate() -> None:
    trace = ramp_trace(drops=[Drop(index=500, missing=3, earliest=400)])
    with pytest.raises(SampleDropError, match="3 samples lost"):
        integrate(trace, Window(0, 0, 1, "t", 0.001, start_index=450, end_index=600))
    # The drop may lie anywhere in [400, 500): a window ending at 420 may hold it too.
    with pytest.raises(SampleDropError):
        integrate(trace, Window(0, 0, 1, "t", 0.001, start_index=100, end_index=420))
    # Windows clear of the drop's range integrate normally.
    for start, stop in ((0, 400), (500, 900)):
        window = Window(0, 0, 1, "t", 0.001, start_index=start, end_index=stop)
        assert integrate(trace, window).samples == 400


def test_window_past_the_end_of_the_trace() -> None:
    with pytest.raises(TraceError, match="stopped before the window ended"):
        integrate(ramp_trace(100), Window(0, 0, 1, "t", 0.001, start_index=50, end_index=200))


def test_save_and_load_round_trip(tmp_path) -> None:
    trace = ramp_trace(events=[Event(3, 0.003, "rise")], drops=[Drop(10, 2)])
    loaded = load_trace(save_trace(trace, tmp_path / "t.npz"))
    assert np.array_equal(loaded.energy_j, trace.energy_j)
    assert loaded.events == trace.events
    assert loaded.drops == [Drop(10, 2, 8)]
    assert loaded.sample_rate_hz == trace.sample_rate_hz


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_current_traces_sum_exact_products_in_float64(dtype) -> None:
    """The product of two stored values is formed in float64 (exact for float32 columns) and
    accumulated in float64: the result matches math.fsum of the exact products."""
    rng = np.random.default_rng(3)
    current = (rng.random(200_001) * 1e-3).astype(dtype)
    voltage = (1.8 + rng.random(200_001) * 1e-2).astype(dtype)
    trace = Trace(sample_rate_hz=1000.0, current_a=current, voltage_v=voltage)
    exact = math.fsum((current.astype(np.float64) * voltage.astype(np.float64)).tolist()) / 1000
    got = integrate(trace, Window(0, 0, 1, "t", 0.001, start_index=0, end_index=len(trace)))
    assert got.energy_j == pytest.approx(exact, rel=1e-13)
    assert trace.energy_sum_j(5, 17) == pytest.approx(
        float(np.sum(trace.energy_per_sample_j(5, 17))), rel=1e-13)
