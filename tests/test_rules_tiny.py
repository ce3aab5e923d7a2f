"""MLPerf Tiny scoring (tinypower.rules.tiny): the runners' median, 32-bit lap unwrapping,
performance and energy scores with their window checks, warn-severity checks, top-1 accuracy,
and binary and one-vs-rest macro AUC against hand-computed values."""

from __future__ import annotations

import pytest

from energy_monitor.trace import Window, WindowEnergy
from tinypower.rules.tiny import (
    Check,
    PerfWindow,
    binary_auc,
    lap_elapsed_us,
    macro_auc,
    median,
    score_energy,
    score_performance,
    top1_percent,
)


def test_median_odd_and_even_counts() -> None:
    assert median([5.0, 1.0, 3.0]) == 3.0
    assert median([4.0, 1.0, 3.0, 10.0]) == 3.5  # mean of the middle two
    assert median([7]) == 7.0
    with pytest.raises(ValueError, match="median of no values"):
        median([])


def test_lap_elapsed_unwraps_one_32_bit_counter_wrap() -> None:
    assert lap_elapsed_us(1_000, 11_000) == 10_000
    assert lap_elapsed_us(2**32 - 1_000, 500) == 1_500
    assert lap_elapsed_us(4_000_000_000, 1_000_000_000) == 2**32 - 3_000_000_000


def test_perf_window_throughput() -> None:
    w = PerfWindow(inferences=250, start_us=2**32 - 2_000_000, end_us=10_500_000)
    assert w.elapsed_s == pytest.approx(12.5)
    assert w.throughput == pytest.approx(20.0)


def perf_windows(elapsed_s: list[float], inferences: list[int]) -> list[PerfWindow]:
    return [
        PerfWindow(n, 1_000, 1_000 + round(e * 1e6))
        for e, n in zip(elapsed_s, inferences, strict=True)
    ]


def test_score_performance_on_five_windows() -> None:
    windows = perf_windows([10.0] * 5, [100, 200, 150, 120, 110])
    result = score_performance(windows)
    assert (result.mode, result.metric, result.unit) == ("performance", "throughput", "inf/s")
    assert result.value == pytest.approx(12.0)  # median of 10, 20, 15, 12, 11
    assert result.extras["latency_ms"] == pytest.approx(1000.0 / 12.0)
    assert [w["throughput_inf_per_s"] for w in result.windows] == pytest.approx(
        [10.0, 20.0, 15.0, 12.0, 11.0]
    )
    assert all(c.passed for c in result.checks)
    assert [c.rule for c in result.checks] == ["tiny.window_count"] + [
        f"tiny.window_length[{i}]" for i in range(5)
    ] + [f"tiny.{rule}[{i}]" for i in range(5) for rule in ("inferences", "elapsed_positive")]
    assert result.valid and result.failures == [] and result.warnings == []


def test_four_windows_fail_the_window_count() -> None:
    result = score_performance(perf_windows([10.0] * 4, [100, 200, 300, 400]))
    assert result.value == pytest.approx(25.0)
    assert not result.valid
    assert [c.rule for c in result.failures] == ["tiny.window_count"]
    assert "4 window(s) measured, 5 required" in result.failures[0].message


def test_a_short_window_fails_its_length_rule() -> None:
    result = score_performance(perf_windows([10.0, 10.0, 9.9, 10.0, 10.0], [100] * 5))
    assert not result.valid
    assert [c.rule for c in result.failures] == ["tiny.window_length[2]"]
    assert "window 2 lasted 9.900 s" in result.failures[0].message


def test_warn_check_is_listed_but_leaves_the_result_valid() -> None:
    warn = Check("lab.temperature", False, "room at 31 C", severity="warn")
    passed = Check("lab.supply", True, "supply steady")
    result = score_performance(perf_windows([10.0] * 5, [100] * 5), [warn, passed])
    assert result.valid
    assert result.warnings == [warn]
    assert result.failures == []
    failing = Check("lab.supply", False, "supply sagged")
    result = score_performance(perf_windows([10.0] * 5, [100] * 5), [warn, failing])
    assert not result.valid
    assert result.failures == [failing]


def energy_window(energy_j: float, inferences: int, duration_s: float) -> WindowEnergy:
    window = Window(0.0, duration_s, inferences, "meter-edge", 0.001)
    return WindowEnergy(window, energy_j, round(duration_s * 1000), duration_s)


