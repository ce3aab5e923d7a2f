"""A simulated Yokogawa WT310E power analyzer answering SCPI on a loopback TCP socket.

The driver reaches it as the VISA resource ``TCPIP::127.0.0.1::<port>::SOCKET`` through
pyvisa-py, exactly as it reaches a real analyzer over USB-TMC or VXI-11. Commands take the SCPI
short or long forms (``:NUM:NORM:VAL?`` = ``:NUMeric:NORMal:VALue?``), one per line.

Supported: ``*IDN?``, ``*RST``, ``*CLS``, ``:COMMunicate:REMote|HEADer|VERBose``,
``:STATus:ERRor?``, ``:NUMeric:FORMat``, ``:NUMeric:NORMal:NUMber``, ``:NUMeric:NORMal:ITEM<n>
<func>,<elem>``, ``:NUMeric:NORMal:VALue? [n]``, ``:INPut:VOLTage|CURRent:RANGe`` and
``:INPut:VOLTage|CURRent:AUTO``, ``:RATE``, ``:INTEGrate:MODE|TIMer|STARt|STOP|RESet|STATe?``.
Numeric functions U, I, P, S, Q, LAMBDA, WH, AH, TIME of element 1, five significant digits.
Setting ranges, rate or mode while integrating is refused with error 813, as the analyzer does.
A reading above the current range reads ``9.9E+37`` (over-range).

The power function (UTC epoch seconds -> W) is read at the moment of each query (a real
WT310E returns the mean of the last completed update period, up to one period old);
``readings`` keeps every (time, P) served, and the integrator integrates the power function
itself (1 ms midpoint steps), so tests have exact ground truth.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.tcp_lines import SILENT, Hangup, TcpLineServer
from energy_monitor.yokogawa import CURRENT_RANGES_A, VOLTAGE_RANGES_V

IDN = "YOKOGAWA,WT310E,TINYPOWERSIM01,F1.03"
RATES = {"100MS": 0.1, "250MS": 0.25, "500MS": 0.5, "1S": 1.0, "2S": 2.0, "5S": 5.0}
FUNCTIONS = ("U", "I", "P", "S", "Q", "LAMBDA", "WH", "AH", "TIME")
OVERRANGE = 9.9e37
ERR_NOT_DURING_INTEGRATION = 813
ERR_UNKNOWN = -113  # SCPI "Undefined header"
ERR_PARAMETER = -224  # SCPI "Illegal parameter value"
_SUFFIX = re.compile(r"^([A-Za-z*]+?)(\d*)$")


def _is(token: str, long_form: str) -> bool:
    """SCPI mnemonic match: the short form (the capitals) or the whole word."""
    short = "".join(c for c in long_form if c.isupper() or c == "*")
    return token.upper() in (short, long_form.upper())


def _path_is(parts: list[str], *forms: str) -> bool:
    return len(parts) == len(forms) and all(_is(p, f) for p, f in zip(parts, forms, strict=True))


class YokogawaSimulator:
    """A WT310E on ``127.0.0.1``; :meth:`start` returns the VISA resource string."""

    def __init__(
        self, power_fn: Callable[[float], float], *, supply_v: float = 230.0,
        power_factor: float = 0.95, faults: SimFaults | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.power_fn = power_fn
        self.supply_v = supply_v
        self.power_factor = power_factor
        self.faults = faults or SimFaults()
        self.clock = clock
        self.readings: list[tuple[float, float]] = []  # ground truth: (UTC s, P) served
        self.commands: list[str] = []
        self.errors: list[int] = []
        self.integrations: list[tuple[float, float]] = []  # (start, stop) UTC s: ground truth
        self._lock = threading.Lock()
        self._server = TcpLineServer(self._answer, "yokogawa-sim")
        self._reset()

    def _reset(self) -> None:
        self.remote = False
        self.header = True
        self.items: dict[int, tuple[str, str]] = {1: ("U", "1"), 2: ("I", "1"), 3: ("P", "1")}
        self.item_count = 3
        self.voltage_range_v: float | None = None  # None = auto
        self.current_range_a: float | None = None
        self.rate = "250MS"
        self.integ_state = "reset"
        self.integ_mode = "NORM"
        self.integ_wh = 0.0
        self.integ_ah = 0.0
        self.integ_s = 0.0
        self._integ_from: float | None = None

    # -- plumbing -------------------------------------------------------------------------

    def start(self) -> str:
        host, port = self._server.start()
        self.resource = f"TCPIP::{host}::{port}::SOCKET"
        return self.resource

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> YokogawaSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the analyzer ---------------------------------------------------------------------

    def _integrate_to(self, t: float) -> None:
        if self._integ_from is None or t <= self._integ_from:
            return
        steps = max(1, int((t - self._integ_from) / 1e-3))
        dt = (t - self._integ_from) / steps
        for k in range(steps):
            p = float(self.power_fn(self._integ_from + (k + 0.5) * dt))
            self.integ_wh += p * dt / 3600.0
            self.integ_ah += p / (self.supply_v * self.power_factor) * dt / 3600.0
        self.integ_s += t - self._integ_from
        self._integ_from = t

    def _value(self, func: str, t: float, p: float) -> float:
        amps = p / (self.supply_v * self.power_factor)
        if self.current_range_a is not None and amps > self.current_range_a * 1.4:
            return OVERRANGE  # beyond the range's peak: the analyzer cannot read it
        apparent = self.supply_v * amps
        return {
            "U": self.supply_v, "I": amps, "P": p, "S": apparent,
            "Q": (max(apparent**2 - p**2, 0.0)) ** 0.5, "LAMBDA": self.power_factor,
            "WH": self.integ_wh, "AH": self.integ_ah, "TIME": self.integ_s,
        }[func]

    # -- SCPI -----------------------------------------------------------------------------

    def _answer(self, line: str) -> str | None:
        with self._lock:
            self.commands.append(line)
            served = len(self.readings)
            f = self.faults
            if f.stall_after is not None and served >= f.stall_after:
                return SILENT
            if f.unplug_after is not None and served >= f.unplug_after:
                raise Hangup
            if f.garble_at is not None and served == f.garble_at:
                f.garble_at = None
                return "#?\x00garbled\n"
            reply = self._command(line.strip())
        return SILENT if reply is None else reply + "\n"

    def _error(self, code: int) -> None:
        self.errors.append(code)

    def _command(self, line: str) -> str | None:
        head, _, arg = line.partition(" ")
        arg = arg.strip()
        query = head.endswith("?")
        parts = [p for p in head.rstrip("?").split(":") if p]
        if head.upper() == "*IDN?":
            return IDN
        if head.upper() == "*RST":
            self._reset()
            return None
        if head.upper() == "*CLS":
            self.errors.clear()
            return None
        if _path_is(parts, "STATus", "ERRor") and query:
            if not self.errors:
                return '0,"No error"'
            code = self.errors.pop(0)
            text = {ERR_NOT_DURING_INTEGRATION: "Execution not allowed during integration",
                    ERR_UNKNOWN: "Undefined header", ERR_PARAMETER: "Illegal parameter value"}
            return f'{code},"{text.get(code, "Error")}"'
        if len(parts) == 2 and _is(parts[0], "COMMunicate"):
            if _is(parts[1], "REMote"):
                self.remote = arg.upper() in ("ON", "1")
            elif _is(parts[1], "HEADer"):
                self.header = arg.upper() in ("ON", "1")
            elif not _is(parts[1], "VERBose"):
                self._error(ERR_UNKNOWN)
            return None
        if parts and _is(parts[0], "NUMeric"):
            return self._numeric(parts[1:], arg, query)
        if parts and _is(parts[0], "INPut"):
            return self._input(parts[1:], arg, query)
        if _path_is(parts, "RATE"):
            if query:
                return self.rate
            if self._integrating():
                return None
            if arg.upper() not in RATES:
                self._error(ERR_PARAMETER)
                return None
            self.rate = arg.upper()
            return None
        if parts and _is(parts[0], "INTEGrate"):
            return self._integrate(parts[1:], arg, query)
        self._error(ERR_UNKNOWN)
        return None

    def _integrating(self) -> bool:
        if self.integ_state == "start":
            self._error(ERR_NOT_DURING_INTEGRATION)
            return True
        return False

    def _numeric(self, parts: list[str], arg: str, query: bool) -> str | None:
        if _path_is(parts, "FORMat"):
            return "ASCII" if query else None
        if len(parts) != 2 or not _is(parts[0], "NORMal"):
            self._error(ERR_UNKNOWN)
            return None
        match = _SUFFIX.match(parts[1])
        name, number = (match.group(1), match.group(2)) if match else (parts[1], "")
        if _is(name, "NUMber"):
            if query:
                return str(self.item_count)
            try:
                count = int(arg)
            except ValueError:
                count = 0
            if not 1 <= count <= 10:
                self._error(ERR_PARAMETER)
                return None
            self.item_count = count
            return None
        if _is(name, "ITEM") and number:
            n = int(number)
            if query:
                func, elem = self.items.get(n, ("NONE", ""))
                return f"{func},{elem}" if elem else func
            func, _, elem = arg.upper().partition(",")
            if func not in FUNCTIONS or elem not in ("1", "") or not 1 <= n <= 10:
                self._error(ERR_PARAMETER)
                return None
            self.items[n] = (func, elem or "1")
            return None
        if _is(name, "CLEar"):
            self.items = {}
            return None
        if _is(name, "VALue") and query:
            t = self.clock()
            self._integrate_to(t)
            p = float(self.power_fn(t))
            self.readings.append((t, p))
            numbers = [int(arg)] if arg else range(1, self.item_count + 1)
            values = []
            for n in numbers:
                func = self.items.get(n, ("NONE", ""))[0]
                values.append(9.91e37 if func == "NONE" else self._value(func, t, p))
            return ",".join(f"{v:.4E}" for v in values)
        self._error(ERR_UNKNOWN)
        return None

    def _input(self, parts: list[str], arg: str, query: bool) -> str | None:
        if _path_is(parts, "MODE"):
            return "RMS" if query else None
        if len(parts) != 2 or not (_is(parts[1], "RANGe") or _is(parts[1], "AUTO")):
            self._error(ERR_UNKNOWN)
            return None
        voltage = _is(parts[0], "VOLTage")
        if not voltage and not _is(parts[0], "CURRent"):
            self._error(ERR_UNKNOWN)
            return None
        ranges = VOLTAGE_RANGES_V if voltage else CURRENT_RANGES_A
        attr = "voltage_range_v" if voltage else "current_range_a"
        if _is(parts[1], "AUTO"):
            if query:
                return "1" if getattr(self, attr) is None else "0"
            if self._integrating():
                return None
            if arg.upper() in ("ON", "1"):
                setattr(self, attr, None)
            elif getattr(self, attr) is None:
                setattr(self, attr, ranges[-1])
            return None
        if query:
            value = getattr(self, attr)
            return f"{(value if value is not None else ranges[-1]):.4E}"
        if self._integrating():
            return None
        try:
            value = float(arg.upper().removesuffix("V").removesuffix("A"))
        except ValueError:
            value = -1.0
        if value not in ranges:
            self._error(ERR_PARAMETER)
            return None
        setattr(self, attr, value)
        return None

    def _integrate(self, parts: list[str], arg: str, query: bool) -> str | None:
        t = self.clock()
        self._integrate_to(t)
        if _path_is(parts, "STATe") and query:
            return self.integ_state.upper()
        if _path_is(parts, "MODE"):
            if query:
                return self.integ_mode
            if not self._integrating():
                self.integ_mode = "CONT" if _is(arg, "CONTinuous") else "NORM"
            return None
        if _path_is(parts, "TIMer"):
            return "0,0,0" if query else None
        if _path_is(parts, "STARt"):
            self.integ_state = "start"
            self._integ_from = t
            return None
        if _path_is(parts, "STOP"):
            if self.integ_state == "start":
                self.integrations.append((t - self.integ_s, t))
            self.integ_state = "stop"
            self._integ_from = None
            return None
        if _path_is(parts, "RESet"):
            if not self._integrating():
                self.integ_state = "reset"
                self.integ_wh = self.integ_ah = self.integ_s = 0.0
            return None
        self._error(ERR_UNKNOWN)
        return None
