"""Clock skew between the SUT and the director, measured NTP-style over their connection.

The meters stamp readings with the director's clock; LoadGen stamps power_begin/power_end with
the SUT's. How far apart those clocks are is the alignment bound of every result. MLPerf's power
client syncs both to NTP and refuses a difference of 400 ms or more
(``CRITICAL_DIFFERENCE_TIME_MS``, ``shared/reference/mlperf-power.md`` §5); we measure the
difference directly, the way NTP does, with four timestamps per exchange:

    t0 client sends, t1 director receives, t2 director replies, t3 client receives
    offset = ((t1 - t0) + (t2 - t3)) / 2      director clock minus client clock
    delay  = (t3 - t0) - (t2 - t1)            network round trip

The true offset lies within ``offset +- delay / 2``, so ``|offset| + delay / 2`` bounds the skew
whatever the path's asymmetry. Of a few exchanges the one with the shortest delay is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

MAX_SKEW_S = 0.4  # MLPerf power-dev lib/time_sync.py: CRITICAL_DIFFERENCE_TIME_MS = 400


class SkewError(RuntimeError):
    """The clocks are further apart than the limit; the message gives both and the fix."""


@dataclass(frozen=True)
class SkewSample:
    """One four-timestamp exchange, all in UTC epoch seconds."""

    t0_s: float  # client sends
    t1_s: float  # director receives
    t2_s: float  # director replies
    t3_s: float  # client receives

    @property
    def offset_s(self) -> float:
        return ((self.t1_s - self.t0_s) + (self.t2_s - self.t3_s)) / 2

    @property
    def delay_s(self) -> float:
        return (self.t3_s - self.t0_s) - (self.t2_s - self.t1_s)

    @property
    def bound_s(self) -> float:
        """The largest skew consistent with this exchange."""
        return abs(self.offset_s) + max(self.delay_s, 0.0) / 2

    def record(self) -> dict[str, float]:
        return {**asdict(self), "offset_s": self.offset_s, "delay_s": self.delay_s,
                "bound_s": self.bound_s}


def best_exchange(exchange: Callable[[], SkewSample], count: int = 3) -> SkewSample:
    """Run ``count`` exchanges and keep the one with the shortest round trip (least
    affected by queuing), as NTP does."""
    return min((exchange() for _ in range(max(count, 1))), key=lambda s: s.delay_s)


def check_skew(sample: SkewSample, limit_s: float, where: str) -> None:
    """Refuse a skew above ``limit_s``, and an exchange no clock can produce: a time that is
    not a finite number (NaN compares false with any limit, so it would pass) or a round trip
    shorter than zero (the client's times are its word; these would make any bound)."""
    times = (sample.t0_s, sample.t1_s, sample.t2_s, sample.t3_s)
    if not all(math.isfinite(t) for t in times) or sample.t3_s < sample.t0_s \
            or sample.t2_s < sample.t1_s or sample.delay_s < 0:
        raise SkewError(
            f"clock skew {where}: refused an impossible time exchange (t0..t3 = "
            f"{', '.join(repr(t) for t in times)}): times must be finite and the round trip "
            "not negative; run tinypower's client unmodified")
    if sample.bound_s > limit_s:
        raise SkewError(
            f"clock skew {where}: the SUT and director clocks differ by up to "
            f"{sample.bound_s * 1e3:.1f} ms (offset {sample.offset_s * 1e3:+.1f} ms, round trip "
            f"{sample.delay_s * 1e3:.1f} ms), above the {limit_s * 1e3:.0f} ms limit: sync both "
            "machines to the same NTP server (e.g. chrony or ntpdate) and run again"
        )
