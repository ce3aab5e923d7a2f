"""The director: owns the meters, serves SUT-side clients, writes and scores the session folder.

Like the MLPerf power server (``shared/reference/mlperf-power.md`` §1-§6), the director runs
beside the analyzer and the client runs the workload on the SUT. Each session is a ranging run
(auto ranges) then a testing run (fixed ranges at the ranging maxima, current x 1.1), with the
clock skew checked before, during and after each phase; the director scores the testing run
from an ``spl.txt``-compatible sample log and LoadGen's ``mlperf_log_detail.txt`` with the same
reader and rules (``tinypower.results.power_logs``, ``tinypower.rules.power``) that re-derive
published results.

Protocol (:mod:`tinypower.scale.link`): a handshake line, challenge-response on the shared
secret (which never travels), then one HMAC-sealed JSON object per line with a sequence
number, a reply per request (``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``):
``time`` and ``skew`` (NTP-style exchange, :mod:`tinypower.scale.sync`), ``new``,
``start``/``stop`` per phase, ``put`` (the client's LoadGen logs and record), ``get`` (a file
of the session), ``abort`` and ``done`` (score and close the session). The director binds to
loopback unless told otherwise (beyond it, the secret must be 16 characters or more), limits
connections, pre-auth line size and time, idle time and phase time, refuses session names and
file paths that leave its output folder, and keeps serving other clients whatever one sends.

Session folder: power-dev's layout and fields (``lib/summary.py``), tinypower's beside them::

    <out>/<YYYY-mm-dd_HH-MM-SS_label>/
      power/server.json  power-dev's session JSON (messages, uuid, phases, sha1 results,
                         ptd_messages, ptd_config, ...) with config, meters (phase_records),
                         skew checks and status
      power/client.json  the client's own record (uploaded); client.log, server.log
      power/ptd_logs.txt PTDaemon's console log (PTD meters with console_log)
      ranging/ run_1/    spl.txt (first meter), spl_<meter>.txt (others), mlperf_log_detail.txt,
                         mlperf_log_summary.txt, meters/<name>/ (each meter's raw readings)
      run_1/ptd_out.txt  PTDaemon's Watts and Uncertainty summaries (PTD meters)
      results.json       metrics per phase and meter, validity and compliance checks
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import socketserver
import sqlite3
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from energy_monitor.meter import MeterError
from energy_monitor.series import CounterSeries, PowerSeries
from tinypower.results.compliance import (
    MAX_UNCERTAINTY,
    MIN_POWER_RUN_S,
    NOT_SUBMISSION_ENGINE,
    SAMPLE_PERIOD_TOLERANCE_S,
)
from tinypower.results.db import DEFAULT_DB, StoreError, add_session
from tinypower.results.power_logs import (
    PowerLogError,
    loadgen_window,
    read_mlperf_log,
    read_spl,
)
from tinypower.results.record import RecordError
from tinypower.results.session import owner_record, sha256_bytes
from tinypower.results.strict_json import dumps_strict
from tinypower.rules.power import ENERGY_SCENARIOS, ranging_check, score_power
from tinypower.scale.link import (
    HANDSHAKE_CLIENT,
    HANDSHAKE_SERVER,
    MIN_REMOTE_SECRET,
    POWER_DEV_CLIENT,
    PROTOCOL,
    Channel,
    LinkError,
    message_text,
    nonce,
    proof,
    session_key,
)
from tinypower.scale.sut import (
    DEFAULT_PORT,
    TOKEN_ENV,
    Limits,
    MeterConfig,
    RangingPolicy,
    SutError,
    load_sut,
    parse_host_port,
)
from tinypower.scale.sync import SkewError, SkewSample, check_skew

PHASE_DIRS = {"ranging": "ranging", "testing": "run_1"}
PHASE_UPLOADS = ("mlperf_log_detail.txt", "mlperf_log_summary.txt", "workload.log")
POWER_UPLOADS = ("client.json", "client.log")
# [[meters]] options the director reads itself (PTDaemon's console log file, channel config
# and command line, for power-dev's ptd_logs.txt and ptd_config), not passed to the driver
DIRECTOR_OPTIONS = ("console_log", "channel", "ptd_command")
# tinypower's phase checkpoints that are power-dev's four: before start, started, workload
# done, stopped (lib/summary.py Summary.phase 0..3)
POWER_DEV_CHECKPOINTS = ("before_start", "started", "workload_done", "stopped")
# power-dev compliance/check.py SUPPORTED_MODEL: PTDaemon's Identify model -> deviceType
PTD_DEVICE_TYPES = {"YokogawaWT210": 8, "YokogawaWT500": 35, "YokogawaWT500_multichannel": 48,
                    "YokogawaWT310": 49, "YokogawaWT310E": 49, "YokogawaWT330": 52,
                    "YokogawaWT330E": 52, "YokogawaWT330_multichannel": 77,
                    "YokogawaWT210_DC": 508, "YokogawaWT310_DC": 549, "YokogawaWT330_DC": 586}
MAX_LINE_BYTES = 48 * 1024 * 1024  # an authenticated upload: LoadGen's logs, base64
MAX_PREAUTH_LINE = 4096  # before authentication nothing longer is needed
PREAUTH_DEADLINE_S = 10.0  # handshake and challenge-response, however slowly sent
MAX_CONNECTIONS = 16
IDLE_TIMEOUT_S = 300.0  # an authenticated client checks the clocks every 5 s while it runs
PHASE_TIMEOUT_S = 3600.0  # a phase holding the meters longer is aborted
MAX_OPEN_EXCHANGES = 16  # time exchanges a client may leave unreported
SPL_TIME = "%m-%d-%Y %H:%M:%S"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class DirectorError(RuntimeError):
    """A request the director refuses; the message goes back to the client."""


@dataclass
class DirectorConfig:
    out_dir: Path
    meters: list[MeterConfig]
    token: str
    listen: tuple[str, int] = ("127.0.0.1", DEFAULT_PORT)
    ranging: RangingPolicy = field(default_factory=RangingPolicy)
    limits: Limits = field(default_factory=Limits)
    store: Path | None = None  # the result store (default: out_dir/results.sqlite)
    idle_timeout_s: float = IDLE_TIMEOUT_S
    phase_timeout_s: float = PHASE_TIMEOUT_S
    auth_timeout_s: float = PREAUTH_DEADLINE_S


# --- sample logs and scoring -----------------------------------------------------------------


def spl_time(t_s: float) -> str:
    """UTC epoch seconds as PTD and LoadGen print them, to the millisecond."""
    ms = int(round(t_s * 1000))
    return datetime.fromtimestamp(ms // 1000, UTC).strftime(SPL_TIME) + f".{ms % 1000:03d}"


def power_readings(series: PowerSeries | CounterSeries) -> tuple[np.ndarray, np.ndarray]:
    """(time, watts) for an ``spl.txt``: power readings as they are; a counter as the mean
    power over each interval between readings, stamped at the interval's end (as an analyzer
    stamps the mean of its last update interval)."""
    if isinstance(series, PowerSeries):
        return series.time_s, series.power_w
    step_j, _ = series.increments_j()
    return series.time_s[1:], step_j / np.diff(series.time_s)


def write_spl(series: PowerSeries | CounterSeries, path: Path, mark: str) -> int:
    """Write readings as ``spl.txt`` sample lines (V/A/PF -1: not reported by every meter;
    the raw readings with them stay in ``meters/<name>/``). Returns the line count."""
    t, w = power_readings(series)
    lines = [f"Time,{spl_time(ti)},Watts,{wi:.6f},Volts,-1.000000,Amps,-1.000000,PF,-1.000000,"
             f"Mark,{mark}\n" for ti, wi in zip(t, w, strict=True)]
    path.write_text("".join(lines))
    return len(lines)


def compliance_checks(testing: dict[str, Any], uncertainty_max: float | None,
                      power_dev: bool = False) -> list[Check]:
    """MLPerf compliance of a testing run, from the round's fixed constants only (never from a
    SUT file, which may shorten a run for a quick look; such a run is simply not compliant):
    the 600 s run, per-sample uncertainty reported and at most 1%, 1 Hz sampling, a hardware
    analyzer, and power-dev's own code (its checker verifies the sources of its client and
    server, so tinypower's director is never a submission engine)."""
    checks = [Check(
        "run_length", testing["window_s"] >= MIN_POWER_RUN_S,
        f"LoadGen window {testing['window_s']:.1f} s (MLPerf needs at least "
        f"{MIN_POWER_RUN_S:.0f} s)", "compliance")]
    if uncertainty_max is None:
        checks.append(Check("uncertainty", False, "the meter reports no per-sample uncertainty "
                            "(MLPerf needs an analyzer whose uncertainty PTDaemon checks)",
                            "compliance"))
    else:
        checks.append(Check(
            "uncertainty", uncertainty_max <= MAX_UNCERTAINTY,
            f"largest per-sample uncertainty {uncertainty_max:.2%} (MLPerf's limit "
            f"{MAX_UNCERTAINTY:.2%})", "compliance"))
    interval = testing.get("median_interval_s")
    checks.append(Check(
        "sample_rate", interval is not None and abs(interval - 1.0) <= SAMPLE_PERIOD_TOLERANCE_S,
        "median sample interval " + (f"{interval:.3f} s" if interval is not None else "unknown")
        + " (MLPerf samples at 1 Hz: Go,1000)", "compliance"))
    measured_as = testing.get("measured_as")
    checks.append(Check("measured_as", measured_as == "hardware",
                        f"the meter's numbers are {measured_as}", "compliance"))
    checks.append(
        Check("submission_engine", True, "power-dev's own client and server ran the session",
              "compliance") if power_dev else
        Check("submission_engine", False, NOT_SUBMISSION_ENGINE, "compliance"))
    return checks


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    kind: str = "validity"  # "validity": the number cannot be trusted; "compliance": MLPerf rules

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "kind": self.kind, "message": self.message}


