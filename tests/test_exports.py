"""Exports: our sessions in the MLPerf Tiny submission and MLPerf power output layouts, read back
by the published-log readers (the same code that re-derives MLCommons' numbers) to the score the
session stored. Sessions come from the real virtual lab; the power session is built here in the
layout the scaling layer writes (spl.txt + LoadGen detail log per phase)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from energy_monitor.trace import Event, Trace, load_trace, save_trace
from tinypower.cli import main
from tinypower.results.exports import (
    ExportError,
    SessionFolderError,
    export_power,
    export_tiny,
    load_session,
)
from tinypower.results.power_logs import SPL_TIME_FORMAT, score_power_folder
from tinypower.results.tiny_logs import (
    published_value,
    read_eembc_energy,
    read_mlcommons_energy,
    score_published,
)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> dict[str, Path]:
    """One real virtual-lab session per mode."""
    runs = tmp_path_factory.mktemp("runs")
    assert main(["measure", "--runs-dir", str(runs), "--mode",
                 "performance,energy,accuracy"]) == 0
    folders = [f for f in runs.iterdir() if f.is_dir()]  # beside them: results.sqlite
    return {json.loads((f / "session.json").read_text())["mode"]: f for f in folders}


def stored(folder: Path) -> float:
    return json.loads((folder / "results.json").read_text())["record"]["value"]


def test_tiny_export_writes_the_submission_tree_and_round_trips(sessions, tmp_path) -> None:
    out = tmp_path / "closed" / "tinypower"
    folders = {mode: export_tiny(folder, out) for mode, folder in sessions.items()}
    for mode, folder in folders.items():
        assert folder == out / "results" / "sim-m4" / "kws" / mode
        assert (folder / "log.txt").is_file() and (folder / "results.txt").is_file()
        assert "measured_as: simulated" in (folder / "results.txt").read_text()
    # The published readers re-derive each timed score from the raw files of the export.
    energy = score_published(folders["energy"])
    assert energy.extras["source"] == "mlcommons-energy"
    assert energy.value == pytest.approx(stored(sessions["energy"]), rel=1e-12)
    perf = score_published(folders["performance"])
    assert perf.extras["source"] == "mlcommons-performance"
    assert perf.value == pytest.approx(stored(sessions["performance"]), rel=1e-12)
    # ... and the printed claim agrees at its print precision (%5.4f energy, %10.3f throughput).
    assert published_value(folders["energy"]) == (
        pytest.approx(stored(sessions["energy"]), abs=5e-5), "uJ/inf")
    assert published_value(folders["performance"]) == (
        pytest.approx(stored(sessions["performance"]), abs=5e-4), "inf/s")
    # Each trial's window is the session's window, sample for sample.
    run = read_mlcommons_energy(folders["energy"])
    windows = json.loads((sessions["energy"] / "results.json").read_text())["windows"]
    assert [e.samples for e in run.energies()] == [w["samples"] for w in windows]
    assert [e.energy_j * 1e6 for e in run.energies()] == pytest.approx(
        [w["energy_uj"] for w in windows], rel=1e-12)
    system = json.loads((out / "systems" / "sim-m4.json").read_text())
    assert system["measured_as"] == "simulated"
    assert set(system["sessions"]) == {"performance", "energy", "accuracy"}
    assert "Reference agreement: 100.0%" in (folders["accuracy"] / "results.txt").read_text()


def _resampled_session(source: Path, dest: Path, factor: int) -> Path:
    """A copy of an energy session as if the meter had sampled ``factor`` times faster: each
    sample split into equal parts, edges and windows moved to the same instants."""
    shutil.copytree(source, dest)
    trace = load_trace(source / "trace.npz")
    fast = Trace(
        sample_rate_hz=trace.sample_rate_hz * factor,
        energy_j=np.repeat(trace.energy_per_sample_j() / factor, factor),
        events=[Event(e.index * factor, e.time_s, e.polarity, e.channel) for e in trace.events],
    )
    save_trace(fast, dest / "trace.npz")
    results = json.loads((source / "results.json").read_text())
    for w in results["windows"]:
        w["samples"] *= factor
        w["alignment_bound_s"] /= factor
    (dest / "results.json").write_text(json.dumps(results))
    return dest


def test_energy_not_at_1khz_is_exported_as_eembc_trace_files(sessions, tmp_path) -> None:
    session = _resampled_session(sessions["energy"], tmp_path / "fast-session", 4)
    folder = export_tiny(session, tmp_path / "out")
    assert {p.name for p in folder.iterdir()} == {
        "trace1-energy.bin", "trace1-timestamps.json", "log.txt", "results.txt"}
    run = read_eembc_energy(folder)
    assert run.trace.sample_rate_hz == 4000.0
    windows = json.loads((session / "results.json").read_text())["windows"]
    assert [w.end_index - w.start_index for w in run.windows] == [w["samples"] for w in windows]
    result = score_published(folder)
    assert result.extras["source"] == "eembc-energy"
    assert result.value == pytest.approx(stored(session), rel=1e-6)  # float32 samples


def test_export_refuses_a_result_it_cannot_reproduce(sessions, tmp_path) -> None:
    session = shutil.copytree(sessions["energy"], tmp_path / "tampered")
    results = json.loads((session / "results.json").read_text())
    results["record"]["value"] *= 1.01
    (session / "results.json").write_text(json.dumps(results))
    with pytest.raises(ExportError, match="does not reproduce the session"):
        export_tiny(session, tmp_path / "out")


def test_bad_sessions_give_clear_errors(sessions, tmp_path) -> None:
    with pytest.raises(SessionFolderError, match="no session.json"):
        export_tiny(tmp_path, tmp_path / "out")
    no_trace = shutil.copytree(sessions["energy"], tmp_path / "no-trace")
    (no_trace / "trace.npz").unlink()
    with pytest.raises(SessionFolderError, match="has no trace.npz"):
        export_tiny(no_trace, tmp_path / "out")
    moved = shutil.copytree(sessions["energy"], tmp_path / "moved")
    results = json.loads((moved / "results.json").read_text())
    results["windows"][2]["start_s"] += 0.5
    (moved / "results.json").write_text(json.dumps(results))
    with pytest.raises(SessionFolderError, match="window 2 starts at sample .* no timestamp edge"):
        export_tiny(moved, tmp_path / "out")
    failed = shutil.copytree(sessions["performance"], tmp_path / "failed")
    results = json.loads((failed / "results.json").read_text())
    results["record"]["value"] = None
    (failed / "results.json").write_text(json.dumps(results))
    with pytest.raises(ExportError, match="stored no score"):
        export_tiny(failed, tmp_path / "out")
    with pytest.raises(ExportError, match="is not a power session"):
        export_power(sessions["energy"], tmp_path / "out")


def test_cli_export(sessions, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["export", str(sessions["energy"]), str(sessions["performance"]),
                 "--format", "tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "results/sim-m4/kws/energy"),
                       str(out / "results/sim-m4/kws/performance")]
    assert main(["export", str(tmp_path / "nowhere"), "--format", "tiny",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# Power sessions

BEGIN = datetime(2026, 3, 4, 10, 0, 5, 250000)


def _mllog(key: str, value: object) -> str:
    return ":::MLLOG " + json.dumps({"key": key, "value": value, "time_ms": 0.0,
                                     "namespace": "mlperf::logging"})


def _phase(folder: Path, watts: list[float], scenario: str, window_s: float,
           queries: int) -> None:
    """One phase as the scaling layer keeps it: 1 Hz analyzer lines from 5 s before the
    LoadGen window to after it, and LoadGen's detail log with power_begin/power_end."""
    folder.mkdir(parents=True)
    start = BEGIN - timedelta(seconds=5)
    lines = [
        f"Time,{(start + timedelta(seconds=i)).strftime(SPL_TIME_FORMAT)[:-3]},Watts,{w:.6f},"
        "Volts,230.000000,Amps,0.500000,PF,0.990000,Mark,session_testing"
        for i, w in enumerate(watts)
    ]
    (folder / "spl.txt").write_text("\n".join(lines) + "\n")
    end = BEGIN + timedelta(seconds=window_s)
    (folder / "mlperf_log_detail.txt").write_text("\n".join([
        _mllog("requested_scenario", scenario), _mllog("effective_scenario", scenario),
        _mllog("power_begin", BEGIN.strftime(SPL_TIME_FORMAT)[:-3]),
        _mllog("power_end", end.strftime(SPL_TIME_FORMAT)[:-3]),
        _mllog("result_validity", "VALID"), _mllog("result_query_count", queries),
    ]) + "\n")


