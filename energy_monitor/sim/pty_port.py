"""The instrument's end of a pseudo-terminal: what a simulator needs to look like a USB serial
port. The driver opens :attr:`PtyPort.path` with pyserial exactly as it opens ``/dev/ttyACM0``.

Raw mode (no echo, no line editing, as a USB CDC port), a non-blocking master so a simulator
never hangs on a driver that stopped reading, writes that wait for room, and an :meth:`unplug`
that closes the port the way a pulled cable does (after letting the driver read what was sent).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Iterator

from energy_monitor.sim.load import LoadTimeline

UNPLUG_GRACE_S = 0.2  # time for the driver to read the last bytes before the "cable" goes


class PtyPort:
    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self.closed = threading.Event()

    def read(self, timeout_s: float) -> bytes | None:
        """What the driver sent within ``timeout_s`` (``b""`` if nothing); None once closed."""
        if self.closed.is_set():
            return None
        try:
            ready, _, _ = select.select([self._master], [], [], timeout_s)
            return os.read(self._master, 4096) if ready else b""
        except (OSError, TypeError, ValueError):  # closed under us
            return None

    def write(self, data: bytes) -> None:
        """Send all of ``data``, waiting while the driver's side is full; dropped once closed."""
        while data and not self.closed.is_set():
            try:
                n = os.write(self._master, data)
            except BlockingIOError:
                select.select([], [self._master], [], 0.05)
                continue
            except (OSError, TypeError):
                return
            data = data[n:]

    def write_some(self, data: bytes) -> int | None:
        """Send what fits now without waiting: the bytes written (0 while the driver's side is
        full), None once closed."""
        if self.closed.is_set():
            return None
        try:
            return os.write(self._master, data)
        except BlockingIOError:
            return 0
        except (OSError, TypeError):
            return None

    def unplug(self) -> None:
        """Close the port as a pulled cable does, after the driver had time to read."""
        time.sleep(UNPLUG_GRACE_S)
        self.closed.set()
        with contextlib.suppress(OSError):
            os.close(self._master)

    def close(self) -> None:
        already = self.closed.is_set()
        self.closed.set()
        fds = (self._slave,) if already else (self._master, self._slave)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


class UartPacer:
    """Holds a simulator's output to its UART's speed: each byte takes 10 bits (8N1) / baud.

    For the DUT's and the IO manager's UARTs, whose speed decides races between replies and
    the meter's stream. A simulated meter's own stream follows the virtual clock instead (a
    10 s window is sent at once), so it is not paced.

    :meth:`pieces` hands out ``data`` in slices of about 5 ms of line time. On the wall clock
    (no ``timeline``) each slice is returned only once it would have been fully transmitted,
    so a reader sees bytes arrive when they would on the wire and races between slow and fast
    links show in tests; a host that reads as it comes (the MLCommons runner) needs this. With
    a ``timeline`` the line time passes on its virtual clock instead, under its lock, as an
    inference's time does: the meter still sees the DUT's time on the wire, and a 9600-baud
    input download costs no wall time. ``baud`` None or 0: no pacing (a link whose speed is not
    the point).
    """

    SLICE_S = 0.005

    def __init__(self, baud: int | None, timeline: LoadTimeline | None = None) -> None:
        self.baud = baud
        self.timeline = timeline
        self._free_at = 0.0  # when the line has sent everything handed out so far

    def seconds(self, nbytes: int) -> float:
        return nbytes * 10 / self.baud if self.baud else 0.0

    def pieces(self, data: bytes) -> Iterator[bytes]:
        if not self.baud:
            yield data
            return
        size = max(1, int(self.baud * self.SLICE_S / 10))
        for i in range(0, len(data), size):
            piece = data[i : i + size]
            if self.timeline is None:
                done = max(time.monotonic(), self._free_at) + self.seconds(len(piece))
                if (wait := done - time.monotonic()) > 0:
                    time.sleep(wait)
            else:
                with self.timeline.lock:
                    clock = self.timeline.clock
                    done = max(clock.now(), self._free_at) + self.seconds(len(piece))
                    clock.advance(max(0.0, done - clock.now()))
            self._free_at = done
            yield piece
