"""A loopback TCP server for line-based instrument protocols (PTDaemon, SCPI over a socket).

Each simulator supplies ``answer(line) -> reply``; this module owns the sockets: one thread
accepts, one thread per client reads lines (``\\n``-terminated, a ``\\r`` before it dropped) and
writes the replies back. The simulator steers faults through the answer: :data:`SILENT` sends
nothing (an instrument that stopped answering), :class:`Hangup` closes the client's socket (a
pulled cable).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

SILENT = None  # answer nothing to this line


class Hangup(Exception):
    """Close the client's socket without a reply."""


class TcpLineServer:
    """Serves ``answer`` on ``127.0.0.1`` at a free port (or ``port``)."""

    def __init__(self, answer: Callable[[str], str | bytes | None], name: str,
                 port: int = 0) -> None:
        self.answer = answer
        self.name = name
        self._port = port
        self._closed = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._clients: list[socket.socket] = []

    def start(self) -> tuple[str, int]:
        self._listener = socket.create_server(("127.0.0.1", self._port))
        self._listener.settimeout(0.05)
        accept = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept",
                                  daemon=True)
        accept.start()
        self._threads.append(accept)
        return "127.0.0.1", self._listener.getsockname()[1]

    def close(self) -> None:
        self._closed.set()
        for conn in list(self._clients):
            _close_quietly(conn)
        for t in list(self._threads):
            t.join(timeout=2)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._clients.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name=self.name, daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        pending = b""
        try:
            while not self._closed.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    raw, pending = pending.split(b"\n", 1)
                    reply = self.answer(raw.decode("latin-1").rstrip("\r"))
                    if reply is SILENT:
                        continue
                    conn.sendall(reply if isinstance(reply, bytes) else reply.encode("latin-1"))
        except (Hangup, OSError):
            return
        finally:
            _close_quietly(conn)
            if conn in self._clients:
                self._clients.remove(conn)


def _close_quietly(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()
