"""Timestamped readings: the timing core for meters that do not sample on a fixed grid.

:class:`~energy_monitor.trace.Trace` serves DC monitors that stream at a fixed rate and see
the DUT's edges themselves. Analyzers over PTDaemon (about 1 Hz), PDUs, BMCs, on-chip counters
and Prometheus report readings each stamped with its own time, sometimes late, sometimes
missing. Two kinds cover them:

- :class:`PowerSeries`: instantaneous power readings (W), integrated by the trapezoid rule;
- :class:`CounterSeries`: a cumulative energy counter (J) that may wrap (RAPL) or reset (an
  exporter or BMC restart); its energy over a window is the counter's increase.

Windows come in wall-clock seconds (UTC epoch), not sample indices, and the result states
what the readings could support: the share of the window covered by readings no further apart
than ``max_gap_s`` (longer gaps are listed, never bridged silently) and the sampling interval
actually seen. The alignment bound is the caller's to state (a measured clock skew, a
counter's update period), because it depends on how the window's clock relates to the meter's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from energy_monitor.trace import TraceError


@dataclass(frozen=True)
class Gap:
    """Readings ``start_s`` and ``end_s`` are further apart than the allowed gap."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class SeriesEnergy:
    """The energy a series holds over ``[start_s, end_s]``, with what it is based on."""

    start_s: float
    end_s: float
    energy_j: float
    readings: int  # readings inside the window
    coverage: float  # share of the window between readings no more than max_gap_s apart
    gaps: list[Gap] = field(default_factory=list)
    median_interval_s: float = float("nan")
    max_interval_s: float = float("nan")
    resets: int = 0  # counter resets or wraps corrected inside the window

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / self.duration_s if self.duration_s > 0 else float("nan")


def _checked_times(time_s: np.ndarray, values: np.ndarray, what: str) -> None:
    if time_s.ndim != 1 or time_s.shape != values.shape:
        raise TraceError(f"{what}: times and values must be 1-D columns of the same length")
    if len(time_s) and not np.all(np.diff(time_s) > 0):
        raise TraceError(
            f"{what}: reading times must strictly increase; sort the readings and drop "
            "duplicates before building the series"
        )
    if not np.all(np.isfinite(values)):
        raise TraceError(f"{what}: readings must be finite numbers (found NaN or inf)")


@dataclass
class PowerSeries:
    """Instantaneous power readings ``power_w[i]`` taken at ``time_s[i]`` (seconds)."""

    time_s: np.ndarray
    power_w: np.ndarray
    source: str = ""  # which meter and channel, for reports

    def __post_init__(self) -> None:
        self.time_s = np.asarray(self.time_s, dtype=np.float64)
        self.power_w = np.asarray(self.power_w, dtype=np.float64)
        _checked_times(self.time_s, self.power_w, f"power series {self.source or '?'}")

    def __len__(self) -> int:
        return len(self.time_s)

    def inside(self, start_s: float, end_s: float) -> np.ndarray:
        """Readings strictly inside ``(start_s, end_s)``: what MLPerf's power checker averages."""
        mask = (self.time_s > start_s) & (self.time_s < end_s)
        return self.power_w[mask]

    def energy(self, start_s: float, end_s: float, max_gap_s: float) -> SeriesEnergy:
        """Trapezoid integral over ``[start_s, end_s]``; power at the ends is interpolated.

        Stretches between readings further apart than ``max_gap_s`` (and the parts of the
        window before the first or after the last reading) are not integrated: they are
        reported as gaps and lower the coverage, so a caller can refuse the result.
        """
        t, p = self.time_s, self.power_w
        points_t, points_p = _clip(t, p, start_s, end_s)
        return _series_energy(t, start_s, end_s, max_gap_s, points_t, points_p)


