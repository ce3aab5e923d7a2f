"""Published MLPerf Inference power results re-derived from their raw logs (pw01, pw03, pw11,
pw12)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tinypower.results.power_logs import (
    PowerLogError,
    read_spl,
    score_power_folder,
    score_run_dir,
)
from tinypower.rules.power import PowerScore, score_for_scenario

LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "mlperf-logs"
CASE = LOGS / "power" / "v2.1" / "Dell" / "XR12_A2x1_TRT_MaxQ" / "resnet50"
KRAI = LOGS / "power" / "v2.1" / "Krai" / "firefly-tflite-v2.7.1-ruy" / "resnet50"
pytestmark = pytest.mark.skipif(not CASE.is_dir(), reason=f"published logs not found at {CASE}")


def test_pw01_singlestream_energy_per_query() -> None:
    result = score_power_folder(CASE / "SingleStream", joules_per_query=True)
    testing = result["testing"]
    assert testing.unit == "J/query" and testing.samples == 600
    assert testing.value == pytest.approx(0.2682116017, rel=1e-4)
    assert f"{testing.value:.10f}" == "0.2682116017"
    assert testing.average_power_w == pytest.approx(232.4572667, rel=1e-9)
    assert testing.window_s == pytest.approx(600.001)
    assert result["ranging"].average_power_w == pytest.approx(232.024, abs=5e-4)
    assert result["ranging_ok"]


def test_pw03_offline_average_power() -> None:
    result = score_power_folder(CASE / "Offline")
    testing = result["testing"]
    assert testing.unit == "W" and testing.samples == 662
    assert f"{testing.value:.7f}" == "266.9385801"
    assert result["ranging"].average_power_w == pytest.approx(268.000, abs=5e-4)
    assert result["ranging_ok"]


def test_v3_units_are_millijoules() -> None:
    testing = score_run_dir(CASE / "SingleStream" / "run_1")
    assert testing.unit == "mJ/query" and testing.value == pytest.approx(268.2116017, rel=1e-9)


def test_malformed_and_missing_files_name_the_problem(tmp_path) -> None:
    run = tmp_path / "run_1"
    shutil.copytree(CASE / "Offline" / "run_1", run)
    lines = (run / "spl.txt").read_text().splitlines()
    lines[5] = "Time,not-a-date,Watts,1.0"
    (run / "spl.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(PowerLogError, match=r"spl.txt:6: not an spl.txt sample line"):
        read_spl(run / "spl.txt")
    (run / "spl.txt").unlink()
    with pytest.raises(PowerLogError, match="spl.txt is missing"):
        score_run_dir(run)


def test_a_log_that_misses_the_window_is_refused(tmp_path) -> None:
    run = tmp_path / "run_1"
    shutil.copytree(CASE / "Offline" / "run_1", run)
    lines = (run / "spl.txt").read_text().splitlines()
    (run / "spl.txt").write_text("\n".join(lines[:3]) + "\n")  # only the first seconds
    with pytest.raises(ValueError, match="no power samples strictly inside"):
        score_run_dir(run)


def test_ranging_check_flags_a_testing_run_more_than_5_percent_below() -> None:
    from tinypower.rules.power import ranging_check

    assert ranging_check(95.5, 100.0)[0]
    ok, message = ranging_check(94.0, 100.0)
    assert not ok and "-6.00%" in message


@pytest.mark.parametrize(("folder", "scenario", "unit", "published"), [
    ("multistream", "MultiStream", "J/query", "11.25623422"),  # pw11: 8 x SingleStream
    ("offline", "Offline", "W", "11.808665"),  # pw12: the SingleStream run's mean power
])
def test_edge_scenarios_inferred_from_singlestream(folder: str, scenario: str, unit: str,
                                                   published: str) -> None:
    if not KRAI.is_dir():
        pytest.skip(f"published logs not found at {KRAI}")
    run = score_power_folder(KRAI / folder, joules_per_query=True)["testing"]
    assert run.scenario == "SingleStream"  # what LoadGen ran, whatever the folder says
    score, why = score_for_scenario(run, scenario)
    assert score.unit == unit and f"{score.value:.{len(published.split('.')[1])}f}" == published
    assert why.startswith(f"filed as {scenario} but LoadGen ran SingleStream")


def test_no_rule_infers_other_scenarios() -> None:
    offline = PowerScore("Offline", "average_power", 100.0, "W", 100.0, 600, 600.0)
    assert score_for_scenario(offline, "Offline") == (offline, "")
    with pytest.raises(ValueError, match="no rule infers Server from Offline"):
        score_for_scenario(offline, "Server")
    single = PowerScore("SingleStream", "energy_per_query", 2.0, "mJ/query", 100.0, 600, 600.0)
    with pytest.raises(ValueError, match="no rule infers Server from SingleStream"):
        score_for_scenario(single, "Server")
