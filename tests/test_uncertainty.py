"""The uncertainty budget against hand computations (numbers worked out below, not by the
module's own formulas), and on a virtual-lab energy run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from energy_monitor.uncertainty import COVERAGE_K, energy_budget


def test_lpm01a_energy_window_matches_the_hand_computation() -> None:
    # 1000 samples of 17.10 uJ (printed "1710-08": 4 significant digits, step 1e-8 J), 1 ms
    # each at 1.8 V: E = 17.1 mJ over 1 s, edges on the meter's 1 kHz clock.
    samples = np.full(1000, 1.710e-5)
    budget = energy_budget("lpm01a", energy_j=0.0171, duration_s=1.0, voltage_v=1.8,
                           sample_rate_hz=1000.0, alignment_bound_s=1e-3, samples=samples,
                           samples_are="energy_j")
    # gain 2 % rectangular: 0.02 * 0.0171 / sqrt(3)
    assert budget.components["gain"] == pytest.approx(1.97454e-4, rel=1e-5)
    # 1000 steps of 1e-8 J, each 1e-8/sqrt(12): sqrt(1000) * 2.88675e-9
    assert budget.components["resolution"] == pytest.approx(9.12871e-8, rel=1e-5)
    # the set 1.8 V, assumed within 1 %: 0.01 * 0.0171 / sqrt(3)
    assert budget.components["voltage"] == pytest.approx(9.87269e-5, rel=1e-5)
    # 17.1 mW * 1 ms * sqrt(2/3)
    assert budget.components["alignment"] == pytest.approx(1.39621e-5, rel=1e-5)
    assert "offset" not in budget.components and budget.missing == ("offset",)
    # sqrt(1.97454e-4^2 + 9.12871e-8^2 + 9.87269e-5^2 + 1.39621e-5^2) = 2.21201e-4
    assert budget.combined_j == pytest.approx(2.21201e-4, rel=1e-5)
    assert budget.k == COVERAGE_K == 2.0
    assert budget.expanded_j == pytest.approx(4.42402e-4, rel=1e-5)  # 2.6 % of E
    assert not budget.complete


def test_ppk2_current_window_matches_the_hand_computation() -> None:
    # 5 mA for 0.5 s at 100 kS/s, 3.0 V: E = 7.5 mJ. 5 mA sits in range 1 (101.65 ohm shunt,
    # full scale 16383 counts * 432.32 nA = 7.08 mA); one count is 4 * 1.8 / 163840 / 101.65 A.
    lsb = 4.32322e-7
    samples = np.full(50_000, 5e-3)
    budget = energy_budget("ppk2", energy_j=7.5e-3, duration_s=0.5, voltage_v=3.0,
                           sample_rate_hz=100_000.0, alignment_bound_s=1e-5, samples=samples)
    # (3.0 V / 100 kHz) * sqrt(50000 * lsb^2 / 12) = 3e-5 * lsb * 64.5497
    assert budget.components["resolution"] == pytest.approx(3e-5 * lsb * 64.5497, rel=1e-5)
    assert budget.components["resolution"] == pytest.approx(8.37188e-10, rel=1e-5)
    assert budget.components["voltage"] == pytest.approx(4.33013e-5, rel=1e-5)  # .01*7.5e-3/√3
    assert budget.components["alignment"] == pytest.approx(1.22474e-7, rel=1e-5)  # 15mW*10us*.8165
    assert budget.combined_j == pytest.approx(math.hypot(4.33013e-5, 1.22474e-7, 8.37188e-10),
                                              rel=1e-6)
    # Nordic publishes no gain or offset accuracy: the budget says it is a lower bound.
    assert set(budget.missing) == {"gain", "offset"} and not budget.complete


def test_otii_low_range_gain_and_offset() -> None:
    # 1 mA for 2 s at 3.3 V: E = 6.6 mJ; ±(0.1 % + 50 nA)
    budget = energy_budget("otii", energy_j=6.6e-3, duration_s=2.0, voltage_v=3.3,
                           sample_rate_hz=1000.0, alignment_bound_s=1e-3,
                           samples=np.full(2000, 1e-3))
    assert budget.components["gain"] == pytest.approx(0.001 * 6.6e-3 / math.sqrt(3))
    assert budget.components["offset"] == pytest.approx(50e-9 * 3.3 * 2.0 / math.sqrt(3))


def test_every_virtual_lab_energy_result_carries_its_budget(tmp_path) -> None:
    from test_measure import request

    from tinypower.runner import run

    outcome = run(request(tmp_path, "energy"))
    assert outcome.ok, outcome.result.failures
    r = outcome.result
    u = r.extras["energy_uncertainty_uj"]
    assert r.extras["uncertainty_k"] == 2.0 and r.extras["uncertainty_complete"] is False
    # LPM01A: dominated by its 2 % gain and the assumed 1 % voltage: about 2.6 % of the value
    assert u / r.value == pytest.approx(2 * math.hypot(0.02, 0.01) / math.sqrt(3), rel=0.01)
    for w in r.windows:
        assert set(w["uncertainty"]["components_j"]) == {"gain", "resolution", "voltage",
                                                         "alignment"}


def test_cli_and_report_print_the_value_with_its_uncertainty_and_the_instrument(
        tmp_path, capsys) -> None:
    from tinypower.cli import main

    assert main(["measure", "--runs-dir", str(tmp_path), "--mode", "energy"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "± " in out and "(k=2)" in out
    assert "tinypowersim-LPM01A-0001" in out and "[simulator-only]" in out
    [folder] = [f for f in tmp_path.iterdir() if f.is_dir()]
    assert main(["report", str(folder), "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "± " in html and "(k=2)" in html and "[simulator-only]" in html
