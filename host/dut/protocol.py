"""Host side of the MLPerf Tiny serial protocol, byte-compatible with the reference firmware.

The framing and replies are those of ``mlcommons/tiny:benchmark/api/internally_implemented.cpp``
(see ``shared/reference/mlperf-tiny-protocol.md`` §2-9): commands end with ``%`` and no CR/LF,
every reply ends with ``m-ready``, errors start with ``e-``. The client does better than the
existing runners where they are weak: every wait has a timeout whose error says what to check,
``e-`` replies raise instead of being printed, ``infer`` always sends its warm-up count, and an
input download is read back with ``db print`` so a byte garbled on the UART stops the run
before it is measured.

One client talks to a board, a pty (the software DUT) or ``socket://host:port`` alike:
the port is opened with ``serial.serial_for_url``.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType

import serial

from tinypower.dut.transcript import Transcript

COMMAND_TIMEOUT_S = 5.0  # the MLCommons runner's wait for a reply
INFER_TIMEOUT_S = 60.0  # an infer of unknown length
INFER_TIMEOUT_FACTOR = 2.0  # margin on the time the last infer took per inference
READ_POLL_S = 0.05  # serial read timeout: how often a wait checks its deadline
SYNC_ATTEMPT_S = 1.0  # sync(): how long each name% waits before it is sent again
DUT_COMMAND_CHARS = 80  # the reference firmware's EE_CMD_SIZE
DB_PRINT_CHARS_PER_BYTE = 5  # "xx-" plus each line's "m-buffer-" and CR/LF, rounded up
UART_BITS_PER_CHAR = 10  # 8N1
VERIFY_AUTO_MAX_S = 1.5  # db print read-back is on by default when it takes at most this
SYNC_QUIET_S = 0.05  # sync(): the shortest silence that ends a drain...
SYNC_QUIET_CHARS = 64  # ...or the time this many characters take at the line's baud
FIRMWARE_INFER_WARMUPS = 10  # what the firmware runs when `infer N` omits W (help says 0)
BANNER_PREFIXES = ("m-timestamp-mode-", "m-init-done")
LAST_LINES_KEPT = 6

_LAP = re.compile(r"^m-lap-us-([0-9]+)$")
_RESULTS = re.compile(r"^m-results-\[([^]]+)\]$")
_BUFFER = re.compile(r"^m-buffer-((?:[0-9a-fA-F]{2}-)*[0-9a-fA-F]{2})$")
_NAME = re.compile(r"^m-name-dut-\[(.*)\]$")
_PROFILE = re.compile(r"^m-profile-\[(.*)\]$")
_MODEL = re.compile(r"^m-model-\[(.*)\]$")

# What a user can do about the reference firmware's error replies.
_ERROR_HINTS = {
    "Insufficent number of hex digits": (
        "characters were lost on the UART: check the baud rate and cabling, or lower the baud"
    ),
    "Invalid hex digit": "characters were garbled on the UART: check the baud rate and cabling",
    "Unknown command": (
        "the firmware does not implement this command: flash the MLPerf Tiny benchmark firmware"
    ),
    "Command too long": (
        f"commands must fit the DUT's {DUT_COMMAND_CHARS}-character buffer: send smaller chunks"
    ),
}


class DutError(RuntimeError):
    """Anything that went wrong talking to a DUT; the message says what to check."""


class DutTimeoutError(DutError):
    """The DUT did not finish a reply (``m-ready``) in time."""

    def __init__(self, command: str, waited_s: float, last_lines: list[str], port: str) -> None:
        self.command = command
        self.waited_s = waited_s
        self.last_lines = last_lines
        seen = " | ".join(last_lines) if last_lines else "nothing"
        super().__init__(
            f"no m-ready from the DUT on {port} {waited_s:g} s after {command!r}; "
            f"last lines seen: {seen}. Check the port and baud rate, that the board is flashed "
            "with the MLPerf Tiny benchmark firmware, and that it is powered (in energy mode the "
            "energy monitor powers it)"
        )


class DutCommandError(DutError):
    """The DUT answered a command with an ``e-[...]`` line."""

    def __init__(self, command: str, dut_text: str) -> None:
        self.command = command
        self.dut_text = dut_text
        hint = next((h for key, h in _ERROR_HINTS.items() if key in dut_text), None)
        super().__init__(
            f"the DUT rejected {command!r}: {dut_text}" + (f" ({hint})" if hint else "")
        )


class DutProtocolError(DutError):
    """The DUT answered, but not with the reply the protocol prescribes."""


class InputCorruptError(DutError):
    """The input read back from the DUT differs from the one sent."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        super().__init__(
            f"input download corrupted at byte {offset}: check the UART baud rate and cabling; "
            "the measurement was not started"
        )


