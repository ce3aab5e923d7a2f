"""Run the benchmark firmware under QEMU, and never leave a QEMU behind.

``qemu-system-arm -M mps2-an386`` runs the firmware ELF with the protocol UART (UART0) on a
pty, opened by the host like any USB serial port, and the event UART (UART1) connected to a
loopback TCP port the host listens on (QEMU connects at start, before the firmware runs, so
no event is lost). Timing is QEMU's instruction counter (``-icount shift=N``): firmware time
advances 2^N ns per instruction, so what the firmware's timer measures is deterministic and
independent of the host's speed.

``sleep=on``, not ``sleep=off``: with ``sleep=off`` an idle firmware's clock jumps to its next
timer deadline at once, so the 100 ms heartbeat made firmware time race ~1000x ahead of wall
time between commands (measured: 2,000 s of firmware time in 2 s), and a simulated meter
following it would have to stream that much idle time. With ``sleep=on`` idle time passes at
wall-clock speed and busy time by instruction count, which is what the virtual lab's clock
does too; time *inside* a command (an ``infer``) is unaffected because the CPU never sleeps
there.

QEMU runs in its own process group, is killed in ``close()``, at interpreter exit, and by the
kernel if the process that started it dies (``PR_SET_PDEATHSIG`` on Linux), so a crashed or
interrupted runner does not leave it holding ptys and ports.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import tomllib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from tinypower.boards import Board
from tinypower.children import die_with_parent

QEMU = "qemu-system-arm"
QEMU_INSTALL = "install qemu-system-arm (Debian: apt-get install qemu-system-arm)"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2.0
OUTPUT_LINES_KEPT = 20
PTY_LINE = re.compile(r"char device redirected to (\S+) \(label (\w+)\)")

_running: set[Emulator] = set()


class EmulatorError(RuntimeError):
    """QEMU could not start or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class EmulatorConfig:
    """A board file's ``[emulator]`` table."""

    machine: str
    icount_shift: int
    timer_hz: int


def emulator_config(board: Board) -> EmulatorConfig:
    """The ``[emulator]`` table of an emulated board's file."""
    if board.path is None:
        raise EmulatorError(f"board {board.name} has no board file to read [emulator] from")
    table = tomllib.loads(board.path.read_text(encoding="utf-8")).get("emulator")
    try:
        return EmulatorConfig(str(table["machine"]), int(table["icount_shift"]),
                              int(table["timer_hz"]))
    except (KeyError, TypeError, ValueError):
        raise EmulatorError(
            f"{board.path}: an emulated board needs an [emulator] table with machine, "
            "icount_shift and timer_hz; see boards/qemu-an386.toml"
        ) from None


class Emulator:
    """One QEMU process running ``elf``; :meth:`start` returns the protocol UART's pty."""

    def __init__(
        self, elf: Path, config: EmulatorConfig, *, event_port: int | None = None,
        qemu: str = QEMU,
    ) -> None:
        self.elf = Path(elf)
        self.config = config
        self.event_port = event_port
        self.qemu = qemu
        self.uart0: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._output: deque[str] = deque(maxlen=OUTPUT_LINES_KEPT)
        self._ptys: dict[str, str] = {}
        self._seen = threading.Condition()
        self._reader: threading.Thread | None = None

    def command(self) -> list[str]:
        """The QEMU command line."""
        shift = self.config.icount_shift
        event = f"tcp:127.0.0.1:{self.event_port}" if self.event_port else "null"
        return [
            self.qemu, "-M", self.config.machine, "-nographic", "-monitor", "none",
            "-serial", "pty", "-serial", event, "-kernel", str(self.elf),
            "-icount", f"shift={shift},align=off,sleep=on", "-semihosting",
        ]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Launch QEMU and return the path of UART0's pty."""
        if self._proc is not None:
            raise RuntimeError("an emulator starts once: make a new one")
        if shutil.which(self.qemu) is None:
            raise EmulatorError(f"{self.qemu} not found on PATH: {QEMU_INSTALL}")
        if not self.elf.is_file():
            raise EmulatorError(f"firmware image {self.elf} does not exist: build it first")
        self._proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
            preexec_fn=die_with_parent,
        )
        _running.add(self)
        self._reader = threading.Thread(target=self._read_output, name="qemu-output",
                                         daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        with self._seen:
            while "serial0" not in self._ptys and self._proc.poll() is None:
                if not self._seen.wait(max(deadline - time.monotonic(), 0)):
                    break
        if "serial0" not in self._ptys:
            why = self.failure() or f"no UART pty announced in {timeout_s:g} s"
            self.close()
            raise EmulatorError(f"QEMU did not start: {why}")
        self.uart0 = self._ptys["serial0"]
        return self.uart0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def failure(self) -> str | None:
        """Why QEMU is no longer running (``None`` while it runs)."""
        if self._proc is None or self._proc.poll() is None:
            return None
        if self._reader is not None:
            self._reader.join(timeout=1)
        code = self._proc.returncode
        output = " | ".join(line for line in self._output if line) or "no output"
        hint = (
            "the firmware stopped itself through semihosting after a fault (its e-[...] line "
            "on the protocol UART says which)" if code == 1 else "see QEMU's output"
        )
        return f"QEMU exited with status {code}: {hint}. QEMU said: {output}"

    def close(self) -> None:
        """Stop QEMU (its whole process group) and wait for it."""
        _running.discard(self)
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip()
            m = PTY_LINE.search(line)
            with self._seen:
                if m:
                    self._ptys[m.group(2)] = m.group(1)
                else:
                    self._output.append(line)
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


@atexit.register
def _stop_all() -> None:
    for emulator in list(_running):
        emulator.close()
