"""Linux RAPL energy counters through powercap sysfs (``/sys/class/powercap/intel-rapl:*``).

Each RAPL zone is a directory with ``name`` (``package-0``, ``core``, ``uncore``, ``dram``,
``psys``), ``energy_uj`` (a cumulative counter in microjoules) and ``max_energy_range_uj``
(where the counter wraps to zero). Top-level zones are ``intel-rapl:<n>``, their subzones
``intel-rapl:<n>:<m>``. AMD Zen CPUs expose the same tree.

What to add up without counting anything twice:

- ``psys`` (platform, on recent laptops and desktops) covers the whole SoC, packages and DRAM
  included: when present it is the system's energy on its own;
- otherwise each **package** plus each **dram** subzone (DRAM is outside the package domain);
  ``core`` and ``uncore`` are parts of their package and are never added;
- some multi-die AMD EPYC/Threadripper kernels expose one package per die that all mirror one
  socket counter (``mlco2/codecarbon#1274``): packages whose counters read the same value are
  counted once.

``domains=[...]`` measures named zones instead (``["package-0"]``, ``["dram"]``), still
de-duplicated. The driver polls every ``poll_interval_s`` (default 1 s) in a thread, unwraps
each counter by its ``max_energy_range_uj`` (a drop means one wrap; a counter must be read at
least once per wrap, which at 1 s takes a package drawing over ~260 kW) and returns the sum as a
:class:`~energy_monitor.series.CounterSeries` of joules since :meth:`Rapl.start` (already
unwrapped). ``domain_series()`` gives each zone's own series.

Since the 2020 "Platypus" fix, ``energy_uj`` is readable only by root: the driver says so and
how to grant read access, rather than failing on a bare ``PermissionError``.

Reference: ``shared/reference/instruments.md`` §11; setup in ``docs/meters/rapl.md``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from energy_monitor.meter import SIM_MARK, MeterError, MeterIdentity
from energy_monitor.poller import Poller
from energy_monitor.series import CounterSeries

POWERCAP_ROOT = Path("/sys/class/powercap")
_ZONE = re.compile(r"^intel-rapl:\d+(:\d+)?$")
UJ_PER_J = 1e6


@dataclass(frozen=True)
class RaplZone:
    path: Path
    name: str  # package-0, dram, core, uncore, psys
    max_energy_range_uj: int

    @property
    def label(self) -> str:
        return f"{self.name} ({self.path.name})"

    @property
    def is_subzone(self) -> bool:
        return self.path.name.count(":") == 2


def find_zones(root: Path = POWERCAP_ROOT) -> list[RaplZone]:
    """Every RAPL zone under ``root`` (each once, whether listed flat or nested)."""
    if not root.is_dir():
        raise MeterError(
            f"no powercap tree at {root}: this kernel does not expose RAPL (load the "
            "intel_rapl_common module; virtual machines usually have no RAPL), or measure with "
            "another meter"
        )
    paths = {p.name: p for p in root.glob("intel-rapl:*") if _ZONE.match(p.name)}
    for top in list(paths.values()):
        for sub in top.glob("intel-rapl:*"):
            if _ZONE.match(sub.name):
                paths.setdefault(sub.name, sub)
    zones = []
    for name in sorted(paths, key=_zone_order):
        path = paths[name]
        try:
            zone_name = (path / "name").read_text().strip()
            max_uj = int((path / "max_energy_range_uj").read_text().strip())
        except PermissionError as exc:
            raise _permission_error(path) from exc
        except (OSError, ValueError) as exc:
            raise MeterError(f"cannot read RAPL zone {path} ({exc}): is this a powercap "
                             "tree?") from exc
        zones.append(RaplZone(path, zone_name, max_uj))
    if not zones:
        raise MeterError(
            f"no RAPL zones (intel-rapl:*) under {root}: this CPU or kernel does not expose "
            "RAPL (virtual machines usually do not); measure with another meter"
        )
    return zones


def _zone_order(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in name.split(":")[1:])


def read_energy_uj(zone: RaplZone) -> int:
    try:
        return int((zone.path / "energy_uj").read_text().strip())
    except PermissionError as exc:
        raise _permission_error(zone.path) from exc
    except (OSError, ValueError) as exc:
        raise MeterError(f"cannot read {zone.path / 'energy_uj'} ({exc})") from exc


def _permission_error(path: Path) -> MeterError:
    return MeterError(
        f"RAPL counters in {path} are readable only by root on this kernel (the 2020 "
        "'Platypus' fix). Grant read access for this boot with `sudo chmod a+r "
        "/sys/class/powercap/intel-rapl:*/energy_uj /sys/class/powercap/intel-rapl:*/"
        "intel-rapl:*/energy_uj` (or a udev rule), run as root, or measure with another meter"
    )


def select_zones(zones: Sequence[RaplZone], domains: Sequence[str] | None
                 ) -> tuple[list[RaplZone], dict[str, str]]:
    """The zones to add up, and the skipped ones with the reason (see the module doc)."""
    skipped: dict[str, str] = {}
    if domains is not None:
        chosen = [z for z in zones if z.name in domains]
        missing = set(domains) - {z.name for z in chosen}
        if missing:
            raise MeterError(
                f"no RAPL zone named {', '.join(sorted(missing))}; this machine has "
                f"{', '.join(sorted({z.name for z in zones}))}"
            )
    else:
        psys = [z for z in zones if z.name == "psys"]
        if psys:
            chosen = psys
            for z in zones:
                if z.name != "psys":
                    skipped[z.label] = "inside psys"
        else:
            chosen = [z for z in zones if z.name.startswith("package") or z.name == "dram"]
            for z in zones:
                if z not in chosen:
                    skipped[z.label] = "inside its package"
    # Mirrored packages: the same counter exposed once per die.
    unique: list[RaplZone] = []
    seen: dict[tuple[str, int, int], RaplZone] = {}
    for z in chosen:
        kind = "package" if z.name.startswith("package") else z.name
        key = (kind, read_energy_uj(z), z.max_energy_range_uj)
        if kind == "package" and key in seen:
            skipped[z.label] = f"mirrors {seen[key].label}"
            continue
        seen[key] = z
        unique.append(z)
    return unique, skipped


class _Unwrapped:
    """One zone's counter since start, in joules, with wraps undone."""

    def __init__(self, zone: RaplZone, first_uj: int) -> None:
        self.zone = zone
        self.last_uj = first_uj
        self.total_uj = 0
        self.wraps = 0

    def update(self, uj: int) -> float:
        step = uj - self.last_uj
        if step < 0:
            step += self.zone.max_energy_range_uj
            self.wraps += 1
        self.total_uj += step
        self.last_uj = uj
        return self.total_uj / UJ_PER_J