@dataclass
class InferReply:
    """What one ``infer N W`` printed."""

    results: list[float]  # the m-results-[...] values
    results_payload: str  # the raw text between the brackets, as the DUT printed it
    laps_us: list[int]  # every m-lap-us- value, in order (performance mode: start, end)
    lines: list[str]  # the whole reply, without m-ready


class DutClient:
    """An MLPerf Tiny DUT on a serial port, pty or ``socket://`` URL."""

    def __init__(self, url: str, baud: int = 115200, transcript: Transcript | None = None) -> None:
        self.url = url
        self.baud = baud
        # The slowest UART between host and DUT (an IO manager's DUT side): read-back timeouts.
        self.line_baud = baud
        self.loads_verified = 0  # inputs read back with `db print` and found equal
        self.loads_unverified = 0  # inputs sent without read-back
        self.transcript = transcript
        try:
            self._serial = serial.serial_for_url(url, baudrate=baud, timeout=READ_POLL_S)
        except (serial.SerialException, ValueError) as exc:
            raise DutError(
                f"cannot open the DUT port {url!r}: {exc}. Check the board is plugged in and the "
                "port name (ls /dev/tty*, or socket://host:port for a network bridge)"
            ) from exc
        self._rx = bytearray()
        self._last_lines: deque[str] = deque(maxlen=LAST_LINES_KEPT)
        self._s_per_inference: float | None = None  # wall time per inference of the last infer
        self._note(f"opened {url} at {baud} baud")

    def close(self) -> None:
        self._serial.close()

    def __enter__(self) -> DutClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands -------------------------------------------------------------------------

    def command(self, cmd: str, timeout_s: float | None = None) -> list[str]:
        """Send ``cmd%`` and return the reply lines up to (not including) ``m-ready``.

        Raises DutCommandError on an ``e-`` reply (after reading through ``m-ready``, so the
        next command starts clean) and DutTimeoutError when ``m-ready`` does not come in time.
        Default timeouts: 5 s; ``infer`` 60 s until one ``infer`` has completed, then 5 s plus
        twice (N + W) times the wall time per inference that one took.
        """
        if any(c in cmd for c in "%\r\n"):
            raise ValueError(f"a DUT command cannot contain '%', CR or LF: {cmd!r}")
        runs = _infer_runs(cmd)
        if timeout_s is None:
            timeout_s = self._default_timeout(runs)
        started = time.monotonic()
        lines = self._exchange(cmd, timeout_s)
        if runs:
            self._s_per_inference = (time.monotonic() - started) / runs
        return lines

    def sync(self, timeout_s: float = 10.0) -> str:
        """Get the DUT's attention and return its name.

        Drains stale input, then sends ``name%`` until a reply comes, so a banner printed
        before the port was opened, a half-received command in the DUT's buffer, or a board
        still booting do not matter.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self._drain_until_quiet()
            attempt_s = min(SYNC_ATTEMPT_S, max(deadline - time.monotonic(), READ_POLL_S))
            try:
                return self._name(attempt_s)
            except (DutTimeoutError, DutCommandError, DutProtocolError) as exc:
                if time.monotonic() < deadline:
                    self._note(f"sync: no clean reply yet ({type(exc).__name__}); retrying")
                    continue
                if isinstance(exc, DutTimeoutError):
                    raise DutTimeoutError(
                        "name", timeout_s, list(self._last_lines), self.url
                    ) from exc
                raise

    def _drain_until_quiet(self) -> None:
        """Drop what was received, then whatever arrives until the line is quiet for as long
        as a short reply takes on it: a reply to an earlier attempt still on its way would
        otherwise answer the next command."""
        self._serial.reset_input_buffer()
        self._rx.clear()
        quiet_s = max(SYNC_QUIET_S, SYNC_QUIET_CHARS * UART_BITS_PER_CHAR / self.line_baud)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            if self._serial.read(max(1, self._serial.in_waiting)):
                quiet_since = time.monotonic()

    def name(self) -> str:
        """The DUT's name from ``m-name-dut-[...]``."""
        return self._name(COMMAND_TIMEOUT_S)

    def profile(self) -> tuple[str, str]:
        """The firmware's profile string and model id (``kws01``, ``vww01``, ...)."""
        lines = self.command("profile")
        return (
            _match(_PROFILE, lines, "profile").group(1),
            _match(_MODEL, lines, "profile").group(1),
        )

    def timestamp(self) -> int | None:
        """Make the DUT take a timestamp: the lap in µs (performance mode), None (energy mode)."""
        laps = _laps(self.command("timestamp"))
        return laps[0] if laps else None

    def verify_by_default(self, nbytes: int) -> bool:
        """Whether ``db print`` read-back of an ``nbytes`` input is cheap on this link.

        Neither MLCommons nor EEMBC reads inputs back; it relies on the DUT's ``%02x``
        formatting (the reference warns not every printf has it) and at 9600 baud costs about
        2 s per KWS input and 2 min per VWW image. So it is on by default only where it takes
        at most ``VERIFY_AUTO_MAX_S``."""
        return nbytes * DB_PRINT_CHARS_PER_BYTE * UART_BITS_PER_CHAR / self.line_baud <= (
            VERIFY_AUTO_MAX_S
        )

    def load(self, data: bytes, chunk_bytes: int = 31, verify: bool | None = None) -> bool:
        """Download one input with ``db load`` and ``db <hex>``, and read it back with ``db
        print`` when ``verify`` (None: :meth:`verify_by_default`); return whether it was.

        31-byte chunks are the MLCommons runner's size for a directly connected DUT (26 through
        an interface board's ``dut`` passthrough). Counts go to ``loads_verified`` and
        ``loads_unverified``, for the session.
        """
        max_chunk = (DUT_COMMAND_CHARS - len("db ")) // 2
        if not data:
            raise ValueError("cannot load an empty input: the DUT rejects `db load 0`")
        if not 1 <= chunk_bytes <= max_chunk:
            raise ValueError(
                f"chunk_bytes must be 1..{max_chunk} so `db <hex>%` fits the DUT's "
                f"{DUT_COMMAND_CHARS}-character command buffer, not {chunk_bytes}"
            )
        cmd = f"db load {len(data)}"
        if f"m-[Expecting {len(data)} bytes]" not in self.command(cmd):
            raise DutProtocolError(
                f"the DUT did not accept a {len(data)}-byte input ({cmd!r} got no "
                f"'m-[Expecting {len(data)} bytes]'; last lines: {' | '.join(self._last_lines)}). "
                "Its input buffer may be too small for this benchmark: check the firmware was "
                "built for this suite"
            )
        for start in range(0, len(data), chunk_bytes):
            end = min(start + chunk_bytes, len(data))
            done = "m-load-done" in self.command(f"db {data[start:end].hex()}")
            if done != (end == len(data)):
                raise DutProtocolError(
                    f"the DUT {'reported' if done else 'did not report'} m-load-done after "
                    f"{end} of {len(data)} bytes: bytes were lost or repeated on the UART. "
                    "Check the baud rate and cabling"
                )
        if verify is None:
            verify = self.verify_by_default(len(data))
        if verify:
            self._verify(data)
            self.loads_verified += 1
        else:
            self.loads_unverified += 1
        return verify

    def infer(self, n: int, warmups: int, timeout_s: float | None = None) -> InferReply:
        """Run ``infer N W`` (W always sent: the firmware's default is 10, not the 0 it claims)."""
        if n < 1 or warmups < 0:
            raise ValueError(f"infer needs n >= 1 and warmups >= 0, not n={n}, warmups={warmups}")
        cmd = f"infer {n} {warmups}"
        lines = self.command(cmd, timeout_s)
        for expected in (f"m-infer-start-{n}", "m-infer-done"):
            if expected not in lines:
                raise DutProtocolError(
                    f"the DUT's reply to {cmd!r} lacks {expected!r} (got: {' | '.join(lines)}); "
                    "check the firmware is the MLPerf Tiny benchmark harness"
                )
        payload = _match(_RESULTS, lines, cmd).group(1)
        return InferReply(_floats(payload, cmd), payload, _laps(lines), lines)

    def results(self) -> list[float]:
        """The last inference's results, printed again by the DUT."""
        return _floats(_match(_RESULTS, self.command("results"), "results").group(1), "results")

    # -- internals ------------------------------------------------------------------------

    def _exchange(self, cmd: str, timeout_s: float) -> list[str]:
        """Send one command and return its reply lines; an IO manager client wraps both."""
        self._send(cmd + "%")
        return self._collect(cmd, timeout_s)

    def _name(self, timeout_s: float) -> str:
        return _match(_NAME, self.command("name", timeout_s), "name").group(1)

    def _verify(self, data: bytes) -> None:
        # `db print` prints the whole buffer: give slow UARTs (9600 baud) the time it takes.
        wire_s = len(data) * DB_PRINT_CHARS_PER_BYTE * UART_BITS_PER_CHAR / self.line_baud
        lines = self.command("db print", COMMAND_TIMEOUT_S + 2 * wire_s)
        read_back = bytes.fromhex(
            "".join(m.group(1).replace("-", "") for m in map(_BUFFER.match, lines) if m)
        )
        if read_back != data:
            offset = next(
                (i for i, (a, b) in enumerate(zip(read_back, data, strict=False)) if a != b),
                min(len(read_back), len(data)),
            )
            self._note(f"db print read-back differs from the input at byte {offset}")
            raise InputCorruptError(offset)

    def _default_timeout(self, infer_runs: int | None) -> float:
        if infer_runs is None:
            return COMMAND_TIMEOUT_S
        if self._s_per_inference is None:
            return INFER_TIMEOUT_S
        return COMMAND_TIMEOUT_S + INFER_TIMEOUT_FACTOR * infer_runs * self._s_per_inference

    def _send(self, text: str) -> None:
        self._record(">", text)
        try:
            self._serial.write(text.encode("ascii"))
        except serial.SerialException as exc:
            raise DutError(f"writing to the DUT on {self.url} failed: {exc}") from exc

    def _collect(self, cmd: str, timeout_s: float) -> list[str]:
        """Reply lines up to ``m-ready``, skipping a boot banner printed before the reply."""
        deadline = time.monotonic() + timeout_s
        lines: list[str] = []
        in_banner = False
        while True:
            line = self._read_line(deadline)
            if line is None:
                raise DutTimeoutError(cmd, timeout_s, list(self._last_lines), self.url)
            if not line:
                continue  # `db print` ends odd-sized buffers with an empty line
            if line.startswith(BANNER_PREFIXES):
                # The DUT (re)booted: what came before belongs to its previous life, and the
                # next m-ready ends the banner, not our reply.
                self._note(f"boot banner line before the reply to {cmd!r}: skipped")
                lines.clear()
                in_banner = True
            elif line == "m-ready":
                if not in_banner:
                    break
                in_banner = False
            elif not in_banner:
                lines.append(line)
        errors = [line for line in lines if line.startswith("e-")]
        if errors:
            raise DutCommandError(cmd, errors[0])
        return lines

    def _read_line(self, deadline: float) -> str | None:
        """The next line (CR and NUL dropped), or None at the deadline."""
        while (newline := self._rx.find(b"\n")) < 0:
            if time.monotonic() >= deadline:
                return None
            try:
                self._rx += self._serial.read(max(1, self._serial.in_waiting))
            except serial.SerialException as exc:
                raise DutError(
                    f"reading from the DUT on {self.url} failed: {exc}. Was it unplugged?"
                ) from exc
        raw = bytes(self._rx[:newline])
        del self._rx[: newline + 1]
        line = raw.decode("ascii", "backslashreplace").replace("\r", "").replace("\0", "")
        self._record("<", line)
        self._last_lines.append(line)
        return line

    def _record(self, direction: str, text: str) -> None:
        if self.transcript is not None:
            self.transcript.record(direction, text)

    def _note(self, text: str) -> None:
        self._record("#", text)


