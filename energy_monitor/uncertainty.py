"""The uncertainty budget of a window's energy, combined as the GUM does.

Why: the integration is exact, so the number's doubt comes from the instrument and the timing,
and a reader comparing two results needs it beside the value. Each term is a standard
uncertainty (JCGM 100:2008, "GUM"): a datasheet's ``±a`` limit is read as a rectangular
distribution, u = a/√3 (GUM 4.3.7); a quantisation step q as u = q/√12 per sample. Terms are
independent and add in quadrature; the expanded uncertainty is U = k·u_c with **k = 2**
(about 95 % for a near-normal result, GUM 6.2).

Terms for a window of energy E, duration T, n samples at f_s, supply voltage V:

- ``gain``: the instrument's gain (percent-of-reading) accuracy g, one error for the whole
  window: u = g·|E|/√3.
- ``offset``: its offset accuracy I₀ (A), constant over the window: u = I₀·V·T/√3.
- ``resolution``: the step q_i of each sample (ADC LSB, or the printed digits), independent
  per sample: u = (V/f_s)·√(Σ q_i²/12) (q_i in A; for energy samples in J, without V/f_s).
- ``voltage``: where the meter does not measure the voltage but assumes its set output,
  the output's accuracy v: u = v·|E|/√3. No datasheet below gives it, so
  :data:`ASSUMED_VOLTAGE_ACCURACY` is an assumption, said so in the budget.
- ``alignment``: each of the two window edges may be off by up to the alignment bound Δt
  (one sample period for edges the meter captures): u = P·Δt·√(2/3), P = E/T.

A figure no document we could read gives is ``None``; its term is left out and the budget says
``complete = False`` (a lower bound). Figures and sources: ``docs/how-numbers-are-computed.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

COVERAGE_K = 2.0
# Accuracy of a set (not measured) supply voltage: an assumption, not a datasheet figure.
ASSUMED_VOLTAGE_ACCURACY = 0.01
_RECT = math.sqrt(3.0)


@dataclass(frozen=True)
class RangeSpec:
    """One current range of one instrument: up to ``max_a``, ±(gain·reading + offset_a),
    with a resolution of ``lsb_a`` per sample (or, with ``significant_digits``, the step of
    the printed value)."""

    max_a: float
    gain: float | None
    offset_a: float | None
    lsb_a: float | None = None
    significant_digits: int | None = None


@dataclass(frozen=True)
class InstrumentSpec:
    model: str
    ranges: tuple[RangeSpec, ...]
    measures_voltage: bool
    source: str

    def range_for(self, current_a: float) -> RangeSpec:
        """The smallest range that holds ``current_a`` (the largest when none does)."""
        for r in self.ranges:
            if abs(current_a) <= r.max_a:
                return r
        return self.ranges[-1]


def _ppk2_lsb(shunt_ohm: float) -> float:
    """One PPK2 ADC count in A: I = (4·ADC − O)·(1.8/163840)/R (instruments.md §3)."""
    return 4 * 1.8 / 163840 / shunt_ohm


# The PPK2's default shunts per range (pc-nrfconnect-ppk constants.ts, instruments.md §3), and
# each range's top: the 14-bit ADC's full scale.
_PPK2_SHUNTS_OHM = (1031.64, 101.65, 10.15, 0.94, 0.043)

SPECS: dict[str, InstrumentSpec] = {
    "lpm01a": InstrumentSpec(
        "X-NUCLEO-LPM01A",
        (RangeSpec(0.2, 0.02, None, significant_digits=4),),
        measures_voltage=False,
        source="ST UM2243 §9: 1 nA to 200 mA 'with an accuracy of better than 2%' (static "
               "mode; the dynamic mode's figure is taken as the same, UNVERIFIED); ASCII "
               "samples print 4 significant digits (UM2269 §4.4.1); no offset figure given",
    ),
    "ppk2": InstrumentSpec(
        "Power Profiler Kit II",
        tuple(RangeSpec(16383 * _ppk2_lsb(r), None, None, lsb_a=_ppk2_lsb(r))
              for r in _PPK2_SHUNTS_OHM),
        measures_voltage=False,
        source="resolution from the calibration formula and default shunts "
               "(pc-nrfconnect-ppk src/constants.ts, instruments.md §3); Nordic publishes no "
               "gain or offset accuracy we could find, so those terms are missing",
    ),
    "otii": InstrumentSpec(
        "Otii Arc",
        (RangeSpec(0.019, 0.001, 50e-9), RangeSpec(5.0, None, None)),
        measures_voltage=False,
        source="Qoitech, 'How accurate is your low current measurement?' (2021): Otii Arc "
               "main channel, low currents ±(0.1 % + 50 nA); the high range's figure is "
               "UNVERIFIED (missing)",
    ),
    "otii-ace": InstrumentSpec(
        "Otii Ace",
        (RangeSpec(0.019, 0.0005, 25e-9), RangeSpec(5.0, None, None)),
        measures_voltage=False,
        source="Qoitech, 'How accurate is your low current measurement?': Otii Ace main "
               "channel, low currents ±(0.05 % + 25 nA); high range UNVERIFIED (missing)",
    ),
    "joulescope": InstrumentSpec(
        "Joulescope JS110/JS220",
        (RangeSpec(10.0, None, None),),
        measures_voltage=True,
        source="Jetperch JS110/JS220 datasheets: figures not read for this change "
               "(UNVERIFIED, missing); the Joulescope measures the voltage itself",
    ),
}


@dataclass(frozen=True)
class Budget:
    """The standard uncertainties (J) of one window's energy, their combination and the
    expanded uncertainty U = k·u_c. ``complete`` is False when a term had no figure."""

    components: dict[str, float]
    combined_j: float
    k: float
    complete: bool
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def expanded_j(self) -> float:
        return self.k * self.combined_j

    def record(self) -> dict:
        """For results.json: every term, in J, and how it was combined."""
        return {"components_j": dict(self.components), "combined_j": self.combined_j,
                "k": self.k, "expanded_j": self.expanded_j, "complete": self.complete,
                "missing": list(self.missing), "notes": list(self.notes)}


def _quantisation_steps(values: np.ndarray, digits: int) -> np.ndarray:
    """The step of each value printed with ``digits`` significant digits (0 for zero)."""
    mags = np.abs(values)
    steps = np.zeros_like(mags)
    nonzero = mags > 0
    steps[nonzero] = 10.0 ** (np.floor(np.log10(mags[nonzero])) - (digits - 1))
    return steps


def energy_budget(
    kind: str, *, energy_j: float, duration_s: float, voltage_v: float, sample_rate_hz: float,
    alignment_bound_s: float, samples: Sequence[float] | np.ndarray | None = None,
    samples_are: str = "current_a", voltage_measured: bool | None = None,
) -> Budget:
    """The budget of one window (see the module docstring for each term).

    ``samples`` are the window's samples as the instrument gave them: currents in A
    (``samples_are="current_a"``) or energies per sample period in J (``"energy_j"``, the
    LPM01A's energy output); they give the resolution term and pick each sample's range.
    """
    spec = SPECS.get(kind)
    components: dict[str, float] = {}
    missing: list[str] = []
    notes: list[str] = []
    mean_a = energy_j / (voltage_v * duration_s) if voltage_v > 0 and duration_s > 0 else 0.0
    if spec is None:
        missing += ["gain", "offset", "resolution"]
        notes.append(f"no accuracy figures for a {kind!r} meter")
    else:
        rng = spec.range_for(mean_a)
        if rng.gain is None:
            missing.append("gain")
        else:
            components["gain"] = rng.gain * abs(energy_j) / _RECT
        if rng.offset_a is None:
            missing.append("offset")
        else:
            components["offset"] = rng.offset_a * voltage_v * duration_s / _RECT
        components.update(_resolution(spec, samples, samples_are, voltage_v, sample_rate_hz,
                                      missing))
        notes.append(spec.source)
        if voltage_measured is None:
            voltage_measured = spec.measures_voltage
    if not voltage_measured:
        components["voltage"] = ASSUMED_VOLTAGE_ACCURACY * abs(energy_j) / _RECT
        notes.append(f"the supply voltage is the set one, assumed within "
                     f"±{ASSUMED_VOLTAGE_ACCURACY:.0%} (an assumption, not a datasheet figure)")
    power_w = energy_j / duration_s if duration_s > 0 else 0.0
    components["alignment"] = abs(power_w) * alignment_bound_s * math.sqrt(2.0 / 3.0)
    combined = math.sqrt(sum(u * u for u in components.values()))
    return Budget(components, combined, COVERAGE_K, not missing, tuple(missing), tuple(notes))


def _resolution(spec: InstrumentSpec, samples: Sequence[float] | np.ndarray | None,
                samples_are: str, voltage_v: float, sample_rate_hz: float,
                missing: list[str]) -> dict[str, float]:
    if samples is None or len(samples) == 0:
        missing.append("resolution")
        return {}
    values = np.asarray(samples, dtype=np.float64)
    digits = spec.ranges[0].significant_digits
    if digits is not None:
        steps = _quantisation_steps(values, digits)
    else:
        lsbs = [r.lsb_a for r in spec.ranges]
        if any(lsb is None for lsb in lsbs):
            missing.append("resolution")
            return {}
        tops = np.array([r.max_a for r in spec.ranges])
        index = np.minimum(np.searchsorted(tops, np.abs(values)), len(tops) - 1)
        steps = np.asarray(lsbs, dtype=np.float64)[index]
    per_sample = 1.0 if samples_are == "energy_j" else voltage_v / sample_rate_hz
    return {"resolution": per_sample * math.sqrt(float(np.sum(steps * steps)) / 12.0)}


def analyzer_budget(*, value: float, reported_uncertainty: float, window_s: float,
                    alignment_bound_s: float) -> Budget:
    """The budget of an AC analyzer's result over a LoadGen window, in the value's unit.

    ``reported_uncertainty`` is the largest per-sample uncertainty PTDaemon reports for the
    run (a fraction of the reading, from the analyzer's accuracy tables), read as a ±limit:
    u = |value|·r/√3. The window's two edges may each be off by the measured clock-skew bound
    Δt, which moves an energy per query by the power over Δt: u = |value|·(Δt/T)·√(2/3).
    An average power (Offline, Server) does not change with the window's length to first
    order; the term is kept, small and conservative.
    """
    components = {
        "analyzer": abs(value) * reported_uncertainty / _RECT,
        "alignment": (abs(value) * alignment_bound_s / window_s * math.sqrt(2.0 / 3.0)
                      if window_s > 0 else 0.0),
    }
    combined = math.sqrt(sum(u * u for u in components.values()))
    return Budget(components, combined, COVERAGE_K, True, (),
                  ("PTDaemon's reported per-sample uncertainty, read as a ±limit",))
