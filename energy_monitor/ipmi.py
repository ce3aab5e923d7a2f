"""Server power from a BMC's IPMI DCMI Get Power Reading, through the ``ipmitool`` program.

DCMI's Get Power Reading (NetFn 0x2C, Cmd 0x02, ``shared/reference/instruments.md`` §9) returns
the BMC's current, minimum, maximum and average power in whole watts over its statistics
period. ``ipmitool dcmi power reading`` sends it and prints::

    Instantaneous power reading:                   235 Watts
    Minimum during sampling period:                 30 Watts
    Maximum during sampling period:                296 Watts
    Average power reading over sample period:      220 Watts
    IPMI timestamp:                           Thu Feb 15 08:36:01 2024
    Sampling period:                          00000001 Seconds.
    Power reading state is:                   activated

The driver runs ipmitool once per reading (``-I lanplus -H HOST -U USER -E``, the password in
``IPMI_PASSWORD`` rather than on the command line; with no address ``-I open``, the local BMC
through ``/dev/ipmi0``) and keeps the instantaneous reading (``reading="average"``: the BMC's
average over its sampling period), stamped with the host's UTC clock when ipmitool returns.
ipmitool is the boundary: it speaks RMCP+ to the BMC, which nothing here can reach in tests
(they put a fake ``ipmitool`` first on PATH, see :mod:`energy_monitor.sim.ipmi_sim`).

BMC readings are whole watts, refreshed about once a second and often averaged: informative,
not an MLPerf inference power result. Setup: ``docs/meters/ipmi.md``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from energy_monitor.meter import MeterError, MeterIdentity
from energy_monitor.poller import Poller, ReadingLog
from energy_monitor.series import PowerSeries

READINGS = {"instantaneous": "Instantaneous power reading",
            "average": "Average power reading over sample period"}
INTERFACES = ("lanplus", "lan", "open")
_STATE = re.compile(r"Power reading state is:\s*(\w+)")


def parse_power_reading(output: str, reading: str = "instantaneous") -> tuple[float, str]:
    """The chosen reading (W) and the power-reading state from ipmitool's output."""
    match = re.search(rf"{READINGS[reading]}:\s*(\d+)\s+Watts", output)
    if match is None:
        raise ValueError(f"no '{READINGS[reading]}: N Watts' line")
    state = _STATE.search(output)
    return float(match.group(1)), state.group(1) if state else "unknown"


class Ipmi:
    """A BMC's DCMI power reading as a series meter."""

    kind = "ipmi"

    def __init__(
        self, address: str | None = None, *, username: str | None = None,
        password: str | None = None, interface: str | None = None, port: int | None = None,
        reading: str = "instantaneous", ipmitool: str = "ipmitool",
        poll_interval_s: float = 1.0, timeout_s: float = 10.0, measured_as: str = "hardware",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``address`` is the BMC (host name or IP) for ``-I lanplus``; None reads the local
        BMC (``-I open``, root or the ipmi device's group)."""
        interface = interface or ("lanplus" if address else "open")
        if interface not in INTERFACES:
            raise MeterError(f"ipmi interface must be one of {', '.join(INTERFACES)}, not "
                             f"{interface!r}")
        if interface != "open" and not address:
            raise MeterError(f"ipmi interface {interface} needs the BMC's address")
        if reading not in READINGS:
            raise MeterError(f"ipmi reading must be \"instantaneous\" or \"average\", not "
                             f"{reading!r}")
        program = shutil.which(ipmitool)
        if program is None:
            raise MeterError(f"{ipmitool!r} not found: the ipmi meter runs ipmitool; install it "
                             "(apt-get install ipmitool / dnf install ipmitool) or set ipmitool "
                             "= \"/path/to/ipmitool\"")
        self.address = address
        self.interface = interface
        self.reading = reading
        self.timeout_s = timeout_s
        self.measured_as = measured_as
        self.clock = clock
        self._argv = [program, "-I", interface]
        if interface != "open":
            self._argv += ["-H", address, "-N", "1", "-R", "2"]  # type: ignore[list-item]
            if port:
                self._argv += ["-p", str(port)]
            if username:
                self._argv += ["-U", username]
            if password is not None:
                self._argv.append("-E")  # the password from IPMI_PASSWORD, not argv
        self._env = dict(os.environ)
        if password is not None:
            self._env["IPMI_PASSWORD"] = password
        self._argv += ["dcmi", "power", "reading"]
        self._log = ReadingLog("ipmi", ("power_w", "state"))
        self._poller = Poller(self.poll, poll_interval_s, "ipmi-poll")
        self.state = "unknown"
        self.version = self._version(program)
        self.read_power_w()  # fail now (unreachable BMC, no DCMI), not mid-run

    @property
    def where(self) -> str:
        return f"the BMC at {self.address}" if self.address else "the local BMC"

    def identify(self) -> MeterIdentity:
        return MeterIdentity("ipmi", f"IPMI DCMI power reading ({self.reading}) via ipmitool",
                             self.address or "local", self.version, self.measured_as)

    def _version(self, program: str) -> str:
        """``ipmitool -V``: the program between us and the BMC says what it is."""
        try:
            done = subprocess.run([program, "-V"], capture_output=True, text=True,
                                  timeout=self.timeout_s)
        except (subprocess.TimeoutExpired, OSError):
            return "-"
        return (done.stdout or done.stderr).strip() or "-"

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
        return PowerSeries(*self._log.arrays(), source=f"ipmi {self.address or 'local'}")

    def poll(self) -> None:
        watts = self.read_power_w()
        self._log.add(self.clock(), watts, self.state)

    def read_power_w(self) -> float:
        """Run ``ipmitool dcmi power reading`` once; the chosen reading in W."""
        kept = (f" after {len(self._log)} readings (the readings so far are kept)"
                if len(self._log) else "")
        try:
            done = subprocess.run(self._argv, capture_output=True, text=True,
                                  timeout=self.timeout_s, env=self._env)
        except subprocess.TimeoutExpired:
            raise MeterError(f"ipmitool did not finish within {self.timeout_s:g} s reading "
                             f"{self.where}{kept}: check that the BMC is up and reachable"
                             ) from None
        except OSError as exc:
            raise MeterError(f"cannot run ipmitool ({exc})") from None
        output = done.stdout + done.stderr
        try:
            watts, self.state = parse_power_reading(output, self.reading)
        except ValueError:
            raise MeterError(self._failure(output, done.returncode) + kept) from None
        return watts

    def _failure(self, output: str, returncode: int) -> str:
        """ipmitool's own error, with what to do about it."""
        said = " ".join(output.split()) or f"no output, exit status {returncode}"
        if "Unable to establish" in output:
            return (f"ipmitool could not reach {self.where} ({said}): check the address, that "
                    "IPMI over LAN is enabled on the BMC, and the username and password")
        if "Could not open device" in output:
            return (f"ipmitool cannot open the local IPMI device ({said}): load the drivers "
                    "(modprobe ipmi_devintf ipmi_si) and run as root, or give the BMC's "
                    "address to use IPMI over LAN")
        if "DCMI request failed" in output or "valid DCMI command" in output:
            return (f"{self.where} does not serve the DCMI power reading ({said}): this BMC "
                    "has no DCMI power management; use the redfish meter, a metered PDU "
                    "(snmp_pdu) or an analyzer")
        return f"ipmitool dcmi power reading failed on {self.where}: {said}"

