"""A fake ``ipmitool`` for the IPMI meter: the program the driver runs, written into a folder.

The IPMI driver's boundary is the ``ipmitool`` program, which speaks RMCP+ to a BMC that no
test can reach. :class:`FakeIpmitool` writes an executable ``ipmitool`` (a Python script run by
this interpreter) that takes the same arguments (``-I lanplus -H HOST [-p PORT] -U USER -E|-P
PASS dcmi power reading``, or ``-I open``) and prints real ipmitool's output for ``dcmi power
reading``, whole watts from a sine load model at the moment it runs. It fails as ipmitool does:
a wrong host or credentials or an unreachable BMC ("Error: Unable to establish IPMI v2 / RMCP+
session"), a BMC without DCMI ("DCMI request failed because: Invalid command (c1)"), no local
IPMI device. Put :attr:`FakeIpmitool.folder` first on PATH (``path_env``).

The script reads its settings (load, credentials, fault) from ``ipmitool.json`` beside it on
every run, so a test can change the fault mid-run with :meth:`FakeIpmitool.set`; every reading
served is appended to ``ipmitool.log`` (UTC time, exact W): the ground truth.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

FAULTS = (None, "unreachable", "no_dcmi", "hang")

SCRIPT = r'''
import json, math, os, sys, time

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "ipmitool.json")) as f:
    cfg = json.load(f)
args = sys.argv[1:]


def opt(flag):
    return args[args.index(flag) + 1] if flag in args[:-1] else None


def fail(text, status=1):
    sys.stderr.write(text + "\n")
    sys.exit(status)


if args == ["-V"]:  # the identity mark (energy_monitor.meter.SIM_MARK)
    print("ipmitool version 1.8.19 (tinypowersim fake ipmitool)")
    sys.exit(0)
if args[-3:] != ["dcmi", "power", "reading"]:
    fail("fake ipmitool: only 'dcmi power reading' is simulated")
log = os.path.join(here, "ipmitool.log")
served = sum(1 for _ in open(log)) if os.path.exists(log) else 0
fault = cfg["fault"]
if cfg["fail_after"] is not None and served >= cfg["fail_after"]:
    fault = cfg["fail_with"]
if (opt("-I") or "open") == "open":
    if not cfg["local"]:
        fail("Could not open device at /dev/ipmi0 or /dev/ipmi/0 or /dev/ipmidev/0: "
             "No such file or directory")
else:
    password = os.environ.get("IPMI_PASSWORD") if "-E" in args else opt("-P")
    wrong = (opt("-H"), opt("-U"), password) != (cfg["host"], cfg["username"], cfg["password"])
    if fault == "unreachable" or wrong:
        time.sleep(cfg["session_timeout_s"])
        fail("Error: Unable to establish IPMI v2 / RMCP+ session")
if fault == "hang":
    time.sleep(3600)
if fault == "no_dcmi":
    fail("\n    DCMI request failed because: Invalid command (c1)")
now = time.time()
watts = cfg["base_w"] + cfg["swing_w"] * math.sin(2 * math.pi * (now - cfg["t0"]) / cfg["period_s"])
with open(log, "a") as f:
    f.write(f"{now:.6f},{watts:.6f}\n")
w = int(round(watts))
stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(now))
print()
print(f"    Instantaneous power reading:              {w:8d} Watts")
print(f"    Minimum during sampling period:           {w - 3:8d} Watts")
print(f"    Maximum during sampling period:           {w + 3:8d} Watts")
print(f"    Average power reading over sample period: {w:8d} Watts")
print(f"    IPMI timestamp:                           {stamp}")
print(f"    Sampling period:                          00000001 Seconds.")
print(f"    Power reading state is:                   activated")
print()
print()
'''


class FakeIpmitool:
    """An ``ipmitool`` in ``folder`` answering for one BMC (``host``, ``username``,
    ``password``) whose power is ``base_w + swing_w * sin(2 pi (t - t0) / period_s)``."""

    def __init__(
        self, folder: Path, *, base_w: float = 400.0, swing_w: float = 8.0,
        period_s: float = 5.0, t0: float = 0.0, host: str = "10.0.0.6",
        username: str = "tinypower", password: str = "secret", local: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.program = self.folder / "ipmitool"
        self.config: dict[str, Any] = {
            "base_w": base_w, "swing_w": swing_w, "period_s": period_s, "t0": t0,
            "host": host, "username": username, "password": password, "local": local,
            "fault": None, "fail_after": None, "fail_with": "unreachable",
            "session_timeout_s": 0.05,
        }
        self._write_config()
        self.program.write_text(f"#!{sys.executable}\n{SCRIPT.lstrip()}")
        self.program.chmod(0o755)

    def set(self, **changes: Any) -> None:
        """Change the fake's settings: ``fault`` (one of :data:`FAULTS`, from now on),
        ``fail_after`` readings then ``fail_with``, ``local`` (a local BMC device exists)."""
        unknown = set(changes) - set(self.config)
        if unknown:
            raise ValueError(f"unknown fake ipmitool settings {sorted(unknown)}")
        if changes.get("fault") not in FAULTS or changes.get("fail_with") not in (
                *FAULTS, None):
            raise ValueError(f"faults are {FAULTS}")
        self.config.update(changes)
        self._write_config()

    def path_env(self) -> str:
        """PATH with the fake first."""
        return f"{self.folder}{os.pathsep}{os.environ.get('PATH', '')}"

    def power_w(self, t: float) -> float:
        c = self.config
        return c["base_w"] + c["swing_w"] * math.sin(2 * math.pi * (t - c["t0"]) / c["period_s"])

    def mean_w(self, begin_s: float, end_s: float) -> float:
        """The load's exact mean over ``[begin_s, end_s]``: ground truth."""
        c = self.config
        k = 2 * math.pi / c["period_s"]
        swing = (math.cos(k * (end_s - c["t0"])) - math.cos(k * (begin_s - c["t0"]))) / (
            k * (end_s - begin_s))
        return c["base_w"] - c["swing_w"] * swing

    def readings(self) -> list[tuple[float, float]]:
        """Every (UTC time, exact W) the fake served."""
        log = self.folder / "ipmitool.log"
        if not log.is_file():
            return []
        rows = (line.split(",") for line in log.read_text().splitlines())
        return [(float(t), float(w)) for t, w in rows]

    def _write_config(self) -> None:
        staged = self.folder / "ipmitool.json.new"
        staged.write_text(json.dumps(self.config))
        os.replace(staged, self.folder / "ipmitool.json")
