"""A thread that reads a series meter at a fixed interval and keeps its first failure.

Every series meter that is polled (RAPL, NVML, PDUs, BMCs, an analyzer over SCPI) needs the
same loop: call ``poll`` every ``interval_s`` until stopped; a
:class:`~energy_monitor.meter.MeterError` ends the loop and is kept, so ``stop`` can raise it
after keeping the readings taken so far.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from energy_monitor.meter import MeterError


class Poller:
    def __init__(self, poll: Callable[[], None], interval_s: float, name: str) -> None:
        if not interval_s > 0:
            raise ValueError(f"a poll interval must be positive, not {interval_s!r}")
        self._poll = poll
        self.interval_s = interval_s
        self.name = name
        self.failure: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.failure = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and wait for a poll in progress to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def finish(self, after: Callable[[], None]) -> None:
        """Stop the loop, take a last reading (unless the loop failed) so the series reaches
        the stop time, run ``after`` (close the meter's files) whatever happens, then raise the
        first failure, if any, as :class:`MeterError`: what a meter's ``stop`` does."""
        self.stop()
        try:
            if self.failure is None:
                self._poll()
        except MeterError as exc:
            self.fail(str(exc))
        finally:
            after()
        self.raise_if_failed()

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise MeterError(self.failure)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._poll()
            except MeterError as exc:
                self.fail(str(exc))
                return
