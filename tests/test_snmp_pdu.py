"""The SNMP PDU driver (pysnmp, v2c over loopback UDP) against the simulated PDU agent: each
vendor's outlet and inlet power with its scaling, the Raritan energy counter, and the faults
(a silent agent, a wrong community, an OID from another vendor's MIB)."""

from __future__ import annotations

import math
import time

import pytest

from energy_monitor.meter import MeterError
from energy_monitor.series import CounterSeries, PowerSeries
from energy_monitor.series_meters import connect_series_meter
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.snmp_pdu_sim import SnmpPduSimulator
from energy_monitor.snmp_pdu import SnmpPdu

T0 = time.time()
IDLE_W = 5.0


def wave_w(t: float) -> float:
    return 400.0 + 40.0 * math.sin(2 * math.pi * (t - T0) / 2.0)


def fast(address: str, **options) -> SnmpPdu:
    return SnmpPdu(address, poll_interval_s=0.05, timeout_s=0.3, retries=0,
                   measured_as="simulated", **options)


@pytest.mark.parametrize("vendor, step_w", [("raritan", 0.1), ("apc", 1.0),
                                            ("servertech", 1.0)])
def test_outlet_power_follows_the_load_with_the_vendors_scaling(tmp_path, vendor, step_w):
    with SnmpPduSimulator(wave_w, vendor=vendor, decimals={"power": 1}) as sim:
        meter = fast(sim.address, vendor=vendor, outlet=7)
        try:
            meter.start(tmp_path)
            time.sleep(0.6)
            series = meter.stop()
        finally:
            meter.close()
    assert isinstance(series, PowerSeries) and len(series) >= 8
    served = sim.readings[-len(series):]
    for got, (_, truth) in zip(series.power_w, served, strict=True):
        assert got == pytest.approx(truth, abs=step_w / 2 + 1e-9)  # only the PDU's rounding
    assert meter.identify().firmware.startswith("1.3.6.1.4.1.")
    assert meter.identify().measured_as == "simulated"
    rows = (tmp_path / "snmp_pdu.csv").read_text().splitlines()
    assert rows[0] == "time_s,power_w" and len(rows) == len(series) + 1


@pytest.mark.parametrize("vendor, step_w", [("raritan", 1.0), ("apc", 10.0),
                                            ("servertech", 1.0)])
def test_inlet_power_is_the_sum_of_the_outlets(vendor, step_w):
    with SnmpPduSimulator(lambda t: 300.0, vendor=vendor, outlets=8,
                          idle_outlet_w=IDLE_W) as sim:
        meter = connect_series_meter("snmp_pdu", sim.address, vendor=vendor, timeout_s=0.3)
        try:
            assert meter.read() == pytest.approx(300.0 + 7 * IDLE_W, abs=step_w / 2)
        finally:
            meter.close()


def test_raritan_energy_counter_in_joules(tmp_path):
    with SnmpPduSimulator(wave_w, vendor="raritan", decimals={"energy": 3}) as sim:
        meter = fast(sim.address, vendor="raritan", outlet=7, measure="energy")
        try:
            meter.start(tmp_path)
            time.sleep(0.8)
            series = meter.stop()
        finally:
            meter.close()
    assert isinstance(series, CounterSeries) and len(series) >= 8
    (t_first, j_first), (t_last, j_last) = sim.energy_readings[-len(series)], \
        sim.energy_readings[-1]
    # The simulator's counter integrates the load itself; the PDU counts in mWh here (3.6 J).
    truth_j = 400.0 * (t_last - t_first) - 40.0 / math.pi * (
        math.cos(math.pi * (t_last - T0)) - math.cos(math.pi * (t_first - T0)))
    assert j_last - j_first == pytest.approx(truth_j, abs=0.01)
    measured_j = series.energy_j[-1] - series.energy_j[0]
    assert measured_j == pytest.approx(truth_j, abs=3.6)
    assert (tmp_path / "snmp_pdu.csv").read_text().startswith("time_s,energy_j\n")


def test_energy_where_the_column_is_unconfirmed_is_refused():
    with pytest.raises(MeterError, match="APC outlet energy is not supported"):
        SnmpPdu("127.0.0.1:9", vendor="apc", outlet=1, measure="energy")
    with pytest.raises(MeterError, match="ServerTech energy counters are not supported"):
        SnmpPdu("127.0.0.1:9", vendor="servertech", measure="energy")
    with pytest.raises(MeterError, match="unknown PDU vendor 'eaton'"):
        SnmpPdu("127.0.0.1:9", vendor="eaton")


def test_wrong_community_and_a_silent_agent_are_clear_errors():
    with SnmpPduSimulator(wave_w, community="s3cret") as sim:
        with pytest.raises(MeterError, match=r"no SNMP answer .* the community"):
            fast(sim.address, vendor="raritan", outlet=7)
        assert sim.bad_community >= 1
        assert fast(sim.address, vendor="raritan", outlet=7, community="s3cret").read() > 0


def test_wrong_vendor_or_outlet_names_the_missing_object():
    with SnmpPduSimulator(wave_w, vendor="apc", outlets=8) as sim:
        with pytest.raises(MeterError, match=r"no object 1\.3\.6\.1\.4\.1\.13742\..*"
                                             r"set vendor = \"apc\""):
            fast(sim.address, vendor="raritan", outlet=3)
        with pytest.raises(MeterError, match=r"no object .*\.26\.9\.4\.3\.1\.7\.12 "
                                             r"\(APC outlet 12\)"):
            fast(sim.address, vendor="apc", outlet=12)


def test_an_agent_that_stops_answering_fails_the_run_and_keeps_the_readings(tmp_path):
    with SnmpPduSimulator(wave_w, faults=SimFaults(stall_after=6)) as sim:
        meter = fast(sim.address, vendor="raritan", outlet=7)
        try:
            meter.start(tmp_path)
            time.sleep(1.0)
            with pytest.raises(MeterError, match=r"no SNMP answer .* after \d+ readings.*kept"):
                meter.stop()
        finally:
            meter.close()
    kept = meter.series()
    assert 3 <= len(kept) <= 6
    assert len((tmp_path / "snmp_pdu.csv").read_text().splitlines()) == len(kept) + 1
