"""The timing core: power samples and workload windows on one clock.

A :class:`Trace` is one meter's samples, stored as numpy columns, plus the edges the meter saw on
its timestamp input (:class:`Event`) and the gaps it knows it lost (:class:`Drop`). A
:class:`Window` is an interval of workload activity with a count of work done. :func:`integrate`
turns a trace and a window into energy, refusing to integrate across a sample drop, and carries
the window's *alignment bound*: how far its boundaries may be from the true ones on the trace's
clock (one sample period when the meter itself captured the edge).

Everything here is unit-explicit and knows nothing of ML or of any instrument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:  # compiled by setup.py where a C compiler exists; numpy's einsum stands in where not
    from energy_monitor._f32dot import DISPATCH as _F32_DOT_DISPATCH
    from energy_monitor._f32dot import dot as _f32_dot
except ImportError:
    _f32_dot, _F32_DOT_DISPATCH = None, None


def float32_kernel() -> str | None:
    """What the compiled float32 dot was built for (``"AVX2 or baseline x86-64, chosen at load
    time"``), or None where it was not built and float32 current traces go through einsum."""
    return _F32_DOT_DISPATCH if _f32_dot is not None else None


class TraceError(ValueError):
    """A trace or window cannot be measured as asked; the message says why and what to do."""


class MissingTimestampError(TraceError):
    """A window has fewer than two timestamp edges."""


class SampleDropError(TraceError):
    """A window spans samples the meter lost; its energy would be wrong."""


@dataclass(frozen=True)
class Event:
    """An edge on the meter's timestamp input.

    ``index`` is the first sample recorded after the edge, so samples ``[a.index, b.index)`` lie
    between two edges ``a`` and ``b``. ``time_s`` is on the meter's clock.
    """

    index: int
    time_s: float
    polarity: str = "fall"  # "fall" or "rise": the MLPerf rule accepts either
    channel: str = "timestamp"


@dataclass(frozen=True)
class Drop:
    """``missing`` samples the meter lost somewhere in ``[earliest, index)``.

    Some meters only notice a loss at their next checkpoint (the LPM01A's TimeStamp line every
    1000 samples), so a drop may be known only to lie within a range.
    """

    index: int
    missing: int
    earliest: int | None = None

    @property
    def first_possible(self) -> int:
        return self.index - self.missing if self.earliest is None else self.earliest


@dataclass
class Trace:
    """One meter's samples as columns; exactly one of the three sample kinds is set.

    - ``energy_j``: energy per sample period (LPM01A energy output, EEMBC ``.bin``),
    - ``power_w``: mean power per sample period,
    - ``current_a`` with ``voltage_v``: current and voltage per sample (DC monitors).
    """

    sample_rate_hz: float
    energy_j: np.ndarray | None = None
    power_w: np.ndarray | None = None
    current_a: np.ndarray | None = None
    voltage_v: np.ndarray | None = None
    events: list[Event] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)
    start_time_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.sample_rate_hz > 0:
            raise TraceError(f"sample rate must be positive, got {self.sample_rate_hz!r} Hz")
        kinds = [k for k in ("energy_j", "power_w", "current_a") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise TraceError(
                "a trace holds exactly one of energy_j, power_w or current_a (with voltage_v); "
                f"got {kinds or 'none'}"
            )
        if self.current_a is not None and (
            self.voltage_v is None or len(self.voltage_v) != len(self.current_a)
        ):
            raise TraceError("a current trace needs a voltage column of the same length")

    @property
    def kind(self) -> str:
        """Which column holds the samples: ``energy``, ``power`` or ``current``."""
        if self.energy_j is not None:
            return "energy"
        return "power" if self.power_w is not None else "current"

    @property
    def period_s(self) -> float:
        return 1.0 / self.sample_rate_hz

    def __len__(self) -> int:
        column = {"energy": self.energy_j, "power": self.power_w, "current": self.current_a}
        return len(column[self.kind])

    def time_of(self, index: int | float) -> float:
        """Meter-clock time of the start of sample ``index``."""
        return self.start_time_s + index / self.sample_rate_hz

    def energy_per_sample_j(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Energy of each sample in ``[start, stop)``, whatever the trace stores."""
        sl = slice(start, stop)
        if self.energy_j is not None:
            return np.asarray(self.energy_j[sl], dtype=np.float64)
        if self.power_w is not None:
            return np.asarray(self.power_w[sl], dtype=np.float64) / self.sample_rate_hz
        current = np.asarray(self.current_a[sl], dtype=np.float64)
        return current * np.asarray(self.voltage_v[sl], dtype=np.float64) / self.sample_rate_hz

    def energy_sum_j(self, start: int = 0, stop: int | None = None) -> float:
        """Total energy of samples ``[start, stop)``, read once at memory bandwidth.

        Why not ``np.sum(energy_per_sample_j())``: for current traces that builds two
        full-size float64 temporaries (the product, then the division), 3-7x the time of
        reading the columns. ``einsum`` forms the products in small buffers instead, and every
        kind is accumulated in float64 whatever the storage dtype (a float32 column stays
        float32 in memory; the product of two float32 values is exact in float64). Two float32
        columns (the Joulescope's) go through the compiled ``_f32dot`` where it was built:
        einsum's casting buffers take them to about 2x the reading time.
        """
        sl = slice(start, stop)
        if self.energy_j is not None:
            return float(np.sum(self.energy_j[sl], dtype=np.float64))
        if self.power_w is not None:
            return float(np.sum(self.power_w[sl], dtype=np.float64)) / self.sample_rate_hz
        current, voltage = np.asarray(self.current_a[sl]), np.asarray(self.voltage_v[sl])
        if (_f32_dot is not None and current.dtype == voltage.dtype == np.float32
                and all(c.flags.c_contiguous and c.flags.aligned for c in (current, voltage))):
            return _f32_dot(current, voltage) / self.sample_rate_hz
        product = np.einsum("i,i->", current, voltage, dtype=np.float64)
        return float(product) / self.sample_rate_hz

    def power_w_column(self) -> np.ndarray:
        """Mean power of each sample period, for plots."""
        return self.energy_per_sample_j() * self.sample_rate_hz

    def drops_in(self, start: int, stop: int) -> list[Drop]:
        """Drops that may lie inside samples ``[start, stop)``."""
        return [d for d in self.drops if d.first_possible < stop and d.index > start]


@dataclass(frozen=True)
class Window:
    """An interval of workload activity on the trace's clock.

    ``start_index``/``end_index`` bound the samples (end exclusive) when the window came from
    the meter's own edges; ``alignment_bound_s`` says how far each boundary may be off.
    """

    start_s: float
    end_s: float
    work_count: int
    source: str
    alignment_bound_s: float
    start_index: int | None = None
    end_index: int | None = None
    label: str = ""

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class WindowEnergy:
    """The energy a trace holds over one window."""

    window: Window
    energy_j: float
    samples: int
    duration_s: float

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / self.duration_s if self.duration_s > 0 else float("nan")

    @property
    def energy_per_work_j(self) -> float:
        return self.energy_j / self.window.work_count


def window_from_events(
    events: Sequence[Event], trace: Trace, work_count: int, label: str = ""
) -> Window:
    """The MLPerf Tiny rule: a window spans the *last two* timestamp edges seen for it.

    Extra edges before them (a boot pulse, a stray ``timestamp``) are ignored, as the MLCommons
    runner does. Either polarity counts. The bound is one sample period: the meter places each
    edge on the first sample after it.
    """
    if len(events) < 2:
        raise MissingTimestampError(
            f"window {label or '?'} has {len(events)} timestamp edge(s), needs 2: check the "
            "timestamp pin wiring and the meter's event source (eventsrc)"
        )
    first, last = events[-2], events[-1]
    if last.index < first.index:
        raise TraceError(f"window {label or '?'}: timestamp edges are out of order")
    return Window(
        start_s=trace.time_of(first.index),
        end_s=trace.time_of(last.index),
        work_count=work_count,
        source="meter-edge",
        alignment_bound_s=trace.period_s,
        start_index=first.index,
        end_index=last.index,
        label=label,
    )


def integrate(trace: Trace, window: Window) -> WindowEnergy:
    """Sum the trace's energy over the window's samples ``[start, end)``.

    A window given only in time is mapped to samples by rounding to the nearest sample
    boundary. A drop inside the window raises :class:`SampleDropError`: the energy of the
    missing samples is unknown, so the window cannot be scored.
    """
    start = window.start_index
    stop = window.end_index
    if start is None or stop is None:
        start = round((window.start_s - trace.start_time_s) * trace.sample_rate_hz)
        stop = round((window.end_s - trace.start_time_s) * trace.sample_rate_hz)
    if not 0 <= start <= stop <= len(trace):
        raise TraceError(
            f"window {window.label or '?'} covers samples {start}..{stop} but the trace has "
            f"{len(trace)}: the meter stopped before the window ended"
        )
    dropped = trace.drops_in(start, stop)
    if dropped:
        lost = sum(d.missing for d in dropped)
        raise SampleDropError(
            f"window {window.label or '?'} spans {len(dropped)} sample drop(s), {lost} samples "
            f"lost (first before sample {dropped[0].index}): lower the sample rate or use a "
            "faster link, then measure again"
        )
    energy = trace.energy_sum_j(start, stop)
    samples = stop - start
    return WindowEnergy(
        window=window, energy_j=energy, samples=samples, duration_s=samples / trace.sample_rate_hz
    )


def save_trace(trace: Trace, path: Path) -> Path:
    """Write a trace (samples, edges, drops) to a compressed ``.npz`` that :func:`load_trace`
    reads back; the samples are stored in the kind the meter gave."""
    columns = {
        k: getattr(trace, k)
        for k in ("energy_j", "power_w", "current_a", "voltage_v")
        if getattr(trace, k) is not None
    }
    np.savez_compressed(
        path,
        sample_rate_hz=trace.sample_rate_hz,
        start_time_s=trace.start_time_s,
        event_index=np.array([e.index for e in trace.events], dtype=np.int64),
        event_time_s=np.array([e.time_s for e in trace.events], dtype=np.float64),
        event_polarity=np.array([e.polarity for e in trace.events], dtype="U4"),
        event_channel=np.array([e.channel for e in trace.events], dtype="U32"),
        drop_index=np.array([d.index for d in trace.drops], dtype=np.int64),
        drop_missing=np.array([d.missing for d in trace.drops], dtype=np.int64),
        drop_earliest=np.array([d.first_possible for d in trace.drops], dtype=np.int64),
        **columns,
    )
    return path


def load_trace(path: Path) -> Trace:
    with np.load(path) as z:
        columns = {
            k: z[k] for k in ("energy_j", "power_w", "current_a", "voltage_v") if k in z.files
        }
        return Trace(
            sample_rate_hz=float(z["sample_rate_hz"]),
            start_time_s=float(z["start_time_s"]),
            events=[
                Event(int(i), float(t), str(p), str(c))
                for i, t, p, c in zip(
                    z["event_index"], z["event_time_s"], z["event_polarity"], z["event_channel"],
                    strict=True,
                )
            ],
            drops=[
                Drop(int(i), int(m), int(e))
                for i, m, e in zip(
                    z["drop_index"], z["drop_missing"], z["drop_earliest"], strict=True
                )
            ],
            **columns,
        )