def _power_session(folder: Path, scenario: str, value: float | None, unit: str) -> Path:
    """A session in the scaling layer's layout (host/scale/director.py): power/server.json,
    ranging/ and run_1/, results.json with the testing phase's metric."""
    rng = np.random.default_rng(7)
    testing = list(100.0 + rng.uniform(-2, 2, size=80))
    _phase(folder / "run_1", testing, scenario, window_s=60.0, queries=12_000)
    _phase(folder / "ranging", [w + 1.0 for w in testing], scenario, 60.0, 12_000)
    (folder / "power").mkdir()
    (folder / "power" / "ptd_out.txt").write_text("Watts,100.0\n")
    (folder / "power" / "server.json").write_text(json.dumps({
        "status": "complete", "sut": "edge-box", "model": "resnet50", "label": "edge",
    }))
    (folder / "results.json").write_text(json.dumps(
        {"testing": {"value": value, "unit": unit, "measured_as": "simulated"},
         "measured_as": "simulated"}))
    return folder


def _truth_w(folder: Path) -> tuple[float, float]:
    """Mean of the testing samples strictly inside the window, computed here from the rule."""
    watts = [float(line.split(",")[3])
             for line in (folder / "run_1" / "spl.txt").read_text().splitlines()]
    inside = watts[6:65]  # sample i is at BEGIN + (i - 5) s: strictly inside for i = 6..64
    return float(np.mean(inside)), float(np.mean(watts[6:65]) + 1.0)


