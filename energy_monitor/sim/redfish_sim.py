"""A simulated Redfish BMC on loopback HTTP, serving power in the shapes real BMCs use.

``/redfish/v1/Chassis`` lists one chassis (``1U``, as DMTF's public-rackmount1 mockup) with, as
chosen: the legacy ``Power`` resource (``PowerControl[0].PowerConsumedWatts``), the newer
``EnvironmentMetrics`` (``PowerWatts.Reading``) and ``PowerSubsystem`` with two power supplies
whose ``Metrics`` give ``InputPowerWatts.Reading`` (each half the load). Readings come from a
power function of UTC epoch seconds at the moment of the request; ``readings`` keeps each
(time, W) served. HTTP Basic authentication when ``username`` is set. Faults
(:class:`~energy_monitor.sim.faults.SimFaults`, counted in readings served): ``stall_after``
answers nothing (the request hangs), ``garble_at`` answers a body that is not JSON.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from energy_monitor.sim.faults import SimFaults

RESOURCES = ("power", "environment_metrics", "power_subsystem")


class RedfishSimulator:
    """A BMC on ``127.0.0.1``; :meth:`start` returns its base URL."""

    def __init__(
        self, power_fn: Callable[[float], float], *, resources: tuple[str, ...] = RESOURCES,
        username: str | None = None, password: str | None = None,
        faults: SimFaults | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self.power_fn = power_fn
        self.resources = resources
        self.auth = (base64.b64encode(f"{username}:{password}".encode()).decode()
                     if username else None)
        self.faults = faults or SimFaults()
        self.clock = clock
        self.readings: list[tuple[float, float]] = []
        self.requests: list[str] = []
        self._release = threading.Event()
        self._lock = threading.Lock()
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                sim._handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="redfish-sim", daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RedfishSimulator:
        self.url = self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reading(self) -> float:
        t = self.clock()
        watts = float(self.power_fn(t))
        with self._lock:
            self.readings.append((t, watts))
        return watts

    def _document(self, path: str) -> dict | None:
        base = "/redfish/v1/Chassis"
        if path == base:
            return {"@odata.id": base, "Members@odata.count": 1,
                    "Members": [{"@odata.id": f"{base}/1U"}]}
        if path == f"{base}/1U":
            doc: dict = {"@odata.id": path, "Id": "1U", "Name": "Simulated chassis",
                         "Manufacturer": "tinypowersim", "Model": "simulated 1U"}
            for name, key in (("power", "Power"), ("environment_metrics", "EnvironmentMetrics"),
                              ("power_subsystem", "PowerSubsystem")):
                if name in self.resources:
                    doc[key] = {"@odata.id": f"{path}/{key}"}
            return doc
        if path == f"{base}/1U/Power" and "power" in self.resources:
            return {"@odata.type": "#Power.v1_7_1.Power", "PowerControl": [
                {"MemberId": "0", "PowerConsumedWatts": round(self._reading(), 1)}]}
        if path == f"{base}/1U/EnvironmentMetrics" and "environment_metrics" in self.resources:
            return {"@odata.type": "#EnvironmentMetrics.v1_3_0.EnvironmentMetrics",
                    "PowerWatts": {"Reading": round(self._reading(), 1),
                                   "DataSourceUri": f"{base}/1U/Sensors/TotalPower"}}
        if path == f"{base}/1U/PowerSubsystem" and "power_subsystem" in self.resources:
            return {"PowerSupplies": {"@odata.id": f"{base}/1U/PowerSubsystem/PowerSupplies"}}
        if path == f"{base}/1U/PowerSubsystem/PowerSupplies" and \
                "power_subsystem" in self.resources:
            return {"Members": [{"@odata.id": f"{base}/1U/PowerSubsystem/PowerSupplies/{n}"}
                                for n in (0, 1)]}
        if path.startswith(f"{base}/1U/PowerSubsystem/PowerSupplies/") and path.endswith(
                "/Metrics") and "power_subsystem" in self.resources:
            # One reading serves both supplies: each gets half of it, taken at the same time.
            if path.endswith("/0/Metrics"):
                self._half = self._reading() / 2
            return {"InputPowerWatts": {"Reading": round(getattr(self, "_half", 0.0), 2)}}
        return None

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        self.requests.append(request.path)
        if self.auth and request.headers.get("Authorization") != f"Basic {self.auth}":
            request.send_response(401)
            request.send_header("WWW-Authenticate", 'Basic realm="Redfish"')
            request.end_headers()
            return
        served = len(self.readings)
        f = self.faults
        if f.stall_after is not None and served >= f.stall_after:
            self._release.wait(30)
            return
        doc = self._document(request.path.rstrip("/"))
        if doc is None:
            body, status = json.dumps({"error": {"code": "Base.1.0.ResourceMissingAtURI"}}), 404
        elif f.garble_at is not None and served >= f.garble_at:
            body, status = "<html>Service Unavailable</html>", 200
        else:
            body, status = json.dumps(doc), 200
        data = body.encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
