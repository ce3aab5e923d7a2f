"""MLPerf Tiny scoring and validity: performance, energy and accuracy modes.

The arithmetic follows the published runners exactly (see ``shared/reference/published-logs.md``):
score = median of the per-window values (mean of the middle two for an even count), throughput =
N / DUT-elapsed, energy per inference = window energy / N. Unlike those runners, validity here is
enforced: every rule is a :class:`Check`, and a result with a failed check is invalid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from energy_monitor.trace import WindowEnergy

REQUIRED_WINDOWS = 5
MIN_WINDOW_S = 10.0
# EEMBC's energy runner refuses fewer than 10 inferences per window; so do we, in every mode.
MIN_INFERENCES = 10
# Closed-division accuracy targets (MLPerfTiny_Rules.adoc): top-1 % or AUC.
ACCURACY_TARGETS = {"kws01": 90.0, "vww01": 80.0, "ic01": 85.0, "ad01": 0.85}

US_COUNTER_WRAP = 2**32


@dataclass(frozen=True)
class Check:
    """One rule applied to a result: its name, whether it passed, and the evidence.

    A failed ``warn`` check is reported but leaves the result valid.
    """

    rule: str
    passed: bool
    message: str
    severity: str = "fail"  # "fail" or "warn"


@dataclass
class TinyResult:
    """A scored MLPerf Tiny mode. ``value`` is full precision; format at the edge."""

    mode: str
    metric: str
    value: float
    unit: str
    windows: list[dict] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    extras: dict = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed and c.severity == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if not c.passed and c.severity == "warn"]


def median(values: Sequence[float]) -> float:
    """The runners' median: the middle value, or the mean of the middle two."""
    if not values:
        raise ValueError("median of no values")
    return float(np.median(np.asarray(values, dtype=np.float64)))


def lap_elapsed_us(start_us: int, end_us: int) -> int:
    """DUT microseconds between two ``m-lap-us`` values, unwrapping one 32-bit counter wrap."""
    elapsed = end_us - start_us
    if elapsed < 0:
        elapsed += US_COUNTER_WRAP
    return elapsed


def window_checks(durations_s: Sequence[float], min_window_s: float = MIN_WINDOW_S) -> list[Check]:
    """The rules every timed mode shares: five windows, each at least 10 s of DUT time."""
    checks = [
        Check(
            "tiny.window_count",
            len(durations_s) == REQUIRED_WINDOWS,
            f"{len(durations_s)} window(s) measured, {REQUIRED_WINDOWS} required",
        )
    ]
    for i, d in enumerate(durations_s):
        checks.append(
            Check(
                f"tiny.window_length[{i}]",
                d >= min_window_s,
                f"window {i} lasted {d:.3f} s of DUT time, at least {min_window_s:g} s required",
            )
        )
    return checks


