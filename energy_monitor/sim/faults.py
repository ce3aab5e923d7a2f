"""Faults a simulated meter can inject, the same knobs for every instrument.

Counts are in samples since ``start``; ``None`` means never. Each simulator honours the faults
its transport can show (a pty can be closed, a socket reset, a USB API can raise).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SimFaults:
    unplug_after: int | None = None  # close the port/socket, as a pulled cable does
    stall_after: int | None = None  # stop streaming but keep the connection open
    garble_at: int | None = None  # send unreadable bytes before this sample
    garble_sample_at: int | None = None  # this sample arrives damaged (ASCII: a character lost)
    drop_at: int | None = None  # lose ``drop_count`` samples from here (a host overrun)
    drop_count: int = 0
    lose_event: int | None = None  # never report this timestamp edge (0 = the first)
    quirks: bool = True  # the real instrument's harmless oddities (NULs, run-together lines)
