"""The timestamped series of the timing core: trapezoid power, counters with wraps and resets,
gaps and coverage."""

import numpy as np
import pytest

from energy_monitor.series import CounterSeries, PowerSeries
from energy_monitor.trace import TraceError


def test_linear_power_ramp_integrates_exactly_with_interpolated_ends() -> None:
    t = np.arange(0.0, 101.0)  # 1 Hz readings, 0..100 s
    series = PowerSeries(t, 10.0 + 0.5 * t, source="ramp")
    result = series.energy(10.25, 90.75, max_gap_s=1.5)
    # integral of 10 + 0.5 t from a to b
    a, b = 10.25, 90.75
    assert result.energy_j == pytest.approx(10 * (b - a) + 0.25 * (b * b - a * a), rel=1e-12)
    assert result.coverage == 1.0
    assert result.gaps == []
    assert result.readings == 80  # 11 .. 90
    assert result.median_interval_s == 1.0
    assert result.mean_power_w == pytest.approx(10 + 0.25 * (a + b))


def test_a_gap_longer_than_allowed_is_reported_and_not_bridged() -> None:
    t = np.concatenate([np.arange(0.0, 40.0), np.arange(50.0, 100.0)])  # no readings 40..49
    series = PowerSeries(t, np.full(len(t), 100.0))
    result = series.energy(0.0, 99.0, max_gap_s=2.0)
    assert [(g.start_s, g.end_s) for g in result.gaps] == [(39.0, 50.0)]
    assert result.coverage == pytest.approx(1 - 11 / 99)
    assert result.energy_j == pytest.approx(100.0 * (99 - 11))
    assert result.max_interval_s == 11.0


def test_window_beyond_the_readings_is_uncovered_at_both_ends() -> None:
    series = PowerSeries(np.arange(10.0, 21.0), np.full(11, 5.0))
    result = series.energy(5.0, 25.0, max_gap_s=1.5)
    assert [(g.start_s, g.end_s) for g in result.gaps] == [(5.0, 10.0), (20.0, 25.0)]
    assert result.coverage == pytest.approx(0.5)
    assert result.energy_j == pytest.approx(50.0)


def test_inside_is_strict_as_the_mlperf_checker_selects() -> None:
    series = PowerSeries(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert list(series.inside(1.0, 4.0)) == [2.0, 3.0]


def test_counter_reset_counts_the_new_reading() -> None:
    t = np.arange(0.0, 11.0)
    counter = 100.0 * t  # 100 W
    counter[6:] = 100.0 * (t[6:] - 5.5)  # restarted at t=5.5 from zero
    result = CounterSeries(t, counter, source="node7").energy(0.0, 10.0, max_gap_s=1.5)
    assert result.resets == 1
    assert result.energy_j == pytest.approx(100.0 * 10 - 100.0 * 0.5)  # 0.5 s lost in reset


def test_counter_wrap_is_unwrapped_with_its_range() -> None:
    wrap = 262143.328850  # a RAPL max_energy_range in joules
    t = np.arange(0.0, 21.0)
    true = 20_000.0 * t + 250_000.0
    series = CounterSeries(t, np.mod(true, wrap), wrap_j=wrap)
    result = series.energy(2.5, 17.5, max_gap_s=1.5)
    assert result.resets == 1
    assert result.energy_j == pytest.approx(20_000.0 * 15)


def test_bad_series_are_refused_with_the_fix() -> None:
    with pytest.raises(TraceError, match="strictly increase"):
        PowerSeries(np.array([1.0, 1.0]), np.array([2.0, 3.0]))
    with pytest.raises(TraceError, match="NaN"):
        PowerSeries(np.array([1.0, 2.0]), np.array([2.0, np.nan]))
    with pytest.raises(TraceError, match="end after it starts"):
        PowerSeries(np.array([1.0, 2.0]), np.array([2.0, 3.0])).energy(2.0, 1.0, 1.0)
