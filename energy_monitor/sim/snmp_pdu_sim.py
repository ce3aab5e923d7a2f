"""A simulated metered PDU: an SNMP v2c agent on loopback UDP whose values follow a load model.

A minimal command responder built on pysnmp's v2c message codec (the same BER bytes a real
agent sends): it answers GET requests for the vendor's MIB objects that the driver reads
(``shared/reference/instruments.md`` §7) plus ``sysDescr`` and ``sysObjectID``; any other OID
gets ``noSuchObject``, as a real agent answers an OID from another vendor's MIB. A request with
the wrong community is dropped without a reply (and counted), as real agents do.

One outlet (``sut_outlet``) carries the SUT and draws ``power_fn(t)`` (UTC epoch seconds -> W)
at the moment of each request; the other outlets draw ``idle_outlet_w`` each and the inlet is
their sum. Energy counters integrate the same power exactly enough (1 ms midpoint steps) and
count in the vendor's unit (Raritan Wh / 10^digits, APC tenths of kWh). ``readings`` keeps
each (time, W) served for the SUT's outlet or the inlet, ``energy_readings`` each (time, J)
of the SUT outlet's counter: the ground truth. Faults
(:class:`~energy_monitor.sim.faults.SimFaults`, counted in readings served): ``stall_after``
stops answering (the agent goes silent).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error
from pysnmp.proto import api

from energy_monitor.sim.faults import SimFaults
from energy_monitor.snmp_pdu import (
    APC_RPDU2,
    RARITAN,
    RARITAN_ACTIVE_ENERGY,
    RARITAN_ACTIVE_POWER,
    SENTRY4,
    SYS_DESCR,
    SYS_OBJECT_ID,
)

V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
DESCR = {"raritan": "Raritan PX3-5190R (simulated, tinypowersim)",
         "apc": "APC AP8941 rPDU2 (simulated, tinypowersim)",
         "servertech": "ServerTech PRO2 Sentry4 (simulated, tinypowersim)"}
OBJECT_ID = {"raritan": "1.3.6.1.4.1.13742.6", "apc": "1.3.6.1.4.1.318.1.3.4.6",
             "servertech": "1.3.6.1.4.1.1718.4"}
STEP_S = 0.001


class SnmpPduSimulator:
    """A ``vendor`` PDU on ``127.0.0.1``; :meth:`start` returns ``HOST:PORT``.

    ``decimals`` sets Raritan's decimal digits per quantity (real PDUs: 0 for W and Wh).
    """

    def __init__(
        self, power_fn: Callable[[float], float], *, vendor: str = "raritan",
        community: str = "public", outlets: int = 8, sut_outlet: int = 7,
        idle_outlet_w: float = 5.0, decimals: dict[str, int] | None = None,
        faults: SimFaults | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        if vendor not in DESCR:
            raise ValueError(f"vendor must be one of {sorted(DESCR)}")
        self.power_fn = power_fn
        self.vendor = vendor
        self.community = community
        self.outlets = outlets
        self.sut_outlet = sut_outlet
        self.idle_outlet_w = idle_outlet_w
        self.decimals = {"power": 0, "energy": 0, **(decimals or {})}
        self.faults = faults or SimFaults()
        self.clock = clock
        self.readings: list[tuple[float, float]] = []
        self.energy_readings: list[tuple[float, float]] = []  # (t, SUT outlet's J) served
        self.bad_community = 0  # requests dropped for their community
        self._lock = threading.Lock()
        self._t0 = clock()
        self._sut_energy_j = 0.0
        self._integrated_s = 0.0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._running = False
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._sock.getsockname()[1]}"

    def start(self) -> str:
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="snmp-pdu-sim", daemon=True)
        self._thread.start()
        return self.address

    def close(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._sock.close()

    def __enter__(self) -> SnmpPduSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the load model -----------------------------------------------------------------------

    def energy_j(self, t: float) -> float:
        """The SUT outlet's energy since the simulator started, at ``t`` (ground truth)."""
        target_s = t - self._t0  # seconds since start: epoch times are too coarse to step
        with self._lock:
            while self._integrated_s < target_s:
                step = min(STEP_S, target_s - self._integrated_s)
                middle = self._t0 + self._integrated_s + step / 2
                self._sut_energy_j += self.power_fn(middle) * step
                self._integrated_s += step
            return self._sut_energy_j

    def _outlet(self, outlet: int, t: float, measure: str) -> float | None:
        if not 1 <= outlet <= self.outlets:
            return None
        if outlet == self.sut_outlet:
            if measure == "power":
                return self.power_fn(t)
            joules = self.energy_j(t)
            self.energy_readings.append((t, joules))
            return joules
        return self.idle_outlet_w * (1 if measure == "power" else t - self._t0)

    def _inlet(self, t: float, measure: str) -> float:
        return sum(self._outlet(n, t, measure) or 0.0 for n in range(1, self.outlets + 1))

    def _value(self, oid: str, t: float) -> object | None:
        """The object at ``oid`` now, in the vendor's units and type; None: no such object."""
        if oid == SYS_DESCR:
            return V2C.OctetString(DESCR[self.vendor])
        if oid == SYS_OBJECT_ID:
            return V2C.ObjectIdentifier(OBJECT_ID[self.vendor])
        parts = oid.split(".")
        if self.vendor == "raritan":
            return self._raritan(oid, parts, t)
        if self.vendor == "apc":
            return self._apc(oid, parts, t)
        return self._servertech(oid, parts, t)

    def _raritan(self, oid: str, parts: list[str], t: float) -> object | None:
        tables = {f"{RARITAN}.5.4.3.1.4": "outlet", f"{RARITAN}.5.2.3.1.4": "inlet",
                  f"{RARITAN}.3.5.4.1.7": "outlet digits", f"{RARITAN}.3.3.4.1.7": "inlet digits"}
        table = tables.get(".".join(parts[:-3]))
        if table is None or parts[-3] != "1":
            return None
        place, sensor = int(parts[-2]), int(parts[-1])
        measure = {RARITAN_ACTIVE_POWER: "power", RARITAN_ACTIVE_ENERGY: "energy"}.get(sensor)
        if measure is None or (table.startswith("inlet") and place != 1):
            return None
        if table.endswith("digits"):
            return V2C.Gauge32(self.decimals[measure]) if (
                table.startswith("inlet") or 1 <= place <= self.outlets) else None
        value = self._inlet(t, measure) if table == "inlet" else self._outlet(place, t, measure)
        if value is None:
            return None
        if measure == "energy":
            value /= 3600.0  # Wh
        else:
            self._served(t, value)
        return V2C.Gauge32(int(round(value * 10 ** self.decimals[measure])))

    def _apc(self, oid: str, parts: list[str], t: float) -> object | None:
        head, index = ".".join(parts[:-1]), int(parts[-1])
        if head == f"{APC_RPDU2}.4.3.1.5" and index == 1:
            watts = self._inlet(t, "power")
            self._served(t, watts)
            return V2C.Integer32(int(round(watts / 10)))  # hundredths of kW
        if head == f"{APC_RPDU2}.4.3.1.9" and index == 1:
            return V2C.Integer32(int(self._inlet(t, "energy") / 360_000))  # tenths of kWh
        if head == f"{APC_RPDU2}.9.4.3.1.7":
            watts = self._outlet(index, t, "power")
            if watts is not None and index == self.sut_outlet:
                self._served(t, watts)
            return None if watts is None else V2C.Integer32(int(round(watts)))
        return None

    def _servertech(self, oid: str, parts: list[str], t: float) -> object | None:
        if ".".join(parts[:-2]) == f"{SENTRY4}.3.3.1.3" and parts[-2:] == ["1", "1"]:
            watts = self._inlet(t, "power")
            self._served(t, watts)
            return V2C.Integer32(int(round(watts)))
        if ".".join(parts[:-3]) == f"{SENTRY4}.8.3.1.7" and parts[-3:-1] == ["1", "1"]:
            watts = self._outlet(int(parts[-1]), t, "power")
            if watts is not None and int(parts[-1]) == self.sut_outlet:
                self._served(t, watts)
            return None if watts is None else V2C.Integer32(int(round(watts)))
        return None

    def _served(self, t: float, watts: float) -> None:
        with self._lock:
            self.readings.append((t, watts))

    # -- the agent ----------------------------------------------------------------------------

    def _serve(self) -> None:
        while self._running:
            try:
                data, peer = self._sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            reply = self._answer(data)
            if reply is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendto(reply, peer)

    def _answer(self, data: bytes) -> bytes | None:
        try:
            message, _ = decoder.decode(data, asn1Spec=V2C.Message())
        except PyAsn1Error:
            return None  # not SNMP v2c: a real agent drops it
        if str(V2C.apiMessage.get_community(message)) != self.community:
            self.bad_community += 1
            return None
        stall = self.faults.stall_after
        if stall is not None and len(self.readings) >= stall:
            return None
        request = V2C.apiMessage.get_pdu(message)
        response = V2C.apiPDU.get_response(request)
        if not request.isSameTypeWith(V2C.GetRequestPDU()):
            V2C.apiPDU.set_error_status(response, 5)  # genErr: only GET is served
            V2C.apiPDU.set_varbinds(response, V2C.apiPDU.get_varbinds(request))
        else:
            t = self.clock()
            var_binds = []
            for oid, _ in V2C.apiPDU.get_varbinds(request):
                value = self._value(str(oid), t)
                var_binds.append((oid, V2C.NoSuchObject("") if value is None else value))
            V2C.apiPDU.set_varbinds(response, var_binds)
        reply = V2C.apiMessage.get_response(message)
        V2C.apiMessage.set_pdu(reply, response)
        return encoder.encode(reply)
