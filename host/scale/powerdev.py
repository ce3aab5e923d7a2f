"""The power-dev engine: a session run by MLCommons power-dev's own server and client.

MLPerf's checker (power-dev ``compliance/check.py``) verifies the sha1 of the power client's
and server's own sources against ``sources_checksums.json``, so only power-dev's code can
produce a session that passes every check of a submission. With ``engine = "power-dev"`` in a
SUT file, ``tinypower measure --sut FILE`` runs that code, unmodified, as a submitter would:

1. finds ``power_server``, ``power_client`` and ``power_check`` (``pip install`` of the user's
   power-dev checkout; ``[power_dev] bin`` names their folder, else ``PATH``);
2. writes the server's INI (``[server] ntpServer, listen``; ``[ptd] ptd``; ``[analyzer1]``)
   with PTDaemon behind it: the real PTDaemon executable, or ``ptd = "simulator"`` for
   tinypower's PTDaemon simulator, started by power-dev's server exactly as it starts PTDaemon
   (``ptd -l LOG -p PORT [-c CH] [flag] TYPE PORT``, through a small launcher script);
3. makes sure an NTP server answers (power-dev's client and server both query it, on UDP 123):
   the SUT file's, or on a one-machine bench one on 127.0.0.1 serving this machine's own clock
   (:mod:`tinypower.scale.ntp_loopback`);
4. starts the server on loopback (unless ``[power_dev] allow_remote = true``: power-dev's link
   is plain TCP with no authentication, so it stays on 127.0.0.1 unless the user opts in), then
   the client with ``-S`` (the server stops after it) and the LoadGen workload as its ``-w``
   command;
5. scores the folder the client wrote with the same code that re-derives published results,
   runs ``power_check`` on it, and applies MLPerf's fixed compliance constants.

The session folder is power-dev's own (``<out>/<session>/power``, ``ranging``, ``run_1``);
tinypower adds ``power_check.txt`` (the checker's output) and ``results.json`` (its scoring),
files the checker ignores.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from energy_monitor.ptd import SIMULATOR_TAG
from tinypower.scale.ntp_loopback import LoopbackNtp, NtpError, ntp_answers
from tinypower.scale.workload import Workload

TOOLS = ("power_server", "power_client", "power_check")
SERVER_READY = "Ready to accept connections at"
SERVER_START_TIMEOUT_S = 120.0  # PTDaemon with a real WT333E over USB takes ~17 s to start
LOOPBACK = ("127.0.0.1", "localhost")


class PowerDevError(RuntimeError):
    """power-dev is missing, misconfigured or failed; the message says why and the fix."""


@dataclass(frozen=True)
class PowerDevConfig:
    """``[power_dev]`` of a SUT file (``docs/scaling.md`` lists every key)."""

    bin: Path | None = None  # folder holding power_server, power_client, power_check
    ptd: str = "simulator"  # the PTDaemon executable, or "simulator"
    device_type: int = 49  # PTD's deviceType, e.g. 49 WT310E, 77 WT333E multichannel
    interface_flag: str = ""  # "-y" USB, "-g" GPIB, "-n" network, "" RS232
    device_port: str = "simulated"
    channel: str | None = None  # e.g. "1,2": first channel, channel count (multichannel)
    ntp: str = "127.0.0.1"
    listen: str = "127.0.0.1:0"  # power-dev server's HOST:PORT; port 0 picks a free one
    ptd_port: int = 0  # PTDaemon's port; 0 picks a free one
    ranging_mode: str = "AUTO"  # power-dev's rangingMode: AUTO or MAX
    allow_remote: bool = False  # let the server listen beyond loopback (plain TCP, no auth)
    simulator_watts: float = 100.0
    simulator_sample_period_s: float | None = None  # None: PTD's 1 Hz


def config_from_dict(data: dict[str, Any], base: Path) -> PowerDevConfig:
    data = dict(data)
    known = set(PowerDevConfig.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise PowerDevError(f"[power_dev]: unknown key(s) {sorted(unknown)}; keys: "
                            f"{', '.join(sorted(known))}")
    if "bin" in data:
        path = Path(str(data["bin"])).expanduser()
        data["bin"] = path if path.is_absolute() else base / path
    cfg = PowerDevConfig(**data)
    if cfg.ranging_mode not in ("AUTO", "MAX"):
        raise PowerDevError(f"[power_dev] ranging_mode must be AUTO or MAX, not "
                            f"{cfg.ranging_mode!r}")
    host = cfg.listen.rpartition(":")[0]
    if host not in LOOPBACK and not cfg.allow_remote:
        raise PowerDevError(
            f"[power_dev] listen = {cfg.listen!r} leaves this machine, and power-dev's link is "
            "plain TCP without authentication: set allow_remote = true to accept that, or "
            "listen on 127.0.0.1")
    return cfg


def find_tools(cfg: PowerDevConfig) -> dict[str, Path]:
    """power_server, power_client and power_check, from ``bin`` or ``PATH``."""
    found: dict[str, Path] = {}
    for tool in TOOLS:
        where = shutil.which(tool, path=str(cfg.bin)) if cfg.bin else shutil.which(tool)
        if where is None:
            raise PowerDevError(
                f"{tool} not found {'in ' + str(cfg.bin) if cfg.bin else 'on PATH'}: install "
                "power-dev from your checkout (python -m venv pd && pd/bin/pip install "
                "/path/to/power-dev) and set [power_dev] bin = \"pd/bin\" (docs/scaling.md)")
        found[tool] = Path(where)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def simulator_launcher(folder: Path, cfg: PowerDevConfig) -> Path:
    """An executable that starts tinypower's PTDaemon simulator with PTD's command line
    (power-dev's ``[ptd] ptd`` is one program path; its arguments come from the server)."""
    options = ["--watts", repr(cfg.simulator_watts)]
    if cfg.simulator_sample_period_s:
        options += ["--sample-period-s", repr(cfg.simulator_sample_period_s)]
    script = folder / "ptd-simulator"
    script.write_text("#!/bin/sh\nexec " + shlex.join(
        [sys.executable, "-m", "energy_monitor.sim.ptd_sim", *options]) + ' "$@"\n')
    script.chmod(0o755)
    return script


def server_ini(cfg: PowerDevConfig, ptd: str, host: str, port: int, ptd_port: int) -> str:
    lines = ["[server]", f"ntpServer = {cfg.ntp}", f"listen = {host} {port}",
             f"rangingMode = {cfg.ranging_mode}", "", "[ptd]", f"ptd = {ptd}",
             "analyzerCount = 1", "", "[analyzer1]", f"deviceType = {cfg.device_type}",
             f"interfaceFlag = {cfg.interface_flag}", f"devicePort = {cfg.device_port}",
             f"networkPort = {ptd_port}"]
    if cfg.channel:
        lines.append(f"channel = {cfg.channel}")
    return "\n".join(lines) + "\n"


def workload_command(workload: Workload, loadgen_dir: Path) -> str:
    """The shell command power-dev's client runs (``-w``): the workload writing its LoadGen
    logs under ``-L`` (the client picks the log whose power window fits the phase)."""
    return shlex.join(workload.command(loadgen_dir))


@dataclass
class PowerDevRun:
    folder: Path  # the session folder power-dev's client wrote
    check_rc: int
    check_output: str
    simulated: bool
    work: Path  # server/client console logs


def run_power_dev(cfg: PowerDevConfig, workload: Workload, label: str, out_dir: Path,
                  progress=lambda text: None) -> PowerDevRun:
    """One ranging + testing session by power-dev's server and client; see the module doc."""
    tools = find_tools(cfg)
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".power-dev-", dir=out_dir))  # console logs, INI
    host, _, port_text = cfg.listen.rpartition(":")
    port = int(port_text) or free_port()
    ptd_port = cfg.ptd_port or free_port()
    ptd = str(simulator_launcher(work, cfg)) if cfg.ptd == "simulator" else cfg.ptd
    conf = work / "server.conf"
    conf.write_text(server_ini(cfg, ptd, host, port, ptd_port))
    ntp = _ensure_ntp(cfg, progress)
    server_log = work / "server-console.log"
    env = {**os.environ}
    env.pop("MLPP_DEBUG", None)  # debug mode fails the checker's last check
    server = None
    try:
        with server_log.open("wb") as log:
            server = subprocess.Popen([str(tools["power_server"]), "-c", str(conf)], stdout=log,
                                      stderr=subprocess.STDOUT, cwd=work, env=env)
        progress(f"power-dev server starting on {host}:{port} (PTDaemon: {cfg.ptd}, port "
                 f"{ptd_port}); plain TCP, no authentication"
                 + ("" if host in LOOPBACK else ": it listens beyond this machine"))
        _wait_ready(server, server_log)
        before = {p.name for p in out_dir.iterdir()}
        loadgen = work / "loadgen"
        client = [str(tools["power_client"]), "-a", "127.0.0.1" if host == "0.0.0.0" else host,
                  "-p", str(port), "-n", cfg.ntp, "-w", workload_command(workload, loadgen),
                  "-L", str(loadgen), "-o", str(out_dir), "-S"]
        if label:
            client += ["-l", label]
        progress("power-dev client: ranging then testing (power-dev waits 10 s before and "
                 "after each phase)")
        client_log = work / "client-console.log"
        with client_log.open("wb") as log:
            rc = subprocess.run(client, stdout=log, stderr=subprocess.STDOUT, cwd=work,
                                env=env, check=False).returncode
        if rc != 0:
            raise PowerDevError(f"power-dev's client failed (exit {rc}): "
                                f"{_tail(client_log)} (logs in {work})")
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=30)  # -S: the server stops after this client
        folders = [p for p in out_dir.iterdir() if p.is_dir() and p.name not in before
                   and (p / "power" / "client.json").is_file()]
        if len(folders) != 1:
            raise PowerDevError(f"power-dev's client wrote no session folder in {out_dir} "
                                f"(logs in {work})")
        folder = folders[0]
    finally:
        if server is not None and server.poll() is None:
            server.terminate()  # power-dev's server stops its PTDaemon on the way out
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if ntp is not None:
            ntp.close()
    progress(f"power_check {folder}")
    checked = subprocess.run([str(tools["power_check"]), str(folder)], capture_output=True,
                             text=True, check=False)
    output = checked.stdout + checked.stderr
    (folder / "power_check.txt").write_text(output)
    return PowerDevRun(folder, checked.returncode, output, _simulated(folder), work)


