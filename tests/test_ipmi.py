"""The IPMI DCMI meter through a fake ``ipmitool`` (the real program cannot reach a BMC here):
readings against the load, the command line it runs, ipmitool's failures, and the parser on
real ipmitool output."""

from __future__ import annotations

import time

import pytest

from energy_monitor.ipmi import Ipmi, parse_power_reading
from energy_monitor.meter import MeterError
from energy_monitor.sim.ipmi_sim import FakeIpmitool

BMC = {"username": "tinypower", "password": "secret"}

# Real `ipmitool dcmi power reading` output, as printed by ipmitool 1.8.x.
REAL_OUTPUT = """
    Instantaneous power reading:                   235 Watts
    Minimum during sampling period:                 30 Watts
    Maximum during sampling period:                296 Watts
    Average power reading over sample period:      220 Watts
    IPMI timestamp:                           Thu Feb 15 08:36:01 2024
    Sampling period:                          00000001 Seconds.
    Power reading state is:                   activated

"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    fake = FakeIpmitool(tmp_path / "bin", t0=time.time())
    monkeypatch.setenv("PATH", fake.path_env())
    return fake


def test_parser_reads_real_ipmitool_output():
    assert parse_power_reading(REAL_OUTPUT) == (235.0, "activated")
    assert parse_power_reading(REAL_OUTPUT, "average") == (220.0, "activated")
    with pytest.raises(ValueError, match="Instantaneous power reading"):
        parse_power_reading("DCMI request failed because: Invalid command (c1)")


def test_readings_follow_the_bmcs_power(fake, tmp_path):
    meter = Ipmi("10.0.0.6", poll_interval_s=0.1, measured_as="simulated", **BMC)
    try:
        meter.start(tmp_path)
        time.sleep(0.8)
        series = meter.stop()
    finally:
        meter.close()
    served = fake.readings()
    assert len(series) >= 5 and len(served) == len(series) + 1  # + the check at connect
    for got, (_, truth) in zip(series.power_w, served[1:], strict=True):
        assert got == round(truth)  # ipmitool prints whole watts
    for t, (served_t, _) in zip(series.time_s, served[1:], strict=True):
        assert 0 < t - served_t < 0.5  # stamped when ipmitool returns
    assert meter.identify().serial == "10.0.0.6"
    rows = (tmp_path / "ipmi.csv").read_text().splitlines()
    assert rows[0] == "time_s,power_w,state" and rows[1].endswith(",activated")


def test_password_goes_through_the_environment_not_the_command_line(fake):
    meter = Ipmi("10.0.0.6", **BMC)
    assert "secret" not in meter._argv and "-E" in meter._argv
    assert meter._argv[-3:] == ["dcmi", "power", "reading"]
    assert meter._env["IPMI_PASSWORD"] == "secret"


def test_average_reading(fake):
    meter = Ipmi("10.0.0.6", reading="average", **BMC)
    assert meter.read_power_w() == pytest.approx(fake.readings()[-1][1], abs=0.5)


@pytest.mark.parametrize("setup, message", [
    ({"password": "wrong"}, r"could not reach the BMC at 10\.0\.0\.6 .*Unable to establish "
                            r"IPMI v2 / RMCP\+ session.*username and password"),
    ({"fault": "unreachable"}, r"could not reach the BMC .*check the address"),
    ({"fault": "no_dcmi"}, r"does not serve the DCMI power reading .*Invalid command \(c1\).*"
                           r"redfish"),
    ({"local": True}, r"cannot open the local IPMI device .*modprobe"),
])
def test_ipmitool_failures_are_clear_errors(fake, setup, message):
    bmc = dict(BMC)
    if "password" in setup:
        bmc["password"] = setup["password"]
    elif "fault" in setup:
        fake.set(fault=setup["fault"])
    with pytest.raises(MeterError, match=message):
        if "local" in setup:
            Ipmi()  # no /dev/ipmi0 (the fake has local=False)
        else:
            Ipmi("10.0.0.6", **bmc)


def test_a_bmc_that_hangs_times_out(fake):
    fake.set(fault="hang")
    with pytest.raises(MeterError, match=r"did not finish within 0\.5 s"):
        Ipmi("10.0.0.6", timeout_s=0.5, **BMC)


def test_a_bmc_that_stops_answering_fails_the_run_and_keeps_the_readings(fake):
    fake.set(fail_after=5, fail_with="unreachable")
    meter = Ipmi("10.0.0.6", poll_interval_s=0.05, **BMC)
    meter.start()
    time.sleep(0.8)
    with pytest.raises(MeterError, match=r"could not reach .* after 4 readings .*kept"):
        meter.stop()
    meter.close()
    assert len(meter.series()) == 4


def test_missing_ipmitool_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MeterError, match=r"'ipmitool' not found.*apt-get install ipmitool"):
        Ipmi("10.0.0.6", **BMC)
