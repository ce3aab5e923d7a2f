"""Driver for the Qoitech Otii Arc and Ace, through the Otii 3 TCP server (JSON over TCP).

A script never talks to the Arc itself: the Otii application (or the headless Otii server) owns
the USB link and serves an automation API on TCP port 1905, gated by a user login and a reserved
``Automation`` licence. Messages are UTF-8 JSON objects, one per ``\\r\\n``-terminated line; each
request carries a ``trans_id`` its reply must echo. We speak it with the standard library (one
socket, one request at a time) rather than the ``otii-tcp-client`` package: the few commands we
need are easier to check than a dependency that raises bare exceptions on a closed socket or a
malformed line and keeps its ``trans_id`` counter in a module global.

The Arc's main output supplies the DUT at the configured voltage. A measurement is one recording
of main current (``mc``) and a digital input (``i1`` = GPI1, the DUT's timestamp pin) in the
Otii's active project. While measuring, :meth:`Otii.wait_for_events` (and :meth:`Otii.events`,
:meth:`Otii.sample_count`) poll both channels by index: the pin's falling edges become
:class:`~energy_monitor.trace.Event` s placed on the main-current sample in which they happened
(the Otii timestamps each transition exactly, so a pulse shorter than a sample is still seen),
the main-current values go to a :class:`~energy_monitor.store.SampleStore` in chunks of at most
40,000 (the official client's chunk), and every JSON line sent or received is appended to
``otii-raw.jsonl``. :meth:`Otii.stop` stops the recording and fetches the rest. Each data reply
carries the timestamp of its first value: a reply that starts later than the samples received
marks a :class:`~energy_monitor.trace.Drop` there, and a recording shorter than its duration x
rate marks one at its end. A closed socket, a malformed line, a wrong ``trans_id``, a stalled
recording or a refused command is a :class:`~energy_monitor.meter.MeterError` naming the fix.

Reference: ``shared/reference/instruments.md`` §4; wiring and limits in ``docs/monitors/otii.md``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from energy_monitor.meter import MeterError, MeterIdentity, parse_host_port
from energy_monitor.store import SampleStore
from energy_monitor.stream import RawLog, StreamHealth
from energy_monitor.trace import Drop, Event, Trace

DEFAULT_PORT = 1905
PROTOCOL_MAJOR = "0"  # Otii 3 servers report protocol_version 0.x; others work with a warning
CHUNK = 40_000  # main-current values per request
MAIN_CURRENT = "mc"
DEVICE_TYPES = ("Arc", "Ace")
DEVICE_WAIT_S = 3  # how long the server may look for devices
AUTOMATION_TYPES = ("Automation", "Admin", "All", "Enterprise")  # licence types with Automation
EXP_VOLTAGE_RANGE_V = (1.2, 5.0)  # the digital I/O level the expansion port accepts
TRANSCRIPT_CHARS = 300
FIXES = {
    "Invalid command": "the Otii application is older than this driver expects: update to Otii 3",
    "Missing key in request": "a driver bug: please report it with the session's transcript",
    "Device not connected": "check the Arc/Ace's USB cable and that the Otii application lists it",
    "No license": "reserve an Otii Automation licence for this user (Otii application, Licenses)",
    "Not logged in": "log in: set OTII_USERNAME and OTII_PASSWORD, or log in in the Otii app",
    "Command failure": "check that the value asked for is within the device's range",
}


def parse_address(url: str) -> tuple[str, int]:
    """``tcp://HOST:PORT``, ``HOST:PORT`` or ``HOST`` (port 1905)."""
    return parse_host_port(url, DEFAULT_PORT,
                           f"the Otii server as tcp://HOST:PORT, e.g. tcp://127.0.0.1:{DEFAULT_PORT}")


def _shorten(text: str) -> str:
    if len(text) <= TRANSCRIPT_CHARS:
        return text
    return f"{text[:TRANSCRIPT_CHARS]}... ({len(text)} chars)"


