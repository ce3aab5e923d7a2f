"""Labels are evidence: no configuration makes a simulator's numbers ``hardware``.

Every driver kind is connected to its simulator while asked to claim ``hardware``; the mark the
simulator reports about itself (an ID, serial or firmware string) must win. A new driver kind
without a case here fails :func:`test_every_driver_kind_is_covered`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from energy_monitor.meter import SIM_MARK, MeterIdentity, is_ours, weakest
from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.sim.registry import SIMULATED_METERS, start_simulated_meter
from energy_monitor.verification import LEVEL_NAMES, LEVELS, level_of


def _flat(_t: float) -> float:
    return 100.0


@contextmanager
def _identity(meter) -> Iterator[MeterIdentity]:
    """What ``meter`` reports about itself; the meter is closed afterwards."""
    try:
        yield meter.identify()
    finally:
        meter.close()


@contextmanager
def _serial_meter(kind: str, _tmp: Path) -> Iterator[MeterIdentity]:
    timeline = LoadTimeline(VirtualClock(), 0.001)
    sim = start_simulated_meter(kind, timeline)
    try:
        with _identity(sim.connect(measured_as="hardware")) as identity:
            yield identity
    finally:
        sim.close()


@contextmanager
def _ptd(_tmp: Path) -> Iterator[MeterIdentity]:
    from energy_monitor.ptd import Ptd
    from energy_monitor.sim.ptd_sim import PtdSimulator

    with (
        PtdSimulator(_flat) as sim,
        _identity(
            Ptd(sim.address, measured_as="hardware", poll_interval_s=0.1, timeout_s=2.0)
        ) as identity,
    ):
        yield identity


@contextmanager
def _yokogawa(_tmp: Path) -> Iterator[MeterIdentity]:
    from energy_monitor.sim.yokogawa_sim import YokogawaSimulator
    from energy_monitor.yokogawa import Yokogawa

    with (
        YokogawaSimulator(_flat) as sim,
        _identity(
            Yokogawa(
                sim.resource, update_rate="100MS", poll_interval_s=0.05, measured_as="hardware"
            )
        ) as identity,
    ):
        yield identity


@contextmanager
def _snmp(_tmp: Path) -> Iterator[MeterIdentity]:
    from energy_monitor.sim.snmp_pdu_sim import SnmpPduSimulator
    from energy_monitor.snmp_pdu import SnmpPdu

    with (
        SnmpPduSimulator(_flat) as sim,
        _identity(
            SnmpPdu(
                sim.address,
                vendor="raritan",
                outlet=7,
                poll_interval_s=0.05,
                timeout_s=0.3,
                retries=0,
                measured_as="hardware",
            )
        ) as identity,
    ):
        yield identity


@contextmanager
def _redfish(_tmp: Path) -> Iterator[MeterIdentity]:
    from energy_monitor.redfish import Redfish
    from energy_monitor.sim.redfish_sim import RedfishSimulator

    with (
        RedfishSimulator(_flat) as sim,
        _identity(Redfish(sim.url, poll_interval_s=0.05, measured_as="hardware")) as identity,
    ):
        yield identity


@contextmanager
def _ipmi(tmp: Path) -> Iterator[MeterIdentity]:
    from energy_monitor.ipmi import Ipmi
    from energy_monitor.sim.ipmi_sim import FakeIpmitool

    fake = FakeIpmitool(tmp / "bin", t0=time.time())
    with _identity(
        Ipmi(
            "10.0.0.6",
            username="tinypower",
            password="secret",
            ipmitool=str(fake.program),
            measured_as="hardware",
        )
    ) as identity:
        yield identity


@contextmanager
def _nvml(_tmp: Path) -> Iterator[MeterIdentity]:
    from energy_monitor.nvml import Nvml
    from energy_monitor.sim.nvml_sim import FakeNvml, SimGpu

    nvml = FakeNvml([SimGpu("A100", "GPU-a", _flat)], start_s=1_700_000_000.0)
    with _identity(
        Nvml(nvml=nvml, clock=nvml.now, poll_interval_s=3600, measured_as="hardware")
    ) as identity:
        yield identity


@contextmanager
def _rapl(tmp: Path) -> Iterator[MeterIdentity]:
    from energy_monitor.rapl import Rapl
    from energy_monitor.sim.rapl_sim import FakePowercap

    tree = FakePowercap(tmp / "powercap")
    tree.add_zone("0", "package-0", 50.0)
    with _identity(Rapl(tree.root, measured_as="hardware")) as identity:
        yield identity


CASES: dict[str, Callable[[Path], object]] = {
    **{kind: (lambda tmp, k=kind: _serial_meter(k, tmp)) for kind in SIMULATED_METERS},
    "ptd": _ptd,
    "yokogawa": _yokogawa,
    "snmp_pdu": _snmp,
    "redfish": _redfish,
    "ipmi": _ipmi,
    "nvml": _nvml,
    "rapl": _rapl,
}


def test_every_driver_kind_is_covered() -> None:
    # Prometheus reads someone else's server: what it stores is labelled by who wrote it.
    assert set(LEVELS) - {"prometheus"} == set(CASES)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_no_driver_can_be_configured_into_hardware_against_a_simulator(
    kind: str, tmp_path: Path
) -> None:
    with CASES[kind](tmp_path) as identity:  # type: ignore[attr-defined]
        assert identity.kind == kind
        assert identity.measured_as == "simulated", identity
        assert is_ours(identity.model, identity.serial, identity.firmware)
        assert identity.verification == level_of(kind)
        assert identity.verification in ("simulator-only", "conformance-tested")


def test_an_unmarked_identity_keeps_its_claim_and_a_marked_one_cannot() -> None:
    real = MeterIdentity("lpm01a", "X-NUCLEO-LPM01A", "540619864-1110659081", "1.0.6", "hardware")
    assert real.measured_as == "hardware" and real.verification == "simulator-only"
    for field in ("model", "serial", "firmware"):
        values = {"model": "m", "serial": "s", "firmware": "f", field: f"x-{SIM_MARK.upper()}"}
        for claim in ("hardware", "counter", "emulated"):
            ident = MeterIdentity("ptd", measured_as=claim, **values)
            assert ident.measured_as == "simulated"
    with pytest.raises(ValueError, match="measured_as 'guessed'"):
        MeterIdentity("ptd", "m", "s", "f", "guessed")


def test_the_weakest_label_wins_and_every_level_is_named() -> None:
    assert weakest("hardware", "simulated") == "simulated"
    assert weakest("hardware", "emulated") == "emulated"
    assert weakest("hardware", "counter") == "counter"
    assert weakest("hardware") == "hardware"
    assert {level for level, _ in LEVELS.values()} <= set(LEVEL_NAMES)
    assert level_of("no-such-driver") == "unknown"


def test_check_on_a_tiny_export_keeps_the_simulated_warning(sessions, tmp_path: Path) -> None:
    from tinypower.results.compliance import check_tree
    from tinypower.results.exports import export_tiny

    folder = export_tiny(sessions["energy"], tmp_path / "closed" / "tinypower")
    [case] = check_tree(folder)
    got = {c.rule: (c.verdict, c.evidence) for c in case.checks}
    assert got["measured_as"] == ("warn", "measured_as: simulated: not a hardware measurement")


def test_the_docs_list_every_drivers_verification_level() -> None:
    docs = Path(__file__).resolve().parents[1] / "docs" / "how-numbers-are-computed.md"
    text = docs.read_text()
    for kind, (level, _) in LEVELS.items():
        assert f"| {kind} | {level} |" in text, kind
