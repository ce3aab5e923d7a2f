"""Attacks on the director/client link, against a director running as its own process on
loopback (and the PTDaemon simulator behind it): a changed upload, a replayed message, a
director naming a path as its session, a flood of connections and oversized lines, a
connection that trickles its handshake, impossible clock offsets, a phase held forever, and a
director killed mid-run. Each is refused, and the director serves the next client."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from link_client import RawClient

from energy_monitor.sim.ptd_sim import PtdSimulator
from tinypower.scale.client import ClientError, DirectorConnection, run_session
from tinypower.scale.director import (
    MAX_CONNECTIONS,
    MAX_PREAUTH_LINE,
    Director,
    DirectorConfig,
    DirectorError,
)
from tinypower.scale.link import HANDSHAKE_CLIENT
from tinypower.scale.sut import MeterConfig
from tinypower.scale.workload import LoadGenSpec

SECRET = "link-test-secret-5b0c"
AUTH_TIMEOUT_S = 1.0


class DirectorProcess:
    def __init__(self, ptd: str, out: Path, *extra: str) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tinypower.scale.director", "--meter", f"ptd={ptd}",
             "--listen", "127.0.0.1:0", "--out", str(out), "--settle-s", "0.1",
             "--auth-timeout-s", str(AUTH_TIMEOUT_S), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, TINYPOWER_TOKEN=SECRET))
        line = self.proc.stdout.readline()
        assert "listening on" in line, self.proc.stderr.read()
        host, port = line.split()[4].rstrip(",").rsplit(":", 1)
        self.address = (host, int(port))

    def raw(self) -> RawClient:
        return RawClient(self.address, SECRET)

    def serves(self) -> bool:
        """A well-behaved client still gets through (the director serves on)."""
        conn = DirectorConnection(self.address, SECRET, timeout_s=10)
        try:
            return bool(conn.request("time")["ok"])
        finally:
            conn.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def simulator():
    with PtdSimulator(lambda t: 50.0, sample_period_s=0.05) as sim:
        yield sim


@pytest.fixture(scope="module")
def director(simulator, tmp_path_factory):
    d = DirectorProcess(simulator.address, tmp_path_factory.mktemp("link") / "sessions")
    yield d
    d.close()


def test_a_changed_upload_is_refused(director):
    raw = director.raw()
    try:
        assert raw.hello()["ok"]
        session = raw.send(cmd="new", label="tamper")["session"]
        summary = b"result_query_count : 1000\n"
        sealed = raw.channel.seal({"cmd": "put", "session": session, "phase": "ranging",
                                   "name": "mlperf_log_summary.txt",
                                   "data": base64.b64encode(summary).decode()})
        # a proxy multiplies the query count by 10 and forwards the line, MAC unchanged
        forged = sealed.replace(base64.b64encode(summary),
                                base64.b64encode(b"result_query_count : 10000\n"))
        assert forged != sealed
        reply = json.loads(raw.line(forged))
        assert "message authentication failed" in reply["body"]["error"]
        assert raw.file.readline() == b""  # the connection is closed
    finally:
        raw.close()
    assert not (director.out / session / "ranging" / "mlperf_log_summary.txt").exists()
    assert director.serves()


def test_replayed_messages_are_refused(director):
    first = director.raw()
    try:
        first.hello()
        assert first.send(cmd="time")["ok"]
        captured = first.sent[-1]
        # the same line again on the same connection: out of sequence
        reply = json.loads(first.line(captured))
        assert "out of sequence" in reply["body"]["error"]
    finally:
        first.close()
    second = director.raw()
    try:  # on another connection: another key
        second.hello()
        reply = json.loads(second.line(captured))
        assert "message authentication failed" in reply["body"]["error"]
    finally:
        second.close()
    third = director.raw()
    try:  # a captured authentication answers an old challenge, not this one
        replayed = first.auth_line
        assert third.line(HANDSHAKE_CLIENT.encode() + b"\n")
        third.line(b'{"cmd":"hello","client_nonce":"' + b"0" * 32 + b'"}\n')
        reply = json.loads(third.line(replayed))
        assert not reply["ok"] and "authentication failed" in reply["error"]
    finally:
        third.close()
    assert director.serves()


def test_a_session_name_that_is_a_path_is_refused_by_the_client(simulator, tmp_path):
    class PathNamingDirector(Director):
        def _cmd_new(self, request, state, received_s):
            reply = super()._cmd_new(request, state, received_s)
            return {**reply, "session": "../../escaped"}

    director = PathNamingDirector(DirectorConfig(
        out_dir=tmp_path / "out", meters=[MeterConfig("ptd", simulator.address, "ptd")],
        token=SECRET, listen=("127.0.0.1", 0)))
    address = director.start()
    work = tmp_path / "a" / "b" / "work"
    conn = DirectorConnection(address, SECRET)
    try:
        with pytest.raises(ClientError, match="which is no session name"):
            run_session(conn, LoadGenSpec(Path("unused.tflite"), "SingleStream", 1.0), work)
    finally:
        conn.close()
        director.close()
    assert not (tmp_path / "a" / "escaped").exists() and not work.exists()


def test_a_flood_of_connections_and_oversized_lines_is_refused(director):
    socks = []
    try:
        for _ in range(MAX_CONNECTIONS):
            s = socket.create_connection(director.address, timeout=5)
            s.sendall(HANDSHAKE_CLIENT.encode() + b"\n")  # each one is being served
            assert s.recv(100)
            socks.append(s)
        extra = socket.create_connection(director.address, timeout=5)
        assert extra.makefile("rb").readline().startswith(b"error: the director has too many")
        extra.close()
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)
    big = socket.create_connection(director.address, timeout=5)
    try:  # one long line before authentication: cut at MAX_PREAUTH_LINE, never buffered
        big.sendall(b"x" * (MAX_PREAUTH_LINE * 4) + b"\n")
        assert big.makefile("rb").read() == b""
    finally:
        big.close()
    assert director.serves()


def test_a_slowly_trickled_handshake_is_cut_at_the_deadline(director):
    s = socket.create_connection(director.address, timeout=10)
    try:
        started = time.monotonic()
        closed = False
        for byte in HANDSHAKE_CLIENT.encode() * 10:  # one byte every 0.2 s, never a full line
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            s.settimeout(0.2)
            try:
                if s.recv(100) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed
        assert time.monotonic() - started < AUTH_TIMEOUT_S + 2
    finally:
        s.close()
    assert director.serves()


@pytest.mark.parametrize("t0, t3, says", [
    ("nan", None, "impossible time exchange"),
    (None, "nan", "impossible time exchange"),
    ("later", "earlier", "impossible time exchange"),  # a negative round trip
])
def test_impossible_clock_offsets_are_refused(director, t0, t3, says):
    raw = director.raw()
    try:
        raw.hello()
        exchange = raw.send(cmd="time")
        times = {"later": exchange["t2_s"] + 0.2, "earlier": exchange["t1_s"] - 0.2,
                 None: exchange["t1_s"], "nan": "nan"}
        reply = raw.send(cmd="skew", exchange=exchange["exchange"], t0_s=times[t0],
                         t3_s=times[t3] if t3 else exchange["t2_s"], where="attack")
        assert not reply["ok"] and says in reply["error"]
    finally:
        raw.close()
    assert director.serves()


def test_a_short_secret_is_refused_beyond_loopback(tmp_path):
    with pytest.raises(DirectorError, match="at least 16 characters"):
        Director(DirectorConfig(out_dir=tmp_path, meters=[MeterConfig("ptd", "x:1", "ptd")],
                                token="short", listen=("0.0.0.0", 4950)))


def test_a_phase_held_past_the_timeout_releases_the_meters(simulator, tmp_path):
    d = DirectorProcess(simulator.address, tmp_path / "sessions", "--phase-timeout-s", "1")
    try:
        raw = d.raw()
        try:
            raw.hello()
            session = raw.send(cmd="new", label="held")["session"]
            assert raw.send(cmd="start", session=session, phase="ranging")["ok"]
            time.sleep(2.0)  # the client never stops
            server = json.loads((d.out / session / "power" / "server.json").read_text())
            assert server["status"] == "invalid"
            assert "phase timeout" in server["reasons"][0]
            assert simulator.commands[-1] != "Go" and "Stop" in simulator.commands[-5:]
            other = raw.send(cmd="new", label="next")["session"]  # the meters are free
            assert raw.send(cmd="start", session=other, phase="ranging")["ok"]
            assert raw.send(cmd="abort", session=other, reason="test over")["ok"]
        finally:
            raw.close()
    finally:
        d.close()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["terminated", "killed"])
def test_a_director_that_dies_mid_run_leaves_no_measurement_running(simulator, tmp_path, how):
    d = DirectorProcess(simulator.address, tmp_path / "sessions")
    raw = d.raw()
    raw.hello()
    session = raw.send(cmd="new", label="dies")["session"]
    assert raw.send(cmd="start", session=session, phase="ranging")["ok"]
    d.proc.send_signal(how)
    d.proc.wait(timeout=10)
    raw.close()
    if how == signal.SIGTERM:  # the director stopped PTDaemon's measurement on its way out
        assert simulator.commands[-1] in ("Stop", "RL,*,*", "RL")
        assert "Stop" in simulator.commands[-4:]
    # a new director's first session starts, whatever the last one left running
    again = DirectorProcess(simulator.address, tmp_path / "again")
    try:
        raw = again.raw()
        try:
            raw.hello()
            session = raw.send(cmd="new", label="after")["session"]
            reply = raw.send(cmd="start", session=session, phase="ranging")
            assert reply["ok"], reply
            cmds = simulator.commands
            gos = [i for i, c in enumerate(cmds) if c.startswith("Go,")]
            assert "Stop" in cmds[gos[-2] + 1:gos[-1]]  # the one left running was stopped
            if how == signal.SIGKILL:  # nobody stopped it: the new director's Go met it
                assert cmds[gos[-2]] == cmds[gos[-1]] == f"Go,1000,0,{session}_ranging"
            assert raw.send(cmd="abort", session=session, reason="test over")["ok"]
        finally:
            raw.close()
    finally:
        again.close()
