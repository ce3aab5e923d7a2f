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