class Rapl:
    """RAPL counters as one series meter (see the module doc for what it adds up)."""

    kind = "rapl"

    def __init__(
        self, root: Path = POWERCAP_ROOT, *, domains: Sequence[str] | None = None,
        poll_interval_s: float = 1.0, measured_as: str = "counter",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` stamps the readings (UTC epoch seconds; a simulator's clock in tests)."""
        self.root = Path(root)
        self.clock = clock
        self.measured_as = measured_as
        self.zones, self.skipped = select_zones(find_zones(self.root), domains)
        for zone in self.zones:
            read_energy_uj(zone)  # fail now, with the permission message, not mid-run
        self._lock = threading.Lock()
        self._times: list[float] = []
        self._per_zone: list[list[float]] = []
        self._counters: list[_Unwrapped] = []
        self._poller = Poller(self.poll, poll_interval_s, "rapl-poll")
        self._csv: TextIO | None = None

    def identify(self) -> MeterIdentity:
        names = " + ".join(z.label for z in self.zones)
        # A powercap tree made by tinypower's simulator carries its mark file.
        made_by = SIM_MARK if (self.root / SIM_MARK).is_file() else "-"
        return MeterIdentity("rapl", f"RAPL {names}", str(self.root), made_by, self.measured_as)

    def start(self, folder: Path | None = None) -> None:
        """Take the first reading and poll in a thread; with a folder, readings are appended
        to ``folder/rapl.csv`` (UTC time, then each zone's joules since start)."""
        self._times, self._per_zone = [], [[] for _ in self.zones]
        now = self.clock()
        self._counters = [_Unwrapped(z, read_energy_uj(z)) for z in self.zones]
        self._csv = (folder / "rapl.csv").open("w") if folder else None
        if self._csv:
            self._csv.write("time_s," + ",".join(z.label for z in self.zones) + "\n")
        self._record(now, [0.0] * len(self.zones))
        self._poller.start()

    def stop(self) -> CounterSeries:
        """A last reading, then the summed counter since :meth:`start` (joules)."""
        self._poller.finish(self._close_csv)
        return self.series()

    def close(self) -> None:
        self._poller.stop()
        self._close_csv()

    def _close_csv(self) -> None:
        if self._csv:
            self._csv.close()
            self._csv = None

    def poll(self) -> None:
        """Read every zone once (the poller does this each ``poll_interval_s``)."""
        readings = [read_energy_uj(c.zone) for c in self._counters]
        now = self.clock()
        self._record(now, [c.update(uj) for c, uj in zip(self._counters, readings,
                                                           strict=True)])

    def series(self) -> CounterSeries:
        """The summed counter read so far (joules since start), also after a failure."""
        with self._lock:
            t = np.array(self._times)
            total = np.sum(np.array(self._per_zone), axis=0) if self._per_zone else t * 0
        return CounterSeries(t, total, source=self._source())

    def domain_series(self) -> dict[str, CounterSeries]:
        """Each zone's own counter (joules since start)."""
        with self._lock:
            t = np.array(self._times)
            return {z.label: CounterSeries(t, np.array(col), source=f"rapl {z.label}")
                    for z, col in zip(self.zones, self._per_zone, strict=True)}

    @property
    def wraps(self) -> int:
        return sum(c.wraps for c in self._counters)

    def _source(self) -> str:
        return "rapl " + " + ".join(z.label for z in self.zones)

    def _record(self, now: float, joules: list[float]) -> None:
        with self._lock:
            if self._times and now <= self._times[-1]:
                return
            self._times.append(now)
            for column, value in zip(self._per_zone, joules, strict=True):
                column.append(value)
        if self._csv:
            self._csv.write(f"{now:.6f}," + ",".join(f"{j:.6f}" for j in joules) + "\n")
            self._csv.flush()
