"""The DUT through an IO manager: the energy-mode UART path, as one more ``DutClient``.

In energy mode the DUT is powered only by the energy monitor and talks to the host through an
IO manager and level shifters (``shared/reference/mlperf-tiny-protocol.md`` §10): EEMBC's
Arduino UNO IO Manager, or the MLCommons STM32H573I-DK interface board. Both relay a DUT
command sent as ``dut <cmd>%`` and answer ``m-dut-passthrough(<cmd>)``, ``m-ready``, then every
DUT line prefixed ``[dut]: `` up to ``[dut]: m-ready``. :class:`IoManagerClient` speaks that
wrapping under the same methods as :class:`DutClient`, so the runner cannot tell the two apart,
and adds the boards' own commands.

Where the existing runners break, it says why:

- a passthrough header that is missing or cut short (the MLCommons runner's ``IOManager``
  returns ``None`` and fails later with "'NoneType' object ...") is a
  :class:`PassthroughHeaderError` naming what came instead;
- a DUT that never answers through the board is a :class:`DutSilentError` listing the wiring
  to check;
- output the DUT prints unasked (a reboot, a debug print) is a :class:`FracturedMessageError`:
  on the Arduino it arrives between replies and garbles the next command (its software UART is
  half-duplex); the interface board holds it in a 100-byte queue and hands it out with the next
  command, so every later reply comes one command late. The client spots lines that belong to
  another command or to a boot banner, and :meth:`IoManagerClient.sync` realigns the
  interface board by overflowing that queue with a long reply (``help``).

The board's DUT baud is written to flash by ``setbaud`` (which resets the board), so
:meth:`IoManagerClient.ensure_baud` sets it only when ``checkbaud`` reports another value.
"""

from __future__ import annotations

import re
import time

from tinypower.dut.protocol import (
    BANNER_PREFIXES,
    COMMAND_TIMEOUT_S,
    READ_POLL_S,
    UART_BITS_PER_CHAR,
    DutClient,
    DutCommandError,
    DutError,
    DutProtocolError,
    DutTimeoutError,
)
from tinypower.dut.transcript import Transcript

KINDS = ("arduino", "mlcommons")
LABELS = {"arduino": "Arduino IO manager", "mlcommons": "MLCommons interface board"}
MLCOMMONS_BOARD_NAME = "tinyML Enhanced Interface Board"
HOST_BAUD = 115200  # host <-> IO manager, both kinds
DEFAULT_DUT_BAUD = 9600  # IO manager <-> DUT: the interface board's default, the Arduino's only
ARDUINO_DUT_BAUD = 9600
PASSTHROUGH_CHUNK_BYTES = 26  # the MLCommons runner's `db` chunk through an interface board
DUT_PREFIX = "[dut]: "
LOG_PREFIX = "io: "  # how the EEMBC runner's log shows the IO manager's lines
HEADER_GRACE_S = 0.3  # after a DUT m-ready with no header yet, how long a late header may take
QUIET_S = 0.05  # silence that ends a drain
BOARD_ATTEMPT_S = 0.5  # sync_board(): how long each name% waits before it is sent again
RESET_SETTLE_S = 0.2  # after setbaud, before asking the rebooting board anything
RESET_TIMEOUT_S = 10.0  # how long the interface board may take to come back from its reset
FLUSH_REPLY_BYTES = 600  # the reference firmware's `help` reply (about 450 bytes), rounded up

