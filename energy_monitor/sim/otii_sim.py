"""A simulated Otii 3 TCP server with one Otii Arc, on loopback TCP, speaking the real JSON.

The Otii application (or its headless server) is what a script talks to, never the Arc itself:
UTF-8 JSON objects, one per ``\\r\\n``-terminated line, a greeting on connect, requests matched
to replies by ``trans_id``. This simulator is such a server, one thread per client, with the
login and licence gate (an ``Automation`` licence must be reserved before the instrument answers),
the error replies of the real server, and one simulated Arc whose main output feeds a
:class:`~energy_monitor.sim.load.LoadTimeline`.

While recording, the main-current channel (``mc``) holds the *exact* mean current of each sample
period (timeline charge / period, in amperes as the Otii gives them) for every whole period that
virtual time has passed, and the digital input (``i1``, GPI1) holds the DUT timestamp pin's
transitions with their exact times, so a pulse shorter than a sample is still seen. Faults
(:class:`~energy_monitor.sim.faults.SimFaults`, counted in main-current samples): ``unplug_after``
closes the client's socket once that many samples were served, ``stall_after`` stops the data
advancing, ``drop_at``/``drop_count`` make the channel skip samples (the reply's timestamp jumps),
``garble_at`` sends a malformed JSON line instead of the data, ``lose_event`` drops one pulse.

Reference: ``shared/reference/instruments.md`` §4. Choices the sources leave open are listed in
``docs/monitors/otii.md``.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from dataclasses import dataclass

import numpy as np

from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.load import LoadTimeline

GREETING = {
    "type": "information",
    "info": "connected",
    "data": {"otii_version": "3.5.5", "protocol_version": "0.1", "server": "otii-server"},
}
INVALID, MISSING, NO_DEVICE = "Invalid command", "Missing key in request", "Device not connected"
NO_LICENSE, NOT_LOGGED_IN, FAILURE = "No license", "Not logged in", "Command failure"
UNPARSABLE = "Not able to parse request"
# What an error reply's ``data`` holds per errorcode: the fields otii-tcp-client reads to build
# its exception (otii_tcp_client/otii_exception.py, Otii_Exception.__init__). A reply without
# them makes the official client fail with a KeyError instead of its Otii_Exception.
ERROR_FIELDS = {
    MISSING: ("key",),
    NO_DEVICE: ("device_id",),
    FAILURE: ("message",),
    UNPARSABLE: ("parse_error", "data"),
}
MAX_CURRENT_RANGE_A = (0.001, 5.0)  # arc_set_max_current, from the client's docstring
RANGES = ("low", "high")  # arc_set_range: low = auto-range, high = forced high range (client)
MC_RATES_HZ = (1000, 2000, 4000)  # what this simulated Arc offers for mc (our choice)
MAIN_VOLTAGE_RANGE_V = (0.5, 4.75)  # the Arc's main output
EXP_VOLTAGE_RANGE_V = (1.2, 5.0)  # expansion port (digital I/O level)
CHANNELS = ("mc", "mp", "mv", "ac", "ap", "av", "sp", "sn", "vb", "vj", "tp", "rx", "i1", "i2")
RECORDED = ("mc", "i1")  # the channels this simulator records

# cmd -> (keys the request's data must hold, access: open | user | licence)
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "otii_is_logged_in": ((), "open"),
    "otii_login": (("username", "password"), "open"),
    "otii_logout": ((), "user"),
    "otii_get_licenses": ((), "user"),
    "otii_reserve_license": (("license_id",), "user"),
    "otii_return_license": (("license_id",), "user"),
    "otii_get_devices": ((), "licence"),
    "otii_get_active_project": ((), "licence"),
    "otii_create_project": ((), "licence"),
    "arc_get_version": (("device_id",), "licence"),
    "arc_enable_channel": (("device_id", "channel", "enable"), "licence"),
    "arc_get_channel_samplerate": (("device_id", "channel"), "licence"),
    "arc_set_channel_samplerate": (("device_id", "channel", "value"), "licence"),
    "arc_set_main_voltage": (("device_id", "value"), "licence"),
    "arc_set_exp_voltage": (("device_id", "value"), "licence"),
    "arc_enable_exp_port": (("device_id", "enable"), "licence"),
    "arc_set_main": (("device_id", "enable"), "licence"),
    "arc_get_main_voltage": (("device_id",), "licence"),
    "arc_set_max_current": (("device_id", "value"), "licence"),
    "arc_set_range": (("device_id", "range"), "licence"),
    "project_start_recording": (("project_id",), "licence"),
    "project_stop_recording": (("project_id",), "licence"),
    "project_get_last_recording": (("project_id",), "licence"),
    "recording_get_channel_info": (("recording_id", "device_id", "channel"), "licence"),
    "recording_get_channel_data_count": (("recording_id", "device_id", "channel"), "licence"),
    "recording_get_channel_data": (
        ("recording_id", "device_id", "channel", "index", "count"), "licence"
    ),
    "recording_get_channel_statistics": (
        ("recording_id", "device_id", "channel", "from", "to"), "licence"
    ),
}
SLOW_COMMANDS = ("otii_get_devices", "project_stop_recording")  # answered after a progress line


class _Refusal(Exception):
    """An error reply: its errorcode, a message, and the fields the code carries."""

    def __init__(self, errorcode: str, message: str, **fields: object) -> None:
        super().__init__(message)
        self.errorcode = errorcode
        self.fields = fields

    def data(self) -> dict:
        data = {"message": str(self), **self.fields}
        missing = [k for k in ERROR_FIELDS.get(self.errorcode, ()) if k not in data]
        if missing:  # a simulator bug, never the client's
            raise RuntimeError(f"{self.errorcode} error replies must carry {missing}")
        return data


class _Hangup(Exception):
    """Close the client's socket without a reply."""


