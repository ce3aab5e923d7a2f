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
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinypower.results.db import query

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
MEASURE = ["--board", "sim-m4", "--model", "synthetic", "--iterations", "100"]
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
        self._start(["labgrid-coordinator", "--listen", self.address], "coordinator")
        host, port = self.address.split(":")
        _wait(lambda: _connects(host, int(port)), f"the coordinator on {self.address}")

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
            self._start([sys.executable, "-m", "tinypower.farm.virtual_bench",
                         "--exporter-config", str(configs[name]), "--group", "sim-bench"],
                        f"bench-{name}")
        for name in names:
            _wait(configs[name].is_file, f"the virtual bench {name}")
            self.exporters[name] = self._start(
                ["labgrid-exporter", "--coordinator", self.address, "--name", name,
                 "--hostname", "127.0.0.1", str(configs[name])], f"exporter-{name}")
        for name in names:
            _wait(lambda n=name: f"{n}/sim-bench/NetworkSerialPort"
                  in self.client("resources").stdout, f"the exporter {name}'s resources")
            self.client("-p", name, "create")
            self.client("-p", name, "add-match", f"{name}/sim-bench/*")

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

    def measure(self, *args: str, runs: Path) -> subprocess.Popen:
        return subprocess.Popen(
            ["tinypower", "measure", *MEASURE, "--runs-dir", str(runs), "--json", *args],
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
        farm.start_benches("bench-a", "bench-b")
        yield farm
    finally:
        farm.close()


def test_place_measures_like_the_local_virtual_lab(farm: Farm, tmp_path: Path) -> None:
    remote = farm.measure("--place", "bench-a", "--coordinator", farm.address,
                          runs=tmp_path / "farm")
    local = farm.measure(runs=tmp_path / "local")
    done, here = remote.communicate(timeout=TIMEOUT_S), local.communicate(timeout=TIMEOUT_S)
    assert remote.returncode == 0, done[1]
    assert local.returncode == 0, here[1]
    assert "acquired place bench-a" in done[1] and "released place bench-a" in done[1]
    farmed, measured = _records(done), _records(here)
    assert set(farmed) == {"performance", "energy"}
    for mode in farmed:
        assert farmed[mode]["valid"] and farmed[mode]["measured_as"] == "simulated"
    # Performance: the DUT's own µs laps, identical up to the wall-time jitter of a lap.
    assert farmed["performance"]["value"] == pytest.approx(
        measured["performance"]["value"], rel=1e-5)
    # Energy: a window's edges fall on the meter's sample grid, so the two runs may differ
    # by one sample period's energy at each end of a window.
    energy = farmed["energy"]["extras"]
    one_sample_uj = energy["mean_power_uw"] / energy["sample_rate_hz"]
    assert farmed["energy"]["value"] == pytest.approx(
        measured["energy"]["value"], abs=2 * one_sample_uj / energy["iterations"])
    # The session says where it was measured: coordinator, place, exporter per resource.
    session = json.loads((Path(farmed["energy"]["session"]) / "session.json").read_text())
    record = session["farm"]
    assert record["coordinator"] == farm.address and record["place"] == "bench-a"
    for role in ("dut", "monitor"):
        resource = record["resources"][role]
        assert resource["exporter"] == "bench-a" and resource["cls"] == "NetworkSerialPort"
        assert resource["url"].startswith("rfc2217://127.0.0.1:")
    assert farm.holder("bench-a") == "None"


def test_a_place_held_by_someone_else_is_refused_naming_them(farm: Farm, tmp_path: Path) -> None:
    alice = {"LG_USERNAME": "alice", "LG_HOSTNAME": "lab-pc"}
    farm.client("-p", "bench-b", "acquire", env=alice)
    try:
        run = farm.measure("--place", "bench-b", "--coordinator", farm.address,
                           runs=tmp_path / "runs")
        out, err = run.communicate(timeout=TIMEOUT_S)
    finally:
        farm.client("-p", "bench-b", "release", env=alice)
    assert run.returncode == 2, err
    assert "place bench-b is held by lab-pc/alice" in err
    assert "Traceback" not in err and not out
    assert not (tmp_path / "runs").exists()  # refused before any session folder


def test_two_places_measured_at_once(farm: Farm, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    places = ("bench-a", "bench-b")
    started = [farm.measure("--place", place, "--coordinator", farm.address, "--mode", "energy",
                            runs=runs) for place in places]
    sessions = []
    for place, run in zip(places, started, strict=True):
        out, err = run.communicate(timeout=TIMEOUT_S)
        assert run.returncode == 0, err
        folder = Path(_records((out, err))["energy"]["session"])
        session = json.loads((folder / "session.json").read_text())
        assert session["status"] == "complete"
        assert session["farm"]["place"] == place
        assert session["farm"]["resources"]["monitor"]["exporter"] == place
        sessions.append(folder.resolve())
    stored = query(runs / "results.sqlite")
    assert sorted(Path(r.source).resolve() for r in stored) == sorted(sessions)
    assert all(r.valid and r.scenario == "energy" for r in stored)