def test_score_energy_is_median_energy_per_inference() -> None:
    # E/N in uJ: 100, 120, 90, 110, 105 -> median 105
    windows = [
        energy_window(0.010, 100, 10.0),
        energy_window(0.024, 200, 12.0),
        energy_window(0.009, 100, 10.0),
        energy_window(0.011, 100, 10.0),
        energy_window(0.021, 200, 20.0),
    ]
    result = score_energy(windows)
    assert (result.mode, result.metric, result.unit) == (
        "energy", "energy_per_inference", "uJ/inf"
    )
    assert result.value == pytest.approx(105.0)
    assert [w["energy_per_inference_uj"] for w in result.windows] == pytest.approx(
        [100.0, 120.0, 90.0, 110.0, 105.0]
    )
    # total 0.075 J over 62 s
    assert result.extras["mean_power_uw"] == pytest.approx(0.075 / 62.0 * 1e6)
    assert result.windows[1]["mean_power_uw"] == pytest.approx(2000.0)
    assert result.valid


def test_score_energy_checks_window_length() -> None:
    windows = [energy_window(0.01, 100, d) for d in (10.0, 10.0, 10.0, 10.0, 9.5)]
    result = score_energy(windows)
    assert [c.rule for c in result.failures] == ["tiny.window_length[4]"]


def test_top1_percent() -> None:
    outputs = [[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [6.0, 4.0]]
    assert top1_percent(outputs, [1, 0, 0, 0]) == pytest.approx(75.0)
    assert top1_percent([[0.0, 0.0, 1.0]], [2]) == 100.0
    with pytest.raises(ValueError, match="top-1 of no outputs"):
        top1_percent([], [])


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ranked right
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
        # positives 0.5, 0.9 vs negatives 0.5, 0.2: one tied pair counts half -> 3.5 / 4
        ([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1], 0.875),
        # 0.3 shared by two positives and a negative: pos {0.3, 0.3, 0.7} vs neg {0.3, 0.1}
        # pairs: 0.3-0.3 half, 0.3-0.1 one (x2), 0.7 beats both -> (0.5+1)*2 + 2 = 5 of 6
        ([0.3, 0.3, 0.7, 0.3, 0.1], [1, 1, 1, 0, 0], 5 / 6),
        ([0.2, 0.2, 0.2], [1, 0, 1], 0.5),
        ([0.9, 0.1], [0, 1], 0.0),
    ],
)
def test_binary_auc_by_hand(scores: list[float], labels: list[int], expected: float) -> None:
    assert binary_auc(scores, [lab == 1 for lab in labels]) == pytest.approx(expected)


@pytest.mark.parametrize("labels", [[True, True], [False, False]])
def test_binary_auc_needs_both_classes(labels: list[bool]) -> None:
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        binary_auc([0.2, 0.8], labels)


def test_macro_auc_one_vs_rest_by_hand() -> None:
    # Rows sum to 10, so normalising divides every score by the same 10.
    outputs = [
        [7.0, 2.0, 1.0],  # label 0
        [2.0, 4.0, 4.0],  # label 1
        [3.0, 3.0, 4.0],  # label 2
        [5.0, 2.5, 2.5],  # label 1
        [1.0, 3.0, 6.0],  # label 2
    ]
    labels = [0, 1, 2, 1, 2]
    # class 0: 0.7 vs {0.2, 0.3, 0.5, 0.1} -> 4/4
    # class 1: {0.4, 0.25} vs {0.2, 0.3, 0.3} -> 3 + 1 = 4/6
    # class 2: {0.4, 0.6} vs {0.1, 0.4, 0.25} -> 2.5 + 3 = 5.5/6
    expected = (1.0 + 4 / 6 + 5.5 / 6) / 3
    assert macro_auc(outputs, labels) == pytest.approx(expected)


def test_macro_auc_skips_classes_absent_from_the_labels() -> None:
    outputs = [[6.0, 1.0, 3.0], [2.0, 5.0, 3.0], [6.0, 4.0, 0.0]]
    # class 2 never appears, so only classes 0 and 1 are averaged:
    # class 0: 0.6 vs {0.2, 0.6} -> 1.5/2; class 1: {0.5, 0.4} vs {0.1} -> 2/2
    assert macro_auc(outputs, [0, 1, 1]) == pytest.approx((0.75 + 1.0) / 2)
    with pytest.raises(ValueError, match="at least two classes"):
        macro_auc(outputs, [1, 1, 1])