@dataclass
class CounterSeries:
    """A cumulative energy counter ``energy_j[i]`` read at ``time_s[i]`` (seconds).

    ``wrap_j`` is the counter's range when it wraps (RAPL's ``max_energy_range_uj``); a drop
    in the counter is then a wrap. Without it a drop is a reset to zero (a restarted exporter
    or BMC): the energy after a reset is the new reading itself.
    """

    time_s: np.ndarray
    energy_j: np.ndarray
    source: str = ""
    wrap_j: float | None = None

    def __post_init__(self) -> None:
        self.time_s = np.asarray(self.time_s, dtype=np.float64)
        self.energy_j = np.asarray(self.energy_j, dtype=np.float64)
        _checked_times(self.time_s, self.energy_j, f"energy counter {self.source or '?'}")

    def __len__(self) -> int:
        return len(self.time_s)

    def increments_j(self) -> tuple[np.ndarray, np.ndarray]:
        """Energy between consecutive readings, with wraps and resets corrected, and a mask
        of the steps where a wrap or reset was corrected."""
        step = np.diff(self.energy_j)
        fell = step < 0
        if self.wrap_j is not None:
            step = np.where(fell, step + self.wrap_j, step)
        else:
            step = np.where(fell, self.energy_j[1:], step)
        return step, fell

    def energy(self, start_s: float, end_s: float, max_gap_s: float) -> SeriesEnergy:
        """The counter's increase over ``[start_s, end_s]``; the counter is interpolated
        linearly at the window's ends. Gaps and coverage as for :class:`PowerSeries`."""
        step, fell = self.increments_j()
        cumulative = np.concatenate(([0.0], np.cumsum(step)))
        points_t, points_e = _clip(self.time_s, cumulative, start_s, end_s)
        result = _series_energy(self.time_s, start_s, end_s, max_gap_s, points_t, None,
                                cumulative=points_e)
        inside = (self.time_s[1:] > start_s) & (self.time_s[:-1] < end_s)
        result_resets = int(np.count_nonzero(fell & inside))
        return SeriesEnergy(
            result.start_s, result.end_s, result.energy_j, result.readings, result.coverage,
            result.gaps, result.median_interval_s, result.max_interval_s, result_resets,
        )


def _clip(
    t: np.ndarray, v: np.ndarray, start_s: float, end_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Readings inside the window plus values interpolated at its ends (where readings
    exist on both sides of an end)."""
    if end_s <= start_s:
        raise TraceError(f"a window must end after it starts ({start_s} .. {end_s})")
    mask = (t > start_s) & (t < end_s)
    head_t: list[float] = []
    head_v: list[float] = []
    tail_t: list[float] = []
    tail_v: list[float] = []
    if len(t) and t[0] <= start_s <= t[-1]:
        head_t, head_v = [start_s], [float(np.interp(start_s, t, v))]
    if len(t) and t[0] <= end_s <= t[-1]:
        tail_t, tail_v = [end_s], [float(np.interp(end_s, t, v))]
    return (np.concatenate((head_t, t[mask], tail_t)),
            np.concatenate((head_v, v[mask], tail_v)))


def _series_energy(
    t: np.ndarray, start_s: float, end_s: float, max_gap_s: float,
    points_t: np.ndarray, points_p: np.ndarray | None, cumulative: np.ndarray | None = None,
) -> SeriesEnergy:
    if not max_gap_s > 0:
        raise TraceError(f"max_gap_s must be positive, got {max_gap_s!r}")
    # Intervals between the real readings that bound each piece of the window.
    intervals = np.diff(t)
    lo = np.searchsorted(t, start_s, side="right") - 1  # reading at or before start
    hi = np.searchsorted(t, end_s, side="left")  # reading at or after end
    gaps: list[Gap] = []
    if len(t) == 0 or t[0] > start_s:
        gaps.append(Gap(start_s, min(end_s, t[0]) if len(t) else end_s))
    covering = intervals[max(lo, 0):min(hi, len(t) - 1)] if len(t) > 1 else intervals[:0]
    first = max(lo, 0)
    for k in np.nonzero(covering > max_gap_s)[0] + first:
        gaps.append(Gap(max(t[k], start_s), min(t[k + 1], end_s)))
    if len(t) and t[-1] < end_s:
        gaps.append(Gap(max(t[-1], start_s), end_s))
    gap_s = sum(g.duration_s for g in gaps)
    energy = 0.0
    if len(points_t) > 1:
        dt = np.diff(points_t)
        mids = 0.5 * (points_t[1:] + points_t[:-1])
        usable = ~_in_gaps(mids, gaps)
        if cumulative is not None:
            energy = float(np.sum(np.diff(cumulative)[usable]))
        else:
            assert points_p is not None
            energy = float(np.sum((0.5 * (points_p[1:] + points_p[:-1]) * dt)[usable]))
    readings = int(np.count_nonzero((t > start_s) & (t < end_s)))
    return SeriesEnergy(
        start_s=start_s, end_s=end_s, energy_j=energy, readings=readings,
        coverage=max(0.0, 1.0 - gap_s / (end_s - start_s)), gaps=gaps,
        median_interval_s=float(np.median(covering)) if len(covering) else float("nan"),
        max_interval_s=float(np.max(covering)) if len(covering) else float("nan"),
    )


def _in_gaps(times: np.ndarray, gaps: list[Gap]) -> np.ndarray:
    """Which of ``times`` fall inside one of the (sorted, disjoint) gaps."""
    if not gaps:
        return np.zeros(len(times), dtype=bool)
    starts = np.array([g.start_s for g in gaps])
    ends = np.array([g.end_s for g in gaps])
    k = np.searchsorted(starts, times, side="right") - 1
    return (k >= 0) & (times <= ends[np.maximum(k, 0)])
