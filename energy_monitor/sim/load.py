"""The simulated board's supply as the meter sees it: current over virtual time, and pin edges.

The virtual lab's DUT and the simulated meter share one :class:`VirtualClock`. Virtual time runs
with the wall clock while the DUT idles or talks, and *jumps* when the DUT does long work (a
10 s inference window): the DUT books the work on the :class:`LoadTimeline` first, then advances
the clock, so the meter emits those 10 s of samples at once, exactly as if they had been measured.

Both sides take the timeline's lock, so the meter never integrates past a point the DUT has not
yet described. Every integral is exact (piecewise-constant current), which gives the tests their
ground truth.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class VirtualClock:
    """Seconds since the lab started: wall time plus every jump the DUT has made."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._offset_s = 0.0

    def now(self) -> float:
        return time.monotonic() - self._t0 + self._offset_s

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("virtual time only moves forward")
        self._offset_s += seconds


@dataclass(frozen=True)
class PinEdge:
    """A timestamp-pin edge at virtual time ``time_s``."""

    time_s: float
    polarity: str  # "fall" or "rise"


class LoadTimeline:
    """Piecewise-constant supply current over virtual time, with timestamp-pin edges.

    ``lock`` must be held around a read of ``clock.now()`` and the bookings that depend on it,
    by the DUT and by the meter alike.
    """

    def __init__(
        self, clock: VirtualClock, idle_current_a: float, *, powered: bool = True
    ) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self._times: list[float] = [0.0]  # segment start times, ascending
        self._currents: list[float] = [idle_current_a]
        self._edges: list[PinEdge] = []
        # Whether the board has supply. On a bench in energy mode only the energy monitor
        # powers the DUT: the monitor's simulator switches this, the software DUT listens.
        self.powered = powered
        self._power_listeners: list[Callable[[bool], None]] = []

    def on_power(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(on)`` whenever the supply is switched on or off."""
        with self.lock:
            self._power_listeners.append(listener)

    def set_powered(self, on: bool) -> None:
        """The supply's output is switched (by the simulated monitor)."""
        with self.lock:
            if on == self.powered:
                return
            self.powered = on
            listeners = list(self._power_listeners)
        for listener in listeners:
            listener(on)

    def set_current(self, at_s: float, current_a: float) -> None:
        """From ``at_s`` on, the board draws ``current_a`` (until the next change)."""
        with self.lock:
            i = bisect.bisect_right(self._times, at_s)
            # A booking replaces whatever was planned after it: the DUT books in time order.
            del self._times[i:], self._currents[i:]
            self._times.append(at_s)
            self._currents.append(current_a)

    def add_edge(self, at_s: float, polarity: str) -> None:
        with self.lock:
            self._edges.append(PinEdge(at_s, polarity))

    def _cumulative_charge(self, times: np.ndarray) -> np.ndarray:
        """Charge drawn from 0 to each of ``times``: piecewise linear, exact at the knots."""
        knots = np.asarray(self._times, dtype=np.float64)
        currents = np.asarray(self._currents, dtype=np.float64)
        at_knots = np.concatenate(([0.0], np.cumsum(currents[:-1] * np.diff(knots))))
        idx = np.clip(np.searchsorted(knots, times, side="right") - 1, 0, None)
        return at_knots[idx] + currents[idx] * (times - knots[idx])

    def charge_between(self, t0: float, t1: float) -> float:
        """Exact charge in coulombs drawn over ``[t0, t1)``."""
        with self.lock:
            q0, q1 = self._cumulative_charge(np.array([t0, t1], dtype=np.float64))
            return float(q1 - q0)

    def charge_per_sample(self, t0: float, period_s: float, count: int) -> np.ndarray:
        """Charge of ``count`` consecutive sample periods starting at ``t0``."""
        with self.lock:
            bounds = t0 + period_s * np.arange(count + 1, dtype=np.float64)
            return np.diff(self._cumulative_charge(bounds))

    def charge_of_periods(self, t0: float, period_s: float, first: int, count: int) -> np.ndarray:
        """Charge of sample periods ``first .. first + count - 1`` of a grid starting at ``t0``:
        the same floats for a period however the range is split (an instrument that stores its
        samples gives the same value each time one is read)."""
        with self.lock:
            bounds = t0 + period_s * np.arange(first, first + count + 1, dtype=np.float64)
            return np.diff(self._cumulative_charge(bounds))

    def edges_between(self, t0: float, t1: float) -> list[PinEdge]:
        """Edges with ``t0 <= time < t1``, in time order."""
        with self.lock:
            return sorted(
                (e for e in self._edges if t0 <= e.time_s < t1), key=lambda e: e.time_s
            )
