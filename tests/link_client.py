"""The director's link protocol by hand (tinypower.scale.link), for tests that send what a
well-behaved client never sends."""

from __future__ import annotations

import json
import socket

from tinypower.scale.link import (
    HANDSHAKE_CLIENT,
    HANDSHAKE_SERVER,
    Channel,
    LinkError,
    canonical,
    nonce,
    proof,
    session_key,
)


class RawClient:
    """The protocol by hand, for requests a well-behaved client never sends: the line
    handshake and challenge-response done here, then each request sealed with the session key
    (``raw.sock``/``raw.file`` stay open for bytes no client sends)."""

    def __init__(self, address: tuple[str, int], secret: str) -> None:
        self.secret = secret
        self.sock = socket.create_connection(address, timeout=30)
        self.file = self.sock.makefile("rwb")
        self.channel: Channel | None = None
        self.sent: list[bytes] = []  # sealed lines, for replaying
        self.auth_line = b""

    def line(self, data: bytes) -> bytes:
        self.file.write(data)
        self.file.flush()
        return self.file.readline()

    def hello(self, secret: str | None = None) -> dict:
        secret = self.secret if secret is None else secret
        assert self.line(HANDSHAKE_CLIENT.encode() + b"\n").decode().strip() == HANDSHAKE_SERVER
        cn = nonce()
        reply = json.loads(self.line(canonical({"cmd": "hello", "client_nonce": cn}).encode()
                                     + b"\n"))
        sn = reply["server_nonce"]
        self.channel = Channel(session_key(secret, cn, sn), "c", "d")
        self.auth_line = canonical({"cmd": "auth", "proof": proof(secret, "client", cn, sn)}
                                   ).encode() + b"\n"
        line = self.line(self.auth_line)
        try:
            return self.channel.open(line)
        except LinkError:
            return json.loads(line) if line else {"closed": True}

    def send(self, **request: object) -> dict:
        assert self.channel is not None, "hello first"
        sealed = self.channel.seal(request)
        self.sent.append(sealed)
        line = self.line(sealed)
        return self.channel.open(line) if line else {"closed": True}

    def close(self) -> None:
        self.file.close()
        self.sock.close()
