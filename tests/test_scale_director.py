"""The director and the client as separate processes over loopback, against the PTDaemon
simulator and each other meter kind's simulator (Yokogawa SCPI, Redfish, an SNMP PDU, IPMI
through a fake ipmitool, a RAPL sysfs tree): computed average power and energy per query
against the simulator's ground truth, and the faults (a meter that stops answering, clock skew,
bad token, escaping paths, a second client while the meters are busy)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from link_client import RawClient

from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.ptd_sim import PtdSimulator
from tinypower.results.power_logs import score_power_folder
from tinypower.scale.client import DirectorConnection, run_session
from tinypower.scale.workload import LoadGenSpec

MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "mlperf-tiny" / \
    "kws_ref_model.tflite"
TOKEN = "test-token-3f9c"
# The simulated load swings +-2 W around 100 W every 5 s: a window misplaced by 1 s would be
# off by up to 2.5%, while ranging and testing stay within the 5% the rules allow.
PERIOD_S = 5.0
AMPLITUDE_W = 2.0
SAMPLE_PERIOD_S = 0.05
AUX_W = 40.0

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason=f"MLPerf Tiny model not at {MODEL}")


def load_w(t: float) -> float:
    return 100.0 + AMPLITUDE_W * math.sin(2 * math.pi * t / PERIOD_S)


def true_mean_w(begin_s: float, end_s: float) -> float:
    """The load's exact mean over [begin, end]: the simulator's ground truth."""
    w = 2 * math.pi / PERIOD_S
    swing = (math.cos(w * end_s) - math.cos(w * begin_s)) / (w * (end_s - begin_s))
    return 100.0 - AMPLITUDE_W * swing


def sut_toml(tmp: Path, address: str, timeout_s: float = 2.0, second: str = "") -> Path:
    """One PTD meter (and a second one, ``aux``, when ``second`` is its address)."""
    meter = """
