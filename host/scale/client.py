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
import json
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinypower.results.record import check_passed, power_validity
from tinypower.results.session import sha256_bytes
from tinypower.results.strict_json import dumps_strict
from tinypower.scale import workload as wl
from tinypower.scale.director import PHASE_DIRS, PROTOCOL, DirectorError, read_token
from tinypower.scale.sut import TOKEN_ENV, SutError, load_sut, parse_host_port
from tinypower.scale.sync import SkewSample

SYNC_INTERVAL_S = 5.0


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


class DirectorConnection:
    """One JSON-lines connection to a director."""

    def __init__(self, address: tuple[str, int], token: str, timeout_s: float = 120.0,
                 clock_offset_s: float = 0.0) -> None:
        self.address = address
        self.clock_offset_s = clock_offset_s  # a deliberately wrong SUT clock, to test the check
        self.client_uuid = str(uuid.uuid4())
        self.messages: list[dict[str, Any]] = []
        try:
            self._sock = socket.create_connection(address, timeout=timeout_s)
        except OSError as exc:
            raise ClientError(f"cannot reach the director at {address[0]}:{address[1]} "
                              f"({exc}): start it (python -m tinypower.scale.director) or fix "
                              "the address") from None
        self._file = self._sock.makefile("rwb")
        reply = self.request("hello", protocol=PROTOCOL, token=token,
                             client_uuid=self.client_uuid)
        self.server_uuid = reply["server_uuid"]
        self.phases: list[str] = reply["phases"]

    def clock(self) -> float:
        return time.time() + self.clock_offset_s

    def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        sent_s = self.clock()
        try:
            self._file.write(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
            self._file.flush()
            line = self._file.readline()
        except OSError as exc:
            raise ClientError(f"lost the director during {cmd!r}: {exc}") from None
        if not line:
            raise ClientError(f"the director closed the connection during {cmd!r}")
        reply = json.loads(line)
        if cmd != "put":
            self.messages.append({"cmd": cmd, "cmd_time": sent_s, "reply_time": self.clock(),
                                  "ok": reply.get("ok"), "error": reply.get("error")})
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
        self.request("put", session=session, name=name, phase=phase,
                     data=base64.b64encode(data).decode(), sha256=sha256_bytes(data))

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
    """One ranging + testing session against a connected director."""
    record: dict[str, Any] = {"protocol": PROTOCOL, "uuid": {"client": conn.client_uuid,
                              "server": conn.server_uuid}, "phases": {}, "skew": []}
    checks = record["skew"]
    checks.append({"where": "before new", **conn.check_skew("before new").record()})
    new = conn.request("new", label=label)
    session = new["session"]
    record["session_name"] = session
    local = work_dir / session
    error: str | None = None
    try:
        for phase in conn.phases:
            progress(f"{phase}: starting the meters")
            _phase(conn, session, phase, workload, local, sync_interval_s, record, progress)
    except (ClientError, wl.WorkloadError) as exc:
        error = str(exc)
        if isinstance(exc, wl.WorkloadError):
            conn.request("abort", session=session, reason=error)
    record["messages"] = conn.messages
    record["error"] = error
    conn.put(session, "client.json", dumps_strict(record, indent=2).encode())
    results = conn.request("done", session=session)["results"]
    return SessionOutcome(session, new["folder"], results, error)


def _phase(conn: DirectorConnection, session: str, phase: str, workload: wl.Workload,
           local: Path, sync_interval_s: float, record: dict, progress) -> None:
    def skew(where: str) -> None:
        sample = conn.check_skew(f"{phase} {where}", session)
        record["skew"].append({"where": f"{phase} {where}", **sample.record()})

    skew("before start")
    conn.request("start", session=session, phase=phase)
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
    record["phases"][phase] = {"wall_start_s": wall_start_s, "wall_end_s": wall_end_s,
                               "power_begin": str(run.begin), "power_end": str(run.end),
                               "command": workload.command(log_dir)}
    skew("after workload")
    progress(f"{phase}: stopping the meters")
    try:
        conn.request("stop", session=session, phase=phase)
    finally:  # keep LoadGen's logs with the meters' data, even when a meter failed
        for path in run.files:
            if path.name in ("mlperf_log_detail.txt", "mlperf_log_summary.txt"):
                conn.put(session, path.name, path.read_bytes(), phase)
    skew("after stop")


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
                         f"{c['name']}: {c['message']}")
    lines.append("valid" if power_validity(r)[0] else "INVALID")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
