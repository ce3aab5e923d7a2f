"""Plots of measured power and of results: PNGs for session folders and the HTML report.

:func:`plot_trace` writes the session folder's ``power.png``; the ``*_png`` functions return PNG
bytes for :mod:`tinypower.report.html` to embed, so the report needs no files beside it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from energy_monitor.trace import Trace, Window

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_POINTS = 20_000  # plotted points; longer traces are reduced to per-bin means
# Samples the meter lost are NaN in the trace and show as gaps.
LINE = "#1f5f9f"
SHADE = "#f0a030"
PUBLISHED_COLOR = "#888888"
ZOOM_MARGIN = 0.08  # a zoomed window shows this share of its length on each side
ZOOM_COLUMNS = 5
ZOOM_POINTS = 2_000  # a zoomed plot is ~230 px wide: more points only cost time


def _figure(**options: object) -> Figure:
    """A matplotlib Figure, imported on first use: it costs a quarter of a second, which
    commands that never plot should not pay. No pyplot: its state machine and backend
    selection are for interactive use, cost another 0.1 s to import, and a figure made this
    way needs no closing (matplotlib's "embedding in a web application server" pattern)."""
    from matplotlib.figure import Figure

    return Figure(**options)


def _reduced(
    trace: Trace, start: int = 0, stop: int | None = None, max_points: int = MAX_POINTS
) -> tuple[np.ndarray, ...]:
    """Times and power (mW) of samples ``[start, stop)``, binned to at most ``max_points``."""
    power_mw = trace.energy_per_sample_j(start, stop) * trace.sample_rate_hz * 1e3
    t = trace.start_time_s + (start + np.arange(len(power_mw))) / trace.sample_rate_hz
    if len(power_mw) > max_points:
        bin_size = int(np.ceil(len(power_mw) / max_points))
        n = len(power_mw) // bin_size * bin_size
        bins = power_mw[:n].reshape(-1, bin_size)
        counts = np.sum(~np.isnan(bins), axis=1)
        with np.errstate(invalid="ignore"):  # a bin of lost samples stays NaN: a gap in the plot
            power_mw = np.nansum(bins, axis=1) / counts
        t = t[:n:bin_size]
    return t, power_mw


def _trace_figure(trace: Trace, windows: Sequence[Window], title: str) -> Figure:
    t, power_mw = _reduced(trace)
    fig = _figure(figsize=(10, 3.5), dpi=110)
    ax = fig.subplots()
    ax.plot(t, power_mw, lw=0.6, color=LINE)
    for i, w in enumerate(windows):
        ax.axvspan(w.start_s, w.end_s, color=SHADE, alpha=0.25, lw=0)
        ax.text((w.start_s + w.end_s) / 2, 1.0, f"window {i}", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("time on the meter's clock (s)")
    ax.set_ylabel("power (mW)")
    ax.set_title(title, fontsize=10, pad=14)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_trace(trace: Trace, windows: list[Window], path: Path, title: str) -> Path:
    fig = _trace_figure(trace, windows, title)
    fig.savefig(path)
    return path


def trace_png(trace: Trace, windows: Sequence[Window], title: str) -> bytes:
    """The whole trace with the windows shaded."""
    return _png(_trace_figure(trace, windows, title))


def window_zooms_png(trace: Trace, windows: Sequence[Window], titles: Sequence[str]) -> bytes:
    """Each window zoomed with a margin either side and its edges marked, side by side: where
    each window starts and ends, which the whole-trace plot is too coarse to show."""
    cols = min(len(windows), ZOOM_COLUMNS)
    rows = -(-len(windows) // cols)
    fig = _figure(figsize=(2.3 * cols, 2.1 * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(windows):]:
        ax.set_visible(False)
    for ax, window, title in zip(axes.flat, windows, titles, strict=False):
        margin_s = window.duration_s * ZOOM_MARGIN
        first = int((window.start_s - margin_s - trace.start_time_s) * trace.sample_rate_hz)
        last = int((window.end_s + margin_s - trace.start_time_s) * trace.sample_rate_hz) + 1
        t, power_mw = _reduced(trace, max(0, first), min(len(trace), last), ZOOM_POINTS)
        ax.plot(t, power_mw, lw=0.6, color=LINE)
        ax.axvspan(window.start_s, window.end_s, color=SHADE, alpha=0.25, lw=0)
        for edge in (window.start_s, window.end_s):
            ax.axvline(edge, color=SHADE, lw=1.0)
        ax.set_title(title, fontsize=7)
        ax.set_xlabel("time (s)", fontsize=6)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("power (mW)", fontsize=6)
    fig.tight_layout()
    return _png(fig)


@dataclass(frozen=True)
class Point:
    """One result on a results plot; ``published`` points are drawn grey as context."""

    label: str
    x: float
    y: float
    published: bool = False
    y_err: float | None = None  # expanded uncertainty (k=2) of y, drawn as an error bar


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both axes (lower latency and lower energy)."""
    front = [
        p for p in points
        if not any(q.x <= p.x and q.y <= p.y and (q.x, q.y) != (p.x, p.y) for q in points)
    ]
    return sorted(front, key=lambda p: p.x)


def _scatter(ax: Axes, points: Sequence[Point]) -> None:
    for p in points:
        color = PUBLISHED_COLOR if p.published else LINE
        ax.scatter([p.x], [p.y], color=color, marker="s" if p.published else "o", zorder=3)
        if p.y_err:
            ax.errorbar([p.x], [p.y], yerr=[p.y_err], color=color, capsize=3, lw=1, zorder=2)
        ax.annotate(p.label, (p.x, p.y), xytext=(5, 4), textcoords="offset points", fontsize=7,
                    color=color)


def pareto_png(points: Sequence[Point], published: Sequence[Point]) -> bytes:
    """Latency (ms) against energy per inference (uJ): the user's runs, their Pareto front,
    and published results of the same benchmark in grey."""
    fig = _figure(figsize=(7, 4.2), dpi=110)
    ax = fig.subplots()
    front = pareto_front(points)
    if len(front) > 1:
        ax.step([p.x for p in front], [p.y for p in front], where="post", color=SHADE, lw=1.2,
                label="Pareto front of these runs")
    _scatter(ax, [*published, *points])
    ax.margins(x=0.3, y=0.1)  # room for the labels right of the points
    ax.set_xlabel("latency (ms per inference)")
    ax.set_ylabel("energy (uJ per inference)")
    ax.grid(alpha=0.3)
    if len(front) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n")):
        if value >= factor * 0.999:
            return f"{value / factor:g} {prefix}{unit}"
    return f"{value:g} {unit}"


def scales_png(points: Sequence[Point], published: Sequence[Point]) -> bytes:
    """Energy per unit of work (J, log) against mean power (W, log): microcontrollers at uJ
    and mW, servers at J and hundreds of W, on one picture."""
    fig = _figure(figsize=(8, 4.8), dpi=110)
    ax = fig.subplots()
    _scatter(ax, [*published, *points])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ys = [p.y for p in [*points, *published]]
    xs = [p.x for p in [*points, *published]]
    ax.set_ylim(min(min(ys) / 10, 1e-6), max(max(ys) * 10, 1e3))  # uJ to kJ at least
    ax.set_xlim(min(xs) / 10, max(xs) * 10)
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _si(v, "J")))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _si(v, "W")))
    ax.set_xlabel("mean power while working")
    ax.set_ylabel("energy per unit of work (inference, query or sample)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _png(fig)


@dataclass(frozen=True)
class PowerPhase:
    """One phase of a power session as plotted: the analyzer's readings (seconds from the
    phase's first reading, W) and LoadGen's power window on the same axis."""

    name: str
    time_s: Sequence[float]
    power_w: Sequence[float]
    window_s: tuple[float, float]


def power_phases_png(phases: Sequence[PowerPhase], title: str) -> bytes:
    """The ``spl.txt`` readings of each phase (ranging, testing) side by side, LoadGen's window
    shaded: the samples the score averages are the ones inside the shading."""
    fig = _figure(figsize=(5 * len(phases), 3.2), dpi=100)
    axes = fig.subplots(1, len(phases), squeeze=False, sharey=True)
    for ax, phase in zip(axes[0], phases, strict=True):
        ax.plot(phase.time_s, phase.power_w, lw=0.8, color=LINE, marker=".", ms=3)
        ax.axvspan(*phase.window_s, color=SHADE, alpha=0.25, lw=0)
        ax.set_title(f"{phase.name}: LoadGen window {phase.window_s[1] - phase.window_s[0]:.1f} s",
                     fontsize=9)
        ax.set_xlabel("time from the first reading (s)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("power (W)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def scale_out_png(nodes: Sequence[int], energy_kj: Sequence[float],
                  time_to_train_s: Sequence[float], labels: Sequence[str]) -> bytes:
    """Energy-to-train and time-to-train against the number of nodes (log-log): whether
    scaling out shortens the run more than it costs in energy."""
    fig = _figure(figsize=(10, 3.8), dpi=100)
    left, right = fig.subplots(1, 2)
    for ax, values, label in ((left, energy_kj, "energy-to-train (kJ)"),
                              (right, time_to_train_s, "time-to-train (s)")):
        ax.plot(nodes, values, color=LINE, marker="o", lw=1)
        for x, y, text in zip(nodes, values, labels, strict=True):
            ax.annotate(text, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("nodes")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _png(fig)
