"""Sessions survive what the environment does to a run: kill -9 at any checkpoint, SIGTERM,
SIGHUP and Ctrl-C, concurrent runs on one runs dir, a full disk. Each test runs the real
``tinypower`` command in a subprocess (or the real runner) on the virtual lab; the test hook
``TINYPOWER_TEST_KILL_AT`` sends the signal right after a named checkpoint is on disk, so each
point of a run is reached deterministically however fast the virtual lab is."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from energy_monitor.store import FLUSH_INTERVAL_ENV
from energy_monitor.trace import load_trace
from tinypower.boards import load_board
from tinypower.models import resolve_model
from tinypower.results.db import query
from tinypower.results.session import KILL_AT_ENV
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import synthetic_inputs

# A short run: fixed N (no calibration), 20 inferences of ~0.1 s of DUT time per window.
MEASURE = ["measure", "--board", "sim-m4", "--iterations", "20", "--warmups", "0"]


def tinypower(*args: str | Path, env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.Popen:
    """Run the real command to its end; the result has ``stdout``, ``stderr``, ``pid``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinypower.cli", *map(str, args)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "400", **(env or {})},
    )
    proc.stdout, proc.stderr = proc.communicate(timeout=timeout)
    return proc


def no_traceback(proc: subprocess.Popen) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr


def only_session(runs: Path) -> Path:
    [path] = runs.glob("*/session.json")
    return path.parent


def session_json(folder: Path) -> dict:
    return json.loads((folder / "session.json").read_text())


