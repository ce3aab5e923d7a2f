"""The real driver for each series-meter kind, built from the address a SUT TOML gives.

Series meters (:class:`~energy_monitor.meter.SeriesMeter`) stamp their own readings: AC
analyzers, PDUs, BMCs and on-chip counters. Addresses per kind:

- ``ptd``: ``HOST:PORT`` of SPEC PTDaemon (port 8888 when omitted);
- ``yokogawa``: a VISA resource, e.g. ``TCPIP::192.168.1.20::INSTR`` or
  ``USB0::0x0B21::0x0025::C2WL21005V::INSTR``;
- ``redfish``: the BMC's base URL, e.g. ``https://10.0.0.5`` (options ``chassis``, ...);
- ``snmp_pdu``: the PDU's SNMP agent, ``HOST`` or ``HOST:PORT`` (port 161 when omitted;
  options ``vendor``, ``outlet``, ``community``, ...);
- ``ipmi``: the BMC's host for ``ipmitool -I lanplus`` (None: the local BMC, ``-I open``);
- ``nvml``: a GPU index or UUID (None: every GPU);
- ``rapl``: the powercap root (None: ``/sys/class/powercap``).

Docs per kind, with a commented SUT-TOML snippet: ``docs/meters/<kind>.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from energy_monitor.meter import SeriesMeter


def _ptd(address: str | None, **options: Any) -> SeriesMeter:
    from energy_monitor.ptd import DEFAULT_PORT, Ptd

    return Ptd(address or f"127.0.0.1:{DEFAULT_PORT}", **options)


def _rapl(address: str | None, **options: Any) -> SeriesMeter:
    from energy_monitor.rapl import POWERCAP_ROOT, Rapl

    return Rapl(Path(address) if address else POWERCAP_ROOT, **options)


def _nvml(address: str | None, **options: Any) -> SeriesMeter:
    from energy_monitor.nvml import Nvml

    return Nvml(address, **options)


def _yokogawa(address: str | None, **options: Any) -> SeriesMeter:
    from energy_monitor.yokogawa import Yokogawa

    return Yokogawa(_required(address, "yokogawa", "a VISA resource, e.g. "
                              "TCPIP::192.168.1.20::INSTR"), **options)


def _redfish(address: str | None, **options: Any) -> SeriesMeter:
    from energy_monitor.redfish import Redfish

    return Redfish(_required(address, "redfish", "the BMC's URL, e.g. https://10.0.0.5"),
                   **options)


def _snmp_pdu(address: str | None, **options: Any) -> SeriesMeter:
    from energy_monitor.snmp_pdu import SnmpPdu

    return SnmpPdu(_required(address, "snmp_pdu", "the PDU's SNMP agent, e.g. 10.0.0.9 or "
                             "10.0.0.9:161"), **options)


def _ipmi(address: str | None, **options: Any) -> SeriesMeter:
    from energy_monitor.ipmi import Ipmi

    return Ipmi(address, **options)


SERIES_METERS: dict[str, Callable[..., SeriesMeter]] = {
    "ptd": _ptd,
    "yokogawa": _yokogawa,
    "redfish": _redfish,
    "snmp_pdu": _snmp_pdu,
    "ipmi": _ipmi,
    "nvml": _nvml,
    "rapl": _rapl,
}


def connect_series_meter(kind: str, address: str | None, **options: Any) -> SeriesMeter:
    """Open the real driver of a ``kind`` series meter at ``address``."""
    try:
        driver = SERIES_METERS[kind]
    except KeyError:
        raise ValueError(
            f"no driver for meter {kind!r}; meters: {', '.join(sorted(SERIES_METERS))}"
        ) from None
    return driver(address, **options)


def _required(address: str | None, kind: str, what: str) -> str:
    if not address:
        raise ValueError(f"the {kind} meter needs an address: set address = with {what}")
    return address
