"""A simulated SPEC PTDaemon with a power analyzer behind it, on loopback TCP.

PTDaemon (PTD) is SPEC's members-only daemon that owns an AC power analyzer and serves a line
protocol on TCP (port 8888 by default): ``Hello``, ``Identify``, ``RR``/``SR`` (ranges),
``Go,<ms>,<rampup>,<mark>`` (log one sample per period, tagged with the mark), ``Stop``, ``RL``
(the samples not yet read), ``Watts``/``Uncertainty`` (summaries of the last measurement).
This simulator answers the same lines with the replies recorded from real PTD sessions
(``shared/reference/mlperf-power.md`` §3), and its analyzer reads a **power function**: any
callable of UTC epoch seconds returning watts, e.g. a load model, or
:func:`cpu_utilisation_power` (this machine's measured CPU utilisation mapped to watts, for the
``--sut local`` default when RAPL is not readable).

Each sample is the power function at the sample's own timestamp (rounded to the millisecond PTD
prints), so a test can integrate the function exactly and compare; a real analyzer averages
over its update interval, which matters only for loads that change within one period.
``readings`` keeps every (time, watts) the simulator logged: the ground truth.

Channel modes, for the driver's ``RL`` fallbacks: ``single`` (a WT310E: ``RL,*,*`` answers
``Invalid number of parameters``, plain ``RL`` works), ``multichannel`` (a WT333E with three
channels loaded unequally, :data:`CHANNEL_SHARES`: ``RL,*,*`` works; the top-level Watts is the
channels' sum and top-level V/A/PF are -1, as in the published v2.1 logs, and each channel's
Watts/Volts/Amps/PF follow), ``dc`` (``RL,*,*`` and ``RL`` are ``Unknown command``; ``DC-RL``
works).

``RL`` sample lines carry no ``Mark`` and no ``ChN`` labels: power-dev's server adds both to
what ``RL`` returns (``ptd_client_server/lib/server.py``, ``Session.stop``, "parse telnet log
and reformat it in log that is same as ptd.log"), so PTDaemon does not send them. PTD's own
log file (``-l FILE``, read by power-dev's ``max_volts_amps_avg_watts``, whose parser expects
``Mark`` then ``ChN,Watts,...`` groups) has both; ``log_file`` writes that file. ``console``
gets PTDaemon's console log lines (``MM-DD-YYYY HH:MM:SS.mmm: text``, UTC as power-dev runs PTD
with ``TZ=UTC``), the lines power-dev's server saves as ``ptd_logs.txt`` and its checker reads
(``Uncertainty checking for ... is activated``, ``Go with mark '...'``, ``Completed test``),
worded as in the published v2.1 ``ptd_logs.txt``.

Faults (:class:`~energy_monitor.sim.faults.SimFaults`, counted in samples logged since ``Go``):
``stall_after`` stops answering any command (the socket stays open),
``unplug_after`` closes the client's socket on its next command, ``garble_at`` answers the next
command with bytes that are no PTD reply.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.tcp_lines import SILENT, Hangup, TcpLineServer

PowerFunction = Callable[[float], float]
CHANNEL_MODES = ("single", "multichannel", "dc")
MAX_SAMPLES = 500_000
SUPPLY_V = 230.0
POWER_FACTOR = 0.95
# Accuracy of a WT310E-class analyzer at 50/60 Hz, as a fraction of reading and of range
# (the simulator's model for its ``Uncertainty`` summary; a simulated number, labelled so).
READING_ACCURACY = 0.001
RANGE_ACCURACY = 0.001
AUTO_CURRENT_RANGES_A = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
AUTO_VOLTAGE_RANGES_V = (15.0, 30.0, 60.0, 150.0, 300.0, 600.0)
# The multichannel analyzer's three loaded channels: share of the load and power factor each
# (unequal, so a driver that reads one channel as the total, or ranges from the last channel,
# gets a visibly wrong number).
CHANNEL_SHARES = (0.5, 0.3, 0.2)
CHANNEL_PF = (0.95, 0.8, 0.6)
SIM_VERSION = "1.11.1-tinypowersim-20250101"  # "tinypowersim": drivers label it simulated
MODELS = {"single": ("YokogawaWT310", "WT310E"),
          "multichannel": ("YokogawaWT330_multichannel", "WT333E"),
          "dc": ("YokogawaWT310_DC", "WT310E")}


def ptd_time_text(t: float) -> str:
    """UTC epoch seconds as PTD prints them: ``%m-%d-%Y %H:%M:%S.mmm``."""
    stamp = datetime.fromtimestamp(t, UTC)
    return stamp.strftime("%m-%d-%Y %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"


@dataclass
class _Range:
    auto: bool = True
    value: float = -1.0

    def text(self) -> tuple[str, str]:
        return ("1" if self.auto else "0"), f"{self.value:.6f}"


@dataclass
class _Measurement:
    mark: str
    period_s: float
    watts: list[float] = field(default_factory=list)
    uncertainty: list[float] = field(default_factory=list)
    running: bool = True


class PtdSimulator:
    """A PTDaemon on ``127.0.0.1``; :meth:`start` returns ``(host, port)``."""

    def __init__(
        self, power_fn: PowerFunction, *, channel_mode: str = "single",
        sample_period_s: float | None = None, supply_v: float = SUPPLY_V,
        power_factor: float = POWER_FACTOR, faults: SimFaults | None = None,
        clock: Callable[[], float] = time.time, port: int = 0,
        log_file: Path | None = None, console: Callable[[str], None] | None = None,
    ) -> None:
        """``sample_period_s`` overrides the period ``Go`` asks for (tests run faster than
        1 Hz); ``clock`` gives UTC epoch seconds; ``log_file`` and ``console`` as PTD's
        ``-l`` file and console (see the module docstring)."""
        if channel_mode not in CHANNEL_MODES:
            raise ValueError(f"channel_mode must be one of {CHANNEL_MODES}, not {channel_mode!r}")
        self.power_fn = power_fn
        self.channel_mode = channel_mode
        self.sample_period_s = sample_period_s
        self.supply_v = supply_v
        self.power_factor = power_factor
        self.faults = faults or SimFaults()
        self.clock = clock
        self.voltage_range = _Range()
        self.current_range = _Range()
        self.readings: list[tuple[float, float]] = []  # ground truth: (UTC s, W) as logged
        self.commands: list[str] = []
        self._unread: list[str] = []
        self._measurement: _Measurement | None = None
        self._samples_since_go = 0
        self._garbled = False
        self._lock = threading.Lock()
        self._sampler: threading.Thread | None = None
        self._stop_sampler = threading.Event()
        self.log_file = log_file
        self._console = console
        self._server = TcpLineServer(self._answer, "ptd-sim", port)

    # -- plumbing -------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        self.host, self.port = self._server.start()
        model = MODELS[self.channel_mode][0]
        self._log(f"Uncertainty checking for {model} is activated")
        self._log(f"Connected to {model} successfully")
        self._log(f"Establishing the listener on port {self.port}...")
        self._log("Waiting for a connection...")
        return self.host, self.port

    def _log(self, text: str) -> None:
        if self._console is not None:
            self._console(f"{ptd_time_text(self.clock())}: {text}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        self._stop_sampling()
        self._server.close()

    def __enter__(self) -> PtdSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the analyzer ---------------------------------------------------------------------

    def _start_sampling(self, period_s: float) -> None:
        self._stop_sampler.clear()
        self._sampler = threading.Thread(
            target=self._sample_loop, args=(period_s,), name="ptd-sim-sampler", daemon=True
        )
        self._sampler.start()

    def _stop_sampling(self) -> None:
        self._stop_sampler.set()
        if self._sampler is not None:
            self._sampler.join(timeout=2)
            self._sampler = None

    def _sample_loop(self, period_s: float) -> None:
        next_at = time.monotonic() + period_s
        while not self._stop_sampler.wait(max(0.0, next_at - time.monotonic())):
            next_at += period_s
            self._take_sample()

    def _take_sample(self) -> None:
        t = round(self.clock(), 3)  # the millisecond PTD prints
        watts = float(self.power_fn(t))
        with self._lock:
            m = self._measurement
            if m is None or not m.running or len(m.watts) >= MAX_SAMPLES:
                return
            if self.readings and t <= self.readings[-1][0]:
                return  # two ticks within one millisecond: keep the first
            amps = watts / (self.supply_v * self.power_factor)
            channels = self._channels(watts)
            m.watts.append(watts)
            m.uncertainty.append(max(self._uncertainty(w, a) for w, _, a, _ in channels)
                                 if channels else self._uncertainty(watts, amps))
            self.readings.append((t, watts))
            self._samples_since_go += 1
            line = self._sample_line(t, watts, amps, channels)
            self._unread.append(line)
            if self.log_file is not None:
                from energy_monitor.ptd import label_sample_line

                with self.log_file.open("a") as f:
                    f.write(label_sample_line(line, m.mark) + "\n")

    def _uncertainty(self, watts: float, amps: float) -> float:
        """Relative uncertainty of one reading: accuracy of reading plus of the range."""
        a_range = (self.current_range.value if not self.current_range.auto
                   else _auto_range(amps, AUTO_CURRENT_RANGES_A))
        v_range = (self.voltage_range.value if not self.voltage_range.auto
                   else _auto_range(self.supply_v, AUTO_VOLTAGE_RANGES_V))
        range_w = a_range * v_range
        return READING_ACCURACY + RANGE_ACCURACY * range_w / watts if watts > 0 else math.inf

    def _channels(self, watts: float) -> list[tuple[float, float, float, float]]:
        """(W, V, A, PF) of each channel of a multichannel analyzer; none otherwise."""
        if self.channel_mode != "multichannel":
            return []
        return [(watts * share, self.supply_v, watts * share / (self.supply_v * pf), pf)
                for share, pf in zip(CHANNEL_SHARES, CHANNEL_PF, strict=True)]

    def _sample_line(self, t: float, watts: float, amps: float,
                     channels: list[tuple[float, float, float, float]]) -> str:
        """A sample as ``RL`` returns it: no Mark, no channel labels (module docstring)."""
        stamp = ptd_time_text(t)
        if not channels:
            return (f"Time,{stamp},Watts,{watts:.6f},Volts,{self.supply_v:.6f},"
                    f"Amps,{amps:.6f},PF,{self.power_factor:.6f}")
        return (f"Time,{stamp},Watts,{watts:.6f},Volts,-1.000000,Amps,-1.000000,PF,-1.000000,"
                + ",".join(f"Watts,{w:.6f},Volts,{v:.6f},Amps,{a:.6f},PF,{pf:.6f}"
                           for w, v, a, pf in channels))

    # -- the protocol ---------------------------------------------------------------------

    def _answer(self, line: str) -> str | bytes | None:
        with self._lock:
            self.commands.append(line)
            done = self._samples_since_go
        f = self.faults
        if f.stall_after is not None and done >= f.stall_after:
            return SILENT
        if f.unplug_after is not None and done >= f.unplug_after:
            raise Hangup
        if f.garble_at is not None and done >= f.garble_at and not self._garbled:
            self._garbled = True
            return b"\xff\xfe#?garbled\x00\n"
        reply = self._reply(line.strip())
        # PTD logs every reply it sends as "Response to client sent: <reply>" (published v2.1
        # ptd_logs.txt). An RL reply is logged whole, its sample lines included: the published
        # logs predate power-dev's use of RL, so that part is our reading. It matters to
        # power-dev, whose server copies PTD's console log into ptd_logs.txt while PTD still
        # runs, through a buffered file: only what has been flushed gets there.
        self._log(f"Response to client sent: {reply}")
        return reply + "\n"

    def _reply(self, line: str) -> str:
        fields = line.split(",")
        cmd = fields[0]
        if line == "Hello":
            return "Hello, PTDaemon here!"
        if line == "Identify":
            model, analyzer = MODELS[self.channel_mode]
            return (f"{model},1000,1,1,1,1,0,0,1,version={SIM_VERSION},"
                    "OS=Linux,mode=power,1,1,2,0,0,no_cal_date,"
                    f"YOKOGAWA;{analyzer};TINYPOWERSIM0001;F1.00")
        if line == "RR":
            amp_auto, amp = self.current_range.text()
            volt_auto, volt = self.voltage_range.text()
            return f"Ranges,{amp_auto},{amp},{volt_auto},{volt}"
        if cmd == "SR":
            return self._set_range(fields)
        if cmd == "Go":
            return self._go(fields)
        if line == "Stop":
            with self._lock:
                m = self._measurement
                if m is None or not m.running:
                    return "Error: no measurement to stop"
                m.running = False
            self._stop_sampling()
            self._log_completed(m)
            return "Stopping untimed measurement"
        if cmd in ("RL", "DC-RL"):
            return self._read_log(line)
        if line == "Watts":
            return self._summary("Watts", lambda m: m.watts)
        if line == "Uncertainty":
            return self._summary("Uncertainty", lambda m: m.uncertainty)
        return "Unknown command"

    def _log_completed(self, m: _Measurement) -> None:
        finite = [w for w in m.watts if math.isfinite(w)]
        self._log("Completed test")
        if finite:
            self._log(f"Avg watts {sum(finite) / len(finite):.6f}, min watts {min(finite):.6f}, "
                      f"max watts {max(finite):.6f}, samples {len(m.watts)}, errors "
                      f"{len(m.watts) - len(finite)}, valid {len(finite)}")

    def _set_range(self, fields: list[str]) -> str:
        if len(fields) != 3 or fields[1] not in ("V", "A"):
            return "Invalid number of parameters"
        target = self.voltage_range if fields[1] == "V" else self.current_range
        name = "Volt" if fields[1] == "V" else "Amp"
        if fields[2].lower() == "auto":
            target.auto, target.value = True, -1.0
            self._log(f"{name} range set to Auto")
        else:
            try:
                value = float(fields[2])
            except ValueError:
                return f"Error: invalid range value {fields[2]}"
            if not value > 0:
                return f"Error: invalid range value {fields[2]}"
            target.auto, target.value = False, value
            self._log(f"{name} range set to {value:.6f}{fields[1]}")
        return f"Range {fields[1]} changed"

    def _go(self, fields: list[str]) -> str:
        if len(fields) not in (3, 4):
            return "Invalid number of parameters"
        try:
            period_ms, rampup = int(fields[1]), int(fields[2])
        except ValueError:
            return "Error: invalid Go parameters"
        with self._lock:
            if self._measurement is not None and self._measurement.running:
                return "Error: measurement already started"
            period_s = self.sample_period_s or period_ms / 1000.0
            self._measurement = _Measurement(fields[3] if len(fields) == 4 else "", period_s)
            self._samples_since_go = 0
        self._log(f"Go with mark {self._measurement.mark!r}")
        self._start_sampling(period_s)
        return (f"Starting untimed measurement, maximum {MAX_SAMPLES} samples at "
                f"{period_ms}ms with {rampup} rampup samples")

    def _read_log(self, line: str) -> str:
        wanted = {"single": "RL", "multichannel": "RL,*,*", "dc": "DC-RL"}[self.channel_mode]
        if line != wanted:
            if line == "RL,*,*" and self.channel_mode == "single":
                return "Invalid number of parameters"
            if line == "RL" and self.channel_mode == "multichannel":
                return "Invalid number of parameters"
            return "Unknown command"
        with self._lock:
            lines, self._unread = self._unread, []
        return "\n".join([f"Last {len(lines)} samples", *lines])

    def _summary(self, name: str, column: Callable[[_Measurement], list[float]]) -> str:
        with self._lock:
            values = column(self._measurement) if self._measurement else []
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return f"{name},0.000000,0.000000,0.000000,0,0,0"
        n = len(finite)
        return (f"{name},{sum(finite) / n:.6f},{min(finite):.6f},{max(finite):.6f},"
                f"{n},0,{len(values)}")


def _auto_range(value: float, ranges: tuple[float, ...]) -> float:
    return next((r for r in ranges if value <= r), ranges[-1])


def cpu_utilisation_power(
    idle_w: float = 15.0, busy_w: float = 65.0, stat_path: Path = Path("/proc/stat")
) -> PowerFunction:
    """A power function following this machine's measured CPU utilisation: ``idle_w`` at 0%,
    ``busy_w`` with every core busy, linear between (a simple model, and labelled simulated).

    Each call reads ``/proc/stat`` and uses the utilisation since the previous call, so the
    simulator's 1 Hz sampler sees the mean utilisation over each sample period.
    """
    if not stat_path.is_file():
        raise RuntimeError(
            f"cannot read CPU utilisation from {stat_path} (Linux only): give the PTDaemon "
            "simulator a power function of time instead"
        )
    previous = _cpu_times(stat_path)

    def power_w(t: float) -> float:
        nonlocal previous
        now = _cpu_times(stat_path)
        busy = now[0] - previous[0]
        total = now[1] - previous[1]
        previous = now
        utilisation = busy / total if total > 0 else 0.0
        return idle_w + (busy_w - idle_w) * utilisation

    return power_w


def _cpu_times(stat_path: Path) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from the ``cpu`` line of ``/proc/stat``."""
    first = stat_path.read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already in user/nice
    return total - idle, total


