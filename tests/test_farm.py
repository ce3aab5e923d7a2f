"""The board farm on loopback, with real processes: ``labgrid-coordinator``, one
``labgrid-exporter`` per bench sharing the virtual bench's ptys through ``ser2net``, and
``tinypower measure --place`` acquiring the place, measuring through RFC 2217 and releasing it.

Every socket is on 127.0.0.1: the coordinator listens there, the exporters publish
127.0.0.1 as their host, and ser2net (which labgrid starts listening on every address) is
reached through a shim on PATH that binds its accepter to 127.0.0.1. The commands are the
ones docs/board-farm.md gives (a test below checks that the page still gives them).

Skipped without labgrid or ser2net on a developer's machine; failed when CI is set (.ci/run
installs both).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinypower.boards import load_board
from tinypower.cli import main
from tinypower.farm.place import PlaceError, _serial_url, acquired_place
from tinypower.models import resolve_model
from tinypower.results.db import query
from tinypower.runner import RunRequest, run
from tinypower.suites.benchmarks import get_suite
from tinypower.suites.datasets import synthetic_inputs

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SER2NET = shutil.which("ser2net") or ("/usr/sbin/ser2net" if Path("/usr/sbin/ser2net").is_file()
                                      else None)
# ser2net binds to every address unless its accepter names one: keep the test on loopback.
SER2NET_SHIM = """#!/bin/sh
for a in "$@"; do
  case "$a" in
    *"accepter: "*",tcp,"*) set -- "$@" "$(printf '%s' "$a" | sed 's/,tcp,/,tcp,127.0.0.1,/')";;
    *) set -- "$@" "$a";;
  esac
  shift
