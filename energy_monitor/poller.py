"""What polled series meters share: a thread that reads at a fixed interval and keeps its first
failure (:class:`Poller`), and the log of timestamped readings (:class:`ReadingLog`).

Every series meter that is polled (RAPL, NVML, PDUs, BMCs, an analyzer over SCPI) needs the
same loop: call ``poll`` every ``interval_s`` until stopped; a
:class:`~energy_monitor.meter.MeterError` ends the loop and is kept, so ``stop`` can raise it
after keeping the readings taken so far.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

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


class ReadingLog:
    """One polled meter's timestamped readings: kept in memory for its series and, while it
    measures into a folder, appended to ``<folder>/<name>.csv`` and flushed per reading, so a
    crash loses nothing already read. A reading not later than the last is dropped (a clock
    that did not move between two polls gives no new information)."""

    def __init__(self, name: str, columns: Sequence[str]) -> None:
        self.name = name
        self.columns = tuple(columns)  # after time_s: the value, then any extras
        self._lock = threading.Lock()
        self._times: list[float] = []
        self._values: list[float] = []
        self._csv: TextIO | None = None

    def start(self, folder: Path | None) -> None:
        with self._lock:
            self._times, self._values = [], []
        if folder:
            self._csv = (folder / f"{self.name}.csv").open("w")
            self._csv.write(",".join(("time_s", *self.columns)) + "\n")

    def add(self, time_s: float, value: float, *extras: object) -> None:
        with self._lock:
            if self._times and time_s <= self._times[-1]:
                return
            self._times.append(time_s)
            self._values.append(value)
        if self._csv:
            self._csv.write(",".join((f"{time_s:.6f}", f"{value:.6f}", *map(str, extras)))
                            + "\n")
            self._csv.flush()

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Times and values read so far (also after a failure)."""
        with self._lock:
            return np.array(self._times), np.array(self._values)

    def __len__(self) -> int:
        return len(self._times)

    def close(self) -> None:
        if self._csv:
            self._csv.close()
            self._csv = None
