"""Append-only sample columns that live on disk while measuring, so memory stays bounded.

A meter at 1 MS/s makes 480 MB of float64 a minute; holding that in a Python list would not
do. A :class:`SampleStore` buffers a few thousand values, appends them to a raw little-endian
float64 file (flushed at least each second, so a crash loses at most a second), and hands back
a read-only ``np.memmap`` of the file when measuring ends. Without a path it keeps the column in
memory (short runs, tests).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

BUFFER_VALUES = 65_536
FLUSH_INTERVAL_S = 1.0
DTYPE = np.dtype("<f8")


class SampleStore:
    """One float64 column, appended to as samples arrive."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._file = path.open("wb") if path else None
        self._chunks: list[np.ndarray] = []  # in-memory column (no path)
        self._pending: list[float] = []
        self._count = 0
        self._flushed_at = time.monotonic()

    def __len__(self) -> int:
        return self._count

    def extend(self, values: Iterable[float]) -> None:
        before = len(self._pending)
        self._pending.extend(values)
        self._count += len(self._pending) - before
        if len(self._pending) >= BUFFER_VALUES:
            self._drain()
        if self._file and time.monotonic() - self._flushed_at >= FLUSH_INTERVAL_S:
            self._drain()
            self._file.flush()
            self._flushed_at = time.monotonic()

    def extend_array(self, values: np.ndarray) -> None:
        """Append a block at once (binary streams): no per-value Python work."""
        self._drain()
        block = np.asarray(values, dtype=DTYPE)
        self._count += len(block)
        if self._file:
            self._file.write(block.tobytes())
        else:
            self._chunks.append(block.copy())

    def _drain(self) -> None:
        if not self._pending:
            return
        block = np.asarray(self._pending, dtype=DTYPE)
        self._pending.clear()
        if self._file:
            self._file.write(block.tobytes())
        else:
            self._chunks.append(block)

    def array(self) -> np.ndarray:
        """Everything appended so far (a memmap when on disk). The store stays usable."""
        self._drain()
        if self.path is None:
            return np.concatenate(self._chunks) if self._chunks else np.empty(0, DTYPE)
        if self._file:
            self._file.flush()
        if self._count == 0:
            return np.empty(0, DTYPE)
        return np.memmap(self.path, dtype=DTYPE, mode="r", shape=(self._count,))

    def close(self) -> None:
        self._drain()
        if self._file:
            self._file.close()
            self._file = None