_HEADER = re.compile(r"^m-dut-passthrough\((.*)\)$")
# The interface board's replies, verbatim from its firmware
# (mlcommons/tiny benchmark/interface/Application/CLI/InterfaceMenu.cpp):
#   CheckBaud: SendString("baud is: " + std::to_string(currentBaud) + "\n"); SendEnd();
#   SetBaud:   SendString("set baud to: " + args + "\n"); SendEnd(); NVIC_SystemReset();
_CHECKBAUD = re.compile(r"^baud is: (\d+)$")
_SETBAUD = re.compile(r"^set baud to: (\d+)$")
_BOARD_LAP = re.compile(r"^m-lap-us-(\d+)$")
_DUT_NAME = re.compile(r"^m-name-dut-\[(.*)\]$")
_DUT_NAME_AT_END = re.compile(r"m-name-dut-\[.*\]$")
_BRACKETED = re.compile(r"\[(.*)\]$")
# Reply lines that only some commands print (keyed as _command_key does): one of them in the
# reply to another command means the replies are out of step with the commands.
_SIGNATURES = (
    (re.compile(r"^m-name-dut-\["), {"name"}),
    (re.compile(r"^m-(profile|model)-\["), {"profile"}),
    (re.compile(r"^m-(warmup|infer)-"), {"infer"}),
    (re.compile(r"^m-results-\["), {"infer", "results"}),
    (re.compile(r"^m-\[Expecting \d+ bytes\]$"), {"db load"}),
    (re.compile(r"^m-load-done$"), {"db"}),
    (re.compile(r"^m-buffer-"), {"db print"}),
)
_CHECKED_COMMANDS = {"name", "profile", "infer", "results", "db load", "db print", "db",
                     "timestamp", "help"}
_WIRING = {
    "arduino": "Arduino D9 (TX) -> level shifter -> DUT RX and DUT TX -> level shifter -> D10 (RX)",
    "mlcommons": "the interface board's DUT UART TX -> level shifter -> DUT RX and back",
}
_PORT_HINTS = {
    "arduino": "an Arduino UNO (USB 2341:0043) flashed with EEMBC's io-manager_1.0.3.hex",
    "mlcommons": "the STM32H573I-DK's ST-LINK port (USB 0483:374E) flashed with "
    "mlcommons/tiny benchmark/interface",
}


class IoManagerError(DutError):
    """The IO manager itself misbehaved: no answer, the wrong board, a command it lacks."""


class PassthroughHeaderError(IoManagerError):
    """``dut <cmd>%`` was not answered by ``m-dut-passthrough(<cmd>)`` and ``m-ready``."""


class FracturedMessageError(DutProtocolError):
    """DUT output arrived outside the reply it belongs to; the replies cannot be trusted."""


class DutSilentError(DutTimeoutError):
    """The IO manager passed a command on, but the DUT's reply never came back through it."""

    def __init__(
        self, command: str, waited_s: float, last_lines: list[str], port: str, kind: str,
        dut_baud: int,
    ) -> None:
        super().__init__(command, waited_s, last_lines, port)
        seen = " | ".join(last_lines) if last_lines else "nothing"
        self.args = (
            f"the {LABELS[kind]} on {port} passed {command!r} to the DUT but no reply "
            f"([dut]: m-ready) came back through it in {waited_s:g} s; last lines seen: {seen}. "
            "Check that the DUT is powered (in energy mode only the energy monitor powers it: "
            f"is its output on?), the wiring ({_WIRING[kind]}), that the level shifters' low "
            "side is fed from the monitor's unmeasured rail and all grounds are joined, and "
            f"that the DUT's energy-mode UART runs at the board's {dut_baud} baud. The board "
            "keeps waiting for the DUT: press its reset button before trying again",
        )