@pytest.mark.parametrize(("mode", "label"), [
    ("energy", "meter started"), ("energy", "window 0"), ("energy", "window 3"),
    ("performance", "window 2"),
])
def test_kill_9_at_a_checkpoint_then_results_and_check_report_it(tmp_path, mode, label) -> None:
    runs = tmp_path / "runs"
    killed = tinypower(*MEASURE, "--mode", mode, "--runs-dir", runs,
                       env={KILL_AT_ENV: label, FLUSH_INTERVAL_ENV: "0"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    folder = only_session(runs)
    before = session_json(folder)
    assert before["status"] == "running" and before["owner"]["pid"] == killed.pid
    assert before["checkpoints"][-1]["label"] == label

    # The next command that opens the runs dir, or the session, notices the orphan.
    again = tinypower("measure", "--mode", "bogus", "--runs-dir", runs)
    assert "left running by a process that is gone" in again.stderr
    early = tinypower("check", folder, "--json")
    assert early.returncode == 1 and "left running by a process that is gone" in early.stderr

    listed = tinypower("results", "--db", runs / "results.sqlite", "--json")
    no_traceback(listed)
    assert listed.returncode == 0, listed.stderr
    assert f"recovered {folder}: incomplete" in listed.stderr
    [record] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert record["valid"] is False and record["failed_rules"] == ["session.incomplete"]
    assert record["scenario"] == mode and record["measured_as"] == "simulated"
    reason = record["extras"]["reason"]
    assert f"pid {killed.pid}" in reason and f"after checkpoint {label!r}" in reason
    assert "killed or crashed" in reason
    after = session_json(folder)
    assert after["status"] == "incomplete" and after["reason"] == reason
    if mode == "energy":
        # Loss bound: with the flush interval at 0 every sample counted at the checkpoint
        # reached the OS before the kill, so recovery finds at least that many.
        kept = int(re.search(r"(\d+) samples in lpm01a-samples\.f64", reason).group(1))
        counted = before["checkpoints"][-1].get("meter_samples", 0)
        assert kept >= counted
        assert kept == (folder / "lpm01a-samples.f64").stat().st_size // 8
        if label != "meter started":
            assert kept > 0
        samples = np.fromfile(folder / "lpm01a-samples.f64", dtype="<f8")
        assert np.all(np.isfinite(samples[:counted]))

    checked = tinypower("check", folder, "--json")
    no_traceback(checked)
    assert checked.returncode == 1
    [case] = [json.loads(line) for line in checked.stdout.splitlines()]
    [complete] = [c for c in case["checks"] if c["rule"] == "session.complete"]
    assert complete["verdict"] == "fail" and "incomplete" in complete["evidence"]
    assert "killed or crashed" in complete["evidence"]
    # Recovery hashed the files it found, so the checksums rule holds.
    [sums] = [c for c in case["checks"] if c["rule"] == "session.checksums"]
    assert sums["verdict"] == "pass"


def test_reindex_rebuilds_the_store_from_the_folders(tmp_path) -> None:
    runs = tmp_path / "runs"
    assert tinypower(*MEASURE, "--mode", "performance", "--runs-dir", runs).returncode == 1
    killed = tinypower(*MEASURE, "--mode", "energy", "--runs-dir", runs,
                       env={KILL_AT_ENV: "window 1"})
    assert killed.returncode == -signal.SIGKILL
    db = runs / "results.sqlite"
    db.unlink()
    db.write_bytes(b"not a database")  # a store corrupted beyond use
    rebuilt = tinypower("reindex", "--runs-dir", runs)
    no_traceback(rebuilt)
    assert rebuilt.returncode == 0 and "2 record(s) indexed" in rebuilt.stdout
    records = {r.scenario: r for r in query(db)}
    assert set(records) == {"performance", "energy"}
    assert "after checkpoint 'window 1'" in records["energy"].extras["reason"]


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_end_a_run_like_ctrl_c(tmp_path, name) -> None:
    runs = tmp_path / "runs"
    proc = tinypower(*MEASURE, "--mode", "energy", "--runs-dir", runs,
                     env={KILL_AT_ENV: f"window 1:{name}"})
    no_traceback(proc)
    signum = signal.Signals[name]
    assert proc.returncode == 128 + signum
    folder = only_session(runs)
    last = proc.stderr.strip().splitlines()[-1]
    who = "Ctrl-C" if name == "SIGINT" else name
    assert last == f"interrupted ({who}): session marked interrupted, data kept in {folder}"
    data = session_json(folder)
    assert data["status"] == "interrupted"
    assert data["reason"] == ("interrupted by the user (Ctrl-C)" if name == "SIGINT"
                              else f"interrupted by {name}")
    # Meters stopped and what they measured kept: the partial trace and the raw stream.
    partial = load_trace(folder / "trace-partial.npz")
    assert len(partial) >= data["checkpoints"][-1]["meter_samples"] > 0
    assert (folder / "lpm01a-raw.txt").stat().st_size > 0
    assert set(data["files"]) >= {"trace-partial.npz", "results.json", "transcript.log"}
    # The store was updated by the run itself, not by a later recovery.
    [record] = query(runs / "results.sqlite")
    assert record.failed_rules == ("session.interrupted",) and not record.valid


def test_four_concurrent_measures_on_one_runs_dir_are_all_indexed(tmp_path) -> None:
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "tinypower.cli", *MEASURE, "--mode", "performance",
           "--runs-dir", str(runs), "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, errs) in zip(procs, outs, strict=True):
        assert "Traceback" not in errs, errs
        assert p.returncode == 1  # windows of 2 s: measured, but invalid for MLPerf
    sessions = {Path(json.loads(out)["session"]) for out, _ in outs}
    assert len(sessions) == 4
    assert {session_json(s)["status"] for s in sessions} == {"invalid"}
    records = query(runs / "results.sqlite")
    assert {Path(r.source) for r in records} == {s.resolve() for s in sessions}


def request(runs: Path, mode: str = "energy", **kw) -> RunRequest:
    suite = get_suite("kws01")
    return RunRequest(board=load_board("sim-m4"), suite=suite,
                      model=resolve_model(suite, "synthetic"), dataset=synthetic_inputs(suite),
                      mode=mode, runs_dir=runs, iterations=20, warmups=0, **kw)


def test_a_plot_that_hits_a_full_disk_never_loses_the_result(tmp_path, monkeypatch) -> None:
    import matplotlib.figure

    def disk_full(self, fname, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(fname))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_full)
    outcome = run(request(tmp_path))
    assert outcome.error is None and outcome.result is not None
    folder = outcome.session.folder
    assert f"power.png not written: disk full at {folder / 'power.png'}" in " ".join(
        outcome.notes)
    saved = json.loads((folder / "results.json").read_text())["record"]
    assert saved["value"] == pytest.approx(outcome.result.value)
    assert "Median energy cost is" in (folder / "results.txt").read_text()
    assert not (folder / "power.png").exists()
    assert session_json(folder)["status"] == "invalid"  # 2 s windows: measured, not MLPerf
    [record] = query(tmp_path / "results.sqlite")
    assert record.value == pytest.approx(outcome.result.value)


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs the test fills; skipped where this user may not mount."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the injected "
                    "ENOSPC tests cover the same paths")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> None:
    with (disk / f"filler-{uuid.uuid4().hex}").open("wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(1 << 16))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_disk_filling_mid_run_is_reported_as_such_and_the_session_marked(
    small_disk, monkeypatch
) -> None:
    monkeypatch.setattr("energy_monitor.store.FLUSH_INTERVAL_S", 0.0)  # samples go to the OS

    def progress(text: str, done: int, total: int) -> None:
        if text.startswith("energy window 3/"):
            fill(small_disk)

    runs = small_disk / "runs"
    outcome = run(request(runs), progress)
    folder = outcome.session.folder
    assert outcome.error is not None and "disk full at" in outcome.error
    assert "stopped streaming" not in outcome.error  # not blamed on the instrument
    data = session_json(folder)
    assert data["status"] == "incomplete" and "disk full at" in data["reason"]
    assert (folder / "lpm01a-samples.f64").stat().st_size > 0  # what fit is kept