def start_ptd_simulator(
    power_fn: PowerFunction, **options: object
) -> tuple[str, int, Callable[[], None]]:
    """Start a simulated PTDaemon on a free loopback port: ``(host, port, stop)``.

    ``options`` are :class:`PtdSimulator`'s (``channel_mode``, ``sample_period_s``, ...)."""
    sim = PtdSimulator(power_fn, **options)  # type: ignore[arg-type]
    host, port = sim.start()
    return host, port, sim.close


# -- PTDaemon's command line ------------------------------------------------------------------

# Device types (PTD's ``deviceType``) and what this simulator makes of them; the numbers are the
# ones power-dev's checker knows (``compliance/check.py`` SUPPORTED_MODEL).
DEVICE_MODES = {8: "single", 35: "single", 48: "multichannel", 49: "single", 52: "single",
                77: "multichannel", 508: "dc", 549: "dc", 586: "dc"}


def main(argv: list[str] | None = None) -> int:
    """Run the simulator as PTDaemon is run: ``ptd -l <logfile> -p <port> [-b board]
    [-c channel] [dcFlag] [-n|-g|-y|-U] <deviceType> <devicePort>`` (power-dev's
    ``ServerConfig`` builds this command line; ``shared/reference/mlperf-power.md`` §1), with
    ``TZ=UTC``; the console log goes to stdout, which power-dev's server saves as
    ``ptd_logs.txt``. Options before PTD's say what the simulated analyzer reads:
    ``--watts W`` (a constant load), ``--cpu IDLE,BUSY`` (this machine's CPU utilisation) and
    ``--sample-period-s`` (faster than 1 Hz for tests). Runs until SIGTERM or SIGINT."""
    import argparse
    import signal
    import sys

    p = argparse.ArgumentParser(prog="python -m energy_monitor.sim.ptd_sim",
                                description="A simulated SPEC PTDaemon on 127.0.0.1.")
    p.add_argument("--watts", type=float, default=100.0, help="constant load in W")
    p.add_argument("--cpu", metavar="IDLE,BUSY", help="follow this machine's CPU utilisation")
    p.add_argument("--sample-period-s", type=float, default=None)
    p.add_argument("-l", dest="log_file", type=Path, help="PTD's sample log file")
    p.add_argument("-p", dest="port", type=int, default=8888)
    p.add_argument("-b", dest="board", type=int)
    p.add_argument("-c", dest="channel")
    for flag in ("-D", "-n", "-g", "-y", "-U"):
        p.add_argument(flag, action="store_true")
    p.add_argument("device_type", type=int)
    p.add_argument("device_port")
    args = p.parse_args(argv)
    mode = DEVICE_MODES.get(args.device_type)
    if mode is None:
        p.error(f"device type {args.device_type} is not one this simulator models; use one "
                f"of {sorted(DEVICE_MODES)}")
    if args.cpu:
        idle, busy = (float(x) for x in args.cpu.split(","))
        power_fn = cpu_utilisation_power(idle, busy)
    else:
        watts = args.watts
        power_fn = lambda t: watts  # noqa: E731

    def console(line: str) -> None:
        print(line, flush=True)

    print(f"tinypower PTDaemon simulator (not SPEC PTDaemon), version {SIM_VERSION}", flush=True)
    sim = PtdSimulator(power_fn, channel_mode=mode, sample_period_s=args.sample_period_s,
                       port=args.port, log_file=args.log_file, console=console)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        sim.start()
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 2
    try:
        stop.wait()
    finally:
        sim.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