class IoManagerClient(DutClient):
    """A DUT behind an IO manager of ``kind`` ``arduino`` or ``mlcommons`` on port ``url``.

    ``baud`` is the host side (115200 for both boards); the DUT side is the board's, 9600 by
    default (see :meth:`ensure_baud`). ``board_laps_us`` collects the Arduino's ``m-lap-us-``
    debug lines (timestamp pin wired to D3, timer enabled).
    """

    def __init__(
        self, url: str, kind: str = "arduino", baud: int = HOST_BAUD,
        transcript: Transcript | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"IO manager kind must be one of {', '.join(KINDS)}, not {kind!r}")
        super().__init__(url, baud, transcript)
        self.kind = kind
        self.label = LABELS[kind]
        self.line_baud = DEFAULT_DUT_BAUD
        self.board_laps_us: list[int] = []
        self._note(f"{self.label}: DUT commands go as `dut <cmd>%`")

    # -- the DUT, through the board --------------------------------------------------------

    def sync(self, timeout_s: float = 10.0) -> str:
        """Get the board's, then the DUT's attention; return the DUT's name.

        A DUT's boot banner or other stale output is drained (Arduino) or flushed out of the
        interface board's queue, until ``name`` gets a reply of exactly one name line.
        """
        deadline = time.monotonic() + timeout_s
        self.sync_board(timeout_s)
        while True:
            problem: DutError
            try:
                lines = self.command("name", max(deadline - time.monotonic(), READ_POLL_S))
            except (FracturedMessageError, DutCommandError) as exc:
                problem, lagging = exc, True
            else:
                if len(lines) == 1 and (m := _DUT_NAME.match(lines[0])):
                    return m.group(1)
                # Stale text before this reply's name (on its line, when the queue cut a line
                # short): now in step, ask again. No name at all: replies still lag.
                lagging = not any(_DUT_NAME_AT_END.search(line) for line in lines)
                problem = FracturedMessageError(
                    f"the DUT's reply to 'name' through the {self.label} is not one name line "
                    f"(got: {' | '.join(lines) or 'nothing'}): output the DUT printed earlier "
                    "is still in the way. Power-cycle the DUT, reset the IO manager and run again"
                )
            if time.monotonic() >= deadline:
                raise problem
            self._note(f"sync: {problem}; recovering")
            self._realign(flush=lagging)

    def load(self, data: bytes, chunk_bytes: int = PASSTHROUGH_CHUNK_BYTES,
             verify: bool | None = None) -> bool:
        """As :meth:`DutClient.load`, in the 26-byte chunks that fit ``dut db <hex>%``."""
        return super().load(data, chunk_bytes, verify)

    def _exchange(self, cmd: str, timeout_s: float) -> list[str]:
        self._expect_quiet()
        self._send(f"dut {cmd}%")
        deadline = time.monotonic() + timeout_s
        self._read_header(cmd, deadline, timeout_s)
        lines: list[str] = []
        while True:
            line = self._next_line(deadline)
            if line is None:
                raise DutSilentError(cmd, timeout_s, list(self._last_lines), self.url, self.kind,
                                     self.line_baud)
            text = _unwrap(line)
            if text is None:
                raise IoManagerError(
                    f"the {self.label} printed {line!r} in the middle of the DUT's reply to "
                    f"{cmd!r}: check that {self.url} is {_PORT_HINTS[self.kind]}"
                )
            if text == "m-ready":
                break
            if text:  # `db print` ends odd-sized buffers with an empty line
                lines.append(text)
        self._check_reply(cmd, lines)
        errors = [line for line in lines if line.startswith("e-")]
        if errors:
            raise DutCommandError(cmd, errors[0])
        return lines

    def _read_header(self, cmd: str, deadline: float, timeout_s: float) -> None:
        """Read ``m-dut-passthrough(<cmd>)`` and ``m-ready``; anything else is an error."""
        early: list[str] = []  # DUT lines ([dut]: ...) that came before any header
        while True:
            line = self._next_line(deadline)
            if line is None:
                if early:
                    raise PassthroughHeaderError(self._header_problem(cmd, early))
                raise IoManagerError(self._no_board_answer(f"dut {cmd}", timeout_s))
            if m := _HEADER.match(line):
                if early:
                    texts = [_unwrap(text) or "" for text in early]
                    raise FracturedMessageError(
                        self._unsolicited_problem(texts, f"before the reply to {cmd!r}")
                    )
                if m.group(1) != cmd:
                    raise FracturedMessageError(
                        f"the {self.label} received `dut {m.group(1)}` for `dut {cmd}`: "
                        "characters were lost on the way to it. It is half-duplex, so DUT output "
                        "arriving while a command is sent fractures the command: remove debug "
                        "prints from the firmware, power-cycle the DUT and run again"
                    )
                after = self._next_line(deadline)
                if after != "m-ready":
                    raise PassthroughHeaderError(
                        self._header_problem(cmd, [line, after or "nothing"])
                    )
                return
            text = _unwrap(line)
            if text is None:
                raise PassthroughHeaderError(self._header_problem(cmd, [line]))
            early.append(line)
            if text == "m-ready":  # a whole DUT reply, headerless: wait briefly for a late one
                deadline = min(deadline, time.monotonic() + HEADER_GRACE_S)

    def _check_reply(self, cmd: str, lines: list[str]) -> None:
        """Raise if the reply holds a boot banner or lines that answer another command."""
        key = _command_key(cmd)
        for line in lines:
            if line.startswith(BANNER_PREFIXES):
                raise FracturedMessageError(
                    self._unsolicited_problem(lines, f"in the reply to {cmd!r}")
                )
            owners = next((o for pattern, o in _SIGNATURES if pattern.match(line)), None)
            if key in _CHECKED_COMMANDS and owners is not None and key not in owners:
                raise FracturedMessageError(
                    f"the reply to {cmd!r} through the {self.label} holds {line!r}, which "
                    "answers another command: replies are out of step with commands, because "
                    "output the DUT printed unasked came through first"
                    + (" (the interface board queues it and hands it out with the next command)"
                       if self.kind == "mlcommons" else "")
                    + ". Power-cycle the DUT, reset the IO manager and run again"
                )

    # -- the board's own commands ----------------------------------------------------------

    def board_command(self, cmd: str, timeout_s: float = COMMAND_TIMEOUT_S) -> list[str]:
        """Send one of the board's own commands; its reply lines up to ``m-ready``."""
        if any(c in cmd for c in "%\r\n") or cmd.split(" ")[0] == "dut":
            raise ValueError(
                f"not a board command: {cmd!r} (no '%', CR or LF; DUT commands go through "
                "command())"
            )
        self._expect_quiet()
        reply = self._board_reply(cmd, time.monotonic() + timeout_s)
        if reply is None:
            raise IoManagerError(self._no_board_answer(cmd, timeout_s))
        lines, stray = reply
        if stray:
            raise FracturedMessageError(
                self._unsolicited_problem(stray, f"while the {self.label} answered {cmd!r}")
            )
        errors = [line for line in lines if line.startswith("e-")]
        if errors:
            raise IoManagerError(f"the {self.label} rejected {cmd!r}: {errors[0]}")
        return lines

    def sync_board(self, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        """Drain stale input, then send ``name%`` until the board answers; return its name."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._drain()
            attempt_s = min(BOARD_ATTEMPT_S, max(deadline - time.monotonic(), READ_POLL_S))
            reply = self._board_reply("name", time.monotonic() + attempt_s)
            if reply is not None:
                lines, stray = reply
                if stray:
                    self._note(f"sync: dropped DUT output: {' | '.join(stray)}")
                if lines and not lines[0].startswith("e-"):  # not a garbled `name`
                    return self._check_board_name(lines)
            if time.monotonic() >= deadline:
                raise IoManagerError(self._no_board_answer("name", timeout_s))

    def board_name(self) -> str:
        """The board's answer to ``name``."""
        return self._check_board_name(self.board_command("name"))

    def version(self) -> str:
        """The Arduino IO manager's firmware version."""
        self._require("arduino", "version")
        lines = self.board_command("version")
        return _bracketed(lines[0]) if lines else ""

    def checkbaud(self) -> int:
        """The board's DUT-side baud (the Arduino's is fixed at 9600: it has no checkbaud)."""
        if self.kind == "arduino":
            return ARDUINO_DUT_BAUD
        lines = self.board_command("checkbaud")
        m = next(filter(None, map(_CHECKBAUD.match, lines)), None)
        if m is None:
            raise IoManagerError(
                f"the {self.label} answered checkbaud with {' | '.join(lines) or 'nothing'}, not "
                "'baud is: N': update its firmware to mlcommons/tiny's benchmark/interface"
            )
        return int(m.group(1))

    def ensure_baud(self, baud: int) -> bool:
        """Make the board talk to the DUT at ``baud``; True when it had to be changed.

        ``setbaud`` writes the interface board's flash and resets it, so it is sent only when
        ``checkbaud`` reports another value, and the value is read back after the reset.
        """
        current = self.checkbaud()
        if current == baud:
            self.line_baud = baud
            self._note(f"the {self.label} already talks to the DUT at {baud} baud")
            return False
        if self.kind == "arduino":
            raise IoManagerError(
                f"the Arduino IO manager talks to the DUT at {ARDUINO_DUT_BAUD} baud only, but "
                f"this DUT's energy-mode UART runs at {baud}: build the firmware with "
                f"{ARDUINO_DUT_BAUD} baud in energy mode, or use the MLCommons interface board"
            )
        lines = self.board_command(f"setbaud {baud}")
        if not any(_SETBAUD.match(line) for line in lines):
            raise IoManagerError(
                f"the {self.label} answered `setbaud {baud}` with {' | '.join(lines) or 'nothing'}"
                f", not 'set baud to: {baud}'"
            )
        self._note(f"setbaud {baud}: the board writes its flash and resets")
        time.sleep(RESET_SETTLE_S)
        self.sync_board(RESET_TIMEOUT_S)
        after = self.checkbaud()
        if after != baud:
            raise IoManagerError(
                f"after `setbaud {baud}` the {self.label} reports 'baud is: {after}': the setting "
                "did not persist. Update the interface firmware or set the baud by hand"
            )
        self.line_baud = baud
        return True

    def timer(self, enabled: bool) -> None:
        """Enable or disable the Arduino's timestamp timer (``enable-timer``/``disable-timer``)."""
        self._require("arduino", "enable-timer/disable-timer")
        state = "enabled" if enabled else "disabled"
        lines = self.board_command(f"{'enable' if enabled else 'disable'}-timer")
        if f"m-timer-{state}" not in lines:
            raise IoManagerError(
                f"the {self.label} did not confirm the timer {state} "
                f"(got: {' | '.join(lines) or 'nothing'})"
            )

    def timestamp_mode(self, falling: bool = True) -> str:
        """``tm 0`` (falling edges, as EEMBC's energy script) or ``tm 1`` (both edges).

        The Arduino disables its timer on a mode change; returns the mode it reports.
        """
        self._require("arduino", "tm")
        lines = self.board_command(f"tm {0 if falling else 1}")
        mode = next((line for line in lines if line.startswith("m-timestmp-mode-")), None)
        if mode is None or (falling and mode != "m-timestmp-mode-FALLING"):
            raise IoManagerError(
                f"the {self.label} did not confirm the timestamp mode "
                f"(got: {' | '.join(lines) or 'nothing'})"
            )
        return mode.removeprefix("m-timestmp-mode-")  # sic: the firmware's spelling

    # -- internals ------------------------------------------------------------------------

    def _board_reply(self, cmd: str, deadline: float) -> tuple[list[str], list[str]] | None:
        """Send ``cmd%``; the board's lines and any DUT lines up to ``m-ready``, or None."""
        self._send(f"{cmd}%")
        lines: list[str] = []
        stray: list[str] = []
        while True:
            line = self._next_line(deadline)
            if line is None:
                return None
            text = _unwrap(line)
            if text is not None:
                stray.append(text)
            elif line == "m-ready":
                return lines, stray
            else:
                lines.append(line)

    def _next_line(self, deadline: float) -> str | None:
        """The next line from the board, EEMBC's ``io: `` dropped, its D3 laps collected."""
        while True:
            line = self._read_line(deadline)
            if line is None:
                return None
            line = line.removeprefix(LOG_PREFIX)
            if m := _BOARD_LAP.match(line):
                self.board_laps_us.append(int(m.group(1)))
            elif line:
                return line

    def _expect_quiet(self) -> None:
        """Raise if the DUT spoke since the last reply (the Arduino forwards it at once)."""
        if not (self._rx or self._serial.in_waiting):
            return
        pending: list[str] = []
        while (line := self._next_line(time.monotonic() + QUIET_S)) is not None:
            pending.append(line)
        if self._rx:
            pending.append(self._rx.decode("ascii", "backslashreplace"))
        if pending:
            texts = [_unwrap(line) or line for line in pending]
            raise FracturedMessageError(self._unsolicited_problem(texts, "between commands"))

    def _drain(self, quiet_s: float = QUIET_S) -> None:
        """Drop everything received until ``quiet_s`` pass in silence."""
        dropped = bytearray(self._rx)
        self._rx.clear()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            chunk = self._serial.read(max(1, self._serial.in_waiting))
            if chunk:
                dropped += chunk
                quiet_since = time.monotonic()
        if dropped:
            self._note(f"dropped {len(dropped)} stale byte(s): {bytes(dropped[:200])!r}")

    def _realign(self, flush: bool) -> None:
        """Clear what stands between the next command and its reply."""
        self._drain()
        if flush and self.kind == "mlcommons":
            # Each passthrough ends at the first m-ready, so a queued DUT reply makes every
            # reply one command late. `help` prints more than the board's 100-byte queue holds
            # while no passthrough reads it: its own m-ready is lost, and the lag with it.
            self._send("dut help%")
            self._drain(FLUSH_REPLY_BYTES * UART_BITS_PER_CHAR / self.line_baud + QUIET_S)

    def _check_board_name(self, lines: list[str]) -> str:
        text = lines[0] if lines else ""
        if text.startswith("m-name-dut-"):
            raise IoManagerError(
                f"{self.url} answered name% as a DUT ({text}), not as an IO manager: this port "
                "is the DUT itself. Use the IO manager's port, or connect without an interface"
            )
        if self.kind == "mlcommons" and text != MLCOMMONS_BOARD_NAME:
            raise IoManagerError(
                f"{self.url} answered name% with {text or 'nothing'!r}, not "
                f"{MLCOMMONS_BOARD_NAME!r}: it is not the MLCommons interface board (an EEMBC "
                "Arduino IO manager? then use interface 'arduino')"
            )
        if self.kind == "arduino" and text == MLCOMMONS_BOARD_NAME:
            raise IoManagerError(
                f"{self.url} is the MLCommons interface board, not an Arduino IO manager: use "
                "interface 'mlcommons'"
            )
        return text

    def _require(self, kind: str, what: str) -> None:
        if self.kind != kind:
            raise IoManagerError(f"the {self.label} has no {what} command ({LABELS[kind]} only)")

    def _no_board_answer(self, cmd: str, waited_s: float) -> str:
        seen = " | ".join(self._last_lines) or "nothing"
        return (
            f"no m-ready from the {self.label} on {self.url} {waited_s:g} s after {cmd!r}; last "
            f"lines seen: {seen}. Check that this port is {_PORT_HINTS[self.kind]}, at "
            f"{self.baud} baud, and that no other program has it open"
        )

    def _header_problem(self, cmd: str, got: list[str]) -> str:
        return (
            f"the {self.label} did not answer `dut {cmd}` with its passthrough header "
            f"('m-dut-passthrough({cmd})' then 'm-ready'); got: {' | '.join(got)}. Without it "
            "the board's lines cannot be told from the DUT's (the MLCommons runner fails here "
            f"with a 'NoneType' error). Check that {self.url} is {_PORT_HINTS[self.kind]}"
        )

    def _unsolicited_problem(self, lines: list[str], when: str) -> str:
        if any(line.startswith(BANNER_PREFIXES) for line in lines):
            cause = (
                "the DUT rebooted (its boot banner came through): check the energy monitor's "
                "voltage and current limit, a brown-out resets the DUT"
            )
        else:
            cause = "the firmware prints outside command replies: remove its debug prints"
        return (
            f"unsolicited DUT output {when}: {' | '.join(lines)}. The {self.label} is "
            f"half-duplex, so output outside a reply fractures the next command; {cause}. "
            "The replies that follow cannot be trusted: power-cycle the DUT, reset the IO "
            "manager and run again"
        )


def _unwrap(line: str) -> str | None:
    """The DUT's text of a ``[dut]: `` line, None for the board's own lines."""
    if not line.startswith(DUT_PREFIX.rstrip()):
        return None
    return line.removeprefix(DUT_PREFIX.rstrip()).removeprefix(" ")


def _command_key(cmd: str) -> str:
    """``db load``, ``db print`` or ``db`` for the download commands, else the first word."""
    words = cmd.split()
    if not words:
        return ""
    if words[0] == "db" and len(words) > 1 and words[1] in ("load", "print"):
        return f"db {words[1]}"
    return words[0]


def _bracketed(line: str) -> str:
    m = _BRACKETED.search(line)
    return m.group(1) if m else line