def throughput_samples_per_s(log: dict[str, object]) -> float | None:
    for key in ("result_samples_per_second", "result_completed_samples_per_sec"):
        if log.get(key) is not None:
            return float(log[key])  # type: ignore[arg-type]
    return None


def score_phase(phase_dir: Path, spl: Path, series: PowerSeries | CounterSeries | None,
                max_gap_s: float) -> dict[str, Any]:
    """One meter's metrics for one phase: the MLPerf metric (average W, or mJ/query) from the
    sample log and LoadGen window, samples per joule, and the series' own energy integral and
    coverage over the window as a cross-check."""
    detail = phase_dir / "mlperf_log_detail.txt"
    log = read_mlperf_log(detail)
    begin, end = loadgen_window(log, detail)
    scenario = str(log.get("effective_scenario", ""))
    count = log.get("result_query_count")
    score = score_power(scenario, read_spl(spl), begin, end,
                        int(count) if count is not None else None)  # type: ignore[arg-type]
    result: dict[str, Any] = {
        "scenario": scenario, "metric": score.metric, "value": score.value, "unit": score.unit,
        "average_power_w": score.average_power_w, "samples_in_window": score.samples,
        "window_s": score.window_s, "power_begin": str(log["power_begin"]),
        "power_end": str(log["power_end"]), "query_count": count,
        "loadgen_validity": log.get("result_validity"),
    }
    if scenario in ENERGY_SCENARIOS:
        per_query = int(log.get("effective_samples_per_query", 1))  # type: ignore[arg-type]
        result["samples_per_joule"] = per_query / (score.value / 1e3)
    else:
        rate = throughput_samples_per_s(log)
        result["throughput_samples_per_s"] = rate
        result["samples_per_joule"] = rate / score.value if rate else None
    if series is not None and len(series) > 1:
        b, e = (x.replace(tzinfo=UTC).timestamp() for x in (begin, end))
        energy = series.energy(b, e, max_gap_s)
        result.update(energy_j=energy.energy_j, coverage=energy.coverage,
                      gaps=[[g.start_s, g.end_s] for g in energy.gaps],
                      median_interval_s=energy.median_interval_s,
                      estimated_j=energy.estimated_j, bridged_j=energy.bridged_j)
    return result


# --- sessions --------------------------------------------------------------------------------


