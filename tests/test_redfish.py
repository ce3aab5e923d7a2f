"""The Redfish meter against a simulated BMC on loopback HTTP: each of the three power
resources, energy vs ground truth, authentication, and the failures."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from energy_monitor.meter import MeterError
from energy_monitor.redfish import Redfish
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.redfish_sim import RedfishSimulator

T0 = time.time()


def wave_w(t: float) -> float:
    return 400.0 + 60.0 * math.sin(2 * math.pi * (t - T0) / 3.0)


def wave_energy_j(a: float, b: float) -> float:
    k = 2 * math.pi / 3.0
    return 400.0 * (b - a) - 60.0 / k * (math.cos(k * (b - T0)) - math.cos(k * (a - T0)))


@pytest.mark.parametrize(("resources", "source"), [
    (("power", "environment_metrics", "power_subsystem"), "environment_metrics"),
    (("power",), "power"),
    (("power_subsystem",), "power_subsystem"),
])
def test_each_power_resource_matches_the_load(resources: tuple[str, ...], source: str,
                                               tmp_path: Path) -> None:
    with RedfishSimulator(wave_w, resources=resources, username="ops", password="pw") as sim:
        meter = Redfish(sim.url, username="ops", password="pw", poll_interval_s=0.02,
                        measured_as="simulated")
        assert (meter.chassis, meter.source) == ("1U", source)
        meter.start(tmp_path)
        time.sleep(1.0)
        series = meter.stop()
        meter.close()
    assert len(series) > 20
    a, b = series.time_s[1] + 0.003, series.time_s[-2] - 0.002
    result = series.energy(a, b, max_gap_s=0.5)
    assert result.energy_j == pytest.approx(wave_energy_j(a, b), rel=0.005)
    assert meter.identify().serial == "1U"
    assert len((tmp_path / "redfish.csv").read_text().splitlines()) == len(series) + 1


def test_bad_credentials_chassis_and_missing_power() -> None:
    with RedfishSimulator(wave_w, username="ops", password="pw") as sim:
        with pytest.raises(MeterError, match="answered 401 .* set username and password"):
            Redfish(sim.url, username="ops", password="wrong")
        with pytest.raises(MeterError, match="no chassis 'Blade7' .* it lists 1U"):
            Redfish(sim.url, chassis="Blade7", username="ops", password="pw")
    with RedfishSimulator(wave_w, resources=("power",)) as sim, \
            pytest.raises(MeterError, match="offers EnvironmentMetrics: .*try the ipmi"):
        Redfish(sim.url, source="environment_metrics")


def test_a_bmc_that_stops_answering_or_garbles_fails_clearly() -> None:
    with RedfishSimulator(wave_w, faults=SimFaults(stall_after=5)) as sim:
        meter = Redfish(sim.url, poll_interval_s=0.02, timeout_s=0.3)
        meter.start()
        wait_for_readings(meter, 5)  # then it falls silent
        time.sleep(0.4)  # longer than the read timeout
        with pytest.raises(MeterError, match="did not answer .* readings so far are kept"):
            meter.stop()
        assert len(meter.series()) == 5
        meter.close()
    with RedfishSimulator(wave_w, faults=SimFaults(garble_at=3)) as sim:
        meter = Redfish(sim.url, poll_interval_s=0.02)
        meter.start()
        time.sleep(0.3)
        with pytest.raises(MeterError, match="malformed reply .*not JSON"):
            meter.stop()
        meter.close()


def wait_for_readings(meter, count: int, timeout_s: float = 10.0) -> None:
    """Until the meter holds ``count`` readings (a loaded machine polls late, never less)."""
    deadline = time.monotonic() + timeout_s
    while len(meter.series()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
