"""An emulated board's event line -> a LoadTimeline on the firmware's own clock.

Under QEMU the benchmark firmware has no pin a meter could watch, so it reports on a second
UART what an energy monitor would see, stamped with its own timer (ticks of ``tick_hz``):

    P<level> <ticks>    the timestamp pin driven low (0, the falling edge) or high (1)
    S<state> <ticks>    its activity from then on: 0 idle, 1 receiving an input, 2 inferring
    T <ticks>           a heartbeat (every 100 ms of firmware time), so time is seen to pass

This reader books every edge and every state's current (``currents[state]``) on a
:class:`LoadTimeline` whose clock is a :class:`FirmwareClock`: ``now()`` is the firmware time
of the last line read. A simulated meter integrating that timeline therefore streams exactly
the firmware's time, however fast or slow the emulator runs on the host, and a window between
two falling edges lasts what the firmware's timer says it lasted. Ticks are sent modulo 2^32
and unwrapped here (the heartbeat comes far more often than the counter wraps).

Lines arrive in time order (the firmware masks interrupts while it stamps and sends one), so a
booking is never earlier than the clock: the meter never has to revise samples it has sent.
The framing is plain text on a byte stream, so the same reader can later follow a real
board's event UART. The stream comes from a loopback TCP connection that the emulator opens
to :meth:`EventLine.listen`'s port.
"""

from __future__ import annotations

import re
import select
import socket
import threading
from collections.abc import Mapping

from energy_monitor.sim.load import LoadTimeline, VirtualClock

TICK_WRAP = 2**32
LINE = re.compile(rb"^(?:P([01])|S([0-9])|T) ([0-9]{1,10})$")
MAX_LINE_BYTES = 64  # a longer run without a newline is not the event line
POLL_S = 0.05


class EventLineError(RuntimeError):
    """The event line broke: garbled, or a state without a current."""


class FirmwareClock(VirtualClock):
    """Seconds of firmware time, as last reported on the event line; only the reader moves it."""

    def __init__(self) -> None:
        super().__init__()
        self._now_s = 0.0

    def now(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> None:
        raise RuntimeError("firmware time is set by the event line, not advanced by the host")

    def set(self, now_s: float) -> None:
        if now_s < self._now_s:
            raise ValueError("firmware time only moves forward")
        self._now_s = now_s


class EventLine:
    """Reads one board's event line in a thread and books it on ``timeline``."""

    def __init__(
        self, timeline: LoadTimeline, clock: FirmwareClock, tick_hz: float,
        currents: Mapping[int, float],
    ) -> None:
        self.timeline = timeline
        self.clock = clock
        self.tick_hz = tick_hz
        self.currents = dict(currents)
        self.lines = 0  # lines read so far
        self.error: str | None = None  # why the line broke, if it did
        self._ticks = 0  # unwrapped firmware ticks of the last line
        self._last_raw: int | None = None
        self._listener: socket.socket | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def listen(self) -> int:
        """Start accepting the emulator's connection; return the loopback port to give it."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, name="event-line", daemon=True)
        self._thread.start()
        return self._listener.getsockname()[1]

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> EventLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], POLL_S)
            if ready:
                conn, _ = self._listener.accept()
                break
        else:
            return
        self._connected.set()
        with conn:
            self._read(conn)

    def _read(self, conn: socket.socket) -> None:
        pending = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([conn], [], [], POLL_S)
            if not ready:
                continue
            try:
                chunk = conn.recv(65536)
            except ConnectionError:
                return
            if not chunk:
                return  # the emulator exited
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._handle(line)
            if len(pending) > MAX_LINE_BYTES:
                self._fail(f"no newline in {len(pending)} bytes: {pending[:32]!r}")
                pending = b""

    def _handle(self, line: bytes) -> None:
        m = LINE.match(line)
        if m is None:
            self._fail(f"unreadable line {line!r}")
            return
        level, state, raw = m.group(1), m.group(2), int(m.group(3))
        if raw >= TICK_WRAP:
            self._fail(f"tick count {raw} does not fit the firmware's 32-bit timer")
            return
        if self._last_raw is not None:
            self._ticks += (raw - self._last_raw) % TICK_WRAP
        else:
            self._ticks = raw
        self._last_raw = raw
        t = self._ticks / self.tick_hz
        with self.timeline.lock:
            if level is not None:
                self.timeline.add_edge(t, "rise" if level == b"1" else "fall")
            elif state is not None:
                current = self.currents.get(int(state))
                if current is None:
                    self._fail(f"state {int(state)} has no current in the board's energy model")
                else:
                    self.timeline.set_current(t, current)
            self.clock.set(t)
        self.lines += 1

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = f"the firmware's event line broke: {why}"
