"""The SUT-side client: runs the workload once per phase while the director's meters read.

For each phase (ranging, then testing) the client checks the clock skew with the director,
asks it to start the meters, runs the workload as a child process (checking the skew again
every ``sync_interval_s`` while it runs), checks the skew after it, asks the director to stop,
checks once more and uploads LoadGen's logs. Any failure (a skew over the limit, a meter that
stops answering, a workload that fails) still ends with ``done``: the director scores what it
has, marks the run invalid with the reason, and keeps the data. ``power/client.json`` (uploaded)
records every request with its times, the phases and the skew checks.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinypower.results.record import check_passed, power_validity
from tinypower.results.strict_json import dumps_strict
from tinypower.scale import workload as wl
from tinypower.scale.director import PHASE_DIRS, DirectorError, read_token
from tinypower.scale.link import (
    HANDSHAKE_CLIENT,
    HANDSHAKE_SERVER,
    POWER_DEV_SERVER,
    PROTOCOL,
    Channel,
    LinkError,
    canonical,
    message_text,
    nonce,
    proof,
    session_key,
)
from tinypower.scale.sut import TOKEN_ENV, SutError, load_sut, parse_host_port
from tinypower.scale.sync import SkewSample

SYNC_INTERVAL_S = 5.0
SESSION_NAME = re.compile(r"^\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(_[A-Za-z0-9_.-]{1,64})?(_\d+)?$")


class ClientError(RuntimeError):
    """The director refused a request or cannot be reached; the message says why."""


@dataclass
class SessionOutcome:
    session: str
    folder: str  # on the director's machine
    results: dict[str, Any]
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and power_validity(self.results)[0]


def _plain_error(line: bytes) -> str | None:
    try:
        reply = json.loads(line)
    except ValueError:
        return None
    return str(reply.get("error")) if isinstance(reply, dict) and reply.get("error") else None


class DirectorConnection:
    """One authenticated connection to a director (:mod:`tinypower.scale.link`): the secret
    never travels, every message carries an HMAC and a sequence number."""

    def __init__(self, address: tuple[str, int], token: str, timeout_s: float = 120.0,
                 clock_offset_s: float = 0.0) -> None:
        self.address = address
        self.clock_offset_s = clock_offset_s  # a deliberately wrong SUT clock, to test the check
        self.client_uuid = str(uuid.uuid4())
        self.messages: list[dict[str, Any]] = []  # as power-dev's client.json keeps them
        self.recording = True  # off once client.json (which holds the messages) is sent
        where = f"{address[0]}:{address[1]}"
        try:
            self._sock = socket.create_connection(address, timeout=timeout_s)
        except OSError as exc:
            raise ClientError(f"cannot reach the director at {where} ({exc}): start it "
                              "(python -m tinypower.scale.director) or fix the address") from None
        self._file = self._sock.makefile("rwb")
        try:
            self._handshake(token, where)
        except BaseException:
            self.close()
            raise

    def _handshake(self, token: str, where: str) -> None:
        sent_s = self.clock()
        answer = self._raw(HANDSHAKE_CLIENT.encode() + b"\n", "the handshake")
        text = answer.decode("ascii", errors="replace").strip()
        if text == POWER_DEV_SERVER:
            raise ClientError(
                f"{where} is MLCommons power-dev's server ({POWER_DEV_SERVER}), not a tinypower "
                "director: run it with engine = \"power-dev\" in the SUT file (tinypower's "
                "secret was not sent)")
        if text != HANDSHAKE_SERVER:
            raise ClientError(f"{where} is not a {PROTOCOL} director (it answered "
                              f"{text[:80]!r}): run the same tinypower version on both sides "
                              "(tinypower's secret was not sent)")
        self.messages.append({"cmd": HANDSHAKE_CLIENT, "cmd_time": sent_s,
                              "reply": HANDSHAKE_SERVER, "reply_time": self.clock()})
        client_nonce = nonce()
        hello = {"cmd": "hello", "client_nonce": client_nonce, "client_uuid": self.client_uuid}
        reply = self._plain(hello)
        server_nonce = str(reply.get("server_nonce", ""))
        if not reply.get("ok") or not hmac.compare_digest(
                str(reply.get("proof", "")),
                proof(token, "director", client_nonce, server_nonce)):
            raise ClientError(f"the director at {where} did not prove it knows the shared "
                              f"secret: give both sides the same secret ({TOKEN_ENV} or "
                              "--token-file), or check that this is your director")
        auth = {"cmd": "auth", "proof": proof(token, "client", client_nonce, server_nonce)}
        self._channel = Channel(session_key(token, client_nonce, server_nonce), "c", "d")
        sent_s = self.clock()
        line = self._raw(canonical(auth).encode() + b"\n", "authentication")
        try:
            ok = self._channel.open(line)
        except LinkError:
            error = _plain_error(line)
            raise ClientError(error or "the director refused the authentication") from None
        self.messages.append({"cmd": message_text(auth), "cmd_time": sent_s,
                              "reply": message_text(ok), "reply_time": self.clock()})
        self.server_uuid = str(reply["server_uuid"])
        self.phases: list[str] = list(reply["phases"])

    def _raw(self, data: bytes, what: str) -> bytes:
        try:
            self._file.write(data)
            self._file.flush()
            line = self._file.readline(65536)
        except OSError as exc:
            raise ClientError(f"lost the director during {what}: {exc}") from None
        if not line:
            raise ClientError(f"the director closed the connection during {what}")
        return line

    def _plain(self, body: dict[str, Any]) -> dict[str, Any]:
        sent_s = self.clock()
        line = self._raw(canonical(body).encode() + b"\n", str(body.get("cmd")))
        try:
            reply = json.loads(line)
        except ValueError:
            raise ClientError(f"the director sent no JSON reply to {body.get('cmd')!r}: "
                              f"{line[:80]!r}") from None
        if not reply.get("ok"):
            raise ClientError(str(reply.get("error", "the director refused the request")))
        self.messages.append({"cmd": message_text(body), "cmd_time": sent_s,
                              "reply": message_text(reply), "reply_time": self.clock()})
        return reply

    def clock(self) -> float:
        return time.time() + self.clock_offset_s

    def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        body = {"cmd": cmd, **fields}
        sent_s = self.clock()
        line = self._raw(self._channel.seal(body), repr(cmd))
        try:
            reply = self._channel.open(line)
        except LinkError as exc:
            raise ClientError(f"the director's reply to {cmd!r} failed authentication ({exc}): "
                              "is something between this machine and the director?") from None
        if self.recording:
            self.messages.append({"cmd": message_text(body), "cmd_time": sent_s,
                                  "reply": message_text(reply), "reply_time": self.clock()})
        if not reply.get("ok"):
            raise ClientError(str(reply.get("error", "the director refused the request")))
        return reply

    def exchange(self) -> tuple[str, SkewSample]:
        t0 = self.clock()
        reply = self.request("time")
        t3 = self.clock()
        return reply["exchange"], SkewSample(t0, reply["t1_s"], reply["t2_s"], t3)

    def check_skew(self, where: str, session: str | None = None, count: int = 3) -> SkewSample:
        """A few exchanges; the director judges the one with the shortest round trip."""
        exchanges = [self.exchange() for _ in range(count)]
        exchange, sample = min(exchanges, key=lambda e: e[1].delay_s)
        self.request("skew", exchange=exchange, t0_s=sample.t0_s, t3_s=sample.t3_s,
                     where=where, **({"session": session} if session else {}))
        return sample

    def put(self, session: str, name: str, data: bytes, phase: str | None = None) -> None:
        """Upload a file; the message's HMAC covers its bytes."""
        self.request("put", session=session, name=name, phase=phase,
                     data=base64.b64encode(data).decode())

    def close(self) -> None:
        try:
            self._file.close()
            self._sock.close()
        except OSError:
            pass


