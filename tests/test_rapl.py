"""The RAPL driver reading a simulated powercap tree (real files in tmp_path): sums without
double counting, wraparound, mirrored packages, and the messages for missing or unreadable
counters."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from energy_monitor.meter import MeterError
from energy_monitor.rapl import Rapl, find_zones
from energy_monitor.series_meters import connect_series_meter
from energy_monitor.sim.rapl_sim import FakePowercap


def server_tree(root: Path) -> FakePowercap:
    """Two sockets, each with core and dram subzones; package-0 starts close to its wrap."""
    tree = FakePowercap(root)
    tree.add_zone("0", "package-0", 80.0, max_range_uj=100_000_000, initial_uj=99_000_000)
    tree.add_zone("0:0", "core", 50.0)
    tree.add_zone("0:1", "dram", 7.0)
    tree.add_zone("1", "package-1", 60.0)
    tree.add_zone("1:0", "core", 40.0)
    tree.add_zone("1:1", "dram", 5.0)
    return tree


def run(meter: Rapl, tree: FakePowercap, steps: list[tuple[float, dict[str, float]]]):
    """Advance the tree step by step (seconds, new powers) and poll after each."""
    meter.start()
    for seconds, powers in steps:
        for zone, watts in powers.items():
            tree.set_power(zone, watts)
        tree.advance(seconds)
        meter.poll()
    return meter.stop()


def test_packages_plus_dram_without_cores_and_with_a_wrap(tmp_path: Path) -> None:
    tree = server_tree(tmp_path)
    meter = Rapl(tmp_path, clock=tree.now, poll_interval_s=3600)
    assert sorted(z.label for z in meter.zones) == [
        "dram (intel-rapl:0:1)", "dram (intel-rapl:1:1)", "package-0 (intel-rapl:0)",
        "package-1 (intel-rapl:1)",
    ]
    assert meter.skipped == {"core (intel-rapl:0:0)": "inside its package",
                             "core (intel-rapl:1:0)": "inside its package"}
    steps = [(0.5, {})] * 10 + [(0.5, {"0": 150.0})] * 10
    start = tree.now()
    series = run(meter, tree, steps)
    assert meter.wraps >= 1  # package-0 wrapped at 100 J
    end = tree.now()
    # 5 s at 80+7+60+5 W, then 5 s with package-0 at 150 W.
    truth_j = 5 * 152.0 + 5 * 222.0
    result = series.energy(start, end, max_gap_s=1.0)
    assert result.energy_j == pytest.approx(truth_j, rel=1e-6)
    assert result.mean_power_w == pytest.approx(truth_j / 10.0, rel=1e-6)
    window = series.energy(start + 2.5, start + 7.5, max_gap_s=1.0)
    assert window.energy_j == pytest.approx(2.5 * 152.0 + 2.5 * 222.0, rel=1e-6)
    per_zone = meter.domain_series()["package-0 (intel-rapl:0)"]
    assert per_zone.energy(start, end, 1.0).energy_j == pytest.approx(5 * 80 + 5 * 150,
                                                                       rel=1e-6)
    assert meter.identify().measured_as == "simulated"  # the tree carries the sim mark


def test_psys_alone_when_present(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path)
    tree.add_zone("0", "package-0", 12.0)
    tree.add_zone("0:0", "core", 8.0)
    tree.add_zone("1", "psys", 21.0)
    meter = Rapl(tmp_path, clock=tree.now, poll_interval_s=3600)
    assert [z.name for z in meter.zones] == ["psys"]
    start = tree.now()
    series = run(meter, tree, [(1.0, {})] * 4)
    assert series.energy(start, tree.now(), 2.0).energy_j == pytest.approx(84.0, rel=1e-6)


def test_mirrored_packages_are_counted_once(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path)
    tree.add_zone("0", "package-0", 90.0, initial_uj=123_456_789)
    tree.add_zone("1", "package-0", mirror_of="0", initial_uj=123_456_789)
    tree.add_zone("2", "package-0", mirror_of="0", initial_uj=123_456_789)
    meter = Rapl(tmp_path, clock=tree.now, poll_interval_s=3600)
    assert [z.path.name for z in meter.zones] == ["intel-rapl:0"]
    assert meter.skipped["package-0 (intel-rapl:2)"] == "mirrors package-0 (intel-rapl:0)"
    start = tree.now()
    series = run(meter, tree, [(1.0, {})] * 3)
    assert series.energy(start, tree.now(), 2.0).energy_j == pytest.approx(270.0, rel=1e-6)


def test_named_domains_and_unknown_names(tmp_path: Path) -> None:
    tree = server_tree(tmp_path)
    meter = Rapl(tmp_path, domains=["dram"], clock=tree.now, poll_interval_s=3600)
    start = tree.now()
    series = run(meter, tree, [(1.0, {})] * 2)
    assert series.energy(start, tree.now(), 2.0).energy_j == pytest.approx(24.0, rel=1e-6)
    with pytest.raises(MeterError, match="no RAPL zone named gpu; this machine has core, dram"):
        Rapl(tmp_path, domains=["gpu"])


def test_the_poller_reads_on_its_own_and_writes_the_csv(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    tree = FakePowercap(root)
    tree.add_zone("0", "package-0", 40.0)
    meter = Rapl(root, poll_interval_s=0.02, clock=tree.now)
    meter.start(tmp_path)
    for _ in range(20):
        tree.advance(0.1)
        time.sleep(0.01)
    time.sleep(0.05)
    series = meter.stop()
    meter.close()
    assert len(series) >= 5
    total = series.energy_j[-1] - series.energy_j[0]
    assert total == pytest.approx(40.0 * (series.time_s[-1] - series.time_s[0]), rel=1e-6)
    rows = (tmp_path / "rapl.csv").read_text().splitlines()
    assert rows[0] == "time_s,package-0 (intel-rapl:0)"
    assert len(rows) == len(series) + 1


def test_missing_tree_and_no_zones_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(MeterError, match="no powercap tree .* virtual machines"):
        find_zones(tmp_path / "absent")
    (tmp_path / "dtpm").mkdir()
    with pytest.raises(MeterError, match=r"no RAPL zones \(intel-rapl:\*\)"):
        find_zones(tmp_path)


def test_unreadable_counters_name_the_root_fix(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tree = FakePowercap(tmp_path)
    tree.add_zone("0", "package-0", 10.0)
    counter = tmp_path / "intel-rapl:0" / "energy_uj"
    counter.chmod(0o400)  # as the kernel leaves it: root only
    if os.geteuid() == 0:
        # Root reads any file, so the refusal a normal user gets is raised at the read itself.
        original = Path.read_text

        def refuse(self: Path, *args: object, **kwargs: object) -> str:
            if self == counter:
                raise PermissionError(13, "Permission denied", str(self))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", refuse)
    else:
        counter.chmod(0o000)
    with pytest.raises(MeterError, match=r"readable only by root .* `sudo chmod a\+r"):
        Rapl(tmp_path)


def test_the_registry_builds_the_rapl_driver(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path)
    tree.add_zone("0", "package-0", 10.0)
    meter = connect_series_meter("rapl", str(tmp_path), poll_interval_s=3600)
    assert isinstance(meter, Rapl)
    with pytest.raises(ValueError,
                       match="no driver for meter 'wattmeter'; meters: ipmi, nvml, ptd"):
        connect_series_meter("wattmeter", None)
