"""`tinypower measure` end to end on the virtual lab: the real runner, protocol client and LPM01A
driver over ptys, scored against the simulator's ground truth; failures keep their data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from energy_monitor.sim.faults import SimFaults
from energy_monitor.trace import load_trace
from tinypower.boards import load_board
from tinypower.cli import main
from tinypower.models import resolve_model
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import synthetic_inputs

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "mlperf-tiny"
needs_models = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"MLPerf Tiny reference models not found at {SHARED}"
)


def request(tmp_path: Path, mode: str, **kw) -> RunRequest:
    suite = get_suite("kws01")
    return RunRequest(
        board=load_board("sim-m4"), suite=suite, model=resolve_model(suite, "synthetic"),
        dataset=synthetic_inputs(suite), mode=mode, runs_dir=tmp_path, **kw,
    )


def session_json(folder: Path) -> dict:
    return json.loads((folder / "session.json").read_text())


def test_default_measure_gives_valid_performance_and_energy(tmp_path, capsys) -> None:
    code = main(["measure", "--runs-dir", str(tmp_path), "--json"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [r["mode"] for r in records] == ["performance", "energy"]
    perf, energy = records
    board = load_board("sim-m4")
    model = resolve_model(get_suite("kws01"), "synthetic")
    latency_s = board.cycle_model.latency_s(model.info.macs, board.clock_hz, model.data)
    # Performance: N inferences plus the timestamp pulse between the two laps.
    n = perf["extras"]["iterations"]
    hold = board.energy_model.timestamp_hold_s
    assert perf["value"] == pytest.approx(n / (n * latency_s + hold), rel=1e-5)
    assert perf["unit"] == "inf/s" and perf["valid"] and perf["measured_as"] == "simulated"
    # Energy: the active current at the meter's voltage for one latency, within 0.1%.
    truth_uj = board.monitor_voltage_v * board.energy_model.active_current_a * latency_s * 1e6
    assert energy["value"] == pytest.approx(truth_uj, rel=1e-3)
    assert energy["unit"] == "uJ/inf" and energy["valid"]
    assert "synthetic weights: accuracy not meaningful" in energy["notes"]
    for r in records:
        folder = Path(r["session"])
        assert session_json(folder)["status"] == "complete"
        assert (folder / "transcript.log").stat().st_size > 0
        assert "VALID" in (folder / "results.txt").read_text()
    efolder = Path(energy["session"])
    for name in ("lpm01a-raw.txt", "trace.npz", "power.png", "results.json"):
        assert (efolder / name).is_file(), name
    # The sample column written while measuring gave way to the trace that holds it.
    assert not (efolder / "lpm01a-samples.f64").exists()
    trace = load_trace(efolder / "trace.npz")
    assert len(trace.events) >= 10 and not trace.drops
    assert "Median energy cost is" in (efolder / "results.txt").read_text()
    # Every window lasted at least 10 s of DUT time.
    windows = json.loads((efolder / "results.json").read_text())["windows"]
    assert len(windows) == 5 and all(w["duration_s"] >= 10 for w in windows)


def test_each_window_energy_within_one_sample_of_ground_truth(tmp_path) -> None:
    outcome = run(request(tmp_path, "energy"))
    assert outcome.ok, outcome.error
    board = load_board("sim-m4")
    model = resolve_model(get_suite("kws01"), "synthetic")
    latency_s = board.cycle_model.latency_s(model.info.macs, board.clock_hz, model.data)
    power_w = board.monitor_voltage_v * board.energy_model.active_current_a
    n = outcome.result.extras["iterations"]
    # Between the two falling edges the DUT runs N inferences and one timestamp pulse.
    truth_uj = power_w * (n * latency_s + board.energy_model.timestamp_hold_s) * 1e6
    one_sample_uj = power_w / board.monitor_sample_rate_hz * 1e6
    assert model.info.macs > 2_600_000
    for w in outcome.result.windows:
        assert abs(w["energy_uj"] - truth_uj) <= 2 * one_sample_uj
        assert w["alignment_bound_s"] == pytest.approx(1 / board.monitor_sample_rate_hz)


def test_short_windows_make_the_run_invalid_and_exit_nonzero(tmp_path, capsys) -> None:
    code = main(["measure", "--runs-dir", str(tmp_path), "--mode", "energy",
                 "--iterations", "20", "--json"])
    record = json.loads(capsys.readouterr().out)
    assert code == 1 and not record["valid"]
    rules = {f["rule"] for f in record["failures"]}
    assert "tiny.window_length[0]" in rules
    assert "at least 10 s" in record["failures"][0]["message"]
    assert session_json(Path(record["session"]))["status"] == "invalid"


def test_lost_timestamp_makes_the_run_invalid(tmp_path) -> None:
    # The first edges belong to the calibration probes (how many depends on the DUT's speed);
    # edge 6 lies in one of the five windows, which then has one edge.
    outcome = run(request(tmp_path, "energy", meter_faults=SimFaults(lose_event=6),
                          edge_timeout_s=0.3))
    assert outcome.error is None and not outcome.ok
    failed = {c.rule: c.message for c in outcome.result.failures}
    short = [r for r, m in failed.items()
             if r.startswith("tiny.window[") and "1 timestamp edge(s), needs 2" in m]
    assert len(short) == 1, failed
    assert "tiny.window_count" in failed  # four windows left, five required
    assert session_json(outcome.session.folder)["status"] == "invalid"


def test_sample_drop_makes_the_run_invalid(tmp_path) -> None:
    outcome = run(request(tmp_path, "energy", meter_faults=SimFaults(drop_at=25_000, drop_count=5)))
    assert outcome.error is None and not outcome.ok
    rules = {c.rule for c in outcome.result.failures}
    assert "tiny.sample_drops" in rules
    assert any("samples lost" in c.message for c in outcome.result.failures if "window" in c.rule)


def test_unknown_meter_line_is_skipped_and_noted_in_the_session(tmp_path) -> None:
    outcome = run(request(tmp_path, "energy", meter_faults=SimFaults(garble_at=5000)))
    assert outcome.ok, outcome.error  # as the MLCommons runner does: skipped, not fatal
    transcript = outcome.session.path("transcript.log").read_text()
    assert "[lpm01a] [unknown line after sample 5000, skipped]" in transcript
    assert outcome.session.path("lpm01a-raw.txt").stat().st_size > 0


def test_truncated_meter_stream_keeps_the_data_and_says_why(tmp_path) -> None:
    outcome = run(request(tmp_path, "energy", meter_faults=SimFaults(unplug_after=20_000)))
    assert not outcome.ok and "unplugged" in outcome.error
    assert session_json(outcome.session.folder)["status"] == "incomplete"
    assert len(load_trace(outcome.session.path("trace-partial.npz"))) > 0


def test_corrupted_input_download_stops_the_run(tmp_path) -> None:
    outcome = run(request(tmp_path, "performance", corrupt_download_byte=100))
    assert not outcome.ok
    assert "byte 100" in outcome.error
    assert session_json(outcome.session.folder)["status"] == "incomplete"


@needs_models
def test_accuracy_with_the_reference_model_agrees_with_the_host(tmp_path, capsys) -> None:
    samples = tmp_path / "inputs"
    samples.mkdir()
    shutil.copy(SHARED / "samples" / "kws01_sample0.bin", samples)
    code = main([
        "measure", "--runs-dir", str(tmp_path / "runs"), "--mode", "accuracy",
        "--model", str(SHARED / "kws_ref_model.tflite"), "--dataset", str(samples), "--json",
    ])
    record = json.loads(capsys.readouterr().out)
    assert code == 0, record
    assert record["metric"] == "reference_agreement" and record["value"] == 100.0
    assert record["model"]["source"] == "file"


def test_accuracy_default_inputs_report_agreement(tmp_path, capsys) -> None:
    code = main(["measure", "--runs-dir", str(tmp_path), "--mode", "accuracy", "--json"])
    record = json.loads(capsys.readouterr().out)
    assert code == 0
    assert record["extras"]["reference_agreement_percent"] == 100.0
    assert {w["rule"] for w in record["warnings"]} == {"tiny.model"}


def test_usage_errors_are_one_line_and_exit_2(tmp_path, capsys) -> None:
    assert main(["measure", "--board", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown board 'nope'" in capsys.readouterr().err
    assert main(["measure", "--mode", "fast", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown mode(s) fast" in capsys.readouterr().err
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all")
    assert main(["measure", "--model", str(bad), "--runs-dir", str(tmp_path)]) == 2
    assert "TFL3" in capsys.readouterr().err
    assert main(["measure", "--suite", "vww01", "--runs-dir", str(tmp_path)]) == 2
    assert "models fetch" in capsys.readouterr().err


def test_console_script_prints_only_json_on_stdout(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tinypower.cli", "measure", "--mode", "performance",
         "--runs-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["suite"] == "kws01" and record["valid"] is True
