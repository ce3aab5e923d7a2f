"""The real Otii driver against the simulated Otii 3 server over loopback TCP: login and licence,
device discovery, error replies, exact energy and edges, each fault, and a run through the
runner scored against the virtual lab's ground truth."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from energy_monitor.meter import MeterError
from energy_monitor.otii import Otii, parse_address
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.load import LoadTimeline, VirtualClock
from energy_monitor.sim.otii_sim import OtiiSimulator
from energy_monitor.trace import Drop, SampleDropError, integrate, window_from_events

VOLTAGE_V = 1.8
ACTIVE_A = 0.0095
IDLE_A = 0.0012
USER, PASSWORD = "sim-user", "sim-pass"


class Bench:
    """A timeline, the simulated Otii server and the real driver, wired on loopback TCP."""

    def __init__(
        self, faults: SimFaults | None = None, *, licensed: bool = True,
        stall_timeout_s: float = 3.0,
    ) -> None:
        self.clock = VirtualClock()
        self.timeline = LoadTimeline(self.clock, IDLE_A)
        self.sim = OtiiSimulator(self.timeline, faults, username=USER, password=PASSWORD,
                                 licensed=licensed)
        self.url = self.sim.start()
        self.transcript: list[tuple[str, str]] = []
        self.meter = self.connect(stall_timeout_s=stall_timeout_s)

    def connect(self, **kw) -> Otii:
        kw.setdefault("username", USER)
        kw.setdefault("password", PASSWORD)
        return Otii(self.url, measured_as="simulated",
                    on_command=lambda d, t: self.transcript.append((d, t)), **kw)

    def burst(self, seconds: float) -> tuple[float, float]:
        """A DUT window: a 100 us timestamp pulse, ``seconds`` of inference, another pulse."""
        with self.timeline.lock:
            t = self.clock.now()
            self.timeline.set_current(t, ACTIVE_A)
            for at in (t + 0.0005, t + 0.0005 + seconds):
                self.timeline.add_edge(at, "fall")
                self.timeline.add_edge(at + 0.0001, "rise")
            self.timeline.set_current(t + 0.001 + seconds, IDLE_A)
            self.clock.advance(seconds + 0.002)
        return t + 0.0005, t + 0.0005 + seconds

    def close(self) -> None:
        self.meter.close()
        self.sim.close()


@pytest.fixture
def bench() -> Iterator[Bench]:
    b = Bench()
    yield b
    b.close()


def test_address_forms() -> None:
    assert parse_address("tcp://127.0.0.1:4000") == ("127.0.0.1", 4000)
    assert parse_address("10.0.0.7:1906") == ("10.0.0.7", 1906)
    assert parse_address("otii-host") == ("otii-host", 1905)
    with pytest.raises(MeterError, match="tcp://HOST:PORT"):
        parse_address("tcp://127.0.0.1:port")


def test_login_reserves_a_licence_and_close_gives_both_back(bench: Bench) -> None:
    assert bench.sim.logged_in
    automation = next(lic for lic in bench.sim.licences if lic["type"] == "Automation")
    assert automation["reserved_to"] == USER
    ident = bench.meter.identify()
    assert (ident.kind, ident.serial, ident.measured_as) == ("otii", "Arc-SIM-0001", "simulated")
    assert ident.model == "Otii Arc (hw SIM-1.0, Otii 3.5.5)"
    assert ident.firmware == "1.0.0-tinypowersim"
    sent = [t for d, t in bench.transcript if d == ">"]
    assert any('"password": "***"' in t for t in sent)
    assert not any(PASSWORD in t for _, t in bench.transcript)
    bench.meter.close()
    assert not bench.sim.logged_in and automation["reserved_to"] == ""


def test_credentials_come_from_the_environment(monkeypatch) -> None:
    b = Bench()
    try:
        b.meter.close()
        monkeypatch.setenv("OTII_USERNAME", USER)
        monkeypatch.setenv("OTII_PASSWORD", PASSWORD)
        b.meter = b.connect(username=None, password=None)
        assert b.sim.logged_in
        b.meter.close()
        monkeypatch.delenv("OTII_PASSWORD")
        with pytest.raises(MeterError, match="not logged in.*OTII_USERNAME and OTII_PASSWORD"):
            b.connect(username=None, password=None)
    finally:
        b.close()


def test_a_server_already_logged_in_needs_no_credentials_and_stays_logged_in(monkeypatch) -> None:
    monkeypatch.delenv("OTII_USERNAME", raising=False)
    monkeypatch.delenv("OTII_PASSWORD", raising=False)
    b = Bench()
    try:
        b.meter.close()
        b.sim.logged_in = True  # someone logged in in the Otii application
        b.meter = b.connect(username=None, password=None)
        b.meter.close()
        assert b.sim.logged_in  # we did not log in, so we do not log out
    finally:
        b.close()


def test_wrong_password_and_missing_licence_are_clear_refusals() -> None:
    b = Bench()
    try:
        b.meter.close()
        with pytest.raises(MeterError, match="login .* failed.*wrong username or password"):
            b.connect(password="nope")
    finally:
        b.close()
    with pytest.raises(MeterError, match="no free Otii Automation licence.*licences: Pro"):
        Bench(licensed=False)


def test_device_is_found_by_name_or_id_and_a_wrong_name_lists_the_devices(bench: Bench) -> None:
    for name in ("Arc-SIM-0001", "arc-sim-1"):
        meter = bench.connect(device=name)
        assert meter.device["device_id"] == "arc-sim-1"
        meter.close()
    listed = r"no Otii Arc/Ace named 'nope'.*Arc-SIM-0001 \(arc-sim-1\)"
    with pytest.raises(MeterError, match=listed):
        bench.connect(device="nope")


def test_error_replies_name_the_cause_and_the_fix(bench: Bench) -> None:
    m = bench.meter
    with pytest.raises(MeterError, match="refused otii_frobnicate: Invalid command.*update"):
        m.request("otii_frobnicate")
    with pytest.raises(MeterError, match="Missing key in request.*'device_id'"):
        m.request("arc_set_main", {"enable": True})
    with pytest.raises(MeterError, match="Device not connected.*'arc-9'.*USB cable"):
        m.request("arc_get_version", {"device_id": "arc-9"})
    with pytest.raises(MeterError, match="Command failure.*main voltage 6.*range"):
        m.configure(voltage_v=6.0, sample_rate_hz=1000)
    with pytest.raises(MeterError, match="cannot record main current at 3000 Hz"):
        m.configure(voltage_v=VOLTAGE_V, sample_rate_hz=3000)
    m.request("otii_return_license", {"license_id": 1002})
    with pytest.raises(MeterError, match="No license.*Automation licence"):
        m.request("otii_get_devices")
    m.request("otii_logout")
    with pytest.raises(MeterError, match="Not logged in.*OTII_USERNAME"):
        m.request("otii_get_devices")
    assert ("<", next(t for d, t in bench.transcript if "Not logged in" in t)) in bench.transcript


def test_another_protocol_major_is_used_with_a_warning_in_the_identity() -> None:
    sim = OtiiSimulator(LoadTimeline(VirtualClock(), IDLE_A), protocol_version="1.2")
    notes: list[tuple[str, str]] = []
    try:
        meter = Otii(sim.start(), username=USER, password=PASSWORD, measured_as="simulated",
                     on_command=lambda d, t: notes.append((d, t)))
        try:
            identity = meter.identify()
            meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=1000)
        finally:
            meter.close()
    finally:
        sim.close()
    (warning,) = identity.warnings
    assert "speaks protocol 1.2" in warning and "checked against 0.x" in warning
    assert ("#", warning) in notes and sim.main_on


def test_a_known_protocol_has_no_warning(bench: Bench) -> None:
    assert bench.meter.identify().warnings == ()


class FakeServer:
    """A loopback peer that greets with ``greeting`` and answers one request with a reply for
    another trans_id: what the driver must refuse."""

    def __init__(self, greeting: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, args=(greeting,), daemon=True)
        self.thread.start()

    def _serve(self, greeting: bytes) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.sendall(greeting)
            conn.settimeout(2)
            if conn.recv(65536):
                reply = {"type": "response", "cmd": "otii_is_logged_in", "trans_id": "999",
                         "data": {"logged_in": True}}
                conn.sendall(json.dumps(reply).encode() + b"\r\n")
                conn.recv(65536)

    def close(self) -> None:
        self.thread.join(timeout=3)
        self.listener.close()


GOOD = b'{"type":"information","info":"connected","data":{"protocol_version":"0.1"}}\r\n'


@pytest.mark.parametrize(("greeting", "error"), [
    (b"HTTP/1.1 400 Bad Request\r\n", "malformed JSON from the Otii server"),
    (b'{"type":"information","data":{}}\r\n', "did not greet as an Otii server"),
    (GOOD, r"answered trans_id '999' to request 1 \(otii_is_logged_in\)"),
])
def test_bad_greetings_and_mismatched_replies_are_refused(greeting: bytes, error: str) -> None:
    server = FakeServer(greeting)
    try:
        with pytest.raises(MeterError, match=error):
            Otii(server.url, timeout_s=1)
    finally:
        server.close()


def test_no_server_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(MeterError, match="cannot reach the Otii server.*enable its TCP server"):
        Otii(f"tcp://127.0.0.1:{port}", timeout_s=1)


def test_bursts_give_exact_energy_and_edges_and_the_raw_stream(bench: Bench, tmp_path) -> None:
    bench.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=1000)
    assert bench.sim.main_on and bench.sim.mc_rate_hz == 1000
    assert bench.sim.main_voltage_v == VOLTAGE_V and {"mc", "i1"} <= bench.sim.enabled
    bench.meter.start(tmp_path)
    truth = []
    for k in range(3):
        time.sleep(0.01)
        t0, t1 = bench.burst(3.0)
        truth.append(bench.timeline.charge_between(t0, t1) * VOLTAGE_V)
        bench.meter.wait_for_events(2 * (k + 1), 5)
    trace = bench.meter.stop()
    # Each 100 us pulse lies inside one 1 ms sample, and is still seen: one falling edge each.
    assert len(trace.events) == 6 and {e.polarity for e in trace.events} == {"fall"}
    assert not trace.drops and len(trace) >= 9000
    for k in range(3):
        w = window_from_events(trace.events[2 * k : 2 * k + 2], trace, 10)
        assert integrate(trace, w).energy_j == pytest.approx(truth[k], rel=1e-3)
        assert w.duration_s == pytest.approx(3.0, abs=0.001)
        # The Otii's own statistics over the same samples agree with the timing core.
        stats = bench.meter.request("recording_get_channel_statistics", {
            "device_id": "arc-sim-1", "recording_id": 1, "channel": "mc",
            "from": w.start_index / 1000, "to": w.end_index / 1000,
        })
        assert stats["energy"] == pytest.approx(integrate(trace, w).energy_j, rel=1e-9)
    samples = np.fromfile(tmp_path / "otii-samples.f64", dtype="<f8")
    assert np.array_equal(samples, trace.current_a)
    assert trace.current_a.max() == pytest.approx(ACTIVE_A) and trace.voltage_v[0] == VOLTAGE_V
    raw = [json.loads(line) for line in (tmp_path / "otii-raw.jsonl").read_text().splitlines()]
    assert any(r["type"] == "progress" for r in raw)  # skipped when read, kept in the file
    replies = [r for r in raw if r["type"] == "response"]
    analog = [r["data"] for r in replies if r["data"].get("data_type") == "analog"]
    assert sum(len(d["values"]) for d in analog) == len(trace)
    # The polls are in the raw file, not in the transcript.
    assert not any("recording_get_channel_data" in t for _, t in bench.transcript)


def measure_with(faults: SimFaults, stall_timeout_s: float = 3.0, wait_s: float = 1.0):
    b = Bench(faults, stall_timeout_s=stall_timeout_s)
    try:
        b.meter.configure(voltage_v=VOLTAGE_V, sample_rate_hz=1000)
        b.meter.start()
        time.sleep(0.02)
        b.burst(5.0)
        try:
            b.meter.wait_for_events(2, wait_s)
            return b.meter.stop(), None
        except MeterError as exc:
            return b.meter.trace(), exc
    finally:
        b.close()


def test_skipped_samples_are_a_drop_in_place_and_the_window_is_refused() -> None:
    trace, error = measure_with(SimFaults(drop_at=2500, drop_count=7))
    assert error is None
    assert trace.drops == [Drop(index=2507, missing=7)]
    assert np.isnan(trace.current_a[2500:2507]).all() and not np.isnan(trace.current_a[2507:]).any()
    w = window_from_events(trace.events[-2:], trace, 10)
    assert w.duration_s == pytest.approx(5.0, abs=0.001)  # later samples kept their time
    with pytest.raises(SampleDropError, match="7 samples lost"):
        integrate(trace, w)


def test_a_recording_short_of_its_duration_is_a_drop_at_the_end() -> None:
    trace, error = measure_with(SimFaults(drop_at=2000, drop_count=10**9))
    assert error is None and len(trace) > 5000
    assert trace.drops == [Drop(index=len(trace), missing=len(trace) - 2000)]


def test_garbled_reply_is_a_clear_error_and_keeps_data() -> None:
    trace, error = measure_with(SimFaults(garble_at=1500))
    assert error is not None and "malformed JSON" in str(error) and "1500 samples" in str(error)
    assert len(trace) == 1500


def test_closed_connection_is_a_clear_error_and_keeps_data() -> None:
    trace, error = measure_with(SimFaults(unplug_after=1200))
    assert error is not None and "lost the Otii server" in str(error)
    assert "Otii application closed" in str(error)
    assert len(trace) == 1200


def test_stalled_recording_is_a_clear_error_and_keeps_data() -> None:
    trace, error = measure_with(SimFaults(stall_after=800), stall_timeout_s=0.3)
    assert error is not None and "stopped advancing" in str(error) and "800 samples" in str(error)
    assert len(trace) == 800


def test_a_lost_pulse_gives_one_edge_fewer() -> None:
    trace, error = measure_with(SimFaults(lose_event=0), wait_s=0.2)
    assert error is None and len(trace.events) == 1
    assert trace.events[0].index >= 5000  # the second pulse, at the end of the burst


def test_energy_mode_through_the_runner_scores_ground_truth(tmp_path: Path) -> None:
    from tinypower.boards import load_board
    from tinypower.models import resolve_model
    from tinypower.runner import RunRequest, run
    from tinypower.suites.benchmarks import get_suite
    from tinypower.suites.datasets import synthetic_inputs

    board, suite = load_board("sim-m4"), get_suite("kws01")
    model = resolve_model(suite, "synthetic")
    outcome = run(RunRequest(
        board=board, suite=suite, model=model, dataset=synthetic_inputs(suite), mode="energy",
        runs_dir=tmp_path, monitor="otii",
    ))
    assert outcome.ok, outcome.error
    latency_s = board.cycle_model.latency_s(model.info.macs, board.clock_hz, model.data)
    power_w = board.monitor_voltage_v * board.energy_model.active_current_a
    n = outcome.result.extras["iterations"]
    truth_uj = power_w * (n * latency_s + board.energy_model.timestamp_hold_s) * 1e6
    assert len(outcome.result.windows) == 5
    for w in outcome.result.windows:
        assert w["energy_uj"] == pytest.approx(truth_uj, rel=1e-3)
        assert w["alignment_bound_s"] == pytest.approx(1e-3)  # one sample at 1 kS/s
    session = json.loads((outcome.session.folder / "session.json").read_text())
    assert session["meter"]["kind"] == "otii" and session["meter"]["measured_as"] == "simulated"
    assert (outcome.session.folder / "otii-raw.jsonl").stat().st_size > 0
