"""MLCommons power-dev (``../shared/oracles/power-dev``, unmodified) against tinypower.

``tinypower measure --sut FILE`` with ``engine = "power-dev"`` runs power-dev's own server and
client (installed from a copy of the checkout into a temporary venv, as docs/scaling.md tells a
user to), with tinypower's PTDaemon simulator started by power-dev's server the way it starts
PTDaemon, and power-dev's checker must pass every check on the session. power-dev sleeps 10 s
before and after each phase (its ANALYZER_SLEEP_SECONDS; debug mode would shorten that but
fails the checker), so the session takes about a minute."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from energy_monitor.ptd import parse_sample_line
from energy_monitor.sim.ptd_sim import CHANNEL_SHARES, PtdSimulator
from tinypower.cli import main
from tinypower.models import resolve_model
from tinypower.results.compliance import check_tree
from tinypower.results.db import query
from tinypower.scale.client import ClientError, DirectorConnection
from tinypower.scale.director import Director, DirectorConfig
from tinypower.scale.ntp_loopback import LoopbackNtp, NtpError, ntp_answers
from tinypower.scale.sut import MeterConfig
from tinypower.suites.benchmarks import get_suite

ORACLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "oracles" / "power-dev"
CHECKS = 11  # power-dev compliance/check.py: check_with_description
WATTS = 100.0


def _skip_or_fail(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def power_dev_bin(tmp_path_factory) -> Path:
    """power_server, power_client and power_check from a copy of the oracle, pip-installed
    (offline: a wheel built here, then installed into a fresh venv)."""
    if not (ORACLE / "setup.py").is_file():
        _skip_or_fail(f"power-dev oracle not found at {ORACLE}")
    if not ntp_answers():
        try:
            probe = LoopbackNtp()
            probe.start()
            probe.close()
        except NtpError as exc:
            _skip_or_fail(str(exc))
    tmp = tmp_path_factory.mktemp("power-dev")
    src = tmp / "src"
    shutil.copytree(ORACLE, src)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel"),
                    str(src)], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")],
                   check=True)
    [wheel] = (tmp / "wheel").glob("*.whl")
    subprocess.run([*pip, "--python", str(tmp / "venv" / "bin" / "python"), "install",
                    "--no-index", "--no-deps", str(wheel)], check=True)
    return tmp / "venv" / "bin"


def _model(tmp: Path) -> Path:
    model = resolve_model(get_suite("kws01"), None)
    if model.path is not None:
        return model.path
    path = tmp / "kws01.tflite"
    path.write_bytes(model.data)
    return path


def test_a_power_dev_engine_session_passes_power_check(power_dev_bin, tmp_path, capsys):
    sut = tmp_path / "sut.toml"
    sut.write_text(
        f'name = "edge-box"\nengine = "power-dev"\n'
        f'[workload]\nmodel = "{_model(tmp_path)}"\nscenario = "SingleStream"\n'
        f'[power_dev]\nbin = "{power_dev_bin}"\nptd = "simulator"\n'
        'device_type = 77\nchannel = "1,3"\ninterface_flag = "-y"\n'
        f'simulator_watts = {WATTS}\nsimulator_sample_period_s = 0.25\n'
        f'[director]\noutput = "{tmp_path / "runs" / "power"}"\n')
    code = main(["measure", "--sut", str(sut), "--quick", "--json",
                 "--runs-dir", str(tmp_path / "runs")])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    folder = Path(out["folder"])
    assert code == 0, (out["valid"], out["error"], out["notes"], out["checks"])  # valid

    # power-dev's checker, run again here on the folder: every check passes.
    checked = subprocess.run([str(power_dev_bin / "power_check"), str(folder)],
                             capture_output=True, text=True, check=False)
    log = checked.stdout + checked.stderr
    print("power_check", folder, "\n", "\n".join(log.splitlines()[-4:]))
    assert checked.returncode == 0, log
    assert log.count("[x] Check") == CHECKS and "[ ] Check" not in log
    assert "All checks passed" in log
    assert (folder / "power_check.txt").read_text().count("[x] Check") == CHECKS

    # Scored by tinypower; compliance from MLPerf's constants: a quick run is not compliant,
    # and the simulator's numbers are labelled simulated.
    testing = out["phases"]["testing"]["ptd"]
    assert testing["average_power_w"] == pytest.approx(WATTS)
    assert testing["measured_as"] == "simulated"
    failed = {c["name"] for c in out["checks"] if not c["ok"]}
    assert failed == {"run_length", "sample_rate", "measured_as"}
    assert out["valid"] and not out["compliant"]

    # power-dev labelled our unlabelled RL lines (Mark, Ch1..Ch3): our parser reads its
    # spl.txt as the simulator's channels and total.
    sample = parse_sample_line((folder / "run_1" / "spl.txt").read_text().splitlines()[0])
    assert sample.watts == pytest.approx(WATTS)
    assert sample.mark.endswith("_testing")
    assert [c["Watts"] for c in sample.channels] == pytest.approx(
        [WATTS * s for s in CHANNEL_SHARES])
    server = json.loads((folder / "power" / "server.json").read_text())
    assert server["ptd_config"][0]["device_type"] == 77

    # reported as any other session: in the result store, and `tinypower check` agrees
    [record] = query(tmp_path / "runs" / "results.sqlite")  # <--runs-dir>/results.sqlite
    assert record.value == pytest.approx(testing["value"]) and record.measured_as == "simulated"
    [case] = check_tree(folder)
    verdicts = {c.rule: c.verdict for c in case.checks}
    assert verdicts["power.submission_engine"] == "pass"
    assert not case.failed, [(c.rule, c.evidence) for c in case.checks if c.verdict == "fail"]
    assert {c.rule for c in case.not_compliant} == {"power.run_duration", "power.sample_rate",
                                                   "measured_as"}


# -- tinypower's own director, judged by power-dev's checker ----------------------------------

SOURCES_CHECKS = ("Check client sources checksum", "Check server sources checksum")
SECRET = "conformance-secret-7d1e94b2"


def _verdicts(log: str) -> dict[str, bool]:
    out = {}
    for line in log.splitlines():
        for mark, ok in (("[x] ", True), ("[ ] ", False)):
            if mark in line:
                out[line.split(mark, 1)[1].strip()] = ok
    return out


def test_a_director_session_passes_every_check_but_the_sources_checksums(
        power_dev_bin, tmp_path, capsys):
    console = tmp_path / "ptd-console.log"  # PTDaemon's console, as `ptd ... > file` keeps it
    with console.open("a") as log, PtdSimulator(
            lambda t: WATTS + math.sin(t), sample_period_s=0.25,
            console=lambda line: (log.write(line + "\n"), log.flush())) as sim:
        sut = tmp_path / "sut.toml"
        sut.write_text(
            f'name = "edge-box"\n[workload]\nmodel = "{_model(tmp_path)}"\n'
            f'scenario = "SingleStream"\n[[meters]]\nkind = "ptd"\nname = "ptd"\n'
            f'address = "{sim.address}"\ntimeout_s = 5.0\nconsole_log = "{console}"\n'
            f'[director]\noutput = "{tmp_path / "runs" / "power"}"\n')
        code = main(["measure", "--sut", str(sut), "--quick", "--runs-dir",
                     str(tmp_path / "runs")])
    assert code == 0, capsys.readouterr()
    [folder] = [p for p in (tmp_path / "runs" / "power").iterdir() if p.is_dir()]
    checked = subprocess.run([str(power_dev_bin / "power_check"), str(folder)],
                             capture_output=True, text=True, check=False)
    log = checked.stdout + checked.stderr
    verdicts = _verdicts(log)
    print("power_check", folder, "\n", "\n".join(f"{'[x]' if ok else '[ ]'} {name}"
                                                  for name, ok in verdicts.items()))
    assert len(verdicts) == CHECKS
    assert {name for name, ok in verdicts.items() if not ok} == set(SOURCES_CHECKS)
    # and tinypower's own checker says why, plainly
    capsys.readouterr()
    assert main(["check", str(folder), "--json"]) == 0
    [case] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    engine = next(c for c in case["checks"] if c["rule"] == "power.submission_engine")
    assert engine["verdict"] == "warn"
    assert engine["evidence"].startswith("not an MLPerf submission engine")


# -- protocol mismatch: each side says so in one line, the secret never sent -----------------

@pytest.fixture
def power_dev_server(power_dev_bin, tmp_path):
    """power-dev's server on loopback with the PTDaemon simulator behind it."""
    from tinypower.scale.powerdev import (
        SERVER_READY,
        PowerDevConfig,
        free_port,
        server_ini,
        simulator_launcher,
    )

    ntp = None if ntp_answers() else LoopbackNtp()
    if ntp is not None:
        ntp.start()
    cfg = PowerDevConfig(bin=power_dev_bin)
    port = free_port()
    conf = tmp_path / "server.conf"
    conf.write_text(server_ini(cfg, str(simulator_launcher(tmp_path, cfg)), "127.0.0.1", port,
                               free_port()))
    log = tmp_path / "server-console.log"
    with log.open("wb") as out:
        server = subprocess.Popen([str(power_dev_bin / "power_server"), "-c", str(conf)],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while SERVER_READY not in log.read_text(errors="replace"):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield ("127.0.0.1", port), log
    finally:
        server.terminate()
        server.wait(timeout=20)
        if ntp is not None:
            ntp.close()


def test_our_client_meets_power_devs_server(power_dev_server):
    address, log = power_dev_server
    with pytest.raises(ClientError) as refused:
        DirectorConnection(address, SECRET)
    message = str(refused.value)
    assert "\n" not in message
    assert "is MLCommons power-dev's server (mlcommons/power server v3)" in message
    assert 'engine = "power-dev"' in message and "secret was not sent" in message
    time.sleep(0.5)
    text = log.read_text(errors="replace")
    assert "Handshake failed, expected 'mlcommons/power client v3'" in text
    assert SECRET not in text


def test_power_devs_client_meets_our_director(power_dev_bin, tmp_path):
    with PtdSimulator(lambda t: WATTS) as sim:
        director = Director(DirectorConfig(
            out_dir=tmp_path / "out", meters=[MeterConfig("ptd", sim.address, "ptd")],
            token=SECRET, listen=("127.0.0.1", 0)))
        host, port = director.start()
        try:
            done = subprocess.run(
                [str(power_dev_bin / "power_client"), "-a", host, "-p", str(port), "-n",
                 "127.0.0.1", "-w", "true", "-L", str(tmp_path / "in"), "-o",
                 str(tmp_path / "out-client")],
                capture_output=True, text=True, timeout=60, check=False)
        finally:
            director.close()
    log = done.stdout + done.stderr
    assert done.returncode != 0
    [line] = [x for x in log.splitlines() if "Handshake failed" in x]
    assert "got \"tinypower director (tinypower-power/2), not MLCommons power-dev's server" \
        in line or "got 'tinypower director (tinypower-power/2)" in line
    assert SECRET not in log
    assert not list((tmp_path / "out").iterdir())  # no session was opened
