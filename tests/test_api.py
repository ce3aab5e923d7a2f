"""The Python API: tinypower.measure, the Zeus-like EnergyMonitor (over a simulated powercap
tree read by the real RAPL driver, and PTDaemon's simulator through the real PTD driver), the
example script in docs/examples, and `tinypower monitor -- CMD`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import tinypower
from energy_monitor.rapl import Rapl
from energy_monitor.sim.ptd_sim import PtdSimulator
from energy_monitor.sim.rapl_sim import FakePowercap
from tinypower.results.db import query

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "python_api.py"
CLI = [sys.executable, "-m", "tinypower.cli"]


def _tree(tmp_path: Path, watts: float = 20.0) -> FakePowercap:
    tree = FakePowercap(tmp_path / "powercap")
    tree.add_zone("0", "package-0", watts)
    return tree


def test_windows_integrate_the_counter_and_nest(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    rapl = Rapl(tree.root, clock=tree.now, poll_interval_s=3600)  # polled by hand below
    with tinypower.EnergyMonitor([rapl], clock=tree.now) as monitor:
        monitor.begin_window("outer")
        for k in range(10):
            if k == 5:
                monitor.begin_window("inner")
            tree.advance(0.1)
            rapl.poll()
        inner = monitor.end_window("inner")
        outer = monitor.end_window("outer")
    assert outer.energy_j == pytest.approx(20.0, rel=1e-6)
    assert outer.duration_s == pytest.approx(1.0)
    assert inner.energy_j == pytest.approx(10.0, rel=1e-6)
    assert inner.mean_power_w == pytest.approx(20.0)
    # the fake powercap tree carries the simulators' mark: its numbers are simulated, not counter
    assert not outer.interpolated and outer.readings == 9 and outer.measured_as == "simulated"
    assert outer.per_meter_j == {"rapl RAPL package-0 (intel-rapl:0)": outer.energy_j}


def test_a_window_shorter_than_the_reading_interval_says_it_is_interpolated(
        tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    rapl = Rapl(tree.root, clock=tree.now, poll_interval_s=3600)
    with tinypower.EnergyMonitor([rapl], clock=tree.now) as monitor:
        tree.advance(0.02)
        monitor.begin_window("blink")
        tree.advance(0.03)

        def next_reading() -> None:  # the meter's next reading, after end_window began waiting
            time.sleep(0.2)
            tree.advance(0.05)
            rapl.poll()

        threading.Thread(target=next_reading).start()
        blink = monitor.end_window("blink")
        with pytest.raises(tinypower.MonitorError, match="no open window 'blink'"):
            monitor.end_window("blink")
        monitor.begin_window("x")
        with pytest.raises(tinypower.MonitorError, match="already open"):
            monitor.begin_window("x")
    assert blink.interpolated and blink.readings == 0
    assert "shorter than its reading interval" in blink.note
    assert blink.energy_j == pytest.approx(20.0 * 0.03, rel=1e-6)  # steady power: exact anyway


def test_example_script_measures_the_lab_and_code_blocks(tmp_path: Path) -> None:
    with PtdSimulator(lambda t: 50.0, sample_period_s=0.05) as ptd:
        done = subprocess.run([sys.executable, str(EXAMPLE), "--runs-dir", str(tmp_path / "runs"),
                               "--ptd", ptd.address], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("kws01 energy: ") and "uJ/inf, valid=True, simulated" in lines[0]
    sleep = next(line for line in lines if line.startswith("sleep: "))
    joules, seconds = float(sleep.split()[1]), float(sleep.split()[4])
    assert joules == pytest.approx(50.0 * seconds, rel=0.02)  # the simulator draws 50 W
    assert "interpolated=True" in lines[-1]
    assert [r.scenario for r in query(tmp_path / "runs" / "results.sqlite")] == ["energy"]


def test_measure_returns_the_scored_record_and_checks_first(tmp_path: Path) -> None:
    record = tinypower.measure(mode="performance", model="synthetic", runs_dir=tmp_path)
    assert record.unit == "inf/s" and record.valid and record.measured_as == "simulated"
    assert Path(record.source).parent == tmp_path
    from tinypower.preflight import PreflightError

    with pytest.raises(PreflightError, match="arm-none-eabi-gcc not found"):
        old = os.environ["PATH"]
        os.environ["PATH"] = str(tmp_path / "nothing")
        try:
            tinypower.measure(board="qemu-an386", model="synthetic", runs_dir=tmp_path / "q")
        finally:
            os.environ["PATH"] = old
    assert not (tmp_path / "q").exists()


def test_monitor_command_measures_and_stores_any_command(tmp_path: Path) -> None:
    tree = _tree(tmp_path, watts=20.0)
    stop = threading.Event()

    def follow_real_time() -> None:  # the counter rises at 20 W of wall-clock time
        last = time.monotonic()
        while not stop.wait(0.005):
            now = time.monotonic()
            tree.advance(now - last)
            last = now

    threading.Thread(target=follow_real_time, daemon=True).start()
    runs = tmp_path / "runs"
    try:
        done = subprocess.run([*CLI, "monitor", "--meter", f"rapl={tree.root}", "--runs-dir",
                               str(runs), "--json", "--", sys.executable, "-c",
                               "import time; time.sleep(1.5)"],
                              capture_output=True, text=True, timeout=120)
        failed = subprocess.run([*CLI, "monitor", "--meter", f"rapl={tree.root}", "--runs-dir",
                                 str(runs), "--", sys.executable, "-c",
                                 "import sys, time; time.sleep(1.2); sys.exit(3)"],
                                capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    # The tree follows wall-clock time from a thread of this process, which a loaded machine
    # delays; the exact arithmetic is checked on a virtual clock above.
    assert record["energy_j"] == pytest.approx(20.0 * record["duration_s"], rel=0.2)
    assert record["valid"] and record["measured_as"] == "simulated" and record["unit"] == "J"
    assert failed.returncode == 3 and "invalid: command exited with status 3" in failed.stdout
    stored = query(runs / "results.sqlite", ["mode=monitor"])
    assert [r.valid for r in stored] == [True, False]
    assert stored[1].failed_rules == ("monitor.exit_status",)
    assert all((Path(r.source) / "session.json").is_file() for r in stored)


def test_monitor_without_a_meter_stops_before_anything(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = subprocess.run([*CLI, "monitor", "--meter", f"rapl={tmp_path / 'none'}",
                           "--runs-dir", str(runs), "--", "true"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no powercap tree" in done.stderr
    assert "Traceback" not in done.stderr and not runs.exists()
    done = subprocess.run([*CLI, "monitor", "--runs-dir", str(runs)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "give the command to measure after --" in done.stderr