[[meters]]
kind = "ptd"
name = "{name}"
address = "{address}"
measured_as = "simulated"
poll_interval_s = 0.2
timeout_s = {timeout_s}
"""
    meters = meter.format(name="ptd", address=address, timeout_s=timeout_s)
    if second:
        meters += meter.format(name="aux", address=second, timeout_s=timeout_s)
    path = tmp / "sut.toml"
    path.write_text(f'name = "loopback"\n[workload]\nmodel = "{MODEL}"\n{meters}'
                    "[ranging]\nsettle_s = 0.2\n")
    return path


class DirectorProcess:
    def __init__(self, sut: Path, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tinypower.scale.director", "--sut", str(sut), "--listen",
             "127.0.0.1:0", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, TINYPOWER_TOKEN=TOKEN),
        )
        line = self.proc.stdout.readline()
        assert "listening on" in line, self.proc.stderr.read()
        self.address = line.split()[4].rstrip(",")

    def client(self, tmp: Path, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tinypower.scale.client", "--director", self.address,
             "--work-dir", str(tmp / "client"), "--sync-interval-s", "1", "--json", *args],
            capture_output=True, text=True, timeout=120,
            env=dict(os.environ, TINYPOWER_TOKEN=token),
        )

    def raw(self) -> RawClient:
        host, port = self.address.rsplit(":", 1)
        return RawClient((host, int(port)), TOKEN)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def simulator():
    with PtdSimulator(load_w, sample_period_s=SAMPLE_PERIOD_S) as sim:
        yield sim


@pytest.fixture(scope="module")
def director(simulator, tmp_path_factory):
    """A director reading two meters: the swinging load, and a steady 40 W one (``aux``)."""
    tmp = tmp_path_factory.mktemp("director")
    with PtdSimulator(lambda t: AUX_W, sample_period_s=SAMPLE_PERIOD_S) as aux:
        d = DirectorProcess(sut_toml(tmp, simulator.address, second=aux.address),
                            tmp / "sessions")
        yield d
        d.close()


def _utc_s(text: str) -> float:
    return datetime.strptime(text, "%m-%d-%Y %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def _run(director, tmp_path, scenario: str, min_duration_s: float) -> tuple[dict, Path]:
    done = director.client(tmp_path, "--model", str(MODEL), "--scenario", scenario,
                           "--min-duration-s", str(min_duration_s), "--label", scenario.lower())
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return out["results"], Path(out["folder"])


def test_singlestream_energy_per_query_matches_ground_truth(director, simulator, tmp_path):
    results, folder = _run(director, tmp_path, "SingleStream", 2.0)
    testing = results["testing"]
    truth_w = true_mean_w(_utc_s(testing["power_begin"]), _utc_s(testing["power_end"]))
    assert testing["average_power_w"] == pytest.approx(truth_w, rel=0.005)
    truth_mj = truth_w * testing["window_s"] / testing["query_count"] * 1e3
    assert testing["unit"] == "mJ/query"
    assert testing["value"] == pytest.approx(truth_mj, rel=0.005)
    assert testing["samples_per_joule"] == pytest.approx(1e3 / testing["value"])
    assert testing["energy_j"] == pytest.approx(truth_w * testing["window_s"], rel=0.005)
    assert results["valid"] and not results["compliant"]  # a 2 s simulated run
    assert testing["samples_in_window"] >= 30
    assert results["measured_as"] == "simulated"
    failed = {c["name"] for c in results["checks"] if not c["ok"]}
    assert failed == {"run_length", "sample_rate", "measured_as", "submission_engine"}
    assert 0 < results["alignment_bound_s"] < 0.4

    # A second meter measured the same run; its own log and metrics sit beside the first's.
    aux = results["phases"]["testing"]["aux"]
    assert aux["average_power_w"] == pytest.approx(AUX_W)
    assert aux["window_s"] == testing["window_s"]
    assert (folder / "run_1" / "spl_aux.txt").is_file()

    # The published-results scorer reads our folder exactly as it reads MLPerf's.
    published = score_power_folder(folder)
    assert published["testing"].value == pytest.approx(testing["value"], rel=1e-12)
    assert published["ranging_ok"]

    # Ranging at auto ranges (the current range sent twice, as power-dev's server does),
    # testing at the ranging maxima (current x 1.1), then the analyzer's initial ranges (RR:
    # auto) again.
    sr = [c for c in simulator.commands if c.startswith("SR,")]
    raw = (folder / "ranging" / "meters" / "ptd" / "spl.txt").read_text().splitlines()
    max_amps = max(float(line.split(",")[7]) for line in raw)
    assert sr[-7:] == ["SR,V,Auto", "SR,A,Auto", "SR,A,Auto", "SR,V,230.000000",
                       f"SR,A,{max_amps * 1.1:.6f}", "SR,V,Auto", "SR,A,Auto"]

    server = json.loads((folder / "power" / "server.json").read_text())
    assert server["status"] == "complete"
    assert {"ranging", "testing"} <= set(server["phases"])
    assert "tinypower/scale/director.py" in server["sources"]
    for name, digest in server["results"].items():
        assert hashlib.sha1((folder / name).read_bytes()).hexdigest() == digest  # power-dev's
    assert {"run_1/spl.txt", "run_1/mlperf_log_detail.txt", "ranging/spl.txt",
            "power/client.json", "run_1/ptd_out.txt"} <= set(server["results"])
    wheres = {s["where"] for s in server["skew"]}
    assert {"before new", "testing before start", "testing during workload",
            "testing after workload", "testing after stop"} <= wheres


def test_offline_average_power_matches_ground_truth(director, tmp_path):
    results, _ = _run(director, tmp_path, "Offline", 1.0)
    testing = results["testing"]
    truth_w = true_mean_w(_utc_s(testing["power_begin"]), _utc_s(testing["power_end"]))
    assert testing["unit"] == "W"
    assert testing["value"] == pytest.approx(truth_w, rel=0.005)
    assert testing["samples_per_joule"] == pytest.approx(
        testing["throughput_samples_per_s"] / testing["value"])


def test_invalid_token_is_refused(director, tmp_path):
    done = director.client(tmp_path, "--model", str(MODEL), token="wrong")
    assert done.returncode == 2
    assert "did not prove it knows the shared secret" in done.stderr
    raw = director.raw()  # a client that does not know the secret cannot authenticate
    try:
        reply = raw.hello(secret="wrong")
        assert not reply["ok"] and "authentication failed" in reply["error"]
        assert raw.file.readline() == b""  # and is disconnected
    finally:
        raw.close()


def test_escaping_session_names_and_files_are_refused(director, tmp_path):
    done = director.client(tmp_path, "--model", str(MODEL), "--label", "../../escaped")
    assert done.returncode == 2 and "refused" in done.stderr
    assert not (director.out.parent / "escaped").exists()
    raw = director.raw()
    try:  # a request before the handshake gets one line and the door
        answer = raw.line(b'{"cmd": "new", "label": "x"}\n').decode()
        assert answer.startswith("error: not a tinypower-power/2 client")
        assert raw.file.readline() == b""
    finally:
        raw.close()
    raw = director.raw()
    try:
        assert raw.hello()["ok"]
        assert not raw.send(cmd="this is not a command")["ok"]  # an error, not a hangup
        session = raw.send(cmd="new", label="paths")["session"]
        for bad in ("../../sut.toml", "/etc/passwd", "power/../../x"):
            reply = raw.send(cmd="get", session=session, path=bad)
            assert not reply["ok"] and "outside session" in reply["error"], bad
        data = base64.b64encode(b"x").decode()
        reply = raw.send(cmd="put", session=session, phase="ranging", name="../../evil.txt",
                         data=data)
        assert not reply["ok"] and "refused upload" in reply["error"]
        assert raw.send(cmd="get", session=session, path="power/server.json")["ok"]
    finally:
        raw.close()


def test_skew_over_the_limit_is_refused_and_marks_the_run_invalid(director, tmp_path):
    done = director.client(tmp_path, "--model", str(MODEL), "--clock-offset-s", "1.5")
    assert done.returncode == 2
    assert "clock skew before new" in done.stderr and "above the 400 ms limit" in done.stderr

    # Mid-run: the director stops the meters, keeps their samples and marks the run invalid.
    raw = director.raw()
    try:
        raw.hello()
        session = raw.send(cmd="new", label="skewed")["session"]
        assert raw.send(cmd="start", session=session, phase="ranging")["ok"]
        time.sleep(0.5)  # the analyzer logs a few samples
        exchange = raw.send(cmd="time")
        reply = raw.send(cmd="skew", session=session, exchange=exchange["exchange"],
                         t0_s=exchange["t1_s"] - 0.9, t3_s=exchange["t2_s"] - 0.9,
                         where="ranging during workload")
        assert not reply["ok"] and "above the 400 ms limit" in reply["error"]
        results = raw.send(cmd="done", session=session)["results"]
    finally:
        raw.close()
    assert not results["valid"]
    folder = director.out / session
    server = json.loads((folder / "power" / "server.json").read_text())
    assert server["status"] == "invalid" and "clock skew" in server["reasons"][0]
    assert (folder / "ranging" / "spl.txt").read_text().startswith("Time,")


@pytest.mark.parametrize("fault, says", [
    ({"stall_after": int(1.0 / SAMPLE_PERIOD_S)}, "did not answer"),  # silent 1 s in
    ({"garble_at": int(1.0 / SAMPLE_PERIOD_S)}, "malformed PTDaemon reply"),  # 1 s in
], ids=["stops-answering", "malformed-reply"])
def test_a_meter_that_fails_mid_run_fails_the_run_and_keeps_its_data(tmp_path, fault, says):
    faults = SimFaults(**fault)
    with PtdSimulator(load_w, sample_period_s=SAMPLE_PERIOD_S, faults=faults) as sim:
        director = DirectorProcess(sut_toml(tmp_path, sim.address, timeout_s=0.5),
                                   tmp_path / "sessions")
        try:
            done = director.client(tmp_path, "--model", str(MODEL), "--min-duration-s", "2")
            assert done.returncode == 1, done.stderr
            out = json.loads(done.stdout)
            assert says in out["error"] and "run marked invalid" in out["error"]
            assert not out["results"]["valid"]
            folder = Path(out["folder"])
            server = json.loads((folder / "power" / "server.json").read_text())
            assert server["status"] == "invalid"
            kept = (folder / "ranging" / "spl.txt").read_text().splitlines()
            assert len(kept) >= 10  # the samples read before the analyzer went silent
            assert (folder / "ranging" / "mlperf_log_detail.txt").is_file()
            raw = director.raw()  # and the director still serves other clients
            try:
                assert raw.hello()["ok"] and raw.send(cmd="time")["ok"]
            finally:
                raw.close()
        finally:
            director.close()


# --- every meter kind with a simulator, and two clients at once --------------------------------

BMC_USER, BMC_PASSWORD = "tinypower", "bmc-secret"


def server_load_w(t: float) -> float:
    """A server-sized load (400 +- 8 W): whole-watt meters (PDUs, BMCs) round off 0.1% at most."""
    return 4 * load_w(t)


@contextlib.contextmanager
def meter_simulator(kind: str, tmp: Path, monkeypatch):
    """The simulator of ``kind`` following :func:`server_load_w`, and the SUT file's meter
    entry that points the real driver at it (and its ``[ranging]`` keys)."""
    common = {"kind": kind, "poll_interval_s": 0.1, "measured_as": "simulated"}
    if kind == "yokogawa":
        from energy_monitor.sim.yokogawa_sim import YokogawaSimulator

        with YokogawaSimulator(server_load_w) as sim:
            # Auto ranging, then testing at the ranging maxima (230 V, 2.02 A x 1.1): the driver
            # rounds them up to the WT310E's own ranges, which it refuses otherwise (-224).
            yield {**common, "address": sim.resource, "update_rate": "100MS"}, {}
    elif kind == "redfish":
        from energy_monitor.sim.redfish_sim import RedfishSimulator

        with RedfishSimulator(server_load_w, resources=("environment_metrics",)) as sim:
            yield {**common, "address": sim.url}, {}
    elif kind == "snmp_pdu":
        from energy_monitor.sim.snmp_pdu_sim import SnmpPduSimulator

        with SnmpPduSimulator(server_load_w, vendor="raritan",
                              community="lab-c0mmunity") as sim:
            yield {**common, "address": sim.address, "vendor": "raritan", "outlet": 7,
                   "community": "lab-c0mmunity", "timeout_s": 1.0}, {}
    elif kind == "ipmi":
        from energy_monitor.sim.ipmi_sim import FakeIpmitool

        # The director's ipmitool is the fake (first on its PATH), with the same load.
        fake = FakeIpmitool(tmp / "bin", base_w=400.0, swing_w=4 * AMPLITUDE_W,
                            period_s=PERIOD_S, t0=0.0, username=BMC_USER,
                            password=BMC_PASSWORD)
        assert fake.power_w(1234.5) == pytest.approx(server_load_w(1234.5))
        monkeypatch.setenv("PATH", fake.path_env())
        yield {**common, "address": "10.0.0.6", "username": BMC_USER,
               "password": BMC_PASSWORD}, {}
    elif kind == "rapl":
        from energy_monitor.sim.rapl_sim import FakePowercap

        # A powercap tree whose package counter, like sysfs, is computed when it is read: a
        # FIFO that a thread answers with the load's exact energy at that moment.
        powercap = FakePowercap(tmp / "powercap")
        powercap.add_zone("0", "package-0")
        counter = powercap.zones["0"].path / "energy_uj"
        counter.unlink()
        os.mkfifo(counter)
        began_s = time.time()
        running = threading.Event()
        running.set()

        def serve() -> None:
            while running.is_set():
                with open(counter, "wb", buffering=0) as fifo:  # waits for a reader
                    now = time.time()
                    joules = 4 * true_mean_w(began_s, now) * (now - began_s)
                    with contextlib.suppress(BrokenPipeError):
                        fifo.write(b"%d\n" % int(joules * 1e6))
                time.sleep(0.02)  # let that reader see the end and close (it polls at 10 Hz)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield {**common, "address": str(powercap.root)}, {}
        finally:
            running.clear()
            with open(os.open(counter, os.O_RDONLY | os.O_NONBLOCK), "rb"):
                pass  # release the server's last wait for a reader
            thread.join(timeout=5)
    else:
        raise AssertionError(kind)


def meter_sut_toml(tmp: Path, meter: dict, ranging: dict) -> Path:
    def keys(table: dict) -> str:
        return "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())

    path = tmp / "sut.toml"
    path.write_text(f'name = "loopback"\n[workload]\nmodel = "{MODEL}"\n[[meters]]\n'
                    f"{keys(meter)}[ranging]\nsettle_s = 0.2\n{keys(ranging)}")
    return path


@pytest.mark.parametrize("kind, scenario", [
    ("yokogawa", "SingleStream"), ("redfish", "Offline"), ("snmp_pdu", "SingleStream"),
    ("ipmi", "Offline"), ("rapl", "SingleStream"),
])
def test_each_meter_kind_measures_the_ground_truth(kind, scenario, tmp_path, monkeypatch):
    with meter_simulator(kind, tmp_path, monkeypatch) as (meter, ranging):
        director = DirectorProcess(meter_sut_toml(tmp_path, meter, ranging),
                                   tmp_path / "sessions")
        try:
            results, folder = _run(director, tmp_path, scenario, 1.0)
        finally:
            director.close()
    testing = results["testing"]
    truth_w = 4 * true_mean_w(_utc_s(testing["power_begin"]), _utc_s(testing["power_end"]))
    assert testing["average_power_w"] == pytest.approx(truth_w, rel=0.005)
    assert testing["energy_j"] == pytest.approx(truth_w * testing["window_s"], rel=0.005)
    if scenario == "SingleStream":
        assert testing["unit"] == "mJ/query"
        truth_mj = truth_w * testing["window_s"] / testing["query_count"] * 1e3
        assert testing["value"] == pytest.approx(truth_mj, rel=0.005)
    else:
        assert testing["unit"] == "W" and testing["value"] == pytest.approx(truth_w, rel=0.005)
    assert results["valid"] and results["measured_as"] == "simulated"
    assert testing["samples_in_window"] >= 5
    phases = set(results["phases"])
    assert phases == ({"testing"} if ranging.get("mode") == "fixed" else {"ranging", "testing"})
    server = json.loads((folder / "power" / "server.json").read_text())
    assert server["status"] == "complete"
    assert server["phase_records"]["testing"]["meters"][kind]["identity"]["kind"] == kind
    assert (folder / "run_1" / "meters" / kind).is_dir()
    secret = {"snmp_pdu": "lab-c0mmunity", "ipmi": BMC_PASSWORD}.get(kind)
    if secret:
        assert secret not in (folder / "power" / "server.json").read_text()


def test_a_second_client_is_refused_while_the_first_measures(director, tmp_path):
    first = subprocess.Popen(
        [sys.executable, "-m", "tinypower.scale.client", "--director", director.address,
         "--work-dir", str(tmp_path / "first"), "--model", str(MODEL), "--min-duration-s", "2",
         "--label", "first", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TINYPOWER_TOKEN=TOKEN),
    )
    try:
        deadline = time.monotonic() + 60
        while not list(director.out.glob("*_first/ranging")):  # the first is measuring
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.02)
        host, port = director.address.rsplit(":", 1)
        conn = DirectorConnection((host, int(port)), TOKEN)
        try:
            second = run_session(conn, LoadGenSpec(MODEL, "SingleStream", 1.0),
                                 tmp_path / "second", "second")
        finally:
            conn.close()
        stdout, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert "the meters are measuring session" in second.error and "_first" in second.error
    assert not second.ok and not second.results["valid"]
    assert first.returncode == 0, stderr
    assert json.loads(stdout)["results"]["valid"]
    raw = director.raw()  # and the meters are free for the next client
    try:
        assert raw.hello()["ok"]
        session = raw.send(cmd="new", label="after")["session"]
        assert raw.send(cmd="start", session=session, phase="ranging")["ok"]
        assert raw.send(cmd="abort", session=session, reason="test over")["ok"]
    finally:
        raw.close()
