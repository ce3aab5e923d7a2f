"""A session of the scaling layer through the result tools: `tinypower check` passes it, the
MLPerf power export round-trips and rescores to its stored value, and the director adds it to the
result store. The session is made once, by the command a user types (`tinypower measure --sut
FILE --quick`: the real director, client, LoadGen and PTDaemon simulator on loopback; see
director_session.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from director_session import quick_director_session

from tinypower.cli import main
from tinypower.results.compliance import check_tree
from tinypower.results.db import query
from tinypower.results.record import records_from_session
from tinypower.results.rescore import rescore_case, rescore_tree


@pytest.fixture(scope="module")
def power_session(tmp_path_factory) -> Path:
    return quick_director_session(tmp_path_factory.mktemp("power"))


def stored(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())["testing"]


def verdicts(folder: Path, **kwargs) -> dict[str, tuple[str, str]]:
    [case] = check_tree(folder, **kwargs)
    return {c.rule: (c.verdict, c.evidence) for c in case.checks}


def test_quick_session_passes_check_and_is_not_compliant(power_session, capsys) -> None:
    assert main(["check", str(power_session), "--json"]) == 0
    [case] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    got = {c["rule"]: (c["verdict"], c["evidence"]) for c in case["checks"]}
    assert case["kind"] == "power" and not case["failed"] and not case["compliant"]
    window_s = stored(power_session)["window_s"]
    assert got["power.run_duration"] == (
        "warn", f"not compliant: run length: testing window {window_s:.1f} s, MLPerf requires "
                "600 s")
    assert got["power.sample_rate"][0] == "warn"  # the quick run samples at 4 Hz
    assert got["power.submission_engine"][0] == "warn"
    assert "not an MLPerf submission engine" in got["power.submission_engine"][1]
    for rule in ("power.loadgen_valid", "power.ranging_vs_testing", "power.uncertainty",
                 "power.clock_skew", "power.window_in_phases", "power.checksums", "rescore"):
        assert got[rule][0] == "pass", (rule, got[rule])
    assert got["measured_as"][0] == "warn"  # the PTDaemon simulator: simulated numbers


def test_check_and_the_director_agree_on_compliance(power_session) -> None:
    """The same folder, the same verdict: the director's failed compliance checks are the
    rules `tinypower check` finds not compliant, and both say the run is not compliant."""
    results = json.loads((power_session / "results.json").read_text())
    director = {c["name"] for c in results["checks"]
                if c["kind"] == "compliance" and not c["ok"]}
    [case] = check_tree(power_session)
    same_rule = {"run_length": "power.run_duration", "uncertainty": "power.uncertainty",
                 "sample_rate": "power.sample_rate", "measured_as": "measured_as",
                 "submission_engine": "power.submission_engine"}
    assert {same_rule[n] for n in director} == {c.rule for c in case.not_compliant}
    assert director == {"run_length", "sample_rate", "measured_as", "submission_engine"}
    assert results["valid"] and not case.failed
    assert results["compliant"] is case.to_json()["compliant"] is False


def _claim_compliant(folder: Path) -> None:
    """Rewrite results.json as if the director had called the run MLPerf-compliant, and its
    recorded sha256, so that only the run length can fail."""
    results = json.loads((folder / "results.json").read_text())
    results["compliant"] = True
    results["checks"] = [c for c in results["checks"] if c["kind"] != "compliance"]
    (folder / "results.json").write_text(json.dumps(results))
    server = json.loads((folder / "power" / "server.json").read_text())
    server["results"]["results.json"] = hashlib.sha1(
        (folder / "results.json").read_bytes()).hexdigest()
    (folder / "power" / "server.json").write_text(json.dumps(server))


def test_a_short_run_claiming_compliance_fails_the_600_s_rule(power_session, tmp_path,
                                                               capsys) -> None:
    copy = shutil.copytree(power_session, tmp_path / "claims-compliant")
    _claim_compliant(copy)
    got = verdicts(copy)
    assert got["power.run_duration"][0] == "fail"
    assert "MLPerf requires 600 s (and the session claims compliance)" in \
        got["power.run_duration"][1]
    assert [r for r, (v, _) in got.items() if v == "fail"] == ["power.run_duration"]
    assert main(["check", str(copy)]) == 1
    assert "power.run_duration" in capsys.readouterr().out


def test_a_quick_run_shorter_than_it_was_configured_for_fails(power_session, tmp_path) -> None:
    copy = shutil.copytree(power_session, tmp_path / "too-short")
    detail = copy / "run_1" / "mlperf_log_detail.txt"
    text = detail.read_text()
    configured = [line for line in text.splitlines() if '"effective_min_duration_ms"' in line]
    assert configured, "LoadGen records the configured minimum duration"
    doubled = json.loads(configured[0].removeprefix(":::MLLOG "))
    doubled["value"] = 2 * int(doubled["value"])
    detail.write_text(text.replace(configured[0], ":::MLLOG " + json.dumps(doubled)))
    got = verdicts(copy)
    assert got["power.run_duration"][0] == "fail"
    assert got["power.checksums"][0] == "fail"  # and the edit itself is caught


def test_export_round_trips_and_rescores_to_the_stored_value(power_session, tmp_path,
                                                              capsys) -> None:
    out = tmp_path / "export"
    assert main(["export", str(power_session), "--format", "power", "--out", str(out)]) == 0
    scenario_dir = Path(capsys.readouterr().out.strip())
    testing = stored(power_session)
    assert scenario_dir == out / "results" / "edge-box" / scenario_dir.parent.name / \
        testing["scenario"]
    performance = scenario_dir / "performance"
    assert (performance / "run_1" / "spl.txt").is_file()
    assert (performance / "ranging" / "spl.txt").is_file()

    case = rescore_case(performance)
    assert case.status == "match", case.reasons
    assert case.derived == pytest.approx(testing["value"], rel=1e-4)
    assert case.unit == testing["unit"] == "mJ/query"
    assert case.facts["measured_as"] == "simulated"
    assert [c.status for c in rescore_tree(out)] == ["match"]
    assert main(["check", str(out), "--json"]) == 0  # checked like the session itself
    [checked] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    got = {c["rule"]: (c["verdict"], c["evidence"]) for c in checked["checks"]}
    assert got["measured_as"] == ("warn", "measured_as: simulated: not a hardware measurement")


def test_the_director_adds_its_session_to_the_result_store(power_session) -> None:
    # one store: <--runs-dir>/results.sqlite, whatever folder the director writes sessions to
    [record] = query(power_session.parent.parent / "results.sqlite")
    assert not (power_session.parent / "results.sqlite").exists()
    assert record == records_from_session(power_session)[0]
    testing = stored(power_session)
    server = json.loads((power_session / "power" / "server.json").read_text())
    assert record.scale == "edge" and record.system == "edge-box"
    assert (record.scenario, record.metric, record.unit) == (
        "SingleStream", "energy_per_query", "mJ/query")
    assert record.value == pytest.approx(testing["value"])
    assert record.measured_as == "simulated" and "TINYPOWERSIM" in record.meter
    assert record.alignment_bound_s == max(s["bound_s"] for s in server["skew"])
    assert record.energy_j / record.work_count * 1e3 == pytest.approx(record.value)
    assert record.valid and record.failed_rules == ()
    assert record.extras["compliant"] is False
    assert "run_length" in record.extras["not_compliant"]
    assert record.artifacts_sha256["run_1/spl.txt"] == hashlib.sha256(
        (power_session / "run_1" / "spl.txt").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def invalid_power_session(tmp_path_factory) -> tuple[Path, str]:
    """A session the director itself finds invalid: gaps over 10 ms between the analyzer's
    0.25 s readings leave the coverage check failing (a numpy boolean inside the director).
    Returns the folder and what the `measure` command printed."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        folder = quick_director_session(tmp_path_factory.mktemp("invalid"),
                                        extra_toml="[limits]\nmax_gap_s = 0.01\n",
                                        expect_code=1)
    return folder, out.getvalue()