def run_session(
    conn: DirectorConnection, workload: wl.Workload, work_dir: Path, label: str = "",
    sync_interval_s: float = SYNC_INTERVAL_S, progress=lambda text: None,
) -> SessionOutcome:
    """One ranging + testing session against a connected director. ``power/client.json`` and
    ``power/client.log`` follow power-dev's client (``lib/summary.py``): its messages, uuids,
    session name, the phases' four checkpoints, and the sha1 of the files it produced."""
    log_lines: list[str] = []

    def say(text: str) -> None:
        log_lines.append(f"client {datetime.now(UTC):%Y-%m-%d %H:%M:%S,%f} [INFO] {text}")
        progress(text)

    record: dict[str, Any] = {
        "version": _version(), "protocol": PROTOCOL, "timezone": 0, "modules": _modules(),
        "sources": _source_hashes(), "uuid": {"client": conn.client_uuid,
                                              "server": conn.server_uuid},
        "phases": {}, "phase_records": {}, "skew": []}
    record["skew"].append({"where": "before new", **conn.check_skew("before new").record()})
    new = conn.request("new", label=label)
    session = str(new["session"])
    if not SESSION_NAME.match(session):  # never a path: a director could name "../../x"
        with contextlib.suppress(ClientError):
            conn.request("abort", session=session, reason="refused the session name")
        raise ClientError(f"the director named the session {session[:80]!r}, which is no "
                          "session name (YYYY-mm-dd_HH-MM-SS[_label]): refused, nothing written")
    record["session_name"] = session
    say(f"Session id is {session!r}")
    local = work_dir / session
    error: str | None = None
    try:
        for phase in conn.phases:
            say(f"{phase}: starting the meters")
            _phase(conn, session, phase, workload, local, sync_interval_s, record, say)
    except (ClientError, wl.WorkloadError) as exc:
        error = str(exc)
        say(f"error: {error}")
        if isinstance(exc, wl.WorkloadError):
            conn.request("abort", session=session, reason=error)
    say("Done runs")
    client_log = "\n".join(log_lines).encode() + b"\n"
    conn.put(session, "client.log", client_log)
    files = {"power/client.log": client_log}
    for phase in record["phase_records"]:
        for name in ("mlperf_log_detail.txt", "mlperf_log_summary.txt"):
            path = local / PHASE_DIRS[phase] / name
            if path.is_file():
                files[f"{PHASE_DIRS[phase]}/{name}"] = path.read_bytes()
    record["results"] = {name: hashlib.sha1(data).hexdigest()
                         for name, data in sorted(files.items())}
    record["messages"] = conn.messages
    conn.recording = False  # client.json holds the messages up to here, as power-dev's does
    record["error"] = error
    conn.put(session, "client.json", dumps_strict(record, indent=2).encode())
    results = conn.request("done", session=session)["results"]
    return SessionOutcome(session, new["folder"], results, error)


