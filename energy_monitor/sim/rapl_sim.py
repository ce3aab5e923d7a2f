"""A simulated powercap RAPL tree: real files in a folder, advanced by a power model.

The RAPL driver reads sysfs files, so the simulator *is* a directory laid out like
``/sys/class/powercap``: top-level zones ``intel-rapl:<n>`` with their subzones nested inside
(``intel-rapl:<n>/intel-rapl:<n>:<m>``) and also listed flat as symlinks, as the kernel does.
Each zone holds ``name``, ``max_energy_range_uj`` and ``energy_uj``. :meth:`FakePowercap.advance`
moves the simulator's clock and adds ``power_w x seconds`` to each zone's counter, wrapping at
its range; ``energy_j`` keeps the unwrapped truth for the tests. A zone can mirror another's
counter (multi-die AMD parts that expose one socket counter per die).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RANGE_UJ = 262_143_328_850  # a common Intel package range (~262 kJ)


@dataclass
class _Zone:
    path: Path
    power_w: float
    max_range_uj: int
    mirror_of: str | None
    energy_j: float = 0.0  # unwrapped truth


class FakePowercap:
    """A powercap tree under ``root`` whose counters follow set powers on a virtual clock."""

    def __init__(self, root: Path, start_s: float = 1_700_000_000.0) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # The identity mark (energy_monitor.meter.SIM_MARK) the RAPL driver looks for.
        (self.root / "tinypowersim").write_text("a simulated powercap tree\n")
        self.zones: dict[str, _Zone] = {}
        self._now_s = start_s
        self._lock = threading.Lock()

    def add_zone(
        self, zone_id: str, name: str, power_w: float = 0.0, *,
        max_range_uj: int = DEFAULT_RANGE_UJ, initial_uj: int = 0, mirror_of: str | None = None,
    ) -> None:
        """``zone_id`` is ``"0"`` (``intel-rapl:0``) or ``"0:1"`` (a subzone of zone 0)."""
        dir_name = f"intel-rapl:{zone_id}"
        if ":" in zone_id:
            parent = self.root / f"intel-rapl:{zone_id.split(':')[0]}"
            path = parent / dir_name
            path.mkdir(parents=True)
            (self.root / dir_name).symlink_to(path.relative_to(self.root))
        else:
            path = self.root / dir_name
            path.mkdir(parents=True)
        (path / "name").write_text(name + "\n")
        (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
        zone = _Zone(path, power_w, max_range_uj, mirror_of, initial_uj / 1e6)
        self.zones[zone_id] = zone
        self._write(zone)

    def set_power(self, zone_id: str, power_w: float) -> None:
        with self._lock:
            self.zones[zone_id].power_w = power_w

    def now(self) -> float:
        """The simulator's clock (UTC epoch seconds); give it to the driver as ``clock``."""
        with self._lock:
            return self._now_s

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now_s += seconds
            for zone in self.zones.values():
                if zone.mirror_of is None:
                    zone.energy_j += zone.power_w * seconds
            for zone in self.zones.values():
                if zone.mirror_of is not None:
                    zone.energy_j = self.zones[zone.mirror_of].energy_j
                self._write(zone)

    def _write(self, zone: _Zone) -> None:
        """Replace the file whole, so a reader never sees it half written (sysfs reads are
        atomic)."""
        counter = int(round(zone.energy_j * 1e6)) % zone.max_range_uj
        staged = zone.path / ".energy_uj.new"
        staged.write_text(f"{counter}\n")
        os.replace(staged, zone.path / "energy_uj")
