"""Every line exchanged with a device, with the host's monotonic time.

A measurement that goes wrong (a dropped byte, a DUT that rebooted mid-window, a late reply) is
only explainable after the fact if the conversation was kept. The session folder's
``transcript.log`` is written here: append-only and line-buffered, so each line reaches the
operating system as soon as it is recorded and a crash of the host process loses nothing
(well inside the design's "at most the last second").
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from types import TracebackType
from typing import TextIO

DIRECTIONS = {">": "sent", "<": "received", "#": "note"}


class Transcript:
    """Lines sent (``>``), received (``<``) and notes (``#``), each with ``time.monotonic()``.

    ``lines`` keeps them in memory as ``(time_s, direction, text)``; with a ``path`` each one is
    also appended to that file as ``f"{time_s:.6f} {direction} {text}"``. Safe to share between
    threads (a DUT client and a meter driver writing one session transcript). A write that
    fails (a full disk) stops the file, not the run: ``write_error`` says why.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.lines: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self.write_error: str | None = None
        if path is not None:
            # Line-buffered: every record is flushed as it is written. Closed by close().
            self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def record(self, direction: str, text: str) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(
                f"transcript direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}"
            )
        with self._lock:
            now = time.monotonic()
            self.lines.append((now, direction, text))
            if self._file is not None:
                try:
                    self._file.write(f"{now:.6f} {direction} {text}\n")
                except OSError as exc:
                    self._write_failed(exc)

    def _write_failed(self, exc: OSError) -> None:
        self.write_error = f"transcript not fully written: {exc.strerror or exc}"
        with contextlib.suppress(OSError):
            self._file.close()  # type: ignore[union-attr]
        self._file = None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as exc:
                    self._write_failed(exc)
                self._file = None

    def __enter__(self) -> Transcript:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