def _phase(conn: DirectorConnection, session: str, phase: str, workload: wl.Workload,
           local: Path, sync_interval_s: float, record: dict, progress) -> None:
    checkpoints: list[list[float]] = record["phases"].setdefault(phase, [])

    def checkpoint() -> None:  # power-dev's Summary.phase: wall and monotonic time
        checkpoints.append([conn.clock(), time.monotonic()])

    def skew(where: str) -> None:
        sample = conn.check_skew(f"{phase} {where}", session)
        record["skew"].append({"where": f"{phase} {where}", **sample.record()})

    skew("before start")
    checkpoint()
    conn.request("start", session=session, phase=phase)
    checkpoint()
    skew("after start")
    log_dir = local / PHASE_DIRS[phase]
    output = log_dir / "workload.log"
    progress(f"{phase}: running the workload")
    wall_start_s = time.time()
    proc = wl.start(workload, log_dir, output)
    try:
        while proc.poll() is None:
            try:
                proc.wait(timeout=sync_interval_s)
            except subprocess.TimeoutExpired:  # check the clocks and wait again
                skew("during workload")
    finally:
        if proc.poll() is None:
            proc.kill()
    wall_end_s = time.time()
    try:
        run = wl.finish(workload, proc, log_dir, output, wall_start_s, wall_end_s)
    finally:
        if output.is_file():
            conn.put(session, "workload.log", output.read_bytes(), phase)
    record["phase_records"][phase] = {
        "wall_start_s": wall_start_s, "wall_end_s": wall_end_s, "power_begin": str(run.begin),
        "power_end": str(run.end), "command": workload.command(log_dir)}
    skew("after workload")
    progress(f"{phase}: stopping the meters")
    checkpoint()
    try:
        conn.request("stop", session=session, phase=phase)
        checkpoint()
    finally:  # keep LoadGen's logs with the meters' data, even when a meter failed
        for path in run.files:
            if path.name in ("mlperf_log_detail.txt", "mlperf_log_summary.txt"):
                conn.put(session, path.name, path.read_bytes(), phase)
    skew("after stop")