def test_cli_report_check_and_rescore_agree_on_an_invalid_power_session(
        invalid_power_session, tmp_path, capsys) -> None:
    folder, printed = invalid_power_session
    results = json.loads((folder / "results.json").read_text())
    coverage = next(c for c in results["checks"] if c["name"] == "coverage")
    assert coverage["ok"] is False  # a JSON boolean, not the string "False"
    assert results["valid"] is False and results["measured_as"] == "simulated"

    # measure (the CLI): invalid, with the reason
    assert "invalid: coverage: readings cover" in printed
    assert "valid: no, MLPerf-compliant: no" in printed
    assert "testing result: " in printed and " mJ/query (k=2)" in printed
    assert "not compliant: measured as: the meter's numbers are simulated" in printed
    # the store and the report read the same record
    [record] = records_from_session(folder)
    assert not record.valid and record.failed_rules == ("coverage",)
    assert record.measured_as == "simulated"
    assert main(["report", str(folder), "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "not ok</span> coverage (validity)" in html and "SIMULATED" in html
    # check
    capsys.readouterr()
    assert main(["check", str(folder), "--json"]) == 1
    [case] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    got = {c["rule"]: c for c in case["checks"]}
    assert got["power.session_valid"]["verdict"] == "fail"
    assert "coverage" in got["power.session_valid"]["evidence"]
    assert got["measured_as"]["verdict"] == "warn"
    # rescore
    assert main(["rescore", str(folder), "--json"]) == 1
    [rescored] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rescored["status"] == "flagged"
    assert any("coverage" in r for r in rescored["reasons"])


def test_a_stored_string_false_is_a_failed_check(power_session, tmp_path) -> None:
    """Sessions written before strict JSON hold "False" strings: they read as failures."""
    copy = shutil.copytree(power_session, tmp_path / "old")
    results = json.loads((copy / "results.json").read_text())
    results["checks"].append({"name": "coverage", "ok": "False", "kind": "validity",
                              "message": "old"})
    (copy / "results.json").write_text(json.dumps(results))
    [record] = records_from_session(copy)
    assert not record.valid and "coverage" in record.failed_rules


def test_the_power_record_carries_the_analyzers_uncertainty(power_session, tmp_path) -> None:
    """U (k=2) from the uncertainty PTDaemon reported and the measured skew, by hand."""
    import math

    [record] = records_from_session(power_session)
    server = json.loads((power_session / "power" / "server.json").read_text())
    testing = stored(power_session)
    r = server["phase_records"]["testing"]["meters"]["ptd"]["uncertainty_max"]
    bound = json.loads((power_session / "results.json").read_text())["alignment_bound_s"]
    v, t = testing["value"], testing["window_s"]
    hand = 2 * math.sqrt((v * r / math.sqrt(3)) ** 2 + (v * bound / t * math.sqrt(2 / 3)) ** 2)
    assert 0 < record.extras["uncertainty"] == pytest.approx(hand, rel=1e-9)
    assert main(["report", str(power_session), "--out", str(tmp_path / "r.html")]) == 0
    assert f"± {hand:.3g} mJ/query (k=2)" in (tmp_path / "r.html").read_text()


def test_a_director_killed_mid_session_leaves_a_session_recover_ends(
        power_session, tmp_path) -> None:
    """The director records its owner as tinypower measure does; a session still `running`
    whose owner is gone (a director killed mid-session, played here by rewinding a real
    session's status and giving it an exited process as owner) is ended by `tinypower
    recover`: invalid, with the reason, and indexed."""
    server = json.loads((power_session / "power" / "server.json").read_text())
    assert server["owner"]["pid"] > 0 and server["owner"]["host"]
    runs = tmp_path / "runs"
    folder = Path(shutil.copytree(power_session, runs / "power" / power_session.name))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    server.update(status="running", owner={**server["owner"], "pid": int(gone.stdout)})
    (folder / "power" / "server.json").write_text(json.dumps(server))
    assert main(["recover", "--runs-dir", str(runs)]) == 0
    ended = json.loads((folder / "power" / "server.json").read_text())
    assert ended["status"] == "invalid"
    assert f"pid {gone.stdout.strip()}" in ended["reasons"][-1]
    assert "ended without finishing (killed or crashed)" in ended["reasons"][-1]
    assert [r.valid for r in query(runs / "results.sqlite")] == [False]