@dataclass
class _Client:
    conn: socket.socket
    hangup: bool = False  # close the socket after this reply (a pulled cable)
    garbled: str | None = None  # send this line instead of the reply


@dataclass
class _Recording:
    recording_id: int
    start_s: float  # virtual time
    rate_hz: int
    voltage_v: float
    powered: bool
    channels: tuple[str, ...]
    stop_s: float | None = None

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz


class OtiiSimulator:
    """An Otii server on ``127.0.0.1``; :meth:`start` returns ``tcp://127.0.0.1:PORT``."""

    device_id = "arc-sim-1"
    device_name = "Arc-SIM-0001"

    def __init__(
        self, timeline: LoadTimeline, faults: SimFaults | None = None, *,
        username: str = "sim-user", password: str = "sim-pass", licensed: bool = True,
        protocol_version: str = "0.1",
    ) -> None:
        """``protocol_version`` is what the greeting announces (a future server's, for tests)."""
        self.timeline = timeline
        self.greeting = {**GREETING, "data": {**GREETING["data"],
                                              "protocol_version": protocol_version}}
        self.faults = faults or SimFaults()
        self.username, self.password = username, password
        self.logged_in = False
        self.licences = [
            {"id": 1001, "type": "Pro", "available": True, "reserved_to": "", "hostname": "",
             "addons": []},
        ]
        if licensed:
            self.licences.append(
                {"id": 1002, "type": "Automation", "available": True, "reserved_to": "",
                 "hostname": "", "addons": []}
            )
        self.main_voltage_v = 3.3
        self.main_on = False
        self.max_current_a = 5.0
        self.range = "low"
        self.exp_voltage_v = 3.3
        self.exp_enabled = False
        self.mc_rate_hz = 4000
        self.enabled: set[str] = set()
        self.project_id = -1
        self.recording: _Recording | None = None
        self._next_recording_id = 1
        self._garbled_once = False
        self._lock = threading.Lock()  # server state, shared by the client threads
        self._closed = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    # -- plumbing -------------------------------------------------------------------------

    def start(self) -> str:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        accept = threading.Thread(target=self._accept_loop, name="otii-sim-accept", daemon=True)
        accept.start()
        self._threads.append(accept)
        return f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        self._closed.set()
        for t in list(self._threads):
            t.join(timeout=2)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> OtiiSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), name="otii-sim", daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        client = _Client(conn)
        pending = b""
        with conn:
            try:
                self._send(client, self.greeting)
                while not self._closed.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        return
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        if line.strip():
                            self._handle(client, line.strip())
                        if client.hangup:
                            return
            except OSError:
                return

    def _send(self, client: _Client, message: dict) -> None:
        text = json.dumps(message, separators=(",", ":"))
        client.conn.sendall(text.encode("utf-8") + b"\r\n")

    # -- requests -------------------------------------------------------------------------

    def _handle(self, client: _Client, line: bytes) -> None:
        try:
            request = json.loads(line.decode("utf-8"))
            cmd, trans_id = str(request.get("cmd", "")), request.get("trans_id")
            data = request.get("data") or {}
        except (ValueError, AttributeError) as exc:
            refusal = _Refusal(UNPARSABLE, "the request is not a JSON object", parse_error=str(exc),
                               data=line.decode("utf-8", "replace"))
            self._send(client, {"type": "error", "cmd": "", "errorcode": UNPARSABLE,
                                "data": refusal.data()})
            return
        head = {"cmd": cmd, "trans_id": trans_id}
        try:
            reply = self._dispatch(cmd, data, client)
        except _Hangup:
            client.hangup = True
            return
        except _Refusal as refusal:
            self._send(client, {"type": "error", **head, "errorcode": refusal.errorcode,
                                "data": refusal.data()})
            return
        if client.garbled is not None:
            client.conn.sendall(client.garbled.encode("utf-8") + b"\r\n")
            client.garbled = None
            return
        if cmd in SLOW_COMMANDS and self.faults.quirks:
            self._send(client, {"type": "progress", **head, "data": {"progress": 100}})
        self._send(client, {"type": "response", **head, "data": reply})

    def _dispatch(self, cmd: str, data: dict, client: _Client) -> dict:
        if cmd not in COMMANDS:
            raise _Refusal(INVALID, f"unknown command {cmd!r}")
        keys, access = COMMANDS[cmd]
        missing = [k for k in keys if k not in data]
        if missing:
            raise _Refusal(MISSING, f"missing key {missing[0]!r}", key=missing[0])
        with self._lock:
            if access != "open" and not self.logged_in:
                raise _Refusal(NOT_LOGGED_IN, "log in with otii_login first")
            if access == "licence" and not any(
                lic["reserved_to"] and lic["type"] == "Automation" for lic in self.licences
            ):
                raise _Refusal(NO_LICENSE, "reserve an Automation license first")
            if "device_id" in keys and data["device_id"] != self.device_id:
                raise _Refusal(NO_DEVICE, f"no device {data['device_id']!r}",
                               device_id=str(data["device_id"]))
            return getattr(self, f"_cmd_{cmd}")(data, client) or {}

    # -- login and licences ---------------------------------------------------------------

    def _cmd_otii_is_logged_in(self, data: dict, client: _Client) -> dict:
        return {"logged_in": self.logged_in}

    def _cmd_otii_login(self, data: dict, client: _Client) -> None:
        if (data["username"], data["password"]) != (self.username, self.password):
            raise _Refusal(FAILURE, "login failed: wrong username or password")
        self.logged_in = True

    def _cmd_otii_logout(self, data: dict, client: _Client) -> None:
        for lic in self.licences:
            lic["reserved_to"] = ""
        self.logged_in = False

    def _cmd_otii_get_licenses(self, data: dict, client: _Client) -> dict:
        return {"licenses": [dict(lic) for lic in self.licences]}

    def _licence(self, licence_id: object) -> dict:
        for lic in self.licences:
            if lic["id"] == licence_id:
                return lic
        raise _Refusal(FAILURE, f"no license with id {licence_id!r}")

    def _cmd_otii_reserve_license(self, data: dict, client: _Client) -> None:
        lic = self._licence(data["license_id"])
        if lic["reserved_to"]:
            raise _Refusal(FAILURE, f"license {lic['id']} is already reserved")
        lic["reserved_to"] = self.username

    def _cmd_otii_return_license(self, data: dict, client: _Client) -> None:
        self._licence(data["license_id"])["reserved_to"] = ""

    # -- the Arc --------------------------------------------------------------------------

    def _cmd_otii_get_devices(self, data: dict, client: _Client) -> dict:
        return {"devices": [{"device_id": self.device_id, "name": self.device_name,
                             "type": "Arc"}]}

    def _cmd_arc_get_version(self, data: dict, client: _Client) -> dict:
        return {"hw_version": "SIM-1.0", "fw_version": "1.0.0-tinypowersim"}

    @staticmethod
    def _channel(data: dict) -> str:
        if data["channel"] not in CHANNELS:
            raise _Refusal(FAILURE, f"unknown channel {data['channel']!r}")
        return data["channel"]

    @staticmethod
    def _number(data: dict, low: float, high: float, what: str) -> float:
        value = data["value"]
        if not isinstance(value, int | float) or not low <= value <= high:
            raise _Refusal(FAILURE, f"{what} {value!r} out of range [{low:g}, {high:g}]")
        return float(value)

    def _cmd_arc_enable_channel(self, data: dict, client: _Client) -> None:
        channel = self._channel(data)
        (self.enabled.add if data["enable"] else self.enabled.discard)(channel)

    def _cmd_arc_get_channel_samplerate(self, data: dict, client: _Client) -> dict:
        return {"value": self.mc_rate_hz if self._channel(data) == "mc" else 1000}

    def _cmd_arc_set_channel_samplerate(self, data: dict, client: _Client) -> None:
        if self._channel(data) != "mc" or data["value"] not in MC_RATES_HZ:
            raise _Refusal(
                FAILURE, f"sample rate {data['value']!r} not supported on {data['channel']}: "
                f"mc offers {', '.join(map(str, MC_RATES_HZ))}"
            )
        self.mc_rate_hz = int(data["value"])

    def _cmd_arc_set_main_voltage(self, data: dict, client: _Client) -> None:
        self.main_voltage_v = self._number(data, *MAIN_VOLTAGE_RANGE_V, "main voltage")

    def _cmd_arc_set_exp_voltage(self, data: dict, client: _Client) -> None:
        self.exp_voltage_v = self._number(data, *EXP_VOLTAGE_RANGE_V, "expansion voltage")

    def _cmd_arc_enable_exp_port(self, data: dict, client: _Client) -> None:
        self.exp_enabled = bool(data["enable"])

    def _cmd_arc_set_main(self, data: dict, client: _Client) -> None:
        self.main_on = bool(data["enable"])
        self.timeline.set_powered(self.main_on)  # the Arc's main output feeds the DUT

    def _cmd_arc_get_main_voltage(self, data: dict, client: _Client) -> dict:
        return {"value": self.main_voltage_v}

    def _cmd_arc_set_max_current(self, data: dict, client: _Client) -> None:
        """Kept, not enforced: the simulated Arc never trips (the DUT's load never comes near)."""
        self.max_current_a = self._number(data, *MAX_CURRENT_RANGE_A, "max current")

    def _cmd_arc_set_range(self, data: dict, client: _Client) -> None:
        """Kept; the simulated Arc's currents are exact in either range."""
        if data["range"] not in RANGES:
            raise _Refusal(FAILURE, f"range {data['range']!r} is not one of {', '.join(RANGES)}")
        self.range = data["range"]

    # -- projects and recordings ----------------------------------------------------------

    def _cmd_otii_get_active_project(self, data: dict, client: _Client) -> dict:
        return {"project_id": self.project_id}

    def _cmd_otii_create_project(self, data: dict, client: _Client) -> dict:
        self.project_id = 1
        return {"project_id": self.project_id}

    def _project(self, data: dict) -> None:
        if self.project_id == -1 or data["project_id"] != self.project_id:
            raise _Refusal(FAILURE, f"no project {data['project_id']!r}")

    def _cmd_project_start_recording(self, data: dict, client: _Client) -> None:
        self._project(data)
        if self.recording is not None and self.recording.stop_s is None:
            raise _Refusal(FAILURE, "a recording is already running")
        with self.timeline.lock:
            now = self.timeline.clock.now()
        self.recording = _Recording(
            self._next_recording_id, now, self.mc_rate_hz, self.main_voltage_v, self.main_on,
            tuple(c for c in RECORDED if c in self.enabled),
        )
        self._next_recording_id += 1

    def _cmd_project_stop_recording(self, data: dict, client: _Client) -> None:
        self._project(data)
        if self.recording is not None and self.recording.stop_s is None:
            with self.timeline.lock:
                self.recording.stop_s = self.timeline.clock.now()

    def _cmd_project_get_last_recording(self, data: dict, client: _Client) -> dict:
        self._project(data)
        if self.recording is None:
            return {"recording_id": -1}
        rid = self.recording.recording_id
        return {"recording_id": rid, "name": f"Recording {rid}"}

    def _recorded(self, data: dict) -> tuple[_Recording, str]:
        rec = self.recording
        if rec is None or data["recording_id"] != rec.recording_id:
            raise _Refusal(FAILURE, f"no recording {data['recording_id']!r}")
        channel = self._channel(data)
        if channel not in rec.channels:
            raise _Refusal(FAILURE, f"channel {channel} was not enabled for this recording")
        return rec, channel

    def _periods(self, rec: _Recording) -> int:
        """Whole sample periods recorded so far (served or lost); call under the lock."""
        end = rec.stop_s if rec.stop_s is not None else self.timeline.clock.now()
        due = max(0, math.floor((end - rec.start_s) * rec.rate_hz + 1e-6))
        stall = self.faults.stall_after
        return due if stall is None else min(due, stall)

    def _lost(self, periods: int) -> int:
        f = self.faults
        if f.drop_at is None:
            return 0
        return min(max(periods - f.drop_at, 0), f.drop_count)

    def _period_of(self, index: int) -> int:
        """The sample period the channel's ``index``-th value measured (skips lost ones)."""
        f = self.faults
        return index if f.drop_at is None or index < f.drop_at else index + f.drop_count

    def _pin_entries(self, rec: _Recording, periods: int) -> list[dict]:
        """GPI1 as the Otii records it: the level at the start, then each change."""
        before = self.timeline.edges_between(0.0, rec.start_s)
        level = before[-1].polarity == "rise" if before else True  # the pin idles high
        entries = [{"timestamp": 0.0, "value": level}]
        falls, skip_rise = 0, False
        for edge in self.timeline.edges_between(rec.start_s, rec.start_s + periods * rec.period_s):
            if edge.polarity == "fall":
                lost = falls == self.faults.lose_event
                falls += 1
                if lost:
                    skip_rise = True
                    continue
            elif skip_rise:
                skip_rise = False
                continue
            value = edge.polarity == "rise"
            if value != level:
                entries.append({"timestamp": edge.time_s - rec.start_s, "value": value})
                level = value
        return entries

    def _cmd_recording_get_channel_info(self, data: dict, client: _Client) -> dict:
        rec, _ = self._recorded(data)
        with self.timeline.lock:
            periods = self._periods(rec)
        return {"offset": 0.0, "from": 0.0, "to": periods * rec.period_s,
                "sample_rate": rec.rate_hz}

    def _cmd_recording_get_channel_data_count(self, data: dict, client: _Client) -> dict:
        rec, channel = self._recorded(data)
        with self.timeline.lock:
            periods = self._periods(rec)
            if channel == "i1":
                return {"count": len(self._pin_entries(rec, periods))}
        return {"count": periods - self._lost(periods)}

    def _cmd_recording_get_channel_data(self, data: dict, client: _Client) -> dict:
        rec, channel = self._recorded(data)
        index, count = data["index"], data["count"]
        if not isinstance(index, int) or not isinstance(count, int) or index < 0 or count < 0:
            raise _Refusal(FAILURE, "index and count must be non-negative integers")
        with self.timeline.lock:
            periods = self._periods(rec)
            if channel == "i1":
                entries = self._pin_entries(rec, periods)
                return {"data_type": "digital", "values": entries[index : index + count]}
            return self._current_data(rec, client, index, count, periods)

    def _current_data(
        self, rec: _Recording, client: _Client, index: int, count: int, periods: int
    ) -> dict:
        """Main-current values ``[index, index + count)`` as far as recorded, faults applied.

        A reply never spans a lost stretch, so its ``timestamp`` and ``interval`` place every
        value; a fault's sample is always at the start of a reply."""
        f = self.faults
        n = max(0, min(count, periods - self._lost(periods) - index))
        garble_at = None if self._garbled_once else f.garble_at
        for boundary in (f.drop_at, garble_at, f.unplug_after):
            if boundary is not None and index < boundary < index + n:
                n = boundary - index
        if f.unplug_after is not None and index >= f.unplug_after:
            raise _Hangup  # the cable was pulled before this request
        if index == garble_at and n > 0:
            self._garbled_once = True
            client.garbled = '{"type":"response","cmd":"recording_get_channel_data","data":{"va'
            return {}
        first = self._period_of(index)
        charges = self.timeline.charge_of_periods(rec.start_s, rec.period_s, first, n)
        currents = charges * rec.rate_hz if rec.powered else np.zeros(n)
        if f.unplug_after is not None and index + n >= f.unplug_after:
            client.hangup = True
        return {"data_type": "analog", "timestamp": first * rec.period_s,
                "interval": rec.period_s, "values": currents.tolist()}

    def _cmd_recording_get_channel_statistics(self, data: dict, client: _Client) -> dict:
        rec, channel = self._recorded(data)
        if channel != "mc":
            raise _Refusal(FAILURE, "statistics are given for analog channels")
        with self.timeline.lock:
            periods = self._periods(rec)
            first = max(0, math.floor(float(data["from"]) * rec.rate_hz + 1e-6))
            last = min(periods, math.floor(float(data["to"]) * rec.rate_hz + 1e-6))
            if last <= first:
                raise _Refusal(FAILURE, "empty interval")
            charges = self.timeline.charge_of_periods(
                rec.start_s, rec.period_s, first, last - first
            )
        currents = charges * rec.rate_hz if rec.powered else np.zeros(last - first)
        charge = float(np.sum(currents)) * rec.period_s
        return {"min": float(currents.min()), "max": float(currents.max()),
                "average": float(currents.mean()), "charge": charge,
                "energy": charge * rec.voltage_v}
