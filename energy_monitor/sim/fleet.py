"""A simulated fleet's power telemetry with known energy, written as OpenMetrics for backfill.

Why: tests and benchmarks need a real Prometheus server holding thousands of nodes' readings
whose true energy is known exactly. Each node's true power is piecewise linear between knots
one second apart, so its true energy over any interval is exact (no sampling involved).
Readings are what an exporter scraped at its own phase (with millisecond jitter): a power gauge
(W, the profile at the reading time) or a cumulative energy counter (J) that may reset to zero
(an exporter or BMC restart). Readings can be left out for a stretch (a gap).

:func:`write_openmetrics` writes the readings in the text format ``promtool tsdb
create-blocks-from openmetrics`` reads. Millions of lines are built with numpy as fixed-width
digit columns and written in one go: formatting them one by one in Python would take longer
than the backfill itself.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("power", "energy")  # power gauge in W, or cumulative energy counter in J


@dataclass
class SimNode:
    """One node: its true power profile and the readings an exporter published."""

    name: str
    start_s: float  # first knot of the profile
    knot_power_w: np.ndarray  # true power at start_s, start_s + 1, ...
    time_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # reading times
    value: np.ndarray = field(default_factory=lambda: np.zeros(0))  # W or J, as written
    resets_at_s: list[float] = field(default_factory=list)
    gaps: list[tuple[float, float]] = field(default_factory=list)

    def true_energy_j(self, start_s: float, end_s: float) -> float:
        """The exact energy of the piecewise-linear profile over ``[start_s, end_s]``."""
        cumulative = self.cumulative_energy_j(np.array([start_s, end_s]))
        return float(cumulative[1] - cumulative[0])

    def cumulative_energy_j(self, time_s: np.ndarray) -> np.ndarray:
        """Energy since ``start_s`` at each time (exact for the piecewise-linear profile)."""
        p = self.knot_power_w
        knot_energy = np.concatenate(([0.0], np.cumsum(0.5 * (p[1:] + p[:-1]))))
        x = np.asarray(time_s, dtype=np.float64) - self.start_s
        if np.any(x < 0) or np.any(x > len(p) - 1):
            raise ValueError(f"{self.name}: times outside the simulated profile")
        k = np.minimum(np.floor(x).astype(np.int64), len(p) - 2)
        f = x - k
        return knot_energy[k] + f * p[k] + 0.5 * f * f * (p[k + 1] - p[k])

    def power_at_w(self, time_s: np.ndarray) -> np.ndarray:
        knots = self.start_s + np.arange(len(self.knot_power_w))
        return np.interp(time_s, knots, self.knot_power_w)


@dataclass
class SimFleet:
    """Nodes publishing ``metric`` with label ``label`` = node name."""

    metric: str
    kind: str
    label: str
    nodes: list[SimNode]

    def node(self, name: str) -> SimNode:
        return next(n for n in self.nodes if n.name == name)

    def true_energy_j(self, start_s: float, end_s: float) -> float:
        return sum(n.true_energy_j(start_s, end_s) for n in self.nodes)


def simulate_fleet(
    nodes: int,
    start_s: float,
    duration_s: float,
    *,
    kind: str = "energy",
    metric: str | None = None,
    label: str = "instance",
    interval_s: float = 1.0,
    jitter_s: float = 0.005,
    resets: dict[int, list[float]] | None = None,
    gaps: dict[int, list[tuple[float, float]]] | None = None,
    seed: int = 0,
    name_format: str = "node{:05d}",
) -> SimFleet:
    """``nodes`` nodes with readings every ``interval_s`` over ``duration_s`` from ``start_s``.

    ``resets`` maps a node index to the times its energy counter restarts from zero; ``gaps``
    maps a node index to ``(from_s, to_s)`` stretches with no readings. Each node's power is
    an idle level plus a training load that steps up and down, with per-second noise.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    metric = metric or ("node_energy_joules_total" if kind == "energy" else "node_power_watts")
    rng = np.random.default_rng(seed)
    knots = int(np.ceil(duration_s)) + 2
    t_knots = np.arange(knots, dtype=np.float64)
    out: list[SimNode] = []
    for i in range(nodes):
        idle_w = rng.uniform(150.0, 250.0)
        load_w = rng.uniform(300.0, 700.0)
        period_s = rng.uniform(300.0, 900.0)
        phase = rng.uniform(0.0, 2 * np.pi)
        busy = 0.5 + 0.5 * np.tanh(4.0 * np.sin(2 * np.pi * t_knots / period_s + phase))
        power = idle_w + load_w * busy + rng.normal(0.0, 5.0, knots)
        node = SimNode(name_format.format(i), start_s, np.round(power, 3))
        first = start_s + rng.uniform(0.0, interval_s)
        count = int((start_s + duration_s - first) // interval_s) + 1
        t = first + interval_s * np.arange(count) + rng.uniform(-jitter_s, jitter_s, count)
        t = np.round(t, 3)  # Prometheus keeps milliseconds
        t = t[(t >= start_s) & (t <= start_s + duration_s)]
        for lo, hi in (gaps or {}).get(i, []):
            t = t[(t < lo) | (t > hi)]
            node.gaps.append((lo, hi))
        if kind == "power":
            node.value = np.round(node.power_at_w(t), 3)
        else:
            # The counter holds some total from before the profile started; a reset at r
            # restarts it from zero, so later readings count only the energy since r.
            offset_j = np.full(len(t), 1e6)
            for r in sorted((resets or {}).get(i, [])):
                offset_j[t > r] = -node.cumulative_energy_j(np.array([r]))[0]
                node.resets_at_s.append(r)
            node.value = np.round(node.cumulative_energy_j(t) + offset_j, 3)
        node.time_s = t
        out.append(node)
    return SimFleet(metric, kind, label, out)


def _digit_columns(values: np.ndarray, width: int) -> np.ndarray:
    """ASCII digits of non-negative integers, zero-padded to ``width`` columns."""
    cols = np.empty((len(values), width), dtype=np.uint8)
    rest = values.copy()
    for col in range(width - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        cols[:, col] = digit
    cols += ord("0")
    return cols


def _fixed_point_columns(values: np.ndarray, int_width: int) -> np.ndarray:
    """``values`` (>= 0) as zero-padded ``int.mmm`` text columns."""
    milli = np.round(np.asarray(values, dtype=np.float64) * 1000).astype(np.int64)
    if np.any(milli < 0):
        raise ValueError("the OpenMetrics writer only writes non-negative values")
    cols = np.empty((len(milli), int_width + 4), dtype=np.uint8)
    cols[:, :int_width] = _digit_columns(milli // 1000, int_width)
    cols[:, int_width] = ord(".")
    cols[:, int_width + 1:] = _digit_columns(milli % 1000, 3)
    return cols


def openmetrics_lines(metric: str, labels: dict[str, str], time_s: np.ndarray,
                      value: np.ndarray) -> bytes:
    """One series' sample lines: ``metric{labels} value timestamp`` (seconds, ms precision)."""
    if len(time_s) == 0:
        return b""
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = np.frombuffer(f"{metric}{{{label_text}}} ".encode(), dtype=np.uint8)
    int_width = max(1, len(str(int(np.max(value)))))
    value_cols = _fixed_point_columns(value, int_width)
    time_cols = _fixed_point_columns(time_s, len(str(int(np.max(time_s)))))
    rows = np.empty((len(time_s), len(prefix) + value_cols.shape[1] + 1 + time_cols.shape[1] + 1),
                    dtype=np.uint8)
    at = len(prefix)
    rows[:, :at] = prefix
    rows[:, at:at + value_cols.shape[1]] = value_cols
    at += value_cols.shape[1]
    rows[:, at] = ord(" ")
    rows[:, at + 1:at + 1 + time_cols.shape[1]] = time_cols
    rows[:, -1] = ord("\n")
    return rows.tobytes()


def write_openmetrics(fleets: Iterable[SimFleet], path: Path) -> Path:
    """Write each fleet's metric family (one family per fleet) and the closing ``# EOF``."""
    with Path(path).open("wb") as f:
        for fleet in fleets:
            family = fleet.metric
            kind = "gauge"
            if fleet.kind == "energy" and family.endswith("_total"):
                family, kind = family[: -len("_total")], "counter"
            f.write(f"# HELP {family} simulated fleet telemetry ({fleet.kind})\n".encode())
            f.write(f"# TYPE {family} {kind}\n".encode())
            for node in fleet.nodes:
                f.write(openmetrics_lines(fleet.metric, {fleet.label: node.name},
                                          node.time_s, node.value))
        f.write(b"# EOF\n")
    return Path(path)


class ToolMissing(RuntimeError):
    """prometheus or promtool is not installed; the message says which package provides it."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} is not on PATH: install the Debian package `prometheus` "
                          "(apt-get install -y prometheus), which provides prometheus and promtool")
    return path


def backfill(openmetrics: Path, tsdb_dir: Path) -> None:
    """Turn an OpenMetrics file into TSDB blocks with ``promtool tsdb create-blocks-from``."""
    done = subprocess.run(
        [_tool("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(openmetrics),
         str(tsdb_dir)], capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"promtool backfill of {openmetrics} failed: {done.stderr[-2000:]}")


class PrometheusServer:
    """A throwaway Prometheus on a free loopback port over ``tsdb_dir`` (never the system
    service): no scrape targets, so it serves exactly what was backfilled."""

    def __init__(self, tsdb_dir: Path) -> None:
        self.tsdb_dir = Path(tsdb_dir)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = self.tsdb_dir.parent / f"{self.tsdb_dir.name}-prometheus.yml"
        config.write_text("global:\n  scrape_interval: 15s\n")
        self._log = (self.tsdb_dir.parent / f"{self.tsdb_dir.name}-prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [_tool("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={self.tsdb_dir}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=100y"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_ready(timeout_s=60.0)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._proc.returncode}; see "
                                   f"{self._log.name}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus on {self.url} was not ready within {timeout_s:g} s")

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
