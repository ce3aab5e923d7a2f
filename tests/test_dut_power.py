"""The DUT's supply comes from the energy monitor, as on a bench.

In energy mode only the monitor powers the DUT. In the virtual lab the software DUT's power is
the simulated monitor's output: unpowered it is silent, power-on makes it boot. The runner must
therefore power and start the monitor before it talks to the DUT, and never power-cycle it after
sync, through either IO manager and with every DC monitor that supplies the DUT.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import serial

from energy_monitor.sim.load import LoadTimeline, VirtualClock
from tinypower.boards import load_board
from tinypower.dut.protocol import DutClient, DutTimeoutError
from tinypower.dut.software_dut import SoftwareDut
from tinypower.models import resolve_model
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import synthetic_inputs

SUITE = get_suite("kws01")
MODEL = resolve_model(SUITE, "synthetic")
BOARD = load_board("sim-m4")


def test_an_unpowered_dut_is_silent_and_boots_on_power_on() -> None:
    timeline = LoadTimeline(VirtualClock(), BOARD.energy_model.idle_current_a, powered=False)
    with SoftwareDut(model=MODEL.data, suite=SUITE, board=BOARD, timeline=timeline,
                     mode="energy", macs=MODEL.info.macs) as dut:
        url = dut.start()
        with DutClient(url) as client, pytest.raises(DutTimeoutError):
            client.sync(timeout_s=0.5)  # what it is sent is lost: no reply at all
        with serial.Serial(url, timeout=2) as port:
            timeline.set_powered(True)
            banner = [port.readline() for _ in range(3)]
        assert banner == [b"m-timestamp-mode-energy\r\n", b"m-init-done\r\n", b"m-ready\r\n"]
        assert [e.polarity for e in timeline.edges_between(0, math.inf)] == ["fall", "rise"]
        with DutClient(url) as client:
            assert client.sync(timeout_s=2) == "tinypowersim-software-dut"
            timeline.set_powered(False)
            with pytest.raises(DutTimeoutError):
                client.command("name", timeout_s=0.3)
            timeline.set_powered(True)  # a power cycle reboots it: the client drains the banner
            assert client.sync(timeout_s=2) == "tinypowersim-software-dut"


# Both IO managers and all four DC monitors, each at least once.
@pytest.mark.parametrize(
    ("interface", "monitor"),
    [("arduino", "lpm01a"), ("mlcommons", "ppk2"), ("arduino", "otii"),
     ("mlcommons", "joulescope")],
)
def test_energy_mode_powers_the_dut_from_the_monitor_before_talking_to_it(
    tmp_path: Path, interface: str, monitor: str
) -> None:
    lat = BOARD.cycle_model.latency_s(MODEL.info.macs, BOARD.clock_hz, MODEL.data)
    n = math.ceil(10.5 / lat)
    outcome = run(RunRequest(
        board=BOARD, suite=SUITE, model=MODEL, dataset=synthetic_inputs(SUITE), mode="energy",
        runs_dir=tmp_path, iterations=n, warmups=1, interface=interface, monitor=monitor,
    ))
    assert outcome.ok, outcome.error
    # Between a window's two falling edges the DUT draws its active current for the hold time
    # and N inferences, at the monitor's voltage.
    energy = BOARD.energy_model
    expected_uj = (
        BOARD.monitor_voltage_v * energy.active_current_a
        * (energy.timestamp_hold_s + n * lat) / n * 1e6
    )
    assert outcome.result.value == pytest.approx(expected_uj, rel=1e-3)
    transcript = (outcome.session.folder / "transcript.log").read_text().splitlines()
    first_dut = next(i for i, line in enumerate(transcript) if "name%" in line)
    monitor_lines = [i for i, line in enumerate(transcript) if f"[{monitor}]" in line]
    assert monitor_lines and monitor_lines[0] < first_dut  # the monitor came first
    # The DUT booted when the monitor powered it, before sync (through the interface board
    # its banner waits in the board's queue, and sync clears it): once synced, nothing
    # power-cycled it, so no banner reached any later reply.
    synced = next(i for i, line in enumerate(transcript) if "profile%" in line)
    assert not any("banner" in line or "rebooted" in line for line in transcript[synced:])
    # At the IO managers' 9600 baud a read-back costs ~2 s per input: off, and said so.
    session = json.loads((outcome.session.folder / "session.json").read_text())
    assert session["input_verification"] == {"policy": "auto", "verified": 0, "unverified": 5}
    assert "dut db print%" not in "\n".join(transcript)


@pytest.mark.parametrize("realtime", [False, True])
def test_a_reply_takes_its_uart_time(realtime: bool) -> None:
    """At 9600 baud each byte takes 10 bits (8N1): the ~450-byte `help` reply cannot arrive
    sooner than that. On the virtual clock the meter sees that time pass while the wall clock
    does not wait for it; ``realtime`` (for hosts that read as bytes come, like the MLCommons
    runner) spends it on the wall clock, so a host that reads too early sees the race a bench
    shows."""
    timeline = LoadTimeline(VirtualClock(), BOARD.energy_model.idle_current_a)
    with SoftwareDut(model=MODEL.data, suite=SUITE, board=BOARD, timeline=timeline,
                     mode="energy", macs=MODEL.info.macs, uart_baud=9600,
                     realtime=realtime) as dut:
        url = dut.start()
        with DutClient(url, 9600) as client:
            client.sync(timeout_s=5)
            started, virtual_start = time.monotonic(), timeline.clock.now()
            lines = client.command("help")
            took, virtual_took = time.monotonic() - started, timeline.clock.now() - virtual_start
    reply_bytes = sum(len(line) + 2 for line in lines) + len("m-ready\r\n")
    line_time_s = reply_bytes * 10 / 9600
    assert reply_bytes > 400 and virtual_took >= line_time_s
    if realtime:
        assert took >= line_time_s
    else:  # the virtual clock jumped by the line time: no wall time was spent waiting for it
        assert virtual_took - took >= line_time_s * 0.999
