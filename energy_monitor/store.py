"""Append-only sample columns that live on disk while measuring, so memory stays bounded.

A meter at 1 MS/s makes 480 MB of float64 a minute; holding that in a Python list would not
do. A :class:`SampleStore` buffers a few thousand values, appends them to a raw little-endian
file (handed to the OS at least each second, so a killed process loses at most a second), and
hands back a read-only ``np.memmap`` of the file when measuring ends. The column is float64, or
float32 where the meter gives float32 (the Joulescope): half the disk, nothing lost, and
:meth:`~energy_monitor.trace.Trace.energy_sum_j` still sums it in float64. The file's suffix
names its type (``.f64``, ``.f32``). Without a
path it keeps the column in memory (short runs, tests). A write that fails (a full disk) does
not stop the reader thread that appends: the store keeps the rest of the column in memory and
says why in ``write_error``, so the measurement goes on and the file keeps what it was given.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

BUFFER_VALUES = 65_536
FLUSH_INTERVAL_ENV = "TINYPOWER_FLUSH_INTERVAL_S"


def flush_interval_s() -> float:
    """How often buffered samples go to the OS: 1 s (the loss bound of a killed process), or
    ``$TINYPOWER_FLUSH_INTERVAL_S`` (0: at every block; tests and labs that want no loss)."""
    try:
        value = float(os.environ.get(FLUSH_INTERVAL_ENV, "1"))
    except ValueError:
        return 1.0
    return value if 0 <= value <= 1 else 1.0


FLUSH_INTERVAL_S = flush_interval_s()
DTYPES = {".f64": np.dtype("<f8"), ".f32": np.dtype("<f4")}  # a column file's suffix: its type


class SampleStore:
    """One column, appended to as samples arrive; ``dtype`` float64 or float32 (a file's
    suffix must say which)."""

    def __init__(self, path: Path | None = None, dtype: type = np.float64) -> None:
        self.dtype = np.dtype(dtype).newbyteorder("<")
        if self.dtype not in DTYPES.values():
            raise ValueError(f"a sample column is float64 or float32, not {self.dtype}")
        if path is not None and DTYPES.get(path.suffix) != self.dtype:
            raise ValueError(f"{path.name}: a {self.dtype} column's file ends in "
                             f"{next(k for k, v in DTYPES.items() if v == self.dtype)}")
        self.path = path
        # Unbuffered: each drained block goes to the OS at once, and a failed write says how much
        # of it reached the file.
        self._file = path.open("wb", buffering=0) if path else None
        self._chunks: list[np.ndarray] = []  # in-memory column (no path)
        self._pending: list[float] = []
        self._count = 0
        self._on_disk = 0  # values in the file; those after it are in _chunks
        self._flushed_at = time.monotonic()
        self.write_error: str | None = None

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
            self._flushed_at = time.monotonic()

    def extend_array(self, values: np.ndarray) -> None:
        """Append a block at once (binary streams): no per-value Python work."""
        self._drain()
        block = np.asarray(values, dtype=self.dtype)
        self._count += len(block)
        self._append(block.copy())

    def _drain(self) -> None:
        if not self._pending:
            return
        block = np.asarray(self._pending, dtype=self.dtype)
        self._pending.clear()
        self._append(block)

    def _append(self, block: np.ndarray) -> None:
        if self._file is None:
            self._chunks.append(block)
            return
        data, done = block.tobytes(), 0
        try:
            while done < len(data):
                done += self._file.write(data[done:])
        except OSError as exc:
            whole = done // self.dtype.itemsize
            self._on_disk += whole
            self._write_failed(exc)
            self._chunks.append(block[whole:])
            return
        self._on_disk += len(block)

    def _write_failed(self, exc: OSError) -> None:
        """Stop writing the file (it keeps every whole value written); hold the column in
        memory from now on."""
        self.write_error = f"cannot write {self.path}: {exc.strerror or exc}"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self.write_error = f"disk full at {self.path}"
        assert self._file is not None and self.path is not None
        self._file.close()
        self._file = None
        with contextlib.suppress(OSError):
            os.truncate(self.path, self._on_disk * self.dtype.itemsize)
        self._chunks.insert(0, np.fromfile(self.path, dtype=self.dtype, count=self._on_disk))
        self._on_disk = -1  # everything is in memory now

    def array(self) -> np.ndarray:
        """Everything appended so far (a memmap when on disk). The store stays usable."""
        self._drain()
        if self.path is None or self._on_disk < 0:
            return np.concatenate(self._chunks) if self._chunks else np.empty(0, self.dtype)
        if self._count == 0:
            return np.empty(0, self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self._count,))

    def close(self) -> None:
        self._drain()
        if self._file:
            self._file.close()
            self._file = None
