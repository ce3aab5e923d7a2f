"""What every streaming driver needs besides decoding: a raw log, failure and stall bookkeeping,
and waiting for timestamp edges.

Kept in one place so that every instrument writes its evidence the same way (append-only,
flushed at least each second), says a stalled stream the same way, and keeps the first failure
as the one reported (later errors are usually its consequences).
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from pathlib import Path

from energy_monitor.meter import MeterError
from energy_monitor.store import FLUSH_INTERVAL_S
from energy_monitor.trace import Event


class RawLog:
    """The instrument's bytes as received, appended to a file; no file, no log.

    A failed write (a full disk) must not kill the reader thread that calls it, or the run
    would report a stalled instrument: the log stops, keeps what it holds, and says why in
    ``write_error``; the decoded samples go on.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file = path.open("ab") if path else None
        self._flushed_at = time.monotonic()
        self.write_error: str | None = None

    def write(self, data: bytes) -> None:
        if self._file is None:
            return
        try:
            self._file.write(data)
            now = time.monotonic()
            if now - self._flushed_at >= FLUSH_INTERVAL_S:
                self._file.flush()
                self._flushed_at = now
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            self.write_error = (f"disk full at {self.path}" if full
                                else f"cannot write {self.path}: {exc.strerror or exc}")
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # a full disk: write_error says so
                self._file.close()
            self._file = None


class StreamHealth:
    """A driver's first failure, and whether its stream has gone quiet for too long."""

    def __init__(self, instrument: str, stall_timeout_s: float, hint: str) -> None:
        self.instrument = instrument  # "the LPM01A"
        self.stall_timeout_s = stall_timeout_s
        self.hint = hint  # what to check when it stalls
        self.failure: str | None = None
        self._lock = threading.Lock()
        self._last_data_at = time.monotonic()

    def fail(self, reason: str) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = reason

    def data_arrived(self) -> None:
        self._last_data_at = time.monotonic()

    def quiet_s(self) -> float:
        """Seconds since data last arrived."""
        return time.monotonic() - self._last_data_at

    def check(self, streaming: bool, received: int) -> None:
        """Raise the failure, or a stall if ``streaming`` and no data came for too long."""
        quiet = self.quiet_s()
        if self.failure is None and streaming and quiet > self.stall_timeout_s:
            self.fail(
                f"{self.instrument} stopped streaming: no data for {quiet:.1f} s after "
                f"{received} samples. {self.hint}; the samples received so far are kept"
            )
        if self.failure is not None:
            raise MeterError(self.failure)


class EdgeWaiting:
    """``events`` and ``wait_for_events`` for drivers that collect edges in ``self._events``
    under ``self._lock`` and report failures through ``self._raise_if_failed()``."""

    _lock: threading.Lock
    _events: list[Event]

    def _raise_if_failed(self) -> None:
        raise NotImplementedError

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def wait_for_events(self, count: int, timeout_s: float) -> list[Event]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._raise_if_failed()
            with self._lock:
                if len(self._events) >= count:
                    return list(self._events)
            time.sleep(0.005)
        return self.events()
