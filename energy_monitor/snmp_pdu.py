"""Metered PDUs (Raritan, APC, ServerTech) over SNMP v2c, polled into a power or energy series.

A metered PDU reports each outlet's and each inlet's active power, and an energy counter, in
its vendor's MIB with its vendor's scaling (``shared/reference/instruments.md`` §7):

- **Raritan** PDU2-MIB: sensor values ``measurementsOutletSensorValue`` (outlets) and
  ``measurementsInletSensorValue`` (inlets), indexed ``<pdu>.<outlet|inlet>.<sensorType>``
  with activePower = 5 (W) and activeEnergy = 8 (Wh); each is divided by 10^digits, the
  sensor's ``...SensorDecimalDigits``, read once when the driver connects;
- **APC** PowerNet-MIB rPDU2: ``rPDU2DeviceStatusPower`` in hundredths of kW and
  ``rPDU2DeviceStatusEnergy`` in tenths of kWh for the whole PDU (the "inlet" here),
  ``rPDU2OutletMeteredStatusPower`` in W per outlet; -1 means "not metered";
- **ServerTech** Sentry4-MIB: ``st4InputCordActivePower`` per ``<unit>.<cord>`` and
  ``st4OutletActivePower`` per ``<unit>.<cord>.<outlet>``, in W.

Energy counters are read only where the column is documented (Raritan outlets and inlets, the
APC device); APC outlet and ServerTech energy columns are not confirmed, so the driver refuses
them rather than guess. A PDU's counter counts whole Wh (APC: 0.1 kWh): fit for long runs;
power readings (``measure="power"``, the default) suit runs of seconds to minutes.

Each reading is one SNMP GET, stamped with the host's UTC clock when the reply arrives. PDUs
refresh their values about once a second and are less accurate than an analyzer: informative,
not an MLPerf inference power result. A silent agent (down, wrong address, or a wrong community,
which an agent ignores without a reply) and a missing OID (wrong vendor, outlet or unit) are
clear :class:`~energy_monitor.meter.MeterError`\\ s; the readings taken so far are kept.

pysnmp's v1arch asyncio API does the SNMP: the driver owns an event loop on its own thread and
submits each GET there, so the polling thread and the caller can both read.

Setup and a commented SUT-TOML snippet: ``docs/meters/snmp_pdu.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from energy_monitor.meter import MeterError, MeterIdentity, parse_host_port
from energy_monitor.poller import Poller, ReadingLog
from energy_monitor.series import CounterSeries, PowerSeries

DEFAULT_PORT = 161
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
J_PER_WH = 3600.0
MEASURES = ("power", "energy")
ENTERPRISES = {"13742": "raritan", "318": "apc", "1718": "servertech"}

RARITAN = "1.3.6.1.4.1.13742.6"
RARITAN_ACTIVE_POWER, RARITAN_ACTIVE_ENERGY = 5, 8
APC_RPDU2 = "1.3.6.1.4.1.318.1.1.26"
SENTRY4 = "1.3.6.1.4.1.1718.4.1"


@dataclass(frozen=True)
class Channel:
    """Where one quantity lives: its OID, how to scale the raw integer, and (Raritan) the OID
    of its decimal digits."""

    oid: str
    scale: float  # raw x scale = W, or J for an energy counter
    digits_oid: str | None = None
    what: str = ""


def channel(vendor: str, measure: str, outlet: int | None, inlet: int, unit: int) -> Channel:
    """The OID and scaling for ``measure`` at an outlet (or the inlet when ``outlet`` is None)."""
    place = f"outlet {outlet}" if outlet is not None else f"inlet {inlet}"
    if vendor == "raritan":
        sensor = RARITAN_ACTIVE_POWER if measure == "power" else RARITAN_ACTIVE_ENERGY
        scale = 1.0 if measure == "power" else J_PER_WH
        if outlet is not None:
            index = f"{unit}.{outlet}.{sensor}"
            return Channel(f"{RARITAN}.5.4.3.1.4.{index}", scale, f"{RARITAN}.3.5.4.1.7.{index}",
                           f"Raritan PDU {unit} {place}")
        index = f"{unit}.{inlet}.{sensor}"
        return Channel(f"{RARITAN}.5.2.3.1.4.{index}", scale, f"{RARITAN}.3.3.4.1.7.{index}",
                       f"Raritan PDU {unit} {place}")
    if vendor == "apc":
        if outlet is None:
            if measure == "power":  # hundredths of kW
                return Channel(f"{APC_RPDU2}.4.3.1.5.{unit}", 10.0, None, f"APC PDU {unit}")
            return Channel(f"{APC_RPDU2}.4.3.1.9.{unit}", 0.1 * 1000 * J_PER_WH, None,
                           f"APC PDU {unit}")  # tenths of kWh
        if measure == "energy":
            raise MeterError("APC outlet energy is not supported (its rPDU2 column is not "
                             "confirmed): measure = \"power\" for an outlet, or the PDU's "
                             "energy with the outlet omitted")
        return Channel(f"{APC_RPDU2}.9.4.3.1.7.{outlet}", 1.0, None, f"APC {place}")
    if vendor == "servertech":
        if measure == "energy":
            raise MeterError("ServerTech energy counters are not supported (their Sentry4 "
                             "columns are not confirmed): use measure = \"power\"")
        if outlet is None:
            return Channel(f"{SENTRY4}.3.3.1.3.{unit}.{inlet}", 1.0, None,
                           f"ServerTech unit {unit} cord {inlet}")
        return Channel(f"{SENTRY4}.8.3.1.7.{unit}.{inlet}.{outlet}", 1.0, None,
                       f"ServerTech unit {unit} cord {inlet} {place}")
    raise MeterError(f"unknown PDU vendor {vendor!r}: write vendor = \"raritan\", \"apc\" or "
                     "\"servertech\"")


class SnmpPdu:
    """One outlet or inlet of a metered PDU as a series meter."""

    kind = "snmp_pdu"

    def __init__(
        self, address: str, *, vendor: str, outlet: int | None = None, inlet: int = 1,
        unit: int = 1, measure: str = "power", community: str = "public",
        poll_interval_s: float = 1.0, timeout_s: float = 2.0, retries: int = 1,
        measured_as: str = "hardware", clock: Callable[[], float] = time.time,
    ) -> None:
        """``unit`` is the Raritan PDU id, the APC device index or the ServerTech unit;
        ``inlet`` is the inlet (ServerTech: the input cord, also for its outlets)."""
        if measure not in MEASURES:
            raise MeterError(f"snmp_pdu measure must be \"power\" or \"energy\", not {measure!r}")
        self.host, self.port = parse_host_port(address, DEFAULT_PORT, "HOST or HOST:PORT")
        self.vendor = vendor
        self.measure = measure
        self.channel = channel(vendor, measure, outlet, inlet, unit)
        self.timeout_s = timeout_s
        self.measured_as = measured_as
        self.clock = clock
        self._community = community
        self._retries = retries
        self._log = ReadingLog("snmp_pdu", ("power_w" if measure == "power" else "energy_j",))
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever,
                                             name="snmp-pdu-loop", daemon=True)
        self._loop_thread.start()
        self._poller = Poller(self.poll, poll_interval_s, "snmp-pdu-poll")
        try:
            self._dispatcher, self._target = self._run(self._open())
            self.descr, self.object_id = (str(v) for v in self._get(SYS_DESCR, SYS_OBJECT_ID))
            self._scale = self.channel.scale
            if self.channel.digits_oid:
                (digits,) = self._get(self.channel.digits_oid)
                self._scale /= 10 ** int(digits)
            self.read()  # fail now (a wrong outlet, an unmetered one), not mid-run
        except BaseException:
            self.close()
            raise

    def identify(self) -> MeterIdentity:
        return MeterIdentity("snmp_pdu", f"{self.descr} ({self.channel.what}, {self.measure})",
                             f"{self.host}:{self.port}", self.object_id, self.measured_as)

    def start(self, folder: Path | None = None) -> None:
        self._log.start(folder)
        self.poll()
        self._poller.start()

    def stop(self) -> PowerSeries | CounterSeries:
        self._poller.finish(self._log.close)
        return self.series()

    def close(self) -> None:
        self._poller.stop()
        self._log.close()
        if self._loop.is_closed():
            return
        with contextlib.suppress(TimeoutError, RuntimeError):  # closing anyway
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        self._loop.close()

    def series(self) -> PowerSeries | CounterSeries:
        """What was read since :meth:`start` (W, or the counter in J), also after a failure."""
        source = f"snmp_pdu {self.host}:{self.port} {self.channel.what}"
        t, v = self._log.arrays()
        if self.measure == "power":
            return PowerSeries(t, v, source=source)
        return CounterSeries(t, v, source=source)

    def poll(self) -> None:
        value = self.read()
        self._log.add(self.clock(), value)

    def read(self) -> float:
        """One reading, scaled: W, or the energy counter in J."""
        (raw,) = self._get(self.channel.oid)
        try:
            number = int(raw)
        except (TypeError, ValueError):
            raise MeterError(f"the PDU's {self.channel.oid} ({self.channel.what}) holds "
                             f"{raw.prettyPrint()!r}, not a number") from None
        if number < 0:
            raise MeterError(f"the PDU reports {number} for {self.channel.what}: this model does "
                             "not meter it; pick a metered outlet or the inlet")
        value = number * self._scale
        if not math.isfinite(value):
            raise MeterError(f"the PDU's {self.channel.oid} reads {number}")
        return value

    # -- SNMP ---------------------------------------------------------------------------------

    def _run(self, coroutine: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=(self.timeout_s + 1) * (self._retries + 1) + 5)

    async def _open(self) -> tuple[Any, Any]:
        from pysnmp.hlapi.v1arch.asyncio import SnmpDispatcher, UdpTransportTarget

        target = await UdpTransportTarget.create((self.host, self.port),
                                                 timeout=self.timeout_s, retries=self._retries)
        return SnmpDispatcher(), target

    async def _shutdown(self) -> None:
        """Close the dispatcher and let its timer task finish cancelling."""
        dispatcher = getattr(self, "_dispatcher", None)
        if dispatcher is not None:
            dispatcher.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _get_async(self, oids: tuple[str, ...]) -> tuple:
        from pysnmp.hlapi.v1arch.asyncio import CommunityData, get_cmd
        from pysnmp.proto.rfc1902 import ObjectName

        return await get_cmd(self._dispatcher, CommunityData(self._community, mpModel=1),
                             self._target, *[(ObjectName(o), None) for o in oids])

    def _get(self, *oids: str) -> list[Any]:
        """The values at ``oids`` (one GET); a silent agent or a missing OID raises."""
        try:
            indication, status, index, var_binds = self._run(self._get_async(oids))
        except (OSError, TimeoutError) as exc:
            raise MeterError(f"SNMP GET to {self.host}:{self.port} failed ({exc})") from None
        if indication:
            raise MeterError(
                f"no SNMP answer from the PDU at {self.host}:{self.port} within "
                f"{self.timeout_s:g} s x {self._retries + 1} tries ({indication}) after "
                f"{len(self._log)} readings: check the address, that SNMP v2c is enabled, and "
                "the community (an agent ignores a wrong community without answering); the "
                "readings so far are kept")
        if int(status):
            raise MeterError(f"the PDU refused GET {', '.join(oids)}: {status.prettyPrint()} "
                             f"at varbind {int(index)}")
        values = []
        for oid, value in var_binds:
            if value.__class__.__name__ in ("NoSuchObject", "NoSuchInstance", "EndOfMibView"):
                raise MeterError(self._missing(str(oid)))
            values.append(value)
        return values

    def _missing(self, oid: str) -> str:
        text = (f"the PDU at {self.host}:{self.port} has no object {oid} "
                f"({self.channel.what if oid != SYS_DESCR else 'sysDescr'}): check vendor, "
                "unit, inlet and outlet")
        enterprise = getattr(self, "object_id", "").removeprefix("1.3.6.1.4.1.").split(".")[0]
        if enterprise in ENTERPRISES and ENTERPRISES[enterprise] != self.vendor:
            text += (f"; the agent identifies as {self.object_id} (enterprise {enterprise}: "
                     f"{ENTERPRISES[enterprise]}): set vendor = \"{ENTERPRISES[enterprise]}\"")
        return text

