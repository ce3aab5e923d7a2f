"""Server power from a BMC over DMTF Redfish (HTTP(S) + JSON), polled into a power series.

Three places a BMC may report a chassis's input power, tried in this order by
``source="auto"``:

- ``/redfish/v1/Chassis/{id}/EnvironmentMetrics``: ``PowerWatts.Reading`` (current schema);
- ``/redfish/v1/Chassis/{id}/Power``: ``PowerControl[0].PowerConsumedWatts`` (the legacy
  resource, deprecated but the one most BMCs still serve);
- ``/redfish/v1/Chassis/{id}/PowerSubsystem``: the sum of each power supply's
  ``Metrics.InputPowerWatts.Reading``.

The chassis is ``chassis=`` (its Id) or the first listed that has one of them. Each reading is
stamped with the host's UTC clock when the reply arrives. BMC power sensors update slowly
(often every 1-10 s) and may average: a BMC is fit for the training rules' node-level
measurement, not for an MLPerf inference power result (which needs an analyzer at the wall).

Reference: ``shared/reference/instruments.md`` §8; setup in ``docs/meters/redfish.md``.
"""

from __future__ import annotations

import base64
import json
import math
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from energy_monitor.meter import MeterError, MeterIdentity
from energy_monitor.poller import Poller, ReadingLog
from energy_monitor.series import PowerSeries

SOURCES = ("auto", "environment_metrics", "power", "power_subsystem")
RESOURCE = {"environment_metrics": "EnvironmentMetrics", "power": "Power",
            "power_subsystem": "PowerSubsystem"}


class Redfish:
    """A Redfish BMC's chassis power as a series meter."""

    kind = "redfish"

    def __init__(
        self, url: str, *, chassis: str | None = None, source: str = "auto",
        username: str | None = None, password: str | None = None, verify_tls: bool = True,
        poll_interval_s: float = 1.0, timeout_s: float = 5.0, measured_as: str = "hardware",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``verify_tls=False`` accepts a BMC's self-signed certificate."""
        if source not in SOURCES:
            raise MeterError(f"redfish source must be one of {', '.join(SOURCES)}, "
                             f"not {source!r}")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.measured_as = measured_as
        self.clock = clock
        self._headers = {"Accept": "application/json"}
        if username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._ssl = None if verify_tls else ssl._create_unverified_context()
        self.made_by = ""
        self.chassis, self.source = self._discover(chassis, source)
        self._log = ReadingLog("redfish", ("power_w",))
        self._poller = Poller(self.poll, poll_interval_s, "redfish-poll")

    def identify(self) -> MeterIdentity:
        made_by = f" ({self.made_by})" if self.made_by else ""
        return MeterIdentity("redfish", f"Redfish {RESOURCE[self.source]} at {self.url}{made_by}",
                             self.chassis, "-", self.measured_as)

    def start(self, folder: Path | None = None) -> None:
        self._log.start(folder)
        self.poll()
        self._poller.start()

    def stop(self) -> PowerSeries:
        self._poller.finish(self._log.close)
        return self.series()

    def close(self) -> None:
        self._poller.stop()
        self._log.close()

    def series(self) -> PowerSeries:
        return PowerSeries(*self._log.arrays(), source=f"redfish {self.url} {self.chassis}")

    def poll(self) -> None:
        watts = self.read_power_w()
        self._log.add(self.clock(), watts)

    def read_power_w(self) -> float:
        """One reading from the chosen resource."""
        path = f"/redfish/v1/Chassis/{self.chassis}/{RESOURCE[self.source]}"
        doc = self._get(path)
        try:
            if self.source == "environment_metrics":
                value = doc["PowerWatts"]["Reading"]
            elif self.source == "power":
                value = doc["PowerControl"][0]["PowerConsumedWatts"]
            else:
                supplies = self._get(doc["PowerSupplies"]["@odata.id"])["Members"]
                value = sum(self._get(f"{m['@odata.id']}/Metrics")["InputPowerWatts"]["Reading"]
                            for m in supplies)
            watts = float(value)
        except (KeyError, IndexError, TypeError, ValueError):
            raise MeterError(f"the BMC's {path} holds no power reading where Redfish puts it: "
                             f"pick another source (environment_metrics, power, "
                             "power_subsystem)") from None
        if not math.isfinite(watts):
            raise MeterError(f"the BMC's {path} reads {value!r} watts")
        return watts

    def _discover(self, chassis: str | None, source: str) -> tuple[str, str]:
        members = self._get("/redfish/v1/Chassis").get("Members", [])
        ids = [m["@odata.id"].rstrip("/").rsplit("/", 1)[-1] for m in members]
        if chassis is not None and chassis not in ids:
            raise MeterError(f"no chassis {chassis!r} at {self.url}; it lists "
                             f"{', '.join(ids) or 'none'}")
        wanted = [source] if source != "auto" else ["environment_metrics", "power",
                                                     "power_subsystem"]
        for chassis_id in [chassis] if chassis else ids:
            doc = self._get(f"/redfish/v1/Chassis/{chassis_id}")
            for name in wanted:
                if RESOURCE[name] in doc:
                    # The chassis' own Manufacturer/Model (Redfish Chassis schema) identify it.
                    self.made_by = " ".join(str(doc.get(k) or "") for k in
                                            ("Manufacturer", "Model")).strip()
                    return chassis_id, name
        raise MeterError(
            f"no chassis at {self.url} offers {' or '.join(RESOURCE[w] for w in wanted)}: "
            "this BMC does not report power over Redfish (try the ipmi meter)"
        )

    def _get(self, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s,
                                        context=self._ssl) as reply:
                body = reply.read()
        except urllib.error.HTTPError as exc:
            fix = ("set username and password (a BMC account with read access)"
                   if exc.code in (401, 403) else "check the chassis and source")
            raise MeterError(f"the BMC answered {exc.code} to GET {path}: {fix}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise MeterError(
                f"the BMC at {self.url} did not answer GET {path} "
                f"({getattr(exc, 'reason', exc)}) after {len(getattr(self, '_log', ()))} "
                "readings: check its address and network; the readings so far are kept"
            ) from None
        try:
            doc = json.loads(body)
        except ValueError:
            raise MeterError(f"malformed reply to GET {path} from the BMC (not JSON): "
                             f"{body[:60]!r}") from None
        if not isinstance(doc, dict):
            raise MeterError(f"malformed reply to GET {path} from the BMC: not a JSON object")
        return doc