class Otii:
    """An Otii Arc or Ace behind an Otii 3 TCP server; one request at a time (not thread-safe).

    Logs in (``username``/``password``, else ``OTII_USERNAME``/``OTII_PASSWORD``) when the
    server is not logged in, reserves an Automation licence, and picks the device named
    ``device`` (its name or device_id in the Otii application) or the only one connected. At
    :meth:`close` it returns the licence and logs out again if it did either.
    """

    kind = "otii"

    def __init__(
        self, url: str = f"tcp://127.0.0.1:{DEFAULT_PORT}", *, username: str | None = None,
        password: str | None = None, device: str | None = None, gpi: int = 1,
        measured_as: str = "hardware", timeout_s: float = 5.0, stall_timeout_s: float = 3.0,
        poll_interval_s: float = 0.02, on_command: Callable[[str, str], None] | None = None,
    ) -> None:
        """``gpi`` is the digital input wired to the DUT's timestamp pin (1 or 2).
        ``on_command(direction, text)`` sees every command and reply except the data polls
        (those are in ``otii-raw.jsonl``), for the session transcript."""
        if gpi not in (1, 2):
            raise ValueError(f"gpi must be 1 or 2, not {gpi!r}")
        self.url = url
        self.host, self.port = parse_address(url)
        self.measured_as = measured_as
        self.pin_channel = f"i{gpi}"
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self._on_command = on_command or (lambda direction, text: None)
        self.sample_rate_hz = 4000.0  # the Arc's main-current rate until configured
        self.voltage_v = 3.3
        self._pending = bytearray()
        self._trans_id = 0
        self._health = StreamHealth("the Otii", stall_timeout_s, "")  # stalls: see _poll
        self._raw = RawLog(None)
        self._logged_in_by_us = False
        self._reserved_licence: object = None
        self.warnings: tuple[str, ...] = ()
        self._project_id: object = None
        self._recording_id: object = None
        self._reset_acquisition(None)
        try:
            self._sock: socket.socket | None = socket.create_connection(
                (self.host, self.port), timeout=timeout_s
            )
        except OSError as exc:
            raise MeterError(
                f"cannot reach the Otii server at {self.host}:{self.port} ({exc}): start the "
                "Otii application (or otii_server) and enable its TCP server on that port"
            ) from exc
        try:
            self.server = self._greeting()
            self._log_in(username, password)
            self._reserve_licence()
            self.device = self._find_device(device)
        except BaseException:
            self.close()
            raise

    # -- Meter protocol -------------------------------------------------------------------

    def identify(self) -> MeterIdentity:
        version = self._request("arc_get_version", self._dev())
        model = (f"Otii {self.device.get('type', 'Arc')} (hw {version.get('hw_version', '?')}, "
                 f"Otii {self.server.get('otii_version', '?')})")
        return MeterIdentity(
            "otii", model, str(self.device.get("name") or self.device.get("device_id")),
            str(version.get("fw_version", "?")), self.measured_as, self.warnings,
        )

    def configure(self, *, voltage_v: float, sample_rate_hz: float) -> None:
        """Main output at ``voltage_v`` (the DUT's supply), the digital I/O level to match, main
        current at ``sample_rate_hz``, main current and the timestamp input enabled, main on."""
        if sample_rate_hz <= 0 or sample_rate_hz != int(sample_rate_hz):
            raise MeterError(f"the Otii samples at whole rates in Hz, not {sample_rate_hz!r}")
        rate = int(sample_rate_hz)
        self._request("arc_set_main_voltage", self._dev(value=float(voltage_v)))
        level = min(max(float(voltage_v), EXP_VOLTAGE_RANGE_V[0]), EXP_VOLTAGE_RANGE_V[1])
        self._request("arc_set_exp_voltage", self._dev(value=level))
        self._request("arc_enable_exp_port", self._dev(enable=True))
        current = self._request("arc_get_channel_samplerate", self._dev(channel=MAIN_CURRENT))
        if current.get("value") != rate:
            try:
                self._request(
                    "arc_set_channel_samplerate", self._dev(channel=MAIN_CURRENT, value=rate)
                )
            except MeterError as exc:
                raise MeterError(
                    f"the Otii cannot record main current at {rate} Hz ({exc}): pick a rate the "
                    "device offers (the Arc records main current at 4000 Hz)"
                ) from exc
        for channel in (MAIN_CURRENT, self.pin_channel):
            self._request("arc_enable_channel", self._dev(channel=channel, enable=True))
        self._request("arc_set_main", self._dev(enable=True))
        self.voltage_v = float(voltage_v)
        self.sample_rate_hz = float(rate)

    def start(self, folder: Path | None = None) -> None:
        """Start a recording in the active project (one is created if none is open); with a
        folder, ``otii-raw.jsonl`` and ``otii-samples.f64`` are written there as data arrive."""
        self._raise_if_failed()
        self._close_files()
        self._reset_acquisition(folder / "otii-samples.f64" if folder else None)
        self._raw = RawLog(folder / "otii-raw.jsonl" if folder else None)
        project = self._request("otii_get_active_project").get("project_id", -1)
        if project == -1:
            project = self._request("otii_create_project").get("project_id", -1)
        self._project_id = project
        self._request("project_start_recording", {"project_id": project})
        self._recording = True
        last = self._request("project_get_last_recording", {"project_id": project})
        if last.get("recording_id", -1) == -1:
            raise MeterError("the Otii server started recording but lists no recording: check "
                             "the Otii application's project, then measure again")
        self._recording_id = last["recording_id"]
        info = self._request("recording_get_channel_info", self._rec(MAIN_CURRENT))
        rate = info.get("sample_rate")
        if rate is not None and float(rate) != self.sample_rate_hz:
            raise MeterError(
                f"the Otii records main current at {rate} Hz, not the {self.sample_rate_hz:g} Hz "
                "configured: configure the meter before starting"
            )
        self._from_s = float(info.get("from", 0.0))
        self._last_progress_at = time.monotonic()

    def events(self) -> list[Event]:
        self._poll_quietly()
        return list(self._events)

    def wait_for_events(self, count: int, timeout_s: float) -> list[Event]:
        """Poll the recording until ``count`` timestamp edges were seen or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._raise_if_failed()
            if self._recording:
                self._poll()
            if len(self._events) >= count or time.monotonic() >= deadline:
                return list(self._events)
            time.sleep(self.poll_interval_s)

    def sample_count(self) -> int:
        self._poll_quietly()
        return self._count

    def stop(self) -> Trace:
        """Stop the recording, fetch the rest and return the trace. A broken connection or
        recording raises :class:`MeterError` after the files are closed; the data stay."""
        try:
            if self._recording and self._sock is not None:
                try:
                    self._request("project_stop_recording", {"project_id": self._project_id})
                    if self._health.failure is None:
                        self._drain()
                except MeterError as exc:
                    self._health.fail(str(exc))
        finally:
            self._recording = False
            self._close_files()
        self._raise_if_failed()
        return self.trace()

    def trace(self) -> Trace:
        """What has been measured so far (also after a failure, for the session folder)."""
        samples = self._samples.array()
        return Trace(
            sample_rate_hz=self.sample_rate_hz, current_a=samples,
            voltage_v=np.broadcast_to(np.float64(self.voltage_v), (len(samples),)),
            events=list(self._events), drops=list(self._drops),
        )

    def close(self) -> None:
        """Stop a running recording, return the licence and log out (if this driver took
        them), close the connection. The main output is left as it is."""
        steps = []
        if self._recording:
            steps.append(("project_stop_recording", {"project_id": self._project_id}))
        if self._reserved_licence is not None:
            steps.append(("otii_return_license", {"license_id": self._reserved_licence}))
        if self._logged_in_by_us:
            steps.append(("otii_logout", {}))
        for cmd, data in steps:
            if self._sock is None:
                break
            with contextlib.suppress(MeterError):
                self._request(cmd, data)
        self._recording = False
        self._reserved_licence = None
        self._logged_in_by_us = False
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._close_files()

    # -- requests -------------------------------------------------------------------------

    def request(
        self, cmd: str, data: dict | None = None, *, timeout_s: float | None = None
    ) -> dict:
        """Send any Otii TCP command and return its reply's ``data``, for what the driver does
        not wrap (statistics, ranges). An ``error`` reply raises :class:`MeterError`."""
        return self._request(cmd, data, timeout_s=timeout_s)

    def _dev(self, **data: object) -> dict:
        return {"device_id": self.device["device_id"], **data}

    def _rec(self, channel: str, **data: object) -> dict:
        return self._dev(recording_id=self._recording_id, channel=channel, **data)

    def _request(
        self, cmd: str, data: dict | None = None, *, timeout_s: float | None = None,
        quiet: bool = False, shown: str | None = None,
    ) -> dict:
        """One request and its reply. ``quiet`` keeps it out of the transcript (data polls);
        ``shown`` is what the transcript gets instead of the request (a login's password)."""
        if self._sock is None:
            raise MeterError(self._health.failure or "the connection to the Otii server is closed")
        self._trans_id += 1
        trans_id = str(self._trans_id)
        message = {"type": "request", "cmd": cmd, "data": data or {}, "trans_id": trans_id}
        line = json.dumps(message, separators=(",", ":"))
        if not quiet:
            self._on_command(">", shown or line)
        self._raw.write(line.encode("utf-8") + b"\r\n")
        try:
            self._sock.sendall(line.encode("utf-8") + b"\r\n")
        except OSError as exc:
            raise self._broken(self._lost(exc)) from exc
        reply, text = self._receive(trans_id, cmd, timeout_s or self.timeout_s)
        if reply.get("type") == "error":
            self._on_command("<", _shorten(text))
            code = str(reply.get("errorcode", "?"))
            data = reply.get("data") if isinstance(reply.get("data"), dict) else {}
            # The server names what it refused: a message, or the key / device_id it missed.
            detail = data.get("message") or (
                f"key {data['key']!r}" if "key" in data else
                f"device_id {data['device_id']!r}" if "device_id" in data else None
            )
            raise MeterError(
                f"the Otii server refused {cmd}: {code}" + (f" ({detail})" if detail else "")
                + f". Fix: {FIXES.get(code, 'see the Otii TCP server documentation')}"
            )
        if not quiet:
            self._on_command("<", _shorten(text))
        if reply.get("type") != "response":
            raise self._broken(f"the Otii server answered {cmd} with a {reply.get('type')!r} "
                               "message: is this port the Otii TCP server?")
        result = reply.get("data")
        return result if isinstance(result, dict) else {}

    def _receive(self, trans_id: str | None, cmd: str, timeout_s: float) -> tuple[dict, str]:
        """The next message for ``trans_id`` (``None``: the next message at all), skipping
        ``progress`` and ``information`` messages."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self._read_line(deadline, cmd)
            try:
                message = json.loads(text)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                raise self._broken(
                    f"malformed JSON from the Otii server in reply to {cmd} after {self._count} "
                    f"samples: {text[:60]!r}. The connection is out of step (another program on "
                    f"port {self.port}?); the samples received so far are kept, measure again"
                )
            if trans_id is None:
                return message, text
            if message.get("type") in ("progress", "information"):
                continue
            if message.get("trans_id") != trans_id:
                raise self._broken(
                    f"the Otii server answered trans_id {message.get('trans_id')!r} to request "
                    f"{trans_id} ({cmd}): its replies are out of step (a server fault or a proxy "
                    "mixing connections); reconnect and measure again"
                )
            return message, text

    def _read_line(self, deadline: float, cmd: str) -> str:
        searched = 0
        while (end := self._pending.find(b"\n", searched)) < 0:
            searched = len(self._pending)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._broken(
                    f"the Otii server did not answer {cmd} within {self.timeout_s:g} s: check the "
                    "Otii application is running and not showing a dialog"
                )
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as exc:
                raise self._broken(self._lost(exc)) from exc
            if not chunk:
                raise self._broken(self._lost("connection closed"))
            self._pending += chunk
        line = bytes(self._pending[: end + 1])
        del self._pending[: end + 1]
        self._raw.write(line)
        return line.decode("utf-8", "replace").strip()

    def _lost(self, why: object) -> str:
        return (
            f"lost the Otii server at {self.host}:{self.port} after {self._count} samples ({why}): "
            "was the Otii application closed, or the network cable pulled? The samples received "
            "so far are kept; restart the Otii server and measure again"
        )

    def _broken(self, reason: str) -> MeterError:
        """The connection can no longer be trusted: close it and remember why."""
        self._health.fail(reason)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return MeterError(reason)

    # -- login, licence, device -----------------------------------------------------------

    def _greeting(self) -> dict:
        message, text = self._receive(None, "the connection greeting", self.timeout_s)
        self._on_command("<", _shorten(text))
        if message.get("type") == "error":
            raise self._broken(f"the Otii server refused the connection: "
                               f"{message.get('errorcode', '?')}; close other clients and retry")
        info = message.get("data") if message.get("type") == "information" else None
        if not isinstance(info, dict) or "protocol_version" not in info:
            raise self._broken(f"{self.host}:{self.port} did not greet as an Otii server "
                               f"({text[:60]!r}): point the driver at the Otii TCP server")
        version = str(info["protocol_version"])
        if version.split(".")[0] != PROTOCOL_MAJOR:
            # The official client checks no version at all; a newer server most likely still
            # answers these commands, and any it does not is an error naming the command.
            warning = (
                f"the Otii server speaks protocol {version}; this driver was checked against "
                f"{PROTOCOL_MAJOR}.x (Otii 3). A refused or changed command would show as an "
                "error; report it with the session's transcript"
            )
            self.warnings += (warning,)
            self._on_command("#", warning)
        return info

    def _log_in(self, username: str | None, password: str | None) -> None:
        if self._request("otii_is_logged_in").get("logged_in"):
            return
        username = username or os.environ.get("OTII_USERNAME")
        password = password or os.environ.get("OTII_PASSWORD")
        if not username or not password:
            raise MeterError(
                "the Otii server is not logged in and no credentials were given: set "
                "OTII_USERNAME and OTII_PASSWORD (your Qoitech account), pass username= and "
                "password=, or log in in the Otii application"
            )
        shown = json.dumps({"cmd": "otii_login", "username": username, "password": "***"})
        try:
            self._request("otii_login", {"username": username, "password": password},
                          shown=shown)
        except MeterError as exc:
            raise MeterError(f"login to the Otii server as {username!r} failed: {exc}. Check "
                             "OTII_USERNAME and OTII_PASSWORD") from exc
        self._logged_in_by_us = True

    def _reserve_licence(self) -> None:
        """Reserve an Automation licence unless one is already reserved for this user."""
        licences = self._request("otii_get_licenses").get("licenses") or []
        usable = [
            lic for lic in licences
            if lic.get("type") in AUTOMATION_TYPES
            or any(addon.get("id") == "Automation" for addon in lic.get("addons") or [])
        ]
        if any(lic.get("reserved_to") and lic.get("available", True) for lic in usable):
            return
        free = [lic for lic in usable if not lic.get("reserved_to") and lic.get("available", True)]
        if not free:
            held = ", ".join(str(lic.get("type")) for lic in licences) or "none"
            raise MeterError(
                f"no free Otii Automation licence for this user (licences: {held}): the Otii TCP "
                "server needs one. Get an Automation licence from Qoitech, or return the one "
                "another computer has reserved, then measure again"
            )
        self._request("otii_reserve_license", {"license_id": free[0]["id"]})
        self._reserved_licence = free[0]["id"]

    def _find_device(self, wanted: str | None) -> dict:
        devices = self._request(
            "otii_get_devices", {"timeout": DEVICE_WAIT_S}, timeout_s=DEVICE_WAIT_S + self.timeout_s
        ).get("devices") or []
        arcs = [d for d in devices if d.get("type") in DEVICE_TYPES]
        names = ", ".join(f"{d.get('name')} ({d.get('device_id')})" for d in arcs) or "none"
        if wanted is not None:
            for d in arcs:
                if wanted in (d.get("name"), d.get("device_id")):
                    return d
            raise MeterError(f"no Otii Arc/Ace named {wanted!r}; the server lists: {names}. "
                             "Pass device= one of those names")
        if not arcs:
            raise MeterError("the Otii server lists no Arc or Ace: connect it by USB and check "
                             "that the Otii application shows it")
        if len(arcs) > 1:
            raise MeterError(f"the Otii server lists {len(arcs)} devices ({names}): pass device= "
                             "the name of the one that supplies the DUT")
        return arcs[0]

    # -- the recording --------------------------------------------------------------------

    def _reset_acquisition(self, samples_path: Path | None) -> None:
        self._samples = SampleStore(samples_path)
        self._events: list[Event] = []
        self._drops: list[Drop] = []
        self._count = 0  # main-current values received (the trace also holds NaN for lost ones)
        self._mc_index = 0  # next main-current index to ask the server for
        self._pin_index = 0  # next digital-channel entry to ask for
        self._pin_level: bool | None = None
        self._from_s = 0.0
        self._recording = False
        self._last_progress_at = time.monotonic()

    def _close_files(self) -> None:
        self._samples.close()
        self._raw.close()

    def _raise_if_failed(self) -> None:
        self._health.check(False, self._count)  # stalls are found by _poll, which fetches

    def _poll_quietly(self) -> None:
        """Poll if recording; a failure is kept for the next wait or stop to raise."""
        if self._recording and self._health.failure is None:
            with contextlib.suppress(MeterError):
                self._poll()

    def _poll(self) -> None:
        """Fetch what the recording gained; no new samples for too long is a stall."""
        before = self._mc_index
        try:
            self._fetch()
        except MeterError as exc:
            self._health.fail(str(exc))
            raise
        now = time.monotonic()
        if self._mc_index > before:
            self._last_progress_at = now
        elif now - self._last_progress_at > self._health.stall_timeout_s:
            self._health.fail(
                f"the Otii recording stopped advancing: no new main-current samples for "
                f"{now - self._last_progress_at:.1f} s after {self._count} samples. Check the "
                "Arc's USB cable and that the recording still runs in the Otii application; the "
                "samples received so far are kept"
            )
            raise MeterError(self._health.failure)

    def _count_of(self, channel: str) -> int:
        count = self._request("recording_get_channel_data_count", self._rec(channel), quiet=True)
        value = count.get("count")
        if not isinstance(value, int):
            raise self._broken(f"the Otii server gave no count for channel {channel}: {count!r}")
        return value

    def _fetch(self) -> None:
        pins = self._count_of(self.pin_channel)
        if pins > self._pin_index:
            data = self._request(
                "recording_get_channel_data",
                self._rec(self.pin_channel, index=self._pin_index, count=pins - self._pin_index),
                quiet=True,
            )
            self._take_pin(data.get("values"))
        self._fetch_current(self._count_of(MAIN_CURRENT))

    def _take_pin(self, values: object) -> None:
        """Digital entries are levels with times; a change to low is a timestamp edge. The
        first entry, at the recording's start, is the level then (the pin idles high)."""
        try:
            entries = [(float(e["timestamp"]), bool(e["value"])) for e in values]
        except (TypeError, KeyError, ValueError) as exc:
            raise self._broken(f"unreadable {self.pin_channel} data from the Otii server "
                               f"({exc!r}): update the Otii application") from exc
        for t, level in entries:
            if self._pin_level is None and t <= self._from_s + 1e-9:
                self._pin_level = level
                continue
            if level == self._pin_level:
                continue
            self._pin_level = level
            if not level:
                index = max(0, math.floor((t - self._from_s) * self.sample_rate_hz + 1e-6))
                self._events.append(Event(index=index, time_s=t, polarity="fall"))
        self._pin_index += len(entries)

    def _fetch_current(self, available: int) -> None:
        while self._mc_index < available:
            count = min(CHUNK, available - self._mc_index)
            data = self._request(
                "recording_get_channel_data",
                self._rec(MAIN_CURRENT, index=self._mc_index, count=count), quiet=True,
            )
            try:
                values = np.asarray(data["values"], dtype=np.float64)
                first_s, interval_s = float(data["timestamp"]), float(data["interval"])
            except (KeyError, TypeError, ValueError) as exc:
                raise self._broken(f"unreadable main-current data from the Otii server "
                                   f"({exc!r}): update the Otii application") from exc
            if len(values) == 0:
                return  # counted but not yet served; the next poll asks again
            if abs(interval_s * self.sample_rate_hz - 1) > 1e-6:
                raise self._broken(
                    f"the Otii sent main current every {interval_s:g} s, but the recording runs "
                    f"at {self.sample_rate_hz:g} Hz: configure the meter before starting"
                )
            self._place(first_s, len(values))
            self._samples.extend_array(values)
            self._mc_index += len(values)
            self._count += len(values)

    def _place(self, first_s: float, count: int) -> None:
        """A reply starting later than the samples so far means the Otii lost some there:
        pad them with NaN and record the drop, so later samples keep their time. A timestamp
        up to one sample late is the same sample (a server may stamp a period's middle)."""
        offset = (first_s - self._from_s) * self.sample_rate_hz - len(self._samples)
        if offset < -0.5:
            raise self._broken(
                f"the Otii sent {count} main-current samples for {first_s:.6f} s, which overlap "
                f"the {len(self._samples)} already received: measure again"
            )
        missing = math.floor(offset + 1e-6)
        if missing > 0:
            self._samples.extend_array(np.full(missing, np.nan))
            self._drops.append(Drop(index=len(self._samples), missing=missing))

    def _drain(self) -> None:
        """After the recording stopped: fetch the rest; a total short of its duration x rate
        is a drop at the end."""
        info = self._request("recording_get_channel_info", self._rec(MAIN_CURRENT))
        self._fetch()
        duration_s = float(info.get("to", 0.0)) - float(info.get("from", self._from_s))
        expected = math.floor(duration_s * self.sample_rate_hz + 1e-6)
        missing = expected - len(self._samples)
        if missing > 1:  # one sample of slack: where the recording's end falls is rounded
            self._samples.extend_array(np.full(missing, np.nan))
            self._drops.append(Drop(index=len(self._samples), missing=missing))