def _infer_runs(cmd: str) -> int | None:
    """N + W of an ``infer`` command (W as the firmware defaults it), None for other commands."""
    words = cmd.split()
    if not words or words[0] != "infer":
        return None
    try:
        n = int(words[1]) if len(words) > 1 else 1
        w = int(words[2]) if len(words) > 2 else FIRMWARE_INFER_WARMUPS
    except ValueError:
        return None
    return max(n + w, 0)  # the DUT refuses negative counts; do not let them shrink the timeout


def _match(pattern: re.Pattern[str], lines: list[str], cmd: str) -> re.Match[str]:
    for line in lines:
        if m := pattern.match(line):
            return m
    raise DutProtocolError(
        f"the DUT's reply to {cmd!r} has no line like {pattern.pattern!r} "
        f"(got: {' | '.join(lines) or 'nothing'}); check the firmware is the MLPerf Tiny harness"
    )


def _laps(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for m in map(_LAP.match, lines) if m]


def _floats(payload: str, cmd: str) -> list[float]:
    """The DUT's ``m-results-[...]`` numbers; ``nan``/``inf`` are no model output."""
    try:
        values = [float(v) for v in payload.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise DutProtocolError(
            f"the DUT's results for {cmd!r} are not comma-separated finite numbers: [{payload}]"
        )
    return values
