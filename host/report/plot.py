"""A PNG of the power trace with the measured windows shaded, for the session folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: sessions run on machines with no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from energy_monitor.trace import Trace, Window  # noqa: E402

MAX_POINTS = 20_000  # plotted points; longer traces are reduced to per-bin means
# Samples the meter lost are NaN in the trace and show as gaps.


def plot_trace(trace: Trace, windows: list[Window], path: Path, title: str) -> Path:
    power_mw = trace.power_w_column() * 1e3
    t = trace.start_time_s + np.arange(len(power_mw)) / trace.sample_rate_hz
    if len(power_mw) > MAX_POINTS:
        bin_size = int(np.ceil(len(power_mw) / MAX_POINTS))
        n = len(power_mw) // bin_size * bin_size
        bins = power_mw[:n].reshape(-1, bin_size)
        counts = np.sum(~np.isnan(bins), axis=1)
        with np.errstate(invalid="ignore"):  # a bin of lost samples stays NaN: a gap in the plot
            power_mw = np.nansum(bins, axis=1) / counts
        t = t[:n:bin_size]
    fig, ax = plt.subplots(figsize=(10, 3.5), dpi=110)
    ax.plot(t, power_mw, lw=0.6, color="#1f5f9f")
    for i, w in enumerate(windows):
        ax.axvspan(w.start_s, w.end_s, color="#f0a030", alpha=0.25, lw=0)
        ax.text((w.start_s + w.end_s) / 2, 1.0, f"window {i}", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("time on the meter's clock (s)")
    ax.set_ylabel("power (mW)")
    ax.set_title(title, fontsize=10, pad=14)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
