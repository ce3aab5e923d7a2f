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
than ``max_gap_s`` and the sampling interval actually seen. Longer gaps are listed and never
bridged silently: a counter bridges them with its own increase (exact, ``bridged_j``); power
readings are interpolated across them and held beyond the first and last reading, and that
estimate is stated (``estimated_j``, ``estimated_s``). :meth:`SeriesEnergy.problem` says when
too little of a window was covered for the number to stand. The alignment bound is the
caller's to state (a measured clock skew, a counter's update period), because it depends on how
the window's clock relates to the meter's.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field

import numpy as np

from energy_monitor.trace import TraceError

# A counter step above this share of the counter's wrap range cannot be told from one wrap
# or several (an aliased read): the counter must be read at least twice per wrap period.
WRAP_NYQUIST = 0.5
# A drop is a wrap only when the increase it implies fits the counter's pace: at most this
# many times the fastest rate (J/s) seen between ordinary readings; otherwise it is a reset.
WRAP_RATE_FACTOR = 10.0
# Below this coverage a window's energy does not stand (MLPerf power asks 99 % of samples).
MIN_COVERAGE = 0.99


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
    resets: int = 0  # counter resets inside the window (energy before each is unknown)
    wraps: int = 0  # counter wraps unwrapped inside the window (exact)
    bridged_j: float = 0.0  # a counter's own increase across gaps (exact, in energy_j)
    bridged_s: float = 0.0  # how much of the window those bridged gaps span
    estimated_j: float = 0.0  # interpolated across gaps or held beyond the readings
    estimated_s: float = 0.0  # how much of the window that estimate spans

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def estimated_share(self) -> float:
        """The share of the window whose energy is an estimate, not a reading."""
        return self.estimated_s / self.duration_s if self.duration_s > 0 else 0.0

    def problem(self, min_coverage: float = MIN_COVERAGE) -> str | None:
        """Why this window's energy does not stand (None when it does): too little of it
        covered by readings or by a counter's bridged increase."""
        known = self.coverage + (self.bridged_s / self.duration_s if self.duration_s > 0
                                 else 0.0)
        if known < min_coverage:
            return (f"readings cover {self.coverage:.1%} of the {self.duration_s:.3f} s window "
                    f"(at least {min_coverage:.0%} needed); {self.estimated_share:.1%} of it is "
                    f"estimated ({self.estimated_j:.6g} J): read the meter more often or "
                    "widen the window")
        return None

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
    # The caller has already checked the readings (strictly increasing times, finite values),
    # as the remote-read decoder does for a whole answer at once: checking 10,000 series one
    # by one again costs more than integrating them.
    checked: InitVar[bool] = False

    def __post_init__(self, checked: bool) -> None:
        self.time_s = np.asarray(self.time_s, dtype=np.float64)
        self.power_w = np.asarray(self.power_w, dtype=np.float64)
        if not checked:
            _checked_times(self.time_s, self.power_w, f"power series {self.source or '?'}")

    def __len__(self) -> int:
        return len(self.time_s)

    def inside(self, start_s: float, end_s: float) -> np.ndarray:
        """Readings strictly inside ``(start_s, end_s)``: what MLPerf's power checker averages."""
        mask = (self.time_s > start_s) & (self.time_s < end_s)
        return self.power_w[mask]

    def energy(self, start_s: float, end_s: float, max_gap_s: float) -> SeriesEnergy:
        """Trapezoid integral over ``[start_s, end_s]``; power at the ends is interpolated.

        Stretches between readings further apart than ``max_gap_s`` are interpolated and the
        parts of the window before the first or after the last reading hold the nearest
        reading: both are reported as gaps, lower the coverage and are stated as an estimate
        (``estimated_j``, ``estimated_s``), so a caller can refuse the result
        (:meth:`SeriesEnergy.problem`).
        """
        t, p = self.time_s, self.power_w
        points_t, points_p = _clip(t, p, start_s, end_s)
        edges = (float(p[0]), float(p[-1])) if len(p) else None
        return _series_energy(t, start_s, end_s, max_gap_s, points_t, points_p,
                              edge_powers=edges)


