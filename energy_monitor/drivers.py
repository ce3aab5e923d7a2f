"""The real driver for each monitor kind, built from the address a user or discovery gives.

Addresses per kind: a serial port or pyserial URL (``lpm01a``, ``ppk2``), ``host:port`` of the
Otii 3 TCP server (``otii``), a Joulescope device path or serial (``joulescope``; None for the
only one attached).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from energy_monitor.meter import Meter


def _lpm01a(address: str | None, **options: Any) -> Meter:
    from energy_monitor.lpm01a import Lpm01a

    return Lpm01a(_required(address, "lpm01a", "its serial port, e.g. /dev/ttyACM0"), **options)


def _ppk2(address: str | None, **options: Any) -> Meter:
    from energy_monitor.ppk2 import Ppk2

    return Ppk2(_required(address, "ppk2", "its serial port, e.g. /dev/ttyACM1"), **options)


def _otii(address: str | None, **options: Any) -> Meter:
    from energy_monitor.otii import Otii

    return Otii(address or "127.0.0.1:1905", **options)


def _joulescope(address: str | None, **options: Any) -> Meter:
    from energy_monitor.joulescope import Joulescope

    return Joulescope(address, **options)


DRIVERS: dict[str, Callable[..., Meter]] = {
    "lpm01a": _lpm01a,
    "ppk2": _ppk2,
    "otii": _otii,
    "joulescope": _joulescope,
}


def connect_meter(kind: str, address: str | None, **options: Any) -> Meter:
    """Open the real driver of a ``kind`` monitor at ``address``."""
    try:
        driver = DRIVERS[kind]
    except KeyError:
        raise ValueError(
            f"no driver for monitor {kind!r}; monitors: {', '.join(sorted(DRIVERS))}"
        ) from None
    return driver(address, **options)


def _required(address: str | None, kind: str, what: str) -> str:
    if not address:
        raise ValueError(f"the {kind} needs an address: pass --monitor-port with {what}")
    return address