done
exec {ser2net} "$@"
"""
# The commands docs/board-farm.md gives, as the test runs them (one bench per exporter, the
# place named like its exporter). test_the_docs_give_these_commands keeps the page in step.
COMMANDS = {
    "bench": "python -m tinypower.farm.virtual_bench --exporter-config {name}.yaml "
             "--group sim-bench",
    "coordinator": "labgrid-coordinator --listen {coordinator}",
    "exporter": "labgrid-exporter --coordinator {coordinator} --name {name} "
                "--hostname 127.0.0.1 {name}.yaml",
    "create": "labgrid-client -x {coordinator} -p {name} create",
    "match": "labgrid-client -x {coordinator} -p {name} add-match '{name}/sim-bench/*'",
    "measure": "tinypower measure --board sim-m4 --model synthetic --iterations 200 "
               "--place {name} --coordinator {coordinator}",
    "local": "tinypower measure --board sim-m4 --model synthetic --iterations 200",
}
DOCS_VALUES = {"coordinator": "127.0.0.1:20408", "name": "bench-a"}
MEASURE = COMMANDS["local"].split()[2:]
TIMEOUT_S = 60


def _require_farm() -> None:
    missing = []
    if not (BIN / "labgrid-coordinator").is_file():
        missing.append("labgrid (pip install 'tinypower[labgrid]')")
    if SER2NET is None:
        missing.append("ser2net (apt-get install ser2net)")
    if missing:
        why = f"the board farm test needs {' and '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Farm:
    """A coordinator on loopback, and the benches and places the tests add to it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        shim = folder / "bin" / "ser2net"
        shim.parent.mkdir()
        shim.write_text(SER2NET_SHIM.format(ser2net=SER2NET))
        shim.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{shim.parent}:{BIN}:{os.environ['PATH']}"}
        self.env.pop("LG_COORDINATOR", None)
        self.address = f"127.0.0.1:{_free_port()}"
        self.procs: list[subprocess.Popen] = []
        self.exporters: dict[str, subprocess.Popen] = {}
        self._start(self.command("coordinator"), "coordinator")
        host, port = self.address.split(":")
        _wait(lambda: _connects(host, int(port)), f"the coordinator on {self.address}")

    def command(self, key: str, name: str = "") -> list[str]:
        command = shlex.split(COMMANDS[key].format(coordinator=self.address, name=name))
        return [sys.executable, *command[1:]] if command[0] == "python" else command

    def _start(self, command: list[str], log: str) -> subprocess.Popen:
        with open(self.folder / f"{log}.log", "wb") as out:
            proc = subprocess.Popen(command, cwd=self.folder, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_benches(self, *names: str) -> None:
        """One virtual bench per name, each shared by its own exporter (named like it) as a
        place of the same name."""
        configs = {}
        for name in names:
            configs[name] = self.folder / f"{name}.yaml"
            self._start(self.command("bench", name), f"bench-{name}")
        for name in names:
            _wait(configs[name].is_file, f"the virtual bench {name}")
            self.exporters[name] = self._start(self.command("exporter", name),
                                               f"exporter-{name}")
        _wait(lambda: all(f"{n}/sim-bench/NetworkSerialPort" in listed
                          for listed in [self.client("resources").stdout] for n in names),
              "the exporters' resources")
        for key in ("create", "match"):  # the places, side by side
            started = [subprocess.Popen(self.command(key, name), cwd=self.folder, env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                       for name in names]
            for proc in started:
                _, err = proc.communicate(timeout=TIMEOUT_S)
                assert proc.returncode == 0, f"{' '.join(proc.args)}: {err.decode()}"

    def client(self, *args: str, env: dict | None = None, check: bool = True):
        done = subprocess.run(["labgrid-client", "-x", self.address, *args], cwd=self.folder,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
        if check and done.returncode:
            raise AssertionError(f"labgrid-client {' '.join(args)}: {done.stderr}")
        return done

    def holder(self, place: str) -> str:
        """Who holds the place, as ``labgrid-client show`` prints it."""
        for line in self.client("-p", place, "show").stdout.splitlines():
            if line.strip().startswith("acquired:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError(f"no 'acquired:' line for place {place}")

    def measure(self, *args: str, runs: Path, place: str | None = None) -> subprocess.Popen:
        """The docs' measure command at ``place`` (the local virtual lab without one)."""
        command = self.command("measure", place) if place else self.command("local")
        return subprocess.Popen(
            [*command, "--runs-dir", str(runs), "--json", *args],
            cwd=self.folder, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _wait(ready, what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready after {timeout_s} s")
        time.sleep(0.1)


def _records(done: tuple[str, str]) -> dict[str, dict]:
    return {r["mode"]: r for r in map(json.loads, done[0].splitlines())}


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> Iterator[Farm]:
    _require_farm()
    farm = Farm(tmp_path_factory.mktemp("farm"))
    try:
        farm.start_benches("bench-a", "bench-b", "bench-c")
        yield farm
    finally:
        farm.close()


def test_two_places_at_once_measure_like_the_local_virtual_lab(
    farm: Farm, tmp_path: Path
) -> None:
    runs = tmp_path / "farm"
    places = ("bench-a", "bench-b")
    started = [farm.measure(runs=runs, place=place)
               for place in places]
    local = farm.measure(runs=tmp_path / "local")
    here = local.communicate(timeout=TIMEOUT_S)
    assert local.returncode == 0, here[1]
    measured = _records(here)
    sessions = []
    for place, remote in zip(places, started, strict=True):
        done = remote.communicate(timeout=TIMEOUT_S)
        assert remote.returncode == 0, done[1]
        assert f"acquired place {place}" in done[1] and f"released place {place}" in done[1]
        farmed = _records(done)
        assert set(farmed) == {"performance", "energy"}
        for mode, record in farmed.items():
            assert record["valid"] and record["measured_as"] == "simulated"
            session = json.loads((Path(record["session"]) / "session.json").read_text())
            assert session["status"] == "complete"
            # The session says where it was measured: coordinator, place, exporter per port.
            assert session["farm"]["coordinator"] == farm.address
            assert session["farm"]["place"] == place
            for role in ("dut", "monitor") if mode == "energy" else ("dut",):
                resource = session["farm"]["resources"][role]
                assert resource["exporter"] == place and resource["cls"] == "NetworkSerialPort"
                assert resource["url"].startswith("rfc2217://127.0.0.1:")
            sessions.append(Path(record["session"]).resolve())
        # Performance: the DUT's own µs laps, identical up to the jitter of a lap.
        assert farmed["performance"]["value"] == pytest.approx(
            measured["performance"]["value"], rel=1e-5)
        # Energy: a window's edges fall on the meter's sample grid, so two runs may differ by
        # one sample period's energy at each end of a window.
        energy = farmed["energy"]["extras"]
        one_sample_uj = energy["mean_power_uw"] / energy["sample_rate_hz"]
        assert farmed["energy"]["value"] == pytest.approx(
            measured["energy"]["value"], abs=2 * one_sample_uj / energy["iterations"])
        assert farm.holder(place) == "None"
    # Both places' sessions are in the one store of their runs folder.
    stored = query(runs / "results.sqlite")
    assert sorted(Path(r.source).resolve() for r in stored) == sorted(sessions)


def test_a_place_held_by_someone_else_is_refused_naming_them(
    farm: Farm, tmp_path: Path, capsys
) -> None:
    alice = {"LG_USERNAME": "alice", "LG_HOSTNAME": "lab-pc"}
    farm.client("-p", "bench-b", "acquire", env=alice)
    try:
        code = main(["measure", *MEASURE, "--place", "bench-b", "--coordinator", farm.address,
                     "--runs-dir", str(tmp_path / "runs")])
    finally:
        farm.client("-p", "bench-b", "release", env=alice)
    out, err = capsys.readouterr()
    assert code == 2
    assert "place bench-b is held by lab-pc/alice" in err
    assert not out and len(err.strip().splitlines()) <= 3  # one message, wrapped by rich
    assert not (tmp_path / "runs").exists()  # refused before any session folder


def test_a_place_the_user_holds_is_used_and_left_held(
    farm: Farm, tmp_path: Path, capsys
) -> None:
    farm.client("-p", "bench-a", "acquire")  # as this user, on this host
    try:
        code = main(["measure", *MEASURE, "--mode", "performance", "--place", "bench-a",
                     "--coordinator", farm.address, "--runs-dir", str(tmp_path / "runs")])
        _, err = capsys.readouterr()
        assert code == 0, err
        assert "using place bench-a, which you hold" in err and "released" not in err
        assert farm.holder("bench-a") not in ("None", "")
    finally:
        farm.client("-p", "bench-a", "release")


def test_a_killed_run_leaves_the_place_free(farm: Farm, tmp_path: Path) -> None:
    run = farm.measure(runs=tmp_path / "runs", place="bench-b")
    try:
        assert run.stderr.readline().startswith("acquired place bench-b")
        assert farm.holder("bench-b") != "None"
    finally:
        run.kill()  # SIGKILL: nothing in the run can clean up
        run.communicate()
    # The run's guard process notices and releases the place.
    _wait(lambda: farm.holder("bench-b") == "None", "the release of bench-b", 20)


def test_ctrl_c_mid_run_releases_the_place_and_keeps_the_session(
    farm: Farm, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    run = farm.measure("--mode", "energy", runs=runs, place="bench-b")
    try:
        # Interrupt it while it measures (once the meter streams), not while it sets up.
        _wait(lambda: any("meter started" in p.read_text() for p in runs.glob("*/session.json")),
              "the run's meter")
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=TIMEOUT_S)
    finally:
        run.kill()
    assert run.returncode != 0
    assert "released place bench-b" in err  # by the run itself, not its guard
    assert farm.holder("bench-b") == "None"
    (folder,) = runs.glob("*-energy")
    session = json.loads((folder / "session.json").read_text())
    assert session["status"] == "interrupted" and "Ctrl-C" in session["reason"]
    assert session["farm"]["place"] == "bench-b"


def test_an_exporter_that_vanishes_mid_run(farm: Farm, tmp_path: Path) -> None:
    suite = get_suite("kws01")
    exporter = farm.exporters["bench-c"]

    def progress(text: str, done: int, total: int) -> None:
        if text.startswith("energy window 3"):
            os.killpg(exporter.pid, signal.SIGKILL)  # the exporter and its ser2net

    with acquired_place(farm.address, "bench-c") as place:
        outcome = run(RunRequest(
            board=load_board("sim-m4"), suite=suite, model=resolve_model(suite, "synthetic"),
            dataset=synthetic_inputs(suite), mode="energy", runs_dir=tmp_path, iterations=100,
            ports=place.ports(), farm=place.record(), tinypower_firmware=True,
        ), progress)
    assert exporter.poll() is not None
    assert outcome.error
    session = json.loads(outcome.session.path("session.json").read_text())
    assert session["status"] == "incomplete" and session["reason"] == outcome.error
    assert session["farm"]["resources"]["dut"]["exporter"] == "bench-c"
    labels = [c["label"] for c in session["checkpoints"]]
    assert "window 1" in labels and "window 4" not in labels
    assert outcome.session.path("trace-partial.npz").stat().st_size > 0  # data kept
    assert farm.holder("bench-c") == "None"


def test_the_docs_give_these_commands() -> None:
    page = (ROOT / "docs" / "board-farm.md").read_text()
    for key, command in COMMANDS.items():
        assert command.format(**DOCS_VALUES) in page, f"docs/board-farm.md lacks the {key} command"


@pytest.mark.parametrize(("options", "message"), [
    (["--place", "bench-a"], "--place needs --board"),
    (["--board", "sim-m4", "--place", "bench-a", "--port", "/dev/ttyACM0"],
     "--place takes every port from the place: drop --port"),
])
def test_place_usage_errors_are_one_line_before_any_session(
    options: list[str], message: str, tmp_path: Path, capsys
) -> None:
    assert main(["measure", *options, "--runs-dir", str(tmp_path / "runs")]) == 2
    out, err = capsys.readouterr()
    assert message in err.replace("\n", " ") and not out
    assert not (tmp_path / "runs").exists()


def test_no_coordinator_is_one_error_naming_it(tmp_path: Path, capsys) -> None:
    _require_farm()
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    code = main(["measure", "--board", "sim-m4", "--place", "bench-a", "--coordinator", address,
                 "--runs-dir", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert code == 2 and not out
    assert f"no labgrid coordinator answers at {address}" in err.replace("\n", " ")
    assert "ERROR" not in err and "Traceback" not in err  # labgrid's own log is not repeated
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("params", "url"), [
    ({"host": "10.0.0.5", "port": 4001}, "rfc2217://10.0.0.5:4001?ign_set_control"),
    ({"host": "10.0.0.5", "port": 4001, "protocol": "raw"}, "socket://10.0.0.5:4001"),
    ({"host": "fd00::5", "port": 4001}, "rfc2217://[fd00::5]:4001?ign_set_control"),
])
def test_serial_urls_from_network_serial_ports(params: dict, url: str) -> None:
    assert _serial_url("dut", params) == url


def test_an_isolated_exporters_port_is_refused_with_the_fix() -> None:
    params = {"host": "bench3", "port": 4001,
              "extra": {"proxy": "gateway.lab", "proxy_required": True}}
    with pytest.raises(PlaceError, match="isolated exporter .* via gateway.lab"):
        _serial_url("dut", params)


def test_only_the_farm_and_the_labgrid_drivers_import_labgrid() -> None:
    allowed = {ROOT / "host" / "farm" / "place.py", ROOT / "energy_monitor" / "labgrid_drivers.py"}
    importers = {
        path for folder in ("host", "energy_monitor") for path in (ROOT / folder).rglob("*.py")
        if any(line.lstrip().startswith(("import labgrid", "from labgrid"))
               for line in path.read_text().splitlines())
    }
    assert importers == allowed