@dataclass
class CounterSeries:
    """A cumulative energy counter ``energy_j[i]`` read at ``time_s[i]`` (seconds).

    ``wrap_j`` is the counter's range when it wraps (RAPL's ``max_energy_range_uj``); a drop
    is then a wrap or a reset, told apart by :meth:`corrected_steps`. Without it a drop is a
    reset to zero (a restarted exporter or BMC): the energy after a reset is the new reading
    itself. ``max_power_w``, when known (a CPU package's maximum power), sets the shortest
    wrap period, ``wrap_j / max_power_w``: a reading interval longer than half of it is
    refused, since whole wraps could hide in it.
    """

    time_s: np.ndarray
    energy_j: np.ndarray
    source: str = ""
    wrap_j: float | None = None
    max_power_w: float | None = None
    checked: InitVar[bool] = False  # as for PowerSeries

    def __post_init__(self, checked: bool) -> None:
        self.time_s = np.asarray(self.time_s, dtype=np.float64)
        self.energy_j = np.asarray(self.energy_j, dtype=np.float64)
        if not checked:
            _checked_times(self.time_s, self.energy_j, f"energy counter {self.source or '?'}")

    def __len__(self) -> int:
        return len(self.time_s)

    def increments_j(self) -> tuple[np.ndarray, np.ndarray]:
        """Energy between consecutive readings, with wraps and resets corrected, and a mask
        of the steps where a wrap or reset was corrected."""
        step, wrapped, reset = self.corrected_steps()
        return step, wrapped | reset

    def corrected_steps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Energy between consecutive readings, and which steps were wraps and resets.

        Without ``wrap_j`` every drop is a reset: the energy of that step is the new reading
        (what was used before the reset is unknown). With it, a drop is a wrap when the
        increase it implies, ``step + wrap_j``, is at most half the range and at most
        :data:`WRAP_RATE_FACTOR` times the fastest pace seen over the reading interval;
        otherwise a reset. A step above half the range (ordinary or unwrapped) cannot be told
        from several wraps: the reads are too slow for the counter and are refused.
        """
        step = np.diff(self.energy_j)
        fell = step < 0
        if self.wrap_j is None:
            return np.where(fell, self.energy_j[1:], step), np.zeros_like(fell), fell
        wrap = self.wrap_j
        dt = np.diff(self.time_s)
        ordinary = ~fell
        _refuse_aliased(self, step[ordinary], dt[ordinary])
        unwrapped = step + wrap
        limit = np.full(len(step), WRAP_NYQUIST * wrap)
        if np.any(ordinary & (step > 0)):
            pace = float(np.max(step[ordinary] / dt[ordinary]))
            limit = np.minimum(limit, WRAP_RATE_FACTOR * pace * dt)
        wrapped = fell & (unwrapped <= limit)
        reset = fell & ~wrapped
        corrected = np.where(wrapped, unwrapped, np.where(reset, self.energy_j[1:], step))
        return corrected, wrapped, reset

    def energy(self, start_s: float, end_s: float, max_gap_s: float) -> SeriesEnergy:
        """The counter's increase over ``[start_s, end_s]``; the counter is interpolated
        linearly at the window's ends. Gaps between readings are bridged by the counter's own
        increase (``bridged_j``) unless a reset fell in them (what was used before a reset is
        unknown); beyond the first or last reading the nearest interval's mean power is held
        (``estimated_j``). Coverage, a statement about the readings, does not count bridged
        gaps (``bridged_s`` says how long they were); :meth:`SeriesEnergy.problem` does."""
        step, wrapped, reset = self.corrected_steps()
        cumulative = np.concatenate(([0.0], np.cumsum(step)))
        points_t, points_e = _clip(self.time_s, cumulative, start_s, end_s)
        rates = step / np.diff(self.time_s) if len(step) else np.zeros(0)
        edges = (float(rates[0]), float(rates[-1])) if len(rates) else None
        result = _series_energy(self.time_s, start_s, end_s, max_gap_s, points_t, None,
                                cumulative=points_e, reset_steps=reset, edge_powers=edges)
        inside = (self.time_s[1:] > start_s) & (self.time_s[:-1] < end_s)
        return SeriesEnergy(
            result.start_s, result.end_s, result.energy_j, result.readings, result.coverage,
            result.gaps, result.median_interval_s, result.max_interval_s,
            resets=int(np.count_nonzero(reset & inside)),
            wraps=int(np.count_nonzero(wrapped & inside)), bridged_j=result.bridged_j,
            bridged_s=result.bridged_s,
            estimated_j=result.estimated_j, estimated_s=result.estimated_s,
        )


def _refuse_aliased(series: CounterSeries, steps: np.ndarray, dt: np.ndarray) -> None:
    assert series.wrap_j is not None
    if series.max_power_w and len(series.time_s) > 1:
        period_s = series.wrap_j / series.max_power_w
        slowest = float(np.max(np.diff(series.time_s)))
        if slowest > WRAP_NYQUIST * period_s:
            raise TraceError(
                f"energy counter {series.source or '?'}: read every {slowest:.3g} s, but at "
                f"up to {series.max_power_w:g} W it wraps every {period_s:.3g} s: read it at "
                f"least twice per wrap period (every {WRAP_NYQUIST * period_s:.3g} s or less)"
            )
    too_big = steps > WRAP_NYQUIST * series.wrap_j
    if np.any(too_big):
        k = int(np.argmax(steps))
        raise TraceError(
            f"energy counter {series.source or '?'}: {int(np.count_nonzero(too_big))} step(s) "
            f"larger than half its {series.wrap_j:.6g} J wrap range (the largest "
            f"{steps[k]:.6g} J in {dt[k]:.3g} s), so wraps cannot be counted: read it at least "
            f"twice per wrap period (every {0.5 * series.wrap_j / (steps[k] / dt[k]):.3g} s "
            "or less at that pace)"
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
    reset_steps: np.ndarray | None = None, edge_powers: tuple[float, float] | None = None,
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
    held_s = gap_s - _gap_inside_s(gaps, t)  # before the first or after the last reading
    covered = bridged = estimated = unknown_s = bridged_s = 0.0
    if len(points_t) > 1:
        dt = np.diff(points_t)
        mids = 0.5 * (points_t[1:] + points_t[:-1])
        in_gap = _in_gaps(mids, gaps)
        if cumulative is not None:
            pieces = np.diff(cumulative)
            # A gap piece is exact (the counter's increase) unless its step was a reset.
            unknown = np.zeros(len(pieces), dtype=bool)
            if reset_steps is not None and len(reset_steps):
                step_of = np.clip(np.searchsorted(t, mids) - 1, 0, len(reset_steps) - 1)
                unknown = in_gap & reset_steps[step_of]
            covered = float(np.sum(pieces[~in_gap]))
            bridged = float(np.sum(pieces[in_gap & ~unknown]))
            estimated = float(np.sum(pieces[unknown]))
            unknown_s = float(np.sum(dt[unknown]))
            bridged_s = float(np.sum(dt[in_gap & ~unknown]))
        else:
            assert points_p is not None
            pieces = 0.5 * (points_p[1:] + points_p[:-1]) * dt
            covered = float(np.sum(pieces[~in_gap]))
            estimated = float(np.sum(pieces[in_gap]))
            unknown_s = gap_s - held_s
    held_j = 0.0
    if edge_powers is not None and len(t):
        before = max(0.0, min(t[0], end_s) - start_s)
        after = max(0.0, end_s - max(t[-1], start_s))
        held_j = edge_powers[0] * before + edge_powers[1] * after
    readings = int(np.count_nonzero((t > start_s) & (t < end_s)))
    return SeriesEnergy(
        start_s=start_s, end_s=end_s, energy_j=covered + bridged + estimated + held_j,
        readings=readings,
        coverage=max(0.0, 1.0 - gap_s / (end_s - start_s)), gaps=gaps,
        median_interval_s=float(np.median(covering)) if len(covering) else float("nan"),
        max_interval_s=float(np.max(covering)) if len(covering) else float("nan"),
        bridged_j=bridged, bridged_s=bridged_s, estimated_j=estimated + held_j,
        estimated_s=unknown_s + held_s,
    )


def _gap_inside_s(gaps: list[Gap], t: np.ndarray) -> float:
    """The part of the gaps that lies between the first and the last reading."""
    if not len(t):
        return 0.0
    return sum(max(0.0, min(g.end_s, t[-1]) - max(g.start_s, t[0])) for g in gaps)


def _in_gaps(times: np.ndarray, gaps: list[Gap]) -> np.ndarray:
    """Which of ``times`` fall inside one of the (sorted, disjoint) gaps."""
    if not gaps:
        return np.zeros(len(times), dtype=bool)
    starts = np.array([g.start_s for g in gaps])
    ends = np.array([g.end_s for g in gaps])
    k = np.searchsorted(starts, times, side="right") - 1
    return (k >= 0) & (times <= ends[np.maximum(k, 0)])