def test_not_enough_space_is_refused_before_a_session_folder_exists(small_disk) -> None:
    fill(small_disk)
    runs = small_disk / "runs"
    proc = tinypower(*MEASURE, "--mode", "energy", "--runs-dir", runs)
    no_traceback(proc)
    assert proc.returncode == 2
    assert f"disk full at {runs}" in proc.stderr
    assert not list(runs.glob("*/session.json"))



def test_equal_laps_are_a_dut_failure_not_a_division_by_zero(tmp_path) -> None:
    """A DUT whose laps do not advance (here a board so fast that N inferences and the pulse
    between the laps take under a microsecond) fails the run with its reason."""
    text = (Path(__file__).resolve().parents[1] / "boards" / "sim-m4.toml").read_text()
    text = (text.replace("clock_hz = 120_000_000", "clock_hz = 10_000_000_000")
            .replace('costs = "firmware"', "cycles_per_mac = 0.000001\noverhead_cycles = 0")
            .replace("timestamp_hold_s = 0.0001", "timestamp_hold_s = 0.000000001"))
    board = tmp_path / "instant.toml"
    board.write_text(text.replace('name = "sim-m4"', 'name = "instant"'))
    runs = tmp_path / "runs"
    proc = tinypower("measure", "--board", board, "--mode", "performance", "--iterations", "1",
                     "--warmups", "0", "--runs-dir", runs)
    no_traceback(proc)
    assert proc.returncode == 1
    assert "gave two equal m-lap-us laps" in proc.stderr
    data = session_json(only_session(runs))
    assert data["status"] == "incomplete" and "the DUT's timer is not running" in data["reason"]


def test_an_energy_run_killed_after_its_last_window_is_scored_from_its_checkpoints(
    tmp_path,
) -> None:
    """Each window's checkpoint holds its energy as integrated when it ended: in a whole run
    they are the windows it scores; recovered, they give the score a whole run gives for the
    same DUT and N (to the 1 ms samples' placement of the edges: two runs differ by that)."""
    runs = tmp_path / "runs"
    killed = tinypower(*MEASURE, "--mode", "energy", "--runs-dir", runs,
                       env={KILL_AT_ENV: "window 4"})
    assert killed.returncode == -signal.SIGKILL
    folder = only_session(runs)
    whole = tinypower(*MEASURE, "--mode", "energy", "--runs-dir", tmp_path / "whole", "--json")
    expected = json.loads(whole.stdout)
    listed = tinypower("results", "--db", runs / "results.sqlite", "--json")
    no_traceback(listed)
    [record] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert record["value"] == pytest.approx(expected["value"], rel=3e-3)
    assert record["work_count"] == 5 * 20
    assert "scored from the window energies its checkpoints recorded" in record["extras"]["reason"]
    data = session_json(folder)
    assert data["status"] == "invalid"  # short windows: measured, but not the MLPerf minimum
    assert "Median energy cost is" in (folder / "results.txt").read_text()
    whole_folder = Path(expected["session"])
    scored = json.loads((whole_folder / "results.json").read_text())["windows"]
    marks = [c["window"] for c in session_json(whole_folder)["checkpoints"] if "window" in c]
    assert [m["energy_j"] * 1e6 for m in marks] == pytest.approx(
        [w["energy_uj"] for w in scored], rel=1e-12)


def test_a_performance_run_killed_after_its_last_window_is_scored_from_its_checkpoints(
    tmp_path,
) -> None:
    runs = tmp_path / "runs"
    killed = tinypower(*MEASURE, "--mode", "performance", "--runs-dir", runs,
                       env={KILL_AT_ENV: "window 4"})
    assert killed.returncode == -signal.SIGKILL
    folder = only_session(runs)
    whole = tinypower(*MEASURE, "--mode", "performance", "--runs-dir", tmp_path / "whole",
                      "--json")
    expected = json.loads(whole.stdout)["value"]
    listed = tinypower("results", "--db", runs / "results.sqlite", "--json")
    no_traceback(listed)
    [record] = [json.loads(line) for line in listed.stdout.splitlines()]
    # The same DUT and N: the recovered score is the one an uninterrupted run measures, to the
    # laps' 1 us resolution over 2 s windows.
    assert record["value"] == pytest.approx(expected, rel=1e-5)
    assert record["work_count"] == 5 * 20
    assert "scored from the laps its checkpoints recorded" in record["extras"]["reason"]
    data = session_json(folder)
    assert data["status"] == "invalid"  # 2 s windows: measured, but not the MLPerf minimum
    assert "Median throughput is" in (folder / "results.txt").read_text()
