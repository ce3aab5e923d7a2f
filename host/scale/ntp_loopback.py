"""An SNTP server on 127.0.0.1:123 that answers with this machine's own clock.

power-dev's client and server each query an NTP server before a session and before each phase
(``ptd_client_server/lib/time_sync.py``: ``ntplib`` on UDP port 123, and ``ntpdate -b`` when
the offset is 400 ms or more), and neither can be pointed at another port. When the power-dev
server, its client and the analyzer all run on one machine they share one clock, so the honest
NTP answer is that clock: an offset of zero by construction, which is what this server
gives. It is for loopback sessions only (tests, a one-box bench); two machines must use a real
NTP server, set in the SUT file (``docs/scaling.md``).

Port 123 is privileged: binding it needs root, ``CAP_NET_BIND_SERVICE``, or
``sysctl net.ipv4.ip_unprivileged_port_start=123``. If an NTP daemon (chrony, ntpd) already
answers on 127.0.0.1:123, it is used instead and nothing is started.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

NTP_PORT = 123
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
_PACKET = struct.Struct("!BBbbII4sQQQQ")


class NtpError(RuntimeError):
    """The loopback NTP server cannot run here; the message says why and the fix."""


def _ntp_time(t: float) -> int:
    return int((t + NTP_EPOCH_OFFSET) * 2**32)


def ntp_answers(host: str = "127.0.0.1", port: int = NTP_PORT, timeout_s: float = 0.5) -> bool:
    """Whether an NTP server answers a client request at ``host:port``."""
    request = _PACKET.pack(0x23, 0, 0, 0, 0, 0, b"\0" * 4, 0, 0, 0, _ntp_time(time.time()))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        try:
            s.sendto(request, (host, port))
            data, _ = s.recvfrom(512)
        except OSError:
            return False
    return len(data) >= _PACKET.size and data[0] & 0x7 == 4


class LoopbackNtp:
    """``start()`` serves on 127.0.0.1:``port`` on a thread; ``close()`` stops."""

    def __init__(self, port: int = NTP_PORT) -> None:
        self.port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError as exc:
            sock.close()
            raise NtpError(
                f"cannot serve NTP on 127.0.0.1:{self.port} ({exc}): power-dev needs an NTP "
                "server; run as root, grant CAP_NET_BIND_SERVICE, set sysctl "
                "net.ipv4.ip_unprivileged_port_start=123, run chrony/ntpd on this machine, "
                "or set [power_dev] ntp to a reachable NTP server"
            ) from None
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="ntp-loopback", daemon=True)
        self._thread.start()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None
        if sock is not None:
            sock.close()

    def _serve(self) -> None:
        while (sock := self._sock) is not None:
            try:
                data, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            received = time.time()
            if len(data) < _PACKET.size or data[0] & 0x7 != 3:
                continue  # only client requests (mode 3) get an answer
            version = (data[0] >> 3) & 0x7
            transmit = _PACKET.unpack_from(data)[10]
            reply = _PACKET.pack(
                (version << 3) | 4, 1, 6, -20, 0, 0, b"LOCL", _ntp_time(received), transmit,
                _ntp_time(received), _ntp_time(time.time()),
            )
            try:
                sock.sendto(reply, peer)
            except OSError:
                continue
