"""The result record and its SQLite store: sessions and rescored cases in, filters and exports
out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tinypower.cli import main
from tinypower.results.db import StoreError, add_records, add_session, query
from tinypower.results.record import RecordError, ResultRecord, records_from_session
from tinypower.results.rescore import rescore_case

LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "mlperf-logs"
TE01 = LOGS / "tiny/v1.1/STMicroelectronics/NUCLEO_U575ZI_Q/kws/energy"


def test_energy_session_record_carries_totals_and_provenance(sessions) -> None:
    [r] = records_from_session(sessions["energy"])
    results = json.loads((sessions["energy"] / "results.json").read_text())
    windows = results["windows"]
    assert (r.system, r.scale, r.benchmark, r.scenario) == ("sim-m4", "tiny", "kws01", "energy")
    assert r.value == results["record"]["value"] and r.unit == "uJ/inf"
    assert r.measured_as == "simulated" and r.valid and r.failed_rules == ()
    assert r.work_count == sum(w["inferences"] for w in windows)
    assert r.energy_j == pytest.approx(sum(w["energy_uj"] for w in windows) * 1e-6)
    assert r.power_w == pytest.approx(r.energy_j / r.duration_s)
    # The headline (median per inference) and the totals agree for steady windows.
    assert r.energy_j / r.work_count * 1e6 == pytest.approx(r.value, rel=1e-3)
    assert r.alignment_bound_s == pytest.approx(1e-3) and r.meter.startswith("lpm01a")
    assert set(r.artifacts_sha256) >= {"trace.npz", "transcript.log", "results.json"}
    assert len(r.artifacts_sha256["trace.npz"]) == 64
    assert ResultRecord.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_failed_session_is_stored_invalid_with_its_reason(sessions, tmp_path) -> None:
    folder = tmp_path / "failed"
    folder.mkdir()
    session = json.loads((sessions["energy"] / "session.json").read_text())
    session.update(status="incomplete", reason="meter unplugged")
    (folder / "session.json").write_text(json.dumps(session))
    [r] = records_from_session(folder)
    assert r.value is None and not r.valid
    assert r.failed_rules == ("session.incomplete",) and r.extras["reason"] == "meter unplugged"
    add_records(tmp_path / "store.sqlite", [r])  # stays invalid through the store
    assert query(tmp_path / "store.sqlite") == [r]
    assert query(tmp_path / "store.sqlite", ["valid=false"]) == [r]


def test_bad_records_and_folders_name_the_problem(tmp_path) -> None:
    with pytest.raises(RecordError, match="not a tinypower session folder"):
        records_from_session(tmp_path)
    with pytest.raises(RecordError, match="measured_as 'guessed' is not one of"):
        ResultRecord("s", "tiny", "kws01", "energy", "e", 1.0, "uJ/inf", "guessed")
    with pytest.raises(RecordError, match="scale 'huge'"):
        ResultRecord("s", "huge", "kws01", "energy", "e", 1.0, "uJ/inf", "hardware")
    with pytest.raises(RecordError, match="unknown result record field"):
        ResultRecord.from_dict({"system": "s", "colour": "red"})


def test_store_adds_idempotently_and_filters(sessions, tmp_path) -> None:
    db = tmp_path / "results.sqlite"
    for _ in range(2):  # adding the same session again replaces, never duplicates
        add_session(db, sessions["energy"])
        add_session(db, sessions["performance"])
    assert len(query(db)) == 2
    [energy] = query(db, ["scenario=energy"])
    assert energy == records_from_session(sessions["energy"])[0]
    assert [r.scenario for r in query(db, ["value>100", "valid=true"])] == ["energy"]
    assert query(db, ["measured_as=hardware"]) == []
    with pytest.raises(StoreError, match="cannot filter on 'colour'"):
        query(db, ["colour=red"])
    with pytest.raises(StoreError, match="value is a number"):
        query(db, ["value=lots"])
    with pytest.raises(StoreError, match="no result store at"):
        query(tmp_path / "absent.sqlite")


@pytest.mark.skipif(not TE01.is_dir(), reason=f"published MLPerf logs not found at {LOGS}")
def test_rescored_case_is_stored_beside_sessions(sessions, tmp_path) -> None:
    db = tmp_path / "results.sqlite"
    add_session(db, sessions["energy"])
    add_records(db, [rescore_case(TE01).to_record()])
    [published] = query(db, ["measured_as=hardware"])
    assert (published.system, published.benchmark, published.scenario) == (
        "NUCLEO_U575ZI_Q", "kws01", "energy")
    assert published.valid and published.value == pytest.approx(1004.221, rel=1e-4)
    assert published.work_count == 1500 and published.alignment_bound_s == pytest.approx(1e-3)
    assert "trace1-energy.bin" in published.artifacts_sha256


def test_results_cli_lists_filters_and_exports(sessions, tmp_path, capsys) -> None:
    db = tmp_path / "results.sqlite"
    for folder in sessions.values():
        add_session(db, folder)
    assert main(["results", "--db", str(db), "--json", "--filter", "scenario=performance"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["unit"] == "inf/s"
    out_csv = tmp_path / "out.csv"
    assert main(["results", "--db", str(db), "--csv", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert sorted(r["scenario"] for r in rows) == ["energy", "performance"]
    assert json.loads(rows[0]["artifacts_sha256"])
    assert main(["results", "--db", str(db)]) == 0
    listing = capsys.readouterr().out
    energy = [r for r in query(db, ["scenario=energy"])][0]
    u = energy.extras["energy_uncertainty_uj"]
    assert "sim-m4" in listing and f"{energy.value:.7g}" in listing
    assert "±" in listing and f"{u:.3g}" in listing  # the value's expanded uncertainty
    assert main(["results", "--db", str(db), "--filter", "nonsense"]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err


def test_every_measured_session_is_indexed_in_its_runs_folder_store(sessions, capsys) -> None:
    runs = sessions["energy"].parent
    stored = query(runs / "results.sqlite", ["benchmark=kws01"])
    assert {r.source for r in stored} == {str(sessions["energy"]), str(sessions["performance"])}
    assert all(r.measured_as == "simulated" for r in stored)
    # `results` takes the same --runs-dir as the command that measured.
    assert main(["results", "--runs-dir", str(runs), "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["source"] for r in listed} == {r.source for r in stored}


def test_filters_match_what_the_listing_shows_case_insensitively(sessions, tmp_path,
                                                                 capsys) -> None:
    db = tmp_path / "results.sqlite"
    for folder in sessions.values():
        add_session(db, folder)
    energy = sessions["energy"]
    [stored] = query(db, ["mode=Energy", "label=SIMULATED", "board=SIM-M4",
                          f"session={energy.name}", "monitor!=nothing"])
    assert stored.source == str(energy)
    day = stored.recorded_utc[:10]
    assert len(query(db, [f"date={day}"])) == 2 and query(db, ["date=1999-01-01"]) == []
    assert len(query(db, [f"date>={day}", "value>=1000"])) == 1
    assert len(query(db, [f"model={stored.extras['model'].upper()}"])) == 2
    assert len(query(db, ["failed_rules!=session.incomplete"])) == 2
    assert query(db, ["failed_rules=session.incomplete"]) == []
    with pytest.raises(StoreError, match="failed_rules takes = or !="):
        query(db, ["failed_rules>x"])
    assert main(["results", "--db", str(db)]) == 0
    listing = capsys.readouterr().out
    for shown in (day, "sim-m4", stored.extras["model"], "lpm01a", "energy", "SIMULATED",
                  energy.name):
        assert shown in listing, shown
    assert main(["results", "--db", str(db), "--filter", "value"]) == 2
    assert "'value>=1000'" in capsys.readouterr().err  # says how to quote
