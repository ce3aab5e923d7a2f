"""Many power series integrated at once, with the very numbers :class:`PowerSeries` gives.

Why: a fleet of 10,000 nodes is 10,000 calls of :meth:`PowerSeries.energy`, each a dozen small
numpy operations; their fixed cost, not the arithmetic, dominates. Most series are clean over
the window (readings on both sides of it and no interval longer than the allowed gap); for those
every number :meth:`PowerSeries.energy` reports follows from the trapezoid pieces and the
intervals alone, so series with the same number of readings in the window are stacked into 2-D
arrays and integrated row by row with the same element-wise operations and the same per-row
reductions (pairwise sums along a contiguous row, as numpy does for one series): the results
are equal to the bit. A series with a gap, or without readings beyond both ends, goes the
ordinary way, so what is reported about gaps never changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from energy_monitor.series import PowerSeries, SeriesEnergy


def power_energies(
    series: Sequence[PowerSeries], start_s: float, end_s: float, max_gap_s: float
) -> list[SeriesEnergy]:
    """``[s.energy(start_s, end_s, max_gap_s) for s in series]``, equal to the bit, faster."""
    out: list[SeriesEnergy | None] = [None] * len(series)
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for k, s in enumerate(series):
        t = s.time_s
        if end_s > start_s and max_gap_s > 0 and len(t) > 1 and t[0] <= start_s \
                and t[-1] >= end_s:
            lo = int(np.searchsorted(t, start_s, side="right")) - 1
            hi = int(np.searchsorted(t, end_s, side="left"))
            groups.setdefault(hi - lo - 1, []).append((k, lo, hi))
            continue
        out[k] = s.energy(start_s, end_s, max_gap_s)
    for inside, members in groups.items():
        rows = len(members)
        bounding = np.empty((rows, inside + 2))  # the readings that bound the pieces
        points_p = np.empty((rows, inside + 2))
        for r, (k, lo, hi) in enumerate(members):
            t, p = series[k].time_s, series[k].power_w
            bounding[r] = t[lo:hi + 1]
            points_p[r, 1:-1] = p[lo + 1:hi]
            points_p[r, 0] = np.interp(start_s, t[lo:lo + 2], p[lo:lo + 2])
            points_p[r, -1] = np.interp(end_s, t[hi - 1:hi + 1], p[hi - 1:hi + 1])
        covering = np.diff(bounding, axis=1)
        longest = covering.max(axis=1)
        # The pieces' widths are the intervals between readings, but at the window's ends.
        widths = covering.copy()
        widths[:, 0] = bounding[:, 1] - start_s
        widths[:, -1] = end_s - bounding[:, -2]
        if inside == 0:
            widths[:, 0] = end_s - start_s
        median = np.median(covering, axis=1, overwrite_input=True)
        pieces = points_p[:, 1:] + points_p[:, :-1]
        pieces *= 0.5
        pieces *= widths
        covered = pieces.sum(axis=1)
        for r, (k, _, _) in enumerate(members):
            if longest[r] > max_gap_s:
                out[k] = series[k].energy(start_s, end_s, max_gap_s)
                continue
            out[k] = SeriesEnergy(
                start_s=start_s, end_s=end_s, energy_j=float(covered[r]), readings=inside,
                coverage=1.0, gaps=[], median_interval_s=float(median[r]),
                max_interval_s=float(longest[r]), estimated_j=0.0, estimated_s=0.0,
            )
    return [e for e in out if e is not None]