def impossible_checks(
    k: int, inferences: int, elapsed_s: float, energy_j: float | None = None
) -> list[Check]:
    """What no real window can be, each a named failed rule rather than a traceback or a
    number that passes: fewer than :data:`MIN_INFERENCES` inferences, zero or negative (or
    non-finite) elapsed time, and energy that is not finite or not positive (a negative board
    current, a broken meter)."""
    checks = [
        Check(f"tiny.inferences[{k}]", inferences >= MIN_INFERENCES,
              f"window {k} ran {inferences} inference(s), at least {MIN_INFERENCES} required "
              "(EEMBC's minimum)"),
        Check(f"tiny.elapsed_positive[{k}]", math.isfinite(elapsed_s) and elapsed_s > 0,
              f"window {k} lasted {elapsed_s!r} s: a window takes time (identical or "
              "unreadable timestamps)"),
    ]
    if energy_j is not None:
        checks += [
            Check(f"tiny.energy_finite[{k}]", math.isfinite(energy_j),
                  f"window {k} energy is {energy_j!r} J: not a measurement"),
            Check(f"tiny.energy_positive[{k}]", not math.isfinite(energy_j) or energy_j > 0,
                  f"window {k} energy is {energy_j!r} J: a powered board draws energy "
                  "(negative or zero current: check the meter's wiring and range)"),
        ]
    return checks


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN where the division means nothing (a zero window)."""
    if denominator == 0 or not math.isfinite(denominator):
        return float("nan")
    return numerator / denominator


def _finite_median(values: Sequence[float]) -> float:
    """The median, or NaN when any value is not finite (its window failed a rule)."""
    if not values or not all(math.isfinite(v) for v in values):
        return float("nan")
    return median(values)


@dataclass(frozen=True)
class PerfWindow:
    """One performance-mode window: N inferences between two DUT microsecond laps."""

    inferences: int
    start_us: int
    end_us: int

    @property
    def elapsed_s(self) -> float:
        return lap_elapsed_us(self.start_us, self.end_us) / 1e6

    @property
    def throughput(self) -> float:
        """Inferences per second; NaN for a window without DUT time (identical laps)."""
        return _ratio(self.inferences, self.elapsed_s)


def score_performance(
    windows: Sequence[PerfWindow], extra_checks: Sequence[Check] = ()
) -> TinyResult:
    """Median throughput (inf/s) over the windows; latency (ms) = 1000 / median."""
    throughputs = [w.throughput for w in windows]
    value = _finite_median(throughputs)
    impossible = [c for k, w in enumerate(windows)
                  for c in impossible_checks(k, w.inferences, w.elapsed_s)]
    return TinyResult(
        mode="performance",
        metric="throughput",
        value=value,
        unit="inf/s",
        windows=[
            {
                "inferences": w.inferences,
                "start_us": w.start_us,
                "end_us": w.end_us,
                "elapsed_s": w.elapsed_s,
                "throughput_inf_per_s": t,
            }
            for w, t in zip(windows, throughputs, strict=True)
        ],
        checks=window_checks([w.elapsed_s for w in windows]) + impossible + list(extra_checks),
        extras={"latency_ms": _ratio(1000.0, value)},
    )


def score_energy(
    windows: Sequence[WindowEnergy], extra_checks: Sequence[Check] = ()
) -> TinyResult:
    """Median energy per inference (uJ/inf) over the windows, and their mean power."""
    per_inf_uj = [_ratio(w.energy_j, w.window.work_count) * 1e6 for w in windows]
    impossible = [c for k, w in enumerate(windows)
                  for c in impossible_checks(k, w.window.work_count, w.duration_s, w.energy_j)]
    failed = any(not c.passed for c in impossible)
    value = float("nan") if failed else _finite_median(per_inf_uj)
    total_energy = sum(w.energy_j for w in windows)
    total_time = sum(w.duration_s for w in windows)
    return TinyResult(
        mode="energy",
        metric="energy_per_inference",
        value=value,
        unit="uJ/inf",
        windows=[
            {
                "inferences": w.window.work_count,
                "start_s": w.window.start_s,
                "duration_s": w.duration_s,
                "samples": w.samples,
                "energy_uj": w.energy_j * 1e6,
                "mean_power_uw": w.mean_power_w * 1e6,
                "energy_per_inference_uj": e,
                "alignment_bound_s": w.window.alignment_bound_s,
            }
            for w, e in zip(windows, per_inf_uj, strict=True)
        ],
        checks=window_checks([w.duration_s for w in windows]) + impossible + list(extra_checks),
        extras={"mean_power_uw": (float("nan") if failed
                                  else _ratio(total_energy, total_time) * 1e6)},
    )


def finite_outputs_check(outputs: Sequence[Sequence[float]]) -> Check:
    """Every DUT output value is a number: a NaN or infinity is a broken DUT, not a class."""
    bad = sum(1 for o in outputs if not np.all(np.isfinite(np.asarray(o, dtype=np.float64))))
    return Check("tiny.outputs_finite", bad == 0,
                 f"{bad} of {len(outputs)} DUT output(s) hold NaN or infinity" if bad
                 else f"all {len(outputs)} DUT outputs are finite")


def normalise(scores: Sequence[float]) -> np.ndarray:
    """Scale an output vector to sum 1, as the MLCommons runner does (all-zero stays zero)."""
    v = np.asarray(scores, dtype=np.float64)
    total = v.sum()
    return v / total if total > 0 else v


def top1_percent(outputs: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """Share of outputs whose argmax equals the label, in percent."""
    if not labels:
        raise ValueError("top-1 of no outputs")
    hits = sum(int(np.argmax(normalise(o))) == lab for o, lab in zip(outputs, labels, strict=True))
    return 100.0 * hits / len(labels)


def binary_auc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Area under the ROC curve by ranks (Mann-Whitney U), ties counted half."""
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(p.sum()), int((~p).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one positive and one negative example")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[p].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_auc(outputs: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """One-vs-rest macro AUC over the classes present, like sklearn's ``multi_class='ovr'``."""
    probs = np.array([normalise(o) for o in outputs])
    labels_arr = np.asarray(labels)
    aucs = [
        binary_auc(probs[:, c], labels_arr == c)
        for c in range(probs.shape[1])
        if 0 < int((labels_arr == c).sum()) < len(labels_arr)
    ]
    if not aucs:
        raise ValueError("AUC needs at least two classes among the labels")
    return float(np.mean(aucs))


def threshold_accuracy(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The MLCommons runner's anomaly-detection "Top 1%": over 100 thresholds evenly spaced
    from the lowest score up, the best (precision + recall) / 2 in percent, a score above the
    threshold counting as anomalous (label 1). Re-implemented from ``calculate_accuracy`` in
    ``mlcommons/tiny:benchmark/runner/main.py``, including its 1e-8 guards."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    best = 0.0
    for threshold in s.min() + np.arange(0.0, 1.0, 0.01) * (s.max() - s.min()):
        flagged = s > threshold
        tp = int(np.sum(flagged[y == 1]))
        fp = int(np.sum(flagged[y == 0]))
        fn = int(np.sum(~flagged[y == 1]))
        precision = tp / (tp + fp + 1e-8)
        recall = tp / (tp + fn + 1e-8)
        best = max(best, 100 * (precision + recall) / 2)
    return best


def accuracy_scores(outputs: Sequence[Sequence[float]], labels: Sequence[int]) -> dict:
    """Top-1 % and AUC of per-file outputs, as the MLCommons runner's ``summarize_result``.

    Classifiers: top-1 = argmax vs label. One output per file (anomaly detection): top-1 is
    :func:`threshold_accuracy`. AUC: of the single score or of class 1's for one or two
    outputs, else the one-vs-rest macro AUC. ``auc`` is None when the labels hold one class.
    """
    if not labels:
        raise ValueError("accuracy of no outputs")
    width = len(outputs[0])
    if width == 1:
        scores = [o[0] for o in outputs]
        top1 = threshold_accuracy(scores, labels)
        positives = [lab == 1 for lab in labels]
    else:
        top1 = top1_percent(outputs, labels)
        scores = [normalise(o)[1] for o in outputs] if width == 2 else []
        positives = [lab == 1 for lab in labels]
    try:
        auc = binary_auc(scores, positives) if width <= 2 else macro_auc(outputs, labels)
    except ValueError:
        auc = None
    hits = round(top1 * len(labels) / 100) if width > 1 else None
    return {"top1": top1, "auc": auc, "hits": hits, "files": len(labels), "width": width}