def _version() -> str:
    from tinypower.results.session import _version as version

    return f"tinypower {version('tinypower')}"


def _modules() -> dict[str, str]:
    """What power-dev's ``modules`` records (its own module files) for tinypower: versions."""
    return {"python": sys.version.split()[0], "tinypower": _version()}


def _source_hashes() -> dict[str, str]:
    from tinypower.scale.director import _source_hashes as hashes

    return hashes()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinypower.scale.client",
                                description="Run a workload under a tinypower director's meters "
                                            "(ranging then testing).")
    p.add_argument("--director", help="HOST:PORT of the director (default: the SUT file's)")
    p.add_argument("--sut", type=Path, help="SUT TOML naming the workload")
    p.add_argument("--model", type=Path, help="a .tflite to run under LoadGen (instead of "
                                              "the SUT file's workload)")
    p.add_argument("--scenario", choices=wl.SCENARIOS, default="SingleStream")
    p.add_argument("--min-duration-s", type=float, default=wl.RULE_MIN_DURATION_S)
    p.add_argument("--target-qps", type=float)
    p.add_argument("--label", default="", help="session label (letters, digits, _ - .)")
    p.add_argument("--work-dir", type=Path, default=Path("runs/power-client"),
                   help="where the workload writes its logs on the SUT")
    p.add_argument("--token-file", type=Path, help=f"shared token file (default ${TOKEN_ENV})")
    p.add_argument("--sync-interval-s", type=float, default=SYNC_INTERVAL_S)
    p.add_argument("--clock-offset-s", type=float, default=0.0,
                   help="pretend the SUT clock is this far off (to test the skew check)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    try:
        sut = load_sut(args.sut) if args.sut else None
        if args.model:
            workload: wl.Workload = wl.LoadGenSpec(args.model, args.scenario,
                                                   args.min_duration_s,
                                                   target_qps=args.target_qps)
        elif sut:
            workload = sut.workload
        else:
            raise SutError("give --sut FILE or --model PATH.tflite")
        address = parse_host_port(args.director) if args.director else (
            sut.connect or sut.listen if sut else None)
        if address is None:
            raise SutError("give --director HOST:PORT")
        token = read_token(args.token_file, sut.token_env if sut else TOKEN_ENV)
        conn = DirectorConnection(address, token, clock_offset_s=args.clock_offset_s)
    except (ClientError, SutError, DirectorError, wl.WorkloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        outcome = run_session(conn, workload, args.work_dir, args.label, args.sync_interval_s,
                              progress=lambda text: print(text, file=sys.stderr, flush=True))
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    if args.json:
        print(dumps_strict({"session": outcome.session, "folder": outcome.folder,
                            "error": outcome.error, "results": outcome.results}))
    else:
        print(summary_text(outcome))
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr)
    return 0 if outcome.ok else 1


def summary_text(outcome: SessionOutcome) -> str:
    r = outcome.results
    t = r.get("testing", {})
    lines = [f"session {outcome.session} ({outcome.folder})"]
    if "value" in t:
        spj = t.get("samples_per_joule")
        lines.append(
            f"{t['scenario']}: {t['value']:.4f} {t['unit']}, average {t['average_power_w']:.3f} W"
            f" over {t['window_s']:.1f} s ({t['samples_in_window']} samples)"
            + (f", {spj:.3f} samples/J" if spj else "")
            + f", {str(t.get('measured_as', '?')).upper()}")
    bound = r.get("alignment_bound_s")
    if bound is not None:
        lines.append(f"alignment bound (clock skew) {bound * 1e3:.2f} ms")
    for c in r.get("checks", []):
        if not check_passed(c):
            lines.append(f"{'invalid' if c['kind'] == 'validity' else 'not compliant'}: "
                         f"{c['name'].replace('_', ' ')}: {c['message']}")
    lines.append("valid" if power_validity(r)[0] else "INVALID")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
