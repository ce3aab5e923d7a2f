"""The Yokogawa SCPI driver through pyvisa-py (a TCPIP SOCKET resource) against the simulated
WT310E on loopback: numeric items, ranges, update rate, integration, energy vs ground truth,
and the errors."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from energy_monitor.meter import MeterError
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.tcp_lines import TcpLineServer
from energy_monitor.sim.yokogawa_sim import YokogawaSimulator
from energy_monitor.yokogawa import Yokogawa

T0 = time.time()


def wave_w(t: float) -> float:
    return 300.0 + 80.0 * math.sin(2 * math.pi * (t - T0) / 2.0)


def wave_energy_j(a: float, b: float) -> float:
    k = math.pi
    return 300.0 * (b - a) - 80.0 / k * (math.cos(k * (b - T0)) - math.cos(k * (a - T0)))


def test_power_series_and_integrator_match_the_load(tmp_path: Path) -> None:
    with YokogawaSimulator(wave_w) as sim:
        meter = Yokogawa(sim.resource, update_rate="100MS", poll_interval_s=0.02,
                         measured_as="simulated")
        try:
            ident = meter.identify()
            assert (ident.model, ident.serial, ident.firmware) == (
                "Yokogawa WT310E", "TINYPOWERSIM01", "F1.03")
            assert sim.remote and not sim.header and sim.rate == "100MS"
            assert sim.items[3] == ("P", "1") and sim.items[4] == ("LAMBDA", "1")
            meter.integration_start()
            meter.start(tmp_path)
            time.sleep(1.5)
            meter.integration_stop()
            series = meter.stop()
            energy_j, seconds = meter.integrated_energy_j()
        finally:
            meter.close()
    assert len(series) > 30
    a, b = series.time_s[1] + 0.004, series.time_s[-2] - 0.003
    result = series.energy(a, b, max_gap_s=0.5)
    assert result.coverage == 1.0
    assert result.energy_j == pytest.approx(wave_energy_j(a, b), rel=0.005)
    assert result.mean_power_w == pytest.approx(wave_energy_j(a, b) / (b - a), rel=0.005)
    (began, ended), = sim.integrations
    assert seconds == pytest.approx(ended - began, abs=1e-3)  # five digits
    assert energy_j == pytest.approx(wave_energy_j(began, ended), rel=0.005)
    first = meter.readings[0]
    assert (first.volts, first.pf) == (230.0, 0.95)
    assert first.amps == pytest.approx(first.watts / (230.0 * 0.95), rel=1e-3)
    rows = (tmp_path / "yokogawa.csv").read_text().splitlines()
    assert len(rows) == len(series) + 1


def test_ranging_then_fixed_ranges_and_overrange() -> None:
    watts = {"now": 200.0}
    with YokogawaSimulator(lambda t: watts["now"]) as sim:
        meter = Yokogawa(sim.resource, update_rate="100MS", poll_interval_s=0.02)
        try:
            assert sim.voltage_range_v is None and sim.current_range_a is None  # auto
            meter.start()
            time.sleep(0.2)
            meter.stop()
            volts, amps = meter.ranging_maxima()
            assert volts == 230.0 and amps == pytest.approx(200 / (230 * 0.95), rel=1e-3)
            meter.set_ranges(300.0, 1.0)
            assert (sim.voltage_range_v, sim.current_range_a) == (300.0, 1.0)
            meter.set_ranges(volts, amps * 1.1)  # the testing run: 230 V, 1.007 A
            assert (sim.voltage_range_v, sim.current_range_a) == (300.0, 2.0)  # rounded up
            meter.set_ranges(230.0, 3.0)
            assert sim.current_range_a == 5.0
            with pytest.raises(MeterError, match="above the analyzer's largest current range"):
                meter.set_ranges(300.0, 25.0)
            with pytest.raises(MeterError, match=r"refused ':INPut:CURRent:RANGe 3'.*-224"):
                meter._set(":INPut:CURRent:RANGe 3")  # the analyzer's own refusal is named
            meter.set_ranges(300.0, 1.0)
            watts["now"] = 2000.0  # 9 A on the 1 A range
            meter.start()
            time.sleep(0.2)
            series = meter.stop()
            assert len(series) == 0 and meter.overrange_readings > 3
            meter.integration_start()
            with pytest.raises(MeterError, match="813.*stop integration first"):
                meter.set_ranges("auto", "auto")
        finally:
            meter.close()


def test_a_silent_analyzer_fails_clearly_and_keeps_readings() -> None:
    with YokogawaSimulator(wave_w, faults=SimFaults(stall_after=10)) as sim:
        meter = Yokogawa(sim.resource, update_rate="100MS", poll_interval_s=0.02,
                         timeout_s=0.3)
        try:
            meter.start()
            wait_for_readings(meter, 10)  # then it falls silent
            time.sleep(0.4)  # longer than the read timeout
            with pytest.raises(MeterError, match="did not answer .* readings so far are kept"):
                meter.stop()
            assert len(meter.series()) == 10
        finally:
            meter.close()


def test_garbled_and_foreign_replies_are_clear_errors() -> None:
    with YokogawaSimulator(wave_w, faults=SimFaults(garble_at=3)) as sim:
        meter = Yokogawa(sim.resource, update_rate="100MS", poll_interval_s=0.02)
        try:
            meter.start()
            time.sleep(0.3)
            with pytest.raises(MeterError, match="malformed reply to ':NUMeric:NORMal:VALue"):
                meter.stop()
        finally:
            meter.close()
    server = TcpLineServer(lambda line: "KEITHLEY,2400,1,1\n", "not-a-yokogawa")
    host, port = server.start()
    try:
        with pytest.raises(MeterError, match="not a Yokogawa analyzer"):
            Yokogawa(f"TCPIP::{host}::{port}::SOCKET")
    finally:
        server.close()
    with pytest.raises(MeterError, match="update_rate must be one of"):
        Yokogawa("TCPIP::127.0.0.1::1::SOCKET", update_rate="3S")
    with pytest.raises(MeterError, match="cannot open the analyzer"):
        Yokogawa("TCPIP::127.0.0.1::1::SOCKET", timeout_s=0.5)


def wait_for_readings(meter, count: int, timeout_s: float = 10.0) -> None:
    """Until the meter holds ``count`` readings (a loaded machine polls late, never less)."""
    deadline = time.monotonic() + timeout_s
    while len(meter.series()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