def test_power_export_lays_out_run_1_and_ranging_and_rescores(tmp_path) -> None:
    session = _power_session(tmp_path / "offline", "Offline", None, "W")
    truth_w, ranging_w = _truth_w(session)
    session_record = json.loads((session / "results.json").read_text())
    session_record["testing"]["value"] = truth_w
    (session / "results.json").write_text(json.dumps(session_record))
    scenario_dir = export_power(session, tmp_path / "out")
    assert scenario_dir == tmp_path / "out" / "results" / "edge-box" / "resnet50" / "Offline"
    performance = scenario_dir / "performance"
    assert {p.name for p in (performance / "power").iterdir()} == {"server.json", "ptd_out.txt"}
    scores = score_power_folder(performance)
    assert scores["testing"].value == pytest.approx(truth_w, rel=1e-12)
    assert scores["ranging"].value == pytest.approx(ranging_w, rel=1e-12)
    assert scores["ranging_ok"]
    system = json.loads((tmp_path / "out" / "systems" / "edge-box.json").read_text())
    assert system["measured_as"] == "simulated"


def test_power_export_of_single_stream_checks_the_stored_energy(tmp_path, capsys) -> None:
    session = _power_session(tmp_path / "ss", "SingleStream", None, "mJ/query")
    truth_w, _ = _truth_w(session)
    truth_mj = truth_w * 60.0 / 12_000 * 1e3
    for value, ok in ((truth_mj, True), (truth_mj * 1.02, False)):
        record = json.loads((session / "results.json").read_text())
        record["testing"]["value"] = value
        (session / "results.json").write_text(json.dumps(record))
        code = main(["export", str(session), "--format", "power",
                     "--out", str(tmp_path / f"out-{ok}")])
        captured = capsys.readouterr()
        assert code == (0 if ok else 2)
        if not ok:
            assert "does not reproduce the session" in captured.err
    (session / "run_1" / "mlperf_log_detail.txt").unlink()
    with pytest.raises(ExportError, match="mlperf_log_detail.txt is missing"):
        export_power(session, tmp_path / "out-missing")


def test_load_session_reads_what_measure_wrote(sessions) -> None:
    session = load_session(sessions["energy"])
    assert session.mode == "energy" and session.measured_as == "simulated"
    trace = session.trace()
    windows = session.trace_windows(trace)
    assert len(windows) == 5 and all(w.work_count > 0 for w in windows)
    assert session.result().value == pytest.approx(stored(sessions["energy"]))
