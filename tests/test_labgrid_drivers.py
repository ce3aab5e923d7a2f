"""tinypower's monitors as labgrid drivers: a labgrid environment that imports
``energy_monitor.labgrid_drivers`` binds them to a serial port resource (here the simulated
monitor's pty), and the energy-analyzer calls read what the simulated supply delivered.

Skipped without labgrid on a developer's machine; failed when CI is set (.ci/run installs the
``labgrid`` extra)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

try:
    from labgrid import Environment
    from labgrid.resource import NetworkSerialPort
except ImportError as exc:
    if os.environ.get("CI"):
        raise
    pytest.skip(f"labgrid is not installed ({exc}): pip install 'tinypower[labgrid]'",
                allow_module_level=True)

from energy_monitor.labgrid_drivers import port_url
from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.sim.lpm01a_sim import Lpm01aSimulator
from energy_monitor.sim.ppk2_sim import Ppk2Simulator
from energy_monitor.trace import load_trace

CURRENT_A = 0.0025  # the simulated board draws this, constantly
VOLTAGE_V = 1.8
SIMULATORS = {"Lpm01aEnergyDriver": Lpm01aSimulator, "Ppk2EnergyDriver": Ppk2Simulator}
CAPTURE_HZ = {"lpm01a": 2000, "ppk2": 100_000}  # the PPK2 streams at 100 kS/s only


@pytest.fixture(params=sorted(SIMULATORS))
def monitor(request, tmp_path: Path):
    """The driver, from a labgrid environment file, on the simulated monitor's pty."""
    sim = SIMULATORS[request.param](LoadTimeline(VirtualClock(), CURRENT_A))
    path = sim.start()
    config = tmp_path / "env.yaml"
    config.write_text(
        "targets:\n  main:\n    resources:\n      RawSerialPort:\n"
        f"        port: {path}\n    drivers:\n      {request.param}:\n"
        f"        voltage_v: {VOLTAGE_V}\nimports:\n  - energy_monitor.labgrid_drivers\n"
    )
    target = Environment(str(config)).get_target("main")
    try:
        yield target.get_driver(request.param)
    finally:
        target.deactivate_all_drivers()
        sim.close()


def test_a_window_holds_the_energy_the_supply_delivered(monitor) -> None:
    monitor.start()
    time.sleep(0.4)
    window = monitor.stop()
    assert window["duration_s"] > 0.3
    assert window["charge_C"] == pytest.approx(CURRENT_A * window["duration_s"], rel=1e-2)
    assert window["energy_J"] == pytest.approx(
        CURRENT_A * VOLTAGE_V * window["duration_s"], rel=1e-2)
    with pytest.raises(RuntimeError, match="no window is open"):
        monitor.stop()


def test_statistics_of_a_constant_load(monitor) -> None:
    stats = monitor.get_statistics()
    assert stats["current"]["avg"] == pytest.approx(CURRENT_A, rel=1e-2)
    assert stats["voltage"]["avg"] == pytest.approx(VOLTAGE_V, rel=1e-2)
    assert stats["power"]["avg"] == pytest.approx(CURRENT_A * VOLTAGE_V, rel=1e-2)
    for key in ("min", "max"):  # a constant load, measured as one
        assert stats["current"][key] == pytest.approx(CURRENT_A, rel=1e-2)
    assert stats["current"]["std"] <= 1e-2 * CURRENT_A


def test_capture_writes_a_trace_at_the_frequency_asked(monitor, tmp_path: Path) -> None:
    rate = CAPTURE_HZ[monitor.kind]
    path = monitor.capture(str(tmp_path / "capture.npz"), duration=0.3, frequency=rate)
    trace = load_trace(path)
    assert trace.sample_rate_hz == rate
    assert len(trace) >= 0.25 * rate
    assert trace.energy_sum_j() == pytest.approx(
        CURRENT_A * VOLTAGE_V * len(trace) / rate, rel=1e-2)
    assert monitor.sample_rate_hz == rate  # sticky, as the protocol says


@pytest.mark.parametrize(("protocol", "url"), [
    ("rfc2217", "rfc2217://127.0.0.1:4001?ign_set_control"),
    ("raw", "socket://127.0.0.1:4001"),
])
def test_a_place_port_is_opened_as_labgrid_opens_it(protocol: str, url: str) -> None:
    port = NetworkSerialPort(None, "monitor", host="127.0.0.1", port=4001, protocol=protocol)
    assert port_url(port) == url
