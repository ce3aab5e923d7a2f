"""The director/client link: a handshake line, challenge-response on a shared secret, then
every message authenticated with an HMAC and a sequence number.

Why: the link carries the numbers a result rests on (LoadGen logs, client.json), so a proxy must
not be able to change them, replay them, or learn the secret. The secret never travels:

1. client -> ``HANDSHAKE_CLIENT`` line; director -> ``HANDSHAKE_SERVER`` line. The lines name
   this protocol and the power-dev session layout the director writes (``mlcommons/power ... v3``
   at the end, as power-dev's checker reads the protocol version of a session). power-dev's own
   client sends exactly ``mlcommons/power client v3``, and its server answers exactly
   ``mlcommons/power server v3``: each side recognises the other and says so in one line.
2. client -> ``{"cmd": "hello", "client_nonce": cn}``; director -> ``{"server_nonce": sn,
   "proof": HMAC(secret, "director|cn|sn")}``: the director proves it knows the secret;
3. client -> ``{"cmd": "auth", "proof": HMAC(secret, "client|cn|sn")}``: so does the client.
4. Both derive ``key = HMAC(secret, "key|cn|sn")``; from then on each line is
   ``{"seq": n, "body": {...}, "mac": HMAC(key, "<dir>|n|<canonical body>")}`` with ``n``
   counting 1, 2, 3, ... in each direction (``c`` client to director, ``d`` back). A changed
   byte, a line replayed on the same or another connection, or one dropped, fails the MAC or
   the sequence, and the director closes that connection.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from typing import Any

PROTOCOL = "tinypower-power/2"
LAYOUT = "mlcommons/power"  # power-dev's session layout, whose protocol version is 3
HANDSHAKE_CLIENT = f"{PROTOCOL} {LAYOUT} client v3"
HANDSHAKE_SERVER = f"{PROTOCOL} {LAYOUT} server v3"
POWER_DEV_CLIENT = f"{LAYOUT} client v3"  # power-dev lib/common.py MAGIC_CLIENT
POWER_DEV_SERVER = f"{LAYOUT} server v3"  # power-dev lib/common.py MAGIC_SERVER
MIN_REMOTE_SECRET = 16  # characters, when the director listens beyond loopback


class LinkError(RuntimeError):
    """A message failed authentication or arrived out of sequence."""


def nonce() -> str:
    return secrets.token_hex(16)


def proof(secret: str, role: str, client_nonce: str, server_nonce: str) -> str:
    return hmac.new(secret.encode(), f"{role}|{client_nonce}|{server_nonce}".encode(),
                    hashlib.sha256).hexdigest()


def session_key(secret: str, client_nonce: str, server_nonce: str) -> bytes:
    return bytes.fromhex(proof(secret, "key", client_nonce, server_nonce))


def canonical(body: dict[str, Any]) -> str:
    """The text a MAC covers, and the text a session's messages record (a number that is not
    finite is null: JSON has no NaN)."""
    return json.dumps(_finite(body), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def message_text(body: dict[str, Any]) -> str:
    """A message as a session records it (power-dev's ``messages``): the canonical body,
    without uploaded or downloaded file contents (the MAC covered them; ``results`` has their
    hashes)."""
    return canonical({k: v for k, v in body.items() if k != "data"})


class Channel:
    """One side's sealing and opening of authenticated lines."""

    def __init__(self, key: bytes, send_dir: str, receive_dir: str) -> None:
        self._key = key
        self._send_dir, self._receive_dir = send_dir, receive_dir
        self._sent = 0
        self._received = 0

    def _mac(self, direction: str, seq: int, text: str) -> str:
        return hmac.new(self._key, f"{direction}|{seq}|{text}".encode(),
                        hashlib.sha256).hexdigest()

    def seal(self, body: dict[str, Any]) -> bytes:
        self._sent += 1
        text = canonical(body)
        mac = self._mac(self._send_dir, self._sent, text)
        return f'{{"seq":{self._sent},"body":{text},"mac":"{mac}"}}\n'.encode()

    def open(self, line: bytes) -> dict[str, Any]:
        try:
            envelope = json.loads(line)
            seq, body, mac = envelope["seq"], envelope["body"], envelope["mac"]
            if not isinstance(body, dict) or not isinstance(seq, int) \
                    or not isinstance(mac, str):
                raise TypeError
            text = canonical(body)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise LinkError("not an authenticated message") from None
        expected = self._mac(self._receive_dir, seq, text)
        if not hmac.compare_digest(mac, expected):
            raise LinkError("message authentication failed (changed in transit, or not from "
                            "this connection's peer)")
        if seq != self._received + 1:
            raise LinkError(f"message {seq} out of sequence (expected {self._received + 1}): "
                            "replayed or dropped")
        self._received = seq
        return body