def _ensure_ntp(cfg: PowerDevConfig, progress) -> LoopbackNtp | None:
    if ntp_answers(cfg.ntp):
        return None
    if cfg.ntp not in LOOPBACK:
        raise PowerDevError(f"no NTP server answers at {cfg.ntp}: power-dev's client and "
                            "server both need one; fix [power_dev] ntp")
    ntp = LoopbackNtp()
    try:
        ntp.start()
    except NtpError as exc:
        raise PowerDevError(str(exc)) from None
    progress("NTP on 127.0.0.1:123 serving this machine's clock (server and client share it)")
    return ntp


def _wait_ready(server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if SERVER_READY in log.read_text(errors="replace"):
            return
        if server.poll() is not None:
            raise PowerDevError(f"power-dev's server exited (code {server.returncode}): "
                                f"{_tail(log)}")
        time.sleep(0.1)
    raise PowerDevError(f"power-dev's server did not start within {SERVER_START_TIMEOUT_S:g} "
                        f"s: {_tail(log)}")


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no output)"
    return " | ".join(text[-lines:]) or "(no output)"


def _simulated(folder: Path) -> bool:
    """Whether PTDaemon was tinypower's simulator (it says so in its Identify reply)."""
    import json

    try:
        server = json.loads((folder / "power" / "server.json").read_text())
        return any(SIMULATOR_TAG in str(m.get("reply", "")) for m in server["ptd_messages"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def check_lines(output: str) -> list[tuple[bool, str]]:
    """power_check's verdicts: (passed, check name) for each ``[x]``/``[ ]`` line."""
    verdicts = []
    for line in output.splitlines():
        for mark, ok in (("[x] ", True), ("[ ] ", False)):
            if mark in line:
                verdicts.append((ok, line.split(mark, 1)[1].strip()))
    return verdicts



def _uncertainty_max(folder: Path) -> float | None:
    """The largest per-sample uncertainty PTDaemon's ``Uncertainty`` summary gives in
    ``run_1/ptd_out.txt`` (``Uncertainty: Uncertainty,<avg>,<min>,<max>,...``; field meanings
    as :class:`energy_monitor.ptd.PtdSummary` reads them)."""
    try:
        text = (folder / "run_1" / "ptd_out.txt").read_text()
    except OSError:
        return None
    worst = None
    for line in text.splitlines():
        if line.startswith("Uncertainty: Uncertainty,"):
            try:
                value = float(line.split(",")[3])
            except (IndexError, ValueError):
                continue
            worst = value if worst is None else max(worst, value)
    return worst


def score_run(run: PowerDevRun) -> dict[str, Any]:
    """The folder's metrics per phase (the director's scorer, on power-dev's ``spl.txt``) and
    its checks: LoadGen's validity and the ranging check decide validity; power_check's own
    verdicts, MLPerf's fixed run length and a hardware analyzer decide compliance."""
    from tinypower.results.power_logs import PowerLogError
    from tinypower.rules.power import ranging_check
    from tinypower.scale.director import Check, compliance_checks, score_phase

    measured_as = "simulated" if run.simulated else "hardware"
    phases: dict[str, Any] = {}
    checks: list[Check] = []
    for name, folder in (("ranging", "ranging"), ("testing", "run_1")):
        phase_dir = run.folder / folder
        try:
            phases[name] = {"ptd": {"measured_as": measured_as,
                                    **score_phase(phase_dir, phase_dir / "spl.txt", None, 2.0)}}
        except (PowerLogError, ValueError, OSError) as exc:
            phases[name] = {"ptd": {"error": str(exc)}}
            checks.append(Check(f"{name}_score", False, str(exc)))
    testing = phases.get("testing", {}).get("ptd", {})
    ranging = phases.get("ranging", {}).get("ptd", {})
    if "value" in testing:
        checks.append(Check("loadgen", testing.get("loadgen_validity") == "VALID",
                            f"LoadGen says the run is {testing.get('loadgen_validity')}"))
        if "value" in ranging:
            ok, message = ranging_check(testing["average_power_w"], ranging["average_power_w"])
            checks.append(Check("ranging_power", ok, message))
        checks += [c for c in compliance_checks(testing, _uncertainty_max(run.folder), True)
                   if c.name != "measured_as"]
    verdicts = check_lines(run.check_output)
    checks += [Check("power_check", ok, name, "compliance") for ok, name in verdicts if not ok]
    checks.append(Check("power_check", run.check_rc == 0 and bool(verdicts),
                        f"power_check: {len([v for v in verdicts if v[0]])} of "
                        f"{len(verdicts)} checks passed (power_check.txt)", "compliance"))
    checks.append(Check("measured_as", measured_as == "hardware",
                        f"PTDaemon's numbers are {measured_as}", "compliance"))
    valid = all(c.ok for c in checks if c.kind == "validity")
    return {"session": run.folder.name, "engine": "power-dev", "phases": phases,
            "testing": testing, "measured_as": measured_as,
            "checks": [c.record() for c in checks], "valid": valid,
            "compliant": valid and all(c.ok for c in checks), "alignment_bound_s": None}
