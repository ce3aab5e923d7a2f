"""The timestamped series of the timing core: trapezoid power, counters with wraps and resets,
gaps and coverage."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from energy_monitor.series import CounterSeries, PowerSeries
from energy_monitor.series_batch import search_segments
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


def test_a_gap_longer_than_allowed_is_interpolated_and_said_so() -> None:
    t = np.concatenate([np.arange(0.0, 40.0), np.arange(50.0, 100.0)])  # no readings 40..49
    series = PowerSeries(t, np.full(len(t), 100.0))
    result = series.energy(0.0, 99.0, max_gap_s=2.0)
    assert [(g.start_s, g.end_s) for g in result.gaps] == [(39.0, 50.0)]
    assert result.coverage == pytest.approx(1 - 11 / 99)
    assert result.energy_j == pytest.approx(100.0 * 99)
    assert (result.estimated_j, result.estimated_s) == (pytest.approx(1100.0), 11.0)
    assert result.max_interval_s == 11.0
    assert "readings cover 88.9% of the 99.000 s window" in result.problem()
    assert result.problem(min_coverage=0.8) is None


def test_window_beyond_the_readings_holds_the_nearest_and_says_so() -> None:
    series = PowerSeries(np.arange(10.0, 21.0), np.full(11, 5.0))
    result = series.energy(5.0, 25.0, max_gap_s=1.5)
    assert [(g.start_s, g.end_s) for g in result.gaps] == [(5.0, 10.0), (20.0, 25.0)]
    assert result.coverage == pytest.approx(0.5)
    assert result.energy_j == pytest.approx(100.0)
    assert (result.estimated_j, result.estimated_s) == (pytest.approx(50.0), 10.0)
    assert result.estimated_share == pytest.approx(0.5) and result.problem() is not None


def test_window_shorter_than_the_reading_interval_is_interpolated_and_invalid() -> None:
    # The case: 10 s readings, a 5 s window inside one interval. The power ramps
    # 40 -> 60 W across the interval; the window's true energy (linear power) is interpolated.
    series = PowerSeries(np.array([0.0, 10.0, 20.0]), np.array([50.0, 40.0, 60.0]))
    result = series.energy(12.0, 17.0, max_gap_s=2.0)
    assert result.energy_j == pytest.approx(5.0 * (44.0 + 54.0) / 2)
    assert result.coverage == 0.0 and result.estimated_share == 1.0
    assert result.problem().startswith("readings cover 0.0% of the 5.000 s window")


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
    assert (result.wraps, result.resets) == (1, 0)
    assert result.energy_j == pytest.approx(20_000.0 * 15)


def test_a_counter_gap_is_bridged_by_its_own_increase() -> None:
    # 200 s at 100 W, read each second but for a 41 s gap: the counter knows the gap's energy.
    t = np.concatenate([np.arange(0.0, 80.0), np.arange(121.0, 201.0)])
    series = CounterSeries(t, 100.0 * t)
    result = series.energy(0.0, 200.0, max_gap_s=2.0)
    assert result.energy_j == pytest.approx(20_000.0)
    assert result.bridged_j == pytest.approx(4_200.0) and result.estimated_j == 0.0
    assert [(g.start_s, g.end_s) for g in result.gaps] == [(79.0, 121.0)]
    assert result.coverage == pytest.approx(1 - 42 / 200) and result.bridged_s == 42.0
    assert result.problem() is None  # the counter's increase is exact


def test_a_genuine_reset_on_a_wrapping_counter_is_read_as_a_reset() -> None:
    wrap = 262143.328850
    t = np.arange(0.0, 21.0)
    counter = 1000.0 * t + 100_000.0  # 1 kW, far from the wrap
    counter[11:] = 1000.0 * (t[11:] - 10.5)  # the exporter restarted at t = 10.5
    result = CounterSeries(t, counter, wrap_j=wrap).energy(0.0, 20.0, max_gap_s=1.5)
    assert (result.resets, result.wraps) == (1, 0)
    assert result.energy_j == pytest.approx(1000.0 * 20 - 500.0)  # 0.5 s before the reset lost


def test_reads_slower_than_the_wrap_period_are_refused() -> None:
    wrap = 1000.0
    # 7 s reads of a counter that wraps every 5 s at 200 W: each step looks like 400 J, so
    # only the counter's known maximum power can tell; with it the reads are refused.
    t = np.arange(0.0, 50.0, 7.0)
    aliased = CounterSeries(t, np.mod(200.0 * t, wrap), wrap_j=wrap, max_power_w=250.0)
    with pytest.raises(TraceError, match="wraps every 4 s: read it at least twice per wrap"):
        aliased.energy(0.0, 42.0, 10.0)
    # 4.5 s reads: 900 J steps, more than half the range, cannot be told from wraps.
    t = np.arange(0.0, 45.0, 4.5)
    with pytest.raises(TraceError, match="larger than half its 1000 J wrap range"):
        CounterSeries(t, np.mod(200.0 * t, wrap), wrap_j=wrap).energy(0.0, 40.0, 10.0)


def test_bad_series_are_refused_with_the_fix() -> None:
    with pytest.raises(TraceError, match="strictly increase"):
        PowerSeries(np.array([1.0, 1.0]), np.array([2.0, 3.0]))
    with pytest.raises(TraceError, match="NaN"):
        PowerSeries(np.array([1.0, 2.0]), np.array([2.0, np.nan]))
    with pytest.raises(TraceError, match="end after it starts"):
        PowerSeries(np.array([1.0, 2.0]), np.array([2.0, 3.0])).energy(2.0, 1.0, 1.0)


@given(st.lists(st.lists(st.integers(-50, 50), max_size=12), min_size=1, max_size=8),
       st.integers(-60, 60), st.booleans())
def test_search_segments_is_searchsorted_per_segment(segments, x, right) -> None:
    """The batched bisection both batch integration and the remote-read cut rely on."""
    t = np.array([v for s in segments for v in sorted(s)], dtype=np.int64)
    hi = np.cumsum([len(s) for s in segments])
    lo = hi - [len(s) for s in segments]
    side = "right" if right else "left"
    expected = [a + np.searchsorted(t[a:b], x, side=side) for a, b in zip(lo, hi, strict=True)]
    assert search_segments(t, lo, hi, x, right=right).tolist() == expected
