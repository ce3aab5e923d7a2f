"""`tinypower check`: the MLPerf Tiny and power rules on our sessions and on published runs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tinypower.boards import load_board
from tinypower.cli import main
from tinypower.models import resolve_model
from tinypower.results.compliance import check_tree
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import synthetic_inputs

LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "mlperf-logs"
POWER = LOGS / "power/v2.1/Dell/XR12_A2x1_TRT_MaxQ/resnet50/Offline"
TE13 = LOGS / "tiny/v0.7/renesas/EK-RA6M4/kws/energy"
TA01 = LOGS / "tiny/v1.1/STMicroelectronics/NUCLEO_U575ZI_Q/kws/accuracy"
needs_logs = pytest.mark.skipif(not POWER.is_dir(), reason=f"published logs not found at {LOGS}")


def session(runs: Path, mode: str, **kw) -> Path:
    suite = get_suite("kws01")
    outcome = run(RunRequest(
        board=load_board("sim-m4"), suite=suite, model=resolve_model(suite, "synthetic"),
        dataset=synthetic_inputs(suite), mode=mode, runs_dir=runs, **kw))
    return outcome.session.folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    session(runs, "performance")
    session(runs, "energy")
    return runs


def verdicts(checks) -> dict[str, str]:
    return {c.rule: c.verdict for c in checks}


def test_virtual_lab_sessions_pass(runs: Path, capsys) -> None:
    assert main(["check", str(runs), "--json"]) == 0
    cases = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(cases) == 2 and not any(c["failed"] for c in cases)
    energy = next(c for c in cases if c["path"].endswith("energy"))
    v = {c["rule"]: c["verdict"] for c in energy["checks"]}
    assert v["tiny.window_count"] == v["tiny.timestamps"] == v["session.checksums"] == "pass"
    assert v["rescore"] == "pass"
    assert v["measured_as"] == "warn"  # simulated numbers are labelled, never passed off


def test_short_windows_and_changed_files_fail(runs: Path, tmp_path: Path, capsys) -> None:
    short = session(tmp_path, "energy", min_window_s=1.0)
    [case] = check_tree(short)
    v = verdicts(case.checks)
    assert v["tiny.window_length[0]"] == "fail"
    assert "at least 10 s required" in next(
        c.evidence for c in case.checks if c.rule == "tiny.window_length[0]")
    assert verdicts(check_tree(short, min_window_s=1.0)[0].checks)["tiny.window_length[0]"] == \
        "pass"
    energy = next(p for p in runs.iterdir() if p.name.endswith("energy"))
    copy = Path(shutil.copytree(energy, tmp_path / "copy"))
    with (copy / "transcript.log").open("a") as f:
        f.write("edited\n")
    [case] = check_tree(copy)
    check = next(c for c in case.checks if c.rule == "session.checksums")
    assert check.verdict == "fail" and "changed or missing: transcript.log" in check.evidence
    assert main(["check", str(copy)]) == 1


@needs_logs
def test_published_tree_has_no_failures_and_warns_on_short_windows() -> None:
    cases = {c.path: c for c in check_tree(LOGS)}
    assert len(cases) == 14 and not any(c.failed for c in cases.values())
    te13 = verdicts(cases[TE13].checks)
    assert te13["tiny.window_length[0]"] == "warn" and te13["tiny.window_count"] == "pass"
    assert verdicts(cases[TA01].checks)["tiny.accuracy_target"] == "pass"
    power = verdicts(cases[POWER].checks)
    for rule in ("power.run_duration", "power.ranging_vs_testing", "power.uncertainty",
                 "power.clock_skew", "power.checksums", "power.window_in_phases",
                 "power.loadgen_valid", "rescore"):
        assert power[rule] == "pass", rule


@pytest.fixture
def power_copy(tmp_path: Path) -> Path:
    if not POWER.is_dir():
        pytest.skip(f"published logs not found at {LOGS}")
    return Path(shutil.copytree(POWER, tmp_path / "v2.1" / "Offline"))


def evidence(folder: Path, rule: str) -> tuple[str, str]:
    [case] = check_tree(folder)
    c = next(c for c in case.checks if c.rule == rule)
    return c.verdict, c.evidence


def test_uncertainty_warning_inside_the_window_fails(power_copy: Path) -> None:
    ptd = power_copy / "power" / "ptd_logs.txt"
    ptd.write_text(ptd.read_text() + "07-28-2022 04:05:00.000: WARNING: Uncertainty 1.52%, "
                   "which is above 1.00% limit for the last sample!\n")
    verdict, why = evidence(power_copy, "power.uncertainty")
    assert verdict == "fail" and "07-28-2022 04:05:00.000 1.52%" in why
    verdict, why = evidence(power_copy, "power.checksums")
    assert verdict == "fail" and "power/ptd_logs.txt sha1 differs" in why


def test_testing_far_below_ranging_fails(power_copy: Path) -> None:
    spl = power_copy / "ranging" / "spl.txt"
    lines = []
    for line in spl.read_text().splitlines():
        fields = line.split(",")
        fields[3] = f"{float(fields[3]) * 1.2:.6f}"
        lines.append(",".join(fields))
    spl.write_text("\n".join(lines) + "\n")
    verdict, why = evidence(power_copy, "power.ranging_vs_testing")
    assert verdict == "fail" and "at most 5% below" in why


def test_clock_skew_beyond_800_ms_fails(power_copy: Path) -> None:
    path = power_copy / "power" / "server.json"
    server = json.loads(path.read_text())
    server["phases"]["testing"][2][0] += 2.0
    path.write_text(json.dumps(server))
    verdict, why = evidence(power_copy, "power.clock_skew")
    assert verdict == "fail" and "at most 800 ms" in why


def test_a_session_file_that_is_not_a_regular_file_is_a_failed_check(
    runs: Path, tmp_path: Path
) -> None:
    """A FIFO in place of results.json would block a plain read forever; the checker reads
    through logio and says what it found instead."""
    energy = next(p for p in runs.iterdir() if p.name.endswith("energy"))
    copy = Path(shutil.copytree(energy, tmp_path / "fifo"))
    (copy / "results.json").unlink()
    os.mkfifo(copy / "results.json")
    verdict, why = evidence(copy, "session.readable")
    assert verdict == "fail" and "results.json: not a regular file" in why


@needs_logs
def test_a_power_file_that_is_not_a_regular_file_does_not_hang_the_checks(
    power_copy: Path
) -> None:
    (power_copy / "power" / "server.json").unlink()
    os.mkfifo(power_copy / "power" / "server.json")
    verdict, why = evidence(power_copy, "power.checksums")
    assert verdict == "fail" and "power/server.json missing or unreadable" in why