class _Phase:
    def __init__(self, name: str, folder: Path, checkpoints: list[list[float]]) -> None:
        self.name = name
        self.checkpoints = checkpoints  # power-dev's phases[name]: [wall, monotonic] x 4
        self.folder = folder
        self.meters: list[tuple[MeterConfig, Any]] = []
        self.series: dict[str, PowerSeries | CounterSeries] = {}
        self.record: dict[str, Any] = {"checkpoints": [], "meters": {}, "skew": []}
        self.timer: threading.Timer | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def checkpoint(self, label: str) -> None:
        wall, mono = time.time(), time.monotonic()
        self.record["checkpoints"].append({"label": label, "utc_s": wall, "monotonic_s": mono})
        if label in POWER_DEV_CHECKPOINTS:
            self.checkpoints.append([wall, mono])


class Session:
    """One client's measurement: its folder, phases, skew checks and session JSON."""

    def __init__(self, director: Director, session_id: str, label: str, client_uuid: str,
                 folder: Path) -> None:
        self.director = director
        self.id = session_id
        self.client_uuid = client_uuid
        self.folder = folder
        self.lock = threading.Lock()
        self.phases: dict[str, _Phase] = {}
        self.active: _Phase | None = None
        self.done = False
        self.initial_ranges: dict[str, Any] = {}  # meter name -> its RR before the session
        self.ptd_messages: list[dict[str, str]] = []  # every PTDaemon command and reply
        self.log: list[str] = []  # power/server.log
        (folder / "power").mkdir(parents=True)
        cfg = director.config
        # power-dev's session JSON (lib/summary.py) with tinypower's own records beside it
        self.data: dict[str, Any] = {
            "version": f"tinypower {_version()}", "protocol": PROTOCOL, "tinypower": _version(),
            "session_name": session_id, "label": label,
            "uuid": {"client": client_uuid, "server": director.uuid},
            "timezone": 0, "modules": {"python": sys.version.split()[0],
                                       "tinypower": _version()},
            "status": "running", "reasons": [],
            # who to ask whether a "running" session still runs (tinypower recover)
            "owner": owner_record(),
            "config": {
                "meters": [m.public() for m in cfg.meters],
                "ranging": cfg.ranging.__dict__, "limits": cfg.limits.__dict__,
            },
            "sources": director.sources, "phases": {}, "phase_records": {}, "skew": [],
            "messages": [],
            "started_utc": datetime.now(UTC).isoformat(),
        }
        self.save()

    def say(self, text: str, level: str = "INFO") -> None:
        self.log.append(f"server {datetime.now(UTC):%Y-%m-%d %H:%M:%S,%f} [{level}] {text}")

    def fail(self, reason: str) -> None:
        """Mark the run invalid; its data stays."""
        self.say(reason, "ERROR")
        if reason not in self.data["reasons"]:
            self.data["reasons"].append(reason)
        self.data["status"] = "invalid"
        self.save()

    def save(self) -> None:
        path = self.folder / "power" / "server.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(dumps_strict(self.data, indent=2) + "\n")
        tmp.replace(path)

    def file_hashes(self) -> dict[str, str]:
        """sha1 of every file but server.json, as power-dev's ``hash_dir`` records them."""
        return {
            p.relative_to(self.folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(self.folder.rglob("*"))
            if p.is_file() and p.name not in ("server.json", "server.tmp")
        }


# --- the director ----------------------------------------------------------------------------


class Director:
    """The power director: ``start()`` serves on a thread, ``serve_forever()`` in the caller."""

    def __init__(self, config: DirectorConfig) -> None:
        if not config.token:
            raise DirectorError(
                f"the director needs a shared secret: set {TOKEN_ENV} (or --token-file) on the "
                "director and on each client"
            )
        if config.listen[0] not in LOOPBACK_HOSTS and len(config.token) < MIN_REMOTE_SECRET:
            raise DirectorError(
                f"the director listens on {config.listen[0]}, beyond this machine: its shared "
                f"secret must be at least {MIN_REMOTE_SECRET} characters (e.g. python -c "
                "'import secrets; print(secrets.token_hex(16))')")
        if not config.meters:
            raise DirectorError("the director has no meters: give --meter KIND=ADDRESS or a "
                                "SUT file with [[meters]]")
        self.config = config
        self.uuid = str(uuid.uuid4())
        self.out_dir = config.out_dir.resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.sources = _source_hashes()
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()  # sessions table
        self._measuring: Session | None = None  # the meters measure one phase at a time
        self._connections = 0
        director = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                director._serve_client(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(config.listen, Handler)
        self.address: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        self._thread = threading.Thread(target=self._server.serve_forever, name="director",
                                        daemon=True)
        self._thread.start()
        return self.address

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for session in list(self.sessions.values()):
            if session.active is not None:
                self._abort(session, "the director shut down during the run")

    # -- connection loop ----------------------------------------------------------------------

    def _serve_client(self, sock: socket.socket) -> None:
        """One connection: the handshake and challenge-response (:mod:`tinypower.scale.link`)
        within ``PREAUTH_DEADLINE_S`` and ``MAX_PREAUTH_LINE`` bytes a line, then
        authenticated requests until the client leaves or is silent ``idle_timeout_s``."""
        with self._lock:
            if self._connections >= MAX_CONNECTIONS:
                _close_with(sock, b"error: the director has too many connections; try later\n")
                return
            self._connections += 1
        state: dict[str, Any] = {"client": None, "sessions": [], "exchanges": {}, "skew": [],
                                 "messages": [], "channel": None, "recording": True}
        # slowloris: a connection that has not authenticated by the deadline is cut, however
        # slowly it trickles bytes
        deadline = threading.Timer(self.config.auth_timeout_s, _shutdown_unless, (sock, state))
        deadline.daemon = True
        deadline.start()
        rfile, wfile = sock.makefile("rb"), sock.makefile("wb")
        try:
            if self._authenticate(rfile, wfile, state):
                deadline.cancel()
                sock.settimeout(self.config.idle_timeout_s)
                self._serve_requests(rfile, wfile, state)
        except OSError:
            pass  # the client went away or timed out; its sessions are closed below
        finally:
            deadline.cancel()
            with self._lock:
                self._connections -= 1
            for session in state["sessions"]:
                if session.active is not None:
                    self._abort(session, f"the client disconnected during {session.active.name}")

    def _authenticate(self, rfile: Any, wfile: Any, state: dict[str, Any]) -> bool:
        line = _read_line(rfile, MAX_PREAUTH_LINE)
        received_s = time.time()
        text = line.decode("ascii", errors="replace").strip()
        if text == POWER_DEV_CLIENT:
            _write_line(wfile, f"tinypower director ({PROTOCOL}), not MLCommons power-dev's "
                               "server: run power-dev's client against power-dev's server, or "
                               "tinypower's client against this director")
            return False
        if text != HANDSHAKE_CLIENT:
            _write_line(wfile, f"error: not a {PROTOCOL} client (it sent {text[:60]!r}): run the "
                               "same tinypower version on the director and the client")
            return False
        _write_line(wfile, HANDSHAKE_SERVER)
        state["messages"].append({"cmd": HANDSHAKE_CLIENT, "cmd_time": received_s,
                                  "reply": HANDSHAKE_SERVER, "reply_time": time.time()})
        hello, hello_s = _read_json(rfile), time.time()
        client_nonce = str(hello.get("client_nonce", ""))
        if hello.get("cmd") != "hello" or not _is_nonce(client_nonce):
            _send(wfile, {"ok": False, "error": "expected hello with a client_nonce"})
            return False
        server_nonce = nonce()
        phases = ["testing"] if self.config.ranging.mode == "fixed" else ["ranging", "testing"]
        reply = {"ok": True, "server_nonce": server_nonce, "server_uuid": self.uuid,
                 "proof": proof(self.config.token, "director", client_nonce, server_nonce),
                 "max_skew_s": self.config.limits.max_skew_s, "phases": phases}
        _send(wfile, reply)
        state["messages"].append({"cmd": message_text(hello), "cmd_time": hello_s,
                                  "reply": message_text(reply), "reply_time": time.time()})
        auth, auth_s = _read_json(rfile), time.time()
        expected = proof(self.config.token, "client", client_nonce, server_nonce)
        if auth.get("cmd") != "auth" or not hmac.compare_digest(
                str(auth.get("proof", "")), expected):
            _send(wfile, {"ok": False, "error": "authentication failed: give the client the "
                                                f"director's shared secret ({TOKEN_ENV} or "
                                                "--token-file)"})
            return False
        state["client"] = _client_uuid(hello.get("client_uuid"))
        channel = Channel(session_key(self.config.token, client_nonce, server_nonce), "d", "c")
        state["channel"] = channel
        ok = {"ok": True}
        wfile.write(channel.seal(ok))
        wfile.flush()
        state["messages"].append({"cmd": message_text(auth), "cmd_time": auth_s,
                                  "reply": message_text(ok), "reply_time": time.time()})
        return True

    def _serve_requests(self, rfile: Any, wfile: Any, state: dict[str, Any]) -> None:
        channel: Channel = state["channel"]
        while True:
            line = rfile.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            received_s = time.time()
            if len(line) > MAX_LINE_BYTES:
                wfile.write(channel.seal({"ok": False, "error": "request too long; closing"}))
                wfile.flush()
                return
            try:
                request = channel.open(line)
            except LinkError as exc:
                wfile.write(channel.seal({"ok": False, "error": f"{exc}; closing"}))
                wfile.flush()
                return
            reply = self._handle_request(request, state, received_s)
            wfile.write(channel.seal(reply))
            wfile.flush()
            self._record(request, reply, state, received_s)

    def _record(self, request: dict, reply: dict, state: dict, received_s: float) -> None:
        """The session's messages as power-dev keeps them: every exchange from the handshake
        until the client uploads client.json (which holds the client's copy of the same list,
        so neither that upload nor ``done`` is in either)."""
        if request.get("cmd") == "put" and request.get("name") == "client.json":
            state["recording"] = False
        if state["recording"]:
            state["messages"].append({"cmd": message_text(request), "cmd_time": received_s,
                                      "reply": message_text(reply), "reply_time": time.time()})

    def _handle_request(self, request: dict, state: dict[str, Any], received_s: float) -> dict:
        cmd = request.get("cmd")
        if not isinstance(cmd, str):
            return {"ok": False, "error": "a request is an object with a cmd field"}
        try:
            reply = getattr(self, f"_cmd_{cmd}", self._cmd_unknown)(request, state, received_s)
            return {"ok": True, **reply}
        except DirectorError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not stop the director serving others
            return {"ok": False, "error": f"internal error handling {cmd!r}: {exc!r}"}

    # -- commands -----------------------------------------------------------------------------

    def _cmd_unknown(self, request: dict, state: dict, received_s: float) -> dict:
        raise DirectorError(f"unknown command {request['cmd']!r}")

    def _cmd_time(self, request: dict, state: dict, received_s: float) -> dict:
        exchanges: dict[str, tuple[float, float]] = state["exchanges"]
        if len(exchanges) >= MAX_OPEN_EXCHANGES:  # unreported exchanges: forget the oldest
            del exchanges[next(iter(exchanges))]
        exchange = uuid.uuid4().hex
        sent_s = time.time()
        exchanges[exchange] = (received_s, sent_s)
        return {"exchange": exchange, "t1_s": received_s, "t2_s": sent_s}

    def _cmd_skew(self, request: dict, state: dict, received_s: float) -> dict:
        """The client reports its send and receive times of an exchange; the director
        computes the skew from its own two times and refuses it above the limit."""
        times = state["exchanges"].pop(str(request.get("exchange")), None)
        if times is None:
            raise DirectorError("unknown time exchange: send time, then skew with its exchange")
        try:
            sample = SkewSample(float(request["t0_s"]), times[0], times[1],
                                float(request["t3_s"]))
        except (KeyError, TypeError, ValueError):
            raise DirectorError("skew needs t0_s and t3_s (client send/receive times)") from None
        where = str(request.get("where", "check"))
        session = self.sessions.get(str(request.get("session", "")))
        record = {"where": where, **sample.record()}
        if session is not None:
            self._owned(session, state)
            session.data["skew"].append(record)
            if session.active is not None:
                session.active.record["skew"].append(record)
            session.save()
        else:  # a check before ``new``: it goes into the next session's record
            state["skew"].append(record)
        try:
            check_skew(sample, self.config.limits.max_skew_s, where)
        except SkewError as exc:
            if session is not None:
                self._abort(session, str(exc))
            raise DirectorError(str(exc)) from None
        return {"offset_s": sample.offset_s, "bound_s": sample.bound_s}

    def _cmd_new(self, request: dict, state: dict, received_s: float) -> dict:
        label = str(request.get("label", ""))
        if label and (not set(label) <= _LABEL_CHARS or label.startswith(".") or
                      len(label) > 64):
            raise DirectorError(
                f"session label {label!r} refused: use up to 64 letters, digits, '_', '-' or "
                "'.', not starting with '.' (a label cannot name a path)"
            )
        stamp = datetime.now(UTC).strftime("%Y-%m-%d_%H-%M-%S")
        with self._lock:
            base = f"{stamp}_{label}" if label else stamp
            session_id, n = base, 2
            while session_id in self.sessions or (self.out_dir / session_id).exists():
                session_id, n = f"{base}_{n}", n + 1
            folder = self._inside(session_id)
            session = Session(self, session_id, label, state["client"], folder)
            self.sessions[session_id] = session
        state["sessions"].append(session)
        session.data["skew"], state["skew"] = state["skew"], []
        # the exchanges since the handshake, and from now on, are this session's messages
        session.data["messages"] = state["messages"]
        return {"session": session_id, "folder": str(folder)}

    def _cmd_start(self, request: dict, state: dict, received_s: float) -> dict:
        session, phase_name = self._session_phase(request, state)
        with session.lock:
            if session.done or session.data["status"] == "invalid":
                raise DirectorError(f"session {session.id} is over ({session.data['status']}); "
                                    "start a new session")
            if session.active is not None or phase_name in session.phases:
                raise DirectorError(f"{phase_name} was already started in session {session.id}")
            if phase_name == "testing" and self.config.ranging.mode != "fixed" \
                    and "ranging" not in session.phases:
                raise DirectorError("run the ranging phase before testing (or use ranging "
                                    "mode 'fixed', which is not valid for submission)")
            with self._lock:
                if self._measuring is not None:
                    raise DirectorError(f"the meters are measuring session "
                                        f"{self._measuring.id}; try again when it is done")
                self._measuring = session
            try:
                return self._start_phase(session, phase_name)
            except BaseException:
                with self._lock:
                    self._measuring = None
                raise

    def _cmd_stop(self, request: dict, state: dict, received_s: float) -> dict:
        session, phase_name = self._session_phase(request, state)
        with session.lock:
            phase = session.active
            if phase is None or phase.name != phase_name:
                raise DirectorError(f"{phase_name} is not running in session {session.id}")
            return self._stop_phase(session, phase)

    def _cmd_put(self, request: dict, state: dict, received_s: float) -> dict:
        session = self._session(request, state)
        name = str(request.get("name", ""))
        phase = request.get("phase")
        if phase is None:
            if name not in POWER_UPLOADS:
                raise DirectorError(f"refused upload {name!r}: session files are "
                                    f"{POWER_UPLOADS}")
            target = session.folder / "power" / name
        else:
            if phase not in PHASE_DIRS or name not in PHASE_UPLOADS:
                raise DirectorError(f"refused upload {phase!r}/{name!r}: phases are "
                                    f"{sorted(PHASE_DIRS)}, files {PHASE_UPLOADS}")
            target = session.folder / PHASE_DIRS[phase] / name
        try:
            data = base64.b64decode(str(request.get("data", "")), validate=True)
        except ValueError:
            raise DirectorError("upload data must be base64") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return {"bytes": len(data)}

    def _cmd_get(self, request: dict, state: dict, received_s: float) -> dict:
        session = self._session(request, state)
        relative = str(request.get("path", ""))
        path = (session.folder / relative).resolve()
        if not path.is_relative_to(session.folder.resolve()):
            raise DirectorError(f"refused {relative!r}: it is outside session {session.id}")
        if not path.is_file():
            raise DirectorError(f"{relative!r} is not a file of session {session.id}")
        data = path.read_bytes()
        return {"data": base64.b64encode(data).decode(), "sha256": sha256_bytes(data)}

    def _cmd_abort(self, request: dict, state: dict, received_s: float) -> dict:
        session = self._session(request, state)
        self._abort(session, f"the client aborted: {request.get('reason', 'no reason given')}")
        return {}

    def _cmd_done(self, request: dict, state: dict, received_s: float) -> dict:
        session = self._session(request, state)
        with session.lock:
            if session.active is not None:
                self._abort(session, f"done during {session.active.name}")
            results = self._score(session)
            session.done = True
            if session.data["status"] == "running":
                session.data["status"] = "complete"
            session.data["finished_utc"] = datetime.now(UTC).isoformat()
            (session.folder / "results.json").write_text(
                dumps_strict(results, indent=2) + "\n")
            self._power_dev_files(session)
            session.data["results"] = session.file_hashes()
            session.save()
        reply: dict[str, Any] = {"results": results}
        try:  # every session is indexed in its output folder's store, as runner.py does
            add_session(self.config.store or self.out_dir / DEFAULT_DB.name, session.folder)
        except (RecordError, StoreError, sqlite3.Error) as exc:
            # The session folder holds everything; the store is an index that can be rebuilt.
            reply["store_error"] = f"not added to the result store: {exc}"
        return reply

    # -- phases -------------------------------------------------------------------------------

    def _start_phase(self, session: Session, name: str) -> dict:
        phase = _Phase(name, session.folder / PHASE_DIRS[name],
                       session.data["phases"].setdefault(name, []))
        phase.folder.mkdir(parents=True, exist_ok=True)
        session.phases[name] = phase
        session.active = phase
        session.data["phase_records"][name] = phase.record
        session.say(f"Starting {name} mode")
        phase.checkpoint("before_start")
        mark = f"{session.id}_{name}"
        try:
            for cfg in self.config.meters:
                meter = _connect(cfg)
                phase.meters.append((cfg, meter))
                phase.record["meters"][cfg.name] = {"identity": meter.identify().__dict__}
                if hasattr(meter, "read_ranges") and cfg.name not in session.initial_ranges:
                    # the analyzer's own ranges, restored at the end (power-dev's RR)
                    session.initial_ranges[cfg.name] = meter.read_ranges()
                    phase.record["meters"][cfg.name]["initial_ranges"] = \
                        session.initial_ranges[cfg.name].reply
            ranges = self._set_ranges(session, phase)
            time.sleep(self.config.ranging.settle_s)
            for cfg, meter in phase.meters:
                folder = phase.folder / "meters" / cfg.name
                folder.mkdir(parents=True, exist_ok=True)
                if cfg.kind == "ptd":
                    meter.start(folder, mark=mark)
                else:
                    meter.start(folder)
        except (MeterError, OSError, ValueError, ImportError) as exc:
            self._abort(session, f"{name}: a meter could not start: {exc}")
            raise DirectorError(f"{name}: a meter could not start: {exc}") from None
        phase.checkpoint("started")
        phase.timer = threading.Timer(self.config.phase_timeout_s, self._phase_timeout,
                                      (session, phase))
        phase.timer.daemon = True
        phase.timer.start()
        session.save()
        return {"ranges": ranges, "mark": mark}

    def _power_dev_files(self, session: Session) -> None:
        """power/server.log, and for PTDaemon meters what power-dev's server records of its
        PTDaemon: ``ptd_messages``, ``ptd_config`` and ``ptd_logs.txt`` (PTDaemon's console
        log, from the file its ``console_log`` option names: PTDaemon's own words, never
        written by tinypower)."""
        session.say("Session done")
        (session.folder / "power" / "server.log").write_text("\n".join(session.log) + "\n")
        ptd = [cfg for cfg in self.config.meters if cfg.kind == "ptd"]
        if not ptd:
            return
        session.data["ptd_messages"] = session.ptd_messages
        identify = next((m["reply"] for m in session.ptd_messages if m["cmd"] == "Identify"), "")
        channel = ptd[0].options.get("channel")
        session.data["ptd_config"] = [{
            "command": list(ptd[0].options.get("ptd_command", [])),
            "device_type": PTD_DEVICE_TYPES.get(identify.split(",")[0]),
            "interface_flag": None, "dc_flag": None, "device_port": ptd[0].address,
            "channel": [int(c) for c in str(channel).split(",")] if channel else None}]
        console = ptd[0].options.get("console_log")
        if console:
            try:
                data = Path(str(console)).read_bytes()
            except OSError as exc:
                session.fail(f"cannot read PTDaemon's console log {console}: {exc}")
            else:
                (session.folder / "power" / "ptd_logs.txt").write_bytes(data)

    def _phase_timeout(self, session: Session, phase: _Phase) -> None:
        """One client cannot hold the meters forever: a phase past the timeout is aborted."""
        with session.lock:
            if session.active is phase:
                self._abort(session, f"{phase.name} ran past the director's phase timeout "
                                     f"({self.config.phase_timeout_s:g} s); the meters were "
                                     "stopped and released")

    def _set_ranges(self, session: Session, phase: _Phase) -> dict[str, Any]:
        """Auto ranges for ranging (or the analyzer's max current); fixed ranges from the
        ranging maxima x margin for testing. Meters without ranges are left alone."""
        policy = self.config.ranging
        chosen: dict[str, Any] = {}
        for cfg, meter in phase.meters:
            if not _rangeable(meter):
                continue
            if phase.name == "ranging":
                volts: float | str = "auto"
                amps: float | str = policy.max_amps if policy.mode == "max" else "auto"
            elif policy.mode == "fixed":
                volts, amps = policy.max_volts, policy.max_amps  # type: ignore[assignment]
            else:
                maxima = session.phases["ranging"].record["meters"][cfg.name].get("maxima")
                if not maxima:
                    raise MeterError(f"meter {cfg.name}: no ranging maxima to set the testing "
                                     "ranges from (the ranging run read no samples)")
                volts, amps = maxima["volts"], maxima["amps"] * policy.current_margin
            _set_meter_ranges(meter, volts, amps)
            if phase.name == "ranging" and cfg.kind == "ptd":
                # power-dev's server sends the ranging current range twice (its AUTO/MAX branch,
                # then SR,A,Auto in a loop after it), and its checker looks for the restored
                # initial range as the 3rd or 4th SR,A (check.py, PR #334): the same sequence
                # here, with this session's own range (never power-dev's MAX-then-Auto slip).
                meter.set_current_range(amps)
            chosen[cfg.name] = {"volts": volts, "amps": amps}
            phase.record["meters"][cfg.name]["ranges"] = chosen[cfg.name]
        return chosen

    def _stop_phase(self, session: Session, phase: _Phase) -> dict:
        phase.cancel_timer()
        phase.checkpoint("workload_done")
        time.sleep(self.config.ranging.settle_s)
        errors: list[str] = []
        lines: dict[str, int] = {}
        for index, (cfg, meter) in enumerate(phase.meters):
            record = phase.record["meters"][cfg.name]
            try:
                if phase.name == "testing" and hasattr(meter, "uncertainty"):
                    watts, unc = meter.watts(), meter.uncertainty()
                    (phase.folder / "ptd_out.txt").write_text(
                        f"Power: {watts.reply}\nUncertainty: {unc.reply}\n")
                    record["uncertainty_max"] = unc.maximum
                series = meter.stop()
            except MeterError as exc:
                errors.append(f"meter {cfg.name} failed during {phase.name}: {exc}")
                series = meter.series() if hasattr(meter, "series") else None
            if series is not None and len(series):
                phase.series[cfg.name] = series
                target = phase.folder / ("spl.txt" if index == 0 else f"spl_{cfg.name}.txt")
                lines[cfg.name] = _write_phase_spl(cfg, phase, series, target,
                                                   f"{session.id}_{phase.name}")
                record["readings"] = len(series)
            if phase.name == "ranging" and hasattr(meter, "ranging_maxima") \
                    and not errors and series is not None and len(series):
                volts, amps = meter.ranging_maxima()
                record["maxima"] = {"volts": volts, "amps": amps}
            if phase.name == "testing" and _rangeable(meter) and not errors:
                try:  # restore the ranges the analyzer had, as MLPerf's server does
                    initial = session.initial_ranges.get(cfg.name)
                    if initial is not None:
                        meter.restore_ranges(initial)
                    else:
                        _set_meter_ranges(meter, "auto", "auto")
                except MeterError as exc:
                    errors.append(f"meter {cfg.name}: could not restore its ranges: {exc}")
            _keep_ptd_messages(session, meter)
            meter.close()
        phase.checkpoint("stopped")
        session.active = None
        with self._lock:
            self._measuring = None
        if errors:
            for e in errors:
                session.fail(e)
            raise DirectorError("; ".join(errors) + f" (run marked invalid; data kept in "
                                f"{session.folder})")
        session.save()
        return {"readings": lines}

    def _abort(self, session: Session, reason: str) -> None:
        """Stop any running phase (keeping what the meters read) and mark the run invalid."""
        phase = session.active
        if phase is not None:
            phase.cancel_timer()
            for index, (cfg, meter) in enumerate(phase.meters):
                try:
                    series = meter.stop()
                except Exception:  # an abort must reach every meter: keep what each read
                    series = meter.series() if hasattr(meter, "series") else None
                if series is not None and len(series):
                    target = phase.folder / ("spl.txt" if index == 0 else f"spl_{cfg.name}.txt")
                    write_spl(series, target, f"{session.id}_{phase.name}")
                _keep_ptd_messages(session, meter)
                try:
                    meter.close()
                except Exception as exc:
                    session.data["reasons"].append(f"meter {cfg.name} did not close: {exc}")
            phase.checkpoint("aborted")
            session.active = None
            with self._lock:
                if self._measuring is session:
                    self._measuring = None
        session.fail(reason)

    # -- scoring ------------------------------------------------------------------------------

    def _score(self, session: Session) -> dict[str, Any]:
        limits = self.config.limits
        results: dict[str, Any] = {"session": session.id, "phases": {}, "checks": []}
        checks: list[Check] = []
        for name, phase in session.phases.items():
            per_meter: dict[str, Any] = {}
            for index, cfg in enumerate(self.config.meters):
                spl = phase.folder / ("spl.txt" if index == 0 else f"spl_{cfg.name}.txt")
                identity = phase.record["meters"].get(cfg.name, {}).get("identity", {})
                try:
                    per_meter[cfg.name] = {
                        "measured_as": identity.get("measured_as"),
                        **score_phase(phase.folder, spl, phase.series.get(cfg.name),
                                      limits.max_gap_s),
                    }
                except (PowerLogError, ValueError) as exc:
                    per_meter[cfg.name] = {"error": str(exc)}
                    if not session.data["reasons"]:  # else the reason the run failed says it
                        checks.append(Check(f"{name}_score", False, f"{cfg.name}: {exc}"))
            results["phases"][name] = per_meter
        primary = self.config.meters[0].name
        testing = results["phases"].get("testing", {}).get(primary, {})
        ranging = results["phases"].get("ranging", {}).get(primary, {})
        results["testing"] = testing
        results["measured_as"] = testing.get("measured_as")
        if "testing" not in session.phases:
            checks.append(Check("testing_run", False, "the testing run did not take place"))
        if "value" in testing:
            checks += self._testing_checks(session, testing, ranging)
        for reason in session.data["reasons"]:
            checks.append(Check("run", False, reason))
        bounds = [s["bound_s"] for s in session.data["skew"]]
        results["alignment_bound_s"] = max(bounds) if bounds else None
        results["checks"] = [c.record() for c in checks]
        results["valid"] = all(c.ok for c in checks if c.kind == "validity")
        results["compliant"] = results["valid"] and all(c.ok for c in checks)
        if not results["valid"]:
            session.data["status"] = "invalid"
        return results

    def _testing_checks(self, session: Session, testing: dict, ranging: dict) -> list[Check]:
        limits = self.config.limits
        checks = [Check("loadgen", testing.get("loadgen_validity") == "VALID",
                        f"LoadGen says the run is {testing.get('loadgen_validity')}")]
        if "value" in ranging:
            ok, message = ranging_check(testing["average_power_w"], ranging["average_power_w"])
            checks.append(Check("ranging_power", ok, message))
        else:
            checks.append(Check("ranging_run", False, "no ranging run (fixed ranges): not valid "
                                                      "for an MLPerf submission", "compliance"))
        coverage = testing.get("coverage")
        if coverage is not None:
            checks.append(Check(
                "coverage", coverage >= 0.99,
                f"readings cover {coverage:.1%} of the LoadGen window (gaps over "
                f"{limits.max_gap_s:g} s: {len(testing.get('gaps', []))})"))
        checks += compliance_checks(
            testing, session.data["phase_records"].get("testing", {}).get("meters", {})
            .get(self.config.meters[0].name, {}).get("uncertainty_max"))
        return checks

    # -- helpers ------------------------------------------------------------------------------

    def _inside(self, name: str) -> Path:
        path = (self.out_dir / name).resolve()
        if path.parent != self.out_dir:
            raise DirectorError(f"refused session name {name!r}: it leaves the output folder")
        return path

    def _session(self, request: dict, state: dict) -> Session:
        session = self.sessions.get(str(request.get("session", "")))
        if session is None:
            raise DirectorError(f"no session {request.get('session')!r} on this director")
        self._owned(session, state)
        return session

    def _owned(self, session: Session, state: dict) -> None:
        if session not in state["sessions"]:
            raise DirectorError(f"session {session.id} belongs to another client")

    def _session_phase(self, request: dict, state: dict) -> tuple[Session, str]:
        session = self._session(request, state)
        phase = str(request.get("phase", ""))
        if phase not in PHASE_DIRS:
            raise DirectorError(f"unknown phase {phase!r}: ranging or testing")
        return session, phase


def _read_line(rfile: Any, limit: int) -> bytes:
    line = rfile.readline(limit + 1)
    if len(line) > limit:
        raise OSError(f"line over {limit} bytes before authentication")
    return line


def _read_json(rfile: Any) -> dict:
    try:
        value = json.loads(_read_line(rfile, MAX_PREAUTH_LINE))
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_line(wfile: Any, text: str) -> None:
    wfile.write(text.encode() + b"\n")
    wfile.flush()


def _close_with(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def _shutdown_unless(sock: socket.socket, state: dict) -> None:
    if state["channel"] is None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _is_nonce(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _client_uuid(value: object) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(uuid.uuid4())


def _keep_ptd_messages(session: Session, meter: Any) -> None:
    """A PTDaemon connection's commands and first reply lines, for server.json."""
    for cmd, reply in getattr(meter, "messages", []):
        session.ptd_messages.append({"cmd": cmd, "reply": reply})
    if hasattr(meter, "messages"):
        meter.messages.clear()


def _write_phase_spl(cfg: MeterConfig, phase: _Phase, series: PowerSeries | CounterSeries,
                     target: Path, mark: str) -> int:
    """The phase's ``spl.txt``: PTDaemon's own sample lines (V, A, PF and channels, labelled
    as power-dev labels them) for a PTD meter; otherwise lines from the readings."""
    raw = phase.folder / "meters" / cfg.name / "spl.txt"
    if cfg.kind == "ptd" and raw.is_file():
        data = raw.read_bytes()
        target.write_bytes(data)
        return data.count(b"\n")
    return write_spl(series, target, mark)


def _rangeable(meter: Any) -> bool:
    """Analyzers with voltage and current ranges: PTDaemon, a Yokogawa over SCPI."""
    return hasattr(meter, "set_ranges") or hasattr(meter, "set_current_range")


def _set_meter_ranges(meter: Any, volts: float | str, amps: float | str) -> None:
    if hasattr(meter, "set_ranges"):
        meter.set_ranges(volts, amps)
    else:
        meter.set_voltage_range(volts)
        meter.set_current_range(amps)


def _connect(cfg: MeterConfig) -> Any:
    from energy_monitor.series_meters import connect_series_meter

    options = {k: v for k, v in cfg.options.items() if k not in DIRECTOR_OPTIONS}
    if cfg.kind == "ptd":
        # the director owns its PTDaemon and measures one phase at a time: a measurement
        # still running is one a dead director left behind
        options.setdefault("recover_stale", True)
    return connect_series_meter(cfg.kind, cfg.address, **options)


def _send(wfile: Any, obj: dict) -> None:
    wfile.write(dumps_strict(obj).encode() + b"\n")
    wfile.flush()


def _version() -> str:
    from tinypower.results.session import _version as version

    return version("tinypower")


def _source_hashes() -> dict[str, str]:
    """sha256 of every Python source of tinypower and energy_monitor (MLPerf records the
    tool's sources so a checker can pin the version that measured)."""
    import energy_monitor
    import tinypower

    hashes: dict[str, str] = {}
    for package in (tinypower, energy_monitor):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            hashes[f"{package.__name__}/{path.relative_to(root).as_posix()}"] = hashlib.sha256(
                path.read_bytes()).hexdigest()
    return hashes


def read_token(token_file: Path | None, env: str = TOKEN_ENV) -> str:
    """The shared token from a file (first line) or the environment."""
    if token_file is not None:
        try:
            return token_file.read_text().strip()
        except OSError as exc:
            raise DirectorError(f"cannot read the token file {token_file}: {exc}") from None
    token = os.environ.get(env, "")
    if not token:
        raise DirectorError(f"no shared token: set {env} or pass --token-file")
    return token


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinypower.scale.director",
                                description="Serve the MLPerf-style power workflow: own the "
                                            "meters, run ranging and testing for clients.")
    p.add_argument("--sut", type=Path, help="SUT TOML: meters, ranging, limits, listen address")
    p.add_argument("--meter", action="append", default=[], metavar="KIND=ADDRESS",
                   help="a meter (instead of the SUT file's), e.g. ptd=127.0.0.1:8888")
    p.add_argument("--out", type=Path, help="output folder (default: the SUT file's, else "
                                            "runs/power)")
    p.add_argument("--listen", help=f"HOST:PORT (default 127.0.0.1:{DEFAULT_PORT}; port 0 "
                                    "picks a free one)")
    p.add_argument("--token-file", type=Path, help=f"file holding the shared token (default: "
                                                   f"${TOKEN_ENV})")
    p.add_argument("--settle-s", type=float, help="analyzer settling before Go and Stop "
                                                  "(default 10 s, MLPerf's)")
    p.add_argument("--auth-timeout-s", type=float, default=PREAUTH_DEADLINE_S,
                   help="time a connection has to authenticate (default %(default)g s)")
    p.add_argument("--phase-timeout-s", type=float, default=PHASE_TIMEOUT_S,
                   help="a phase holding the meters longer is aborted (default %(default)g s)")
    args = p.parse_args(argv)
    try:
        config = _config_from_args(args)
        director = Director(config)
    except (DirectorError, SutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host, port = director.address
    print(f"tinypower director listening on {host}:{port}, sessions in {director.out_dir}",
          flush=True)
    # SIGTERM (a service manager's stop) ends like Ctrl-C: running phases are aborted, which
    # stops PTDaemon's measurement, instead of leaving it measuring for the next session.
    signal.signal(signal.SIGTERM, lambda *_: _raise_interrupt())
    try:
        director.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        director.close()
    return 0


def _raise_interrupt() -> None:
    raise KeyboardInterrupt


def _config_from_args(args: argparse.Namespace) -> DirectorConfig:
    sut = load_sut(args.sut) if args.sut else None
    meters = list(sut.meters) if sut else []
    if args.meter:
        meters = []
        for text in args.meter:
            kind, sep, address = text.partition("=")
            if not kind:
                raise DirectorError(f"--meter {text!r}: write KIND=ADDRESS, e.g. "
                                    "ptd=127.0.0.1:8888")
            meters.append(MeterConfig(kind, address if sep and address else None,
                                      f"{kind}-{len(meters) + 1}" if meters else kind))
    ranging = sut.ranging if sut else RangingPolicy()
    if args.settle_s is not None:
        ranging = RangingPolicy(ranging.mode, ranging.max_volts, ranging.max_amps,
                                ranging.current_margin, args.settle_s)
    listen = parse_host_port(args.listen) if args.listen else (
        sut.listen if sut else ("127.0.0.1", DEFAULT_PORT))
    return DirectorConfig(
        out_dir=args.out or (sut.output if sut and sut.output else Path("runs/power")),
        meters=meters,
        token=read_token(args.token_file, sut.token_env if sut else TOKEN_ENV),
        listen=listen, ranging=ranging, limits=sut.limits if sut else Limits(),
        auth_timeout_s=args.auth_timeout_s, phase_timeout_s=args.phase_timeout_s,
    )


if __name__ == "__main__":
    sys.exit(main())
