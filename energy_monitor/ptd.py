"""Client for SPEC PTDaemon (PTD): the power analyzer behind the MLPerf power workflow.

PTD owns the analyzer (a Yokogawa WT310E, WT333E, ...) and serves a line protocol on TCP (port
8888): each command ends ``\\r\\n`` and gets one ``\\n``-terminated reply, except ``RL`` whose
reply is ``Last N samples`` and N sample lines. A measurement is ``Go,1000,0,<mark>`` (one
sample a second, tagged with the mark) ... ``Stop``; samples wait in PTD until read with ``RL``.
The MLPerf server reads them only after ``Stop``; this driver polls ``RL`` while measuring
(every ``poll_interval_s``), so that a PTD or network failure mid-run loses nothing already
sampled and is noticed at once, and so that a folder given to :meth:`Ptd.start` gets the sample
lines appended as they arrive (``spl.txt``, the same lines MLPerf's ``spl.txt`` holds).

``RL`` has fallbacks (``shared/reference/mlperf-power.md`` §3): multichannel analyzers answer
``RL,*,*``; single-channel ones answer it ``Invalid number of parameters`` and need ``RL``; DC
analyzers answer ``Unknown command`` and need ``DC-RL``. The driver tries them in that order on
the first read and keeps the one that works.

Every reply is checked against the replies PTD gives; anything else (an ``Error...`` reply, a
reply to a different command, bytes that are no PTD reply) is a
:class:`~energy_monitor.meter.MeterError` naming the command, the reply and the fix. A PTD that
stops answering, or a closed connection, fails the measurement with the samples read so far
kept (:meth:`Ptd.series`, ``spl.txt``). Sample lines whose Watts are not a number (PTD logs
``Bad watts reading nan`` while auto-ranging) are counted in ``invalid_samples`` and left out,
which shows as a gap in the series rather than a made-up value.
"""

from __future__ import annotations

import contextlib
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from energy_monitor.meter import MeterError, MeterIdentity, parse_host_port
from energy_monitor.series import PowerSeries
from energy_monitor.stream import RawLog

DEFAULT_PORT = 8888
SAMPLE_PERIOD_MS = 1000  # MLPerf power rules: 1 Hz
TIME_FORMAT = "%m-%d-%Y %H:%M:%S.%f"
RL_FORMS = ("RL,*,*", "RL", "DC-RL")
SIMULATOR_TAG = "tinypowersim"  # in the Identify version of energy_monitor.sim.ptd_sim
# Go while PTD still measures (the simulator's wording; the issue that found it quotes
# "measurement already started"; real PTDaemon's exact text is UNVERIFIED)
STALE_GO = "Error: measurement already started"
_LAST_N = re.compile(r"^Last (\d+) samples?$")
_VERSION = re.compile(r"version=(.+?)-")
_CHANNEL = re.compile(r"^Ch\d+$")
_ANALYZER = re.compile(r"^Analyzer\d+$")


def parse_address(address: str) -> tuple[str, int]:
    """``tcp://HOST:PORT``, ``HOST:PORT`` or ``HOST`` (port 8888)."""
    return parse_host_port(address, DEFAULT_PORT,
                           f"PTDaemon as HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")


@dataclass(frozen=True)
class PtdSample:
    """One PTD sample line. ``watts`` is the analyzer's total (on a multichannel analyzer the
    sum of its channels); V/A/PF are -1 where PTD does not report them (the multichannel top
    level of v2.1 logs) or averages (later rounds). ``channels`` holds each channel's own
    values, keyed ``Watts``/``Volts``/``Amps``/``PF``, with ``channel`` its number."""

    time_s: float  # UTC epoch seconds
    watts: float
    volts: float
    amps: float
    pf: float
    mark: str
    channels: tuple[dict[str, float], ...] = ()

    @property
    def max_volts(self) -> float:
        """The largest voltage a range must hold: the channels' own when there are channels
        (the top level is -1 or an average then), else the top level's."""
        return max(c.get("Volts", -1.0) for c in self.channels) if self.channels \
            else self.volts

    @property
    def max_amps(self) -> float:
        return max(c.get("Amps", -1.0) for c in self.channels) if self.channels \
            else self.amps

@dataclass(frozen=True)
class PtdRanges:
    """``RR``: auto flags are -1 unknown, 0 off, 1 on; ranges -1 when unknown."""

    amp_auto: int
    amp_range: float
    volt_auto: int
    volt_range: float
    reply: str  # as PTD sent it, to restore and to compare at the end

    def restore_values(self) -> tuple[float | str, float | str]:
        """(volts, amps) to restore: a fixed range PTD reported (auto 0, range > 0), else
        ``"auto"`` (power-dev ``_get_initial_range``)."""
        def one(auto: int, value: float) -> float | str:
            return value if auto == 0 and value > 0 else "auto"

        return one(self.volt_auto, self.volt_range), one(self.amp_auto, self.amp_range)


@dataclass(frozen=True)
class PtdSummary:
    """``Watts`` or ``Uncertainty``: PTD's summary of the last measurement. Reading the
    fields as average, minimum, maximum, count follows the published replies; PTD does not
    document them (UNVERIFIED)."""

    average: float
    minimum: float
    maximum: float
    count: int
    reply: str


@dataclass
class _Run:
    samples: list[PtdSample] = field(default_factory=list)
    invalid_samples: int = 0
    out_of_order: int = 0


def label_sample_line(line: str, mark: str = "") -> str:
    """A sample line as MLPerf's ``spl.txt`` holds it: ``Mark,<mark>`` after the top-level
    values and ``ChN,`` before each channel's values.

    PTDaemon's ``RL`` reply carries neither: power-dev's server adds them itself
    (``ptd_client_server/lib/server.py``, ``Session.stop``: it splits each ``RL`` line at
    ``Watts``, writes ``Mark,<session>_<mode>`` after the first group and ``Ch<j>,`` before the
    j-th following one), while PTD's own ``-l`` log file and published ``spl.txt`` files have
    both. A line that already has a label keeps it; a missing Mark becomes ``mark``."""
    fields = line.strip().split(",")
    if len(fields) < 4 or fields[0] != "Time":
        raise ValueError("a sample line starts with Time,<time>")
    out = fields[:2]
    has_mark = "Mark" in fields
    groups = 0  # Watts groups so far: the top level, then one per channel
    labelled = False  # the next group has its ChN label already
    k = 2
    while k < len(fields):
        key = fields[k]
        if _ANALYZER.match(key):  # power-dev's merge of several analyzers: keep as it is
            out += fields[k:]
            break
        if (key == "Watts" or _CHANNEL.match(key)) and groups == 1 and not has_mark \
                and not labelled:
            out += ["Mark", mark]
            has_mark = True
        if _CHANNEL.match(key):
            out.append(key)
            labelled = True
            k += 1
            continue
        if key == "Watts":
            if groups >= 1 and not labelled:
                out.append(f"Ch{groups}")
            groups += 1
            labelled = False
        if k + 1 >= len(fields):
            raise ValueError(f"field {key!r} has no value")
        out += [key, fields[k + 1]]
        k += 2
    if not has_mark:
        out += ["Mark", mark]
    return ",".join(out)


def parse_sample_line(line: str, mark: str = "") -> PtdSample:
    """``Time,<UTC>,Watts,x,Volts,x,Amps,x,PF,x[,Mark,<mark>][,[ChN,]Watts,x,...]``: with or
    without the Mark and channel labels (see :func:`label_sample_line`); a line without a Mark
    gets ``mark``."""
    fields = label_sample_line(line, mark).split(",")
    try:
        stamp = datetime.strptime(fields[1], TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"bad sample time {fields[1]!r}") from None
    top: dict[str, str] = {}
    current = top
    channels: list[dict[str, str]] = []
    k = 2
    while k < len(fields):
        key = fields[k]
        if _CHANNEL.match(key):
            current = {"channel": key[2:]}
            channels.append(current)
            k += 1
            continue
        if _ANALYZER.match(key):
            break  # power-dev's merge of several analyzers: each one's own line follows
        if key in current:
            raise ValueError(f"field {key!r} twice in one group")
        current[key] = fields[k + 1]
        k += 2
    if "Watts" not in top:
        raise ValueError("no Watts field")
    return PtdSample(
        time_s=stamp.timestamp(), watts=_number(top["Watts"]),
        volts=_number(top.get("Volts", "-1")), amps=_number(top.get("Amps", "-1")),
        pf=_number(top.get("PF", "-1")), mark=top.get("Mark", mark),
        channels=tuple({key: _number(value) for key, value in c.items()} for c in channels),
    )


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


class Ptd:
    """A PTDaemon connection: one command at a time, a poller thread while measuring."""

    kind = "ptd"

    def __init__(
        self, address: str = f"127.0.0.1:{DEFAULT_PORT}", *, measured_as: str = "hardware",
        timeout_s: float = 5.0, poll_interval_s: float = 1.0,
        on_command: Callable[[str, str], None] | None = None, recover_stale: bool = False,
    ) -> None:
        """``on_command(direction, text)`` sees each command (``>``) and one-line reply
        (``<``), for the session transcript; sample lines go to ``spl.txt`` instead.
        ``recover_stale``: when ``Go`` finds a measurement running, stop it and start ours (for
        the one owner of this PTDaemon, e.g. a director restarted after dying mid-run);
        otherwise that is an error, as another client may be measuring."""
        self.address = address
        self.host, self.port = parse_address(address)
        self.measured_as = measured_as
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self._on_command = on_command or (lambda direction, text: None)
        self._lock = threading.Lock()  # one command and its reply at a time
        self._pending = bytearray()
        self._rl_form: str | None = None
        self._mark = ""
        self.recover_stale = recover_stale
        self.recovered_stale = False  # a stale measurement was stopped before ours
        self._run = _Run()
        self._measuring = False
        self._failure: str | None = None
        self._poller: threading.Thread | None = None
        self._stop_polling = threading.Event()
        self._spl = RawLog(None)
        self.messages: list[tuple[str, str]] = []  # (command, first reply line), as MLPerf keeps
        try:
            self._sock: socket.socket | None = socket.create_connection(
                (self.host, self.port), timeout=timeout_s
            )
        except OSError as exc:
            raise MeterError(
                f"cannot reach PTDaemon at {self.host}:{self.port} ({exc}): start PTDaemon "
                f"with -p {self.port} (and TZ=UTC) on that machine, or fix the address"
            ) from exc
        try:
            self._expect("Hello", lambda r: r == "Hello, PTDaemon here!",
                         "is this port PTDaemon's (ptd -p PORT)?")
        except BaseException:
            self.close()
            raise

    # -- SeriesMeter ----------------------------------------------------------------------

    def identify(self) -> MeterIdentity:
        """``Identify``: the model is the text before the first comma, the version follows
        ``version=``; the analyzer's own ``MAKER;MODEL;SERIAL;FIRMWARE`` is the last field."""
        reply = self._command("Identify")
        fields = reply.split(",")
        version = _VERSION.search(reply)
        if len(fields) < 2 or version is None:
            raise MeterError(self._malformed("Identify", reply, "a model and version=..."))
        analyzer = fields[-1].split(";")
        serial = analyzer[2] if len(analyzer) >= 3 else "?"
        firmware = analyzer[3] if len(analyzer) >= 4 else "?"
        # tinypower's PTDaemon simulator names itself in its version; its numbers are
        # simulated whatever the configuration says.
        measured_as = "simulated" if SIMULATOR_TAG in reply else self.measured_as
        return MeterIdentity("ptd", f"{fields[0]} (PTDaemon {version.group(1)})", serial,
                             firmware, measured_as)

    def start(self, folder: Path | None = None, *, mark: str = "tinypower",
              period_ms: int = SAMPLE_PERIOD_MS) -> None:
        """``Go,<period_ms>,0,<mark>`` and poll the samples; with a folder, sample lines are
        appended to ``folder/spl.txt`` as they arrive. MLPerf marks are
        ``<session>_ranging`` / ``<session>_testing``."""
        if "," in mark or "\n" in mark:
            raise MeterError(f"a PTD mark cannot hold commas or newlines: {mark!r}")
        if self._measuring:
            raise MeterError("this PTD measurement is already running: stop it first")
        self._raise_if_failed()
        self._run = _Run()
        self._mark = mark
        self._spl.close()
        self._spl = RawLog(folder / "spl.txt" if folder else None)
        go = f"Go,{period_ms},0,{mark}"
        reply = self._command(go)
        if reply == STALE_GO and self.recover_stale:
            # A measurement nobody stops: a director that died mid-run (PTDaemon keeps
            # measuring). Stop it, drop its unread samples, and start ours.
            self._expect("Stop", lambda r: r == "Stopping untimed measurement",
                         "stop PTDaemon's measurement by hand (Stop), then measure again")
            with self._lock:
                self._read_log_locked()
            self.recovered_stale = True
            reply = self._command(go)
        if not reply.startswith("Starting untimed measurement"):
            if reply.startswith("Error"):
                raise MeterError(f"PTDaemon refused {go!r}: {reply!r}. Fix: stop the "
                                 "measurement another client started, then measure again")
            raise MeterError(self._malformed(go, reply, "its documented reply"))
        self._measuring = True
        self._stop_polling.clear()
        self._poller = threading.Thread(target=self._poll_loop, name="ptd-poll", daemon=True)
        self._poller.start()

    def stop(self) -> PowerSeries:
        """``Stop``, read the remaining samples, return the series. A failure during the
        measurement raises :class:`MeterError` here; :meth:`series` still has the data."""
        self._stop_polling.set()
        if self._poller is not None:
            self._poller.join(timeout=self.timeout_s + 1)
            self._poller = None
        try:
            if self._measuring and self._failure is None:
                self._expect("Stop", lambda r: r == "Stopping untimed measurement",
                             "another client may have stopped it")
                self._read_samples()
        except MeterError as exc:
            self._fail(str(exc))
        finally:
            self._measuring = False
            self._spl.close()
        self._raise_if_failed()
        return self.series()

    def close(self) -> None:
        """Stop polling and close the connection (a running measurement is stopped first)."""
        self._stop_polling.set()
        if self._poller is not None:
            self._poller.join(timeout=self.timeout_s + 1)
            self._poller = None
        if self._measuring and self._sock is not None and self._failure is None:
            with contextlib.suppress(MeterError):
                self._command("Stop")
        self._measuring = False
        self._spl.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- what PTD measured ----------------------------------------------------------------

    def series(self) -> PowerSeries:
        """The samples read so far as a power series (also after a failure)."""
        samples = self._run.samples
        return PowerSeries(
            np.array([s.time_s for s in samples]), np.array([s.watts for s in samples]),
            source=f"ptd {self.host}:{self.port}",
        )

    @property
    def samples(self) -> list[PtdSample]:
        """Every valid sample read since :meth:`start`, with V, A, PF and mark."""
        return list(self._run.samples)

    @property
    def invalid_samples(self) -> int:
        """Sample lines left out because their Watts were not a finite number."""
        return self._run.invalid_samples

    def ranging_maxima(self) -> tuple[float, float]:
        """(max volts, max amps) over the samples: the ranging run's result, from which the
        testing run's fixed ranges are set (amps x 1.1 under the MLPerf rules). On a
        multichannel analyzer these are the largest of the channels' own maxima
        (:meth:`channel_maxima`): one range setting serves every channel, so it must hold the
        busiest one, and the top level's V/A are -1 or averages there, never a channel's peak
        (power-dev's ``max_volts_amps_avg_watts`` takes the channels' too)."""
        if not self._run.samples:
            raise MeterError("no PTD samples to take the ranging maxima from: run the "
                             "ranging measurement first")
        return (max(s.max_volts for s in self._run.samples),
                max(s.max_amps for s in self._run.samples))

    def channel_maxima(self) -> dict[int, tuple[float, float]]:
        """Channel number -> (max volts, max amps) over the samples (empty on a
        single-channel analyzer)."""
        maxima: dict[int, tuple[float, float]] = {}
        for sample in self._run.samples:
            for c in sample.channels:
                n = int(c["channel"])
                v, a = maxima.get(n, (-1.0, -1.0))
                maxima[n] = (max(v, c.get("Volts", -1.0)), max(a, c.get("Amps", -1.0)))
        return maxima

    def channel_series(self, channel: int) -> PowerSeries:
        """One channel's own power (the total is :meth:`series`)."""
        t, w = [], []
        for sample in self._run.samples:
            for c in sample.channels:
                if int(c["channel"]) == channel and math.isfinite(c.get("Watts", math.nan)):
                    t.append(sample.time_s)
                    w.append(c["Watts"])
        if not t:
            raise MeterError(f"PTD channel {channel} has no samples: the analyzer's channels "
                             f"are {sorted(self.channel_maxima()) or 'none (single-channel)'}")
        return PowerSeries(np.array(t), np.array(w),
                           source=f"ptd {self.host}:{self.port} Ch{channel}")

    # -- ranges and summaries -------------------------------------------------------------

    def read_ranges(self) -> PtdRanges:
        reply = self._command("RR")
        fields = reply.split(",")
        try:
            if fields[0] != "Ranges" or len(fields) != 5:
                raise ValueError
            return PtdRanges(int(fields[1]), float(fields[2]), int(fields[3]),
                             float(fields[4]), reply)
        except ValueError:
            raise MeterError(self._malformed(
                "RR", reply, "Ranges,<AmpAuto>,<AmpRange>,<VoltAuto>,<VoltRange>"
            )) from None

    def restore_ranges(self, initial: PtdRanges) -> None:
        """Set the ranges ``RR`` read before the session, as power-dev's server does at the
        end (``Ptd.terminate``: the range when auto-ranging was off and the range known,
        else Auto); its checker then finds ``SR,V,<initial>`` and ``SR,A,<initial>``."""
        volts, amps = initial.restore_values()
        self.set_voltage_range(volts)
        self.set_current_range(amps)

    def set_voltage_range(self, volts: float | str) -> None:
        """``SR,V,<volts>`` or ``SR,V,Auto`` (pass ``"auto"``)."""
        self._set_range("V", volts)

    def set_current_range(self, amps: float | str) -> None:
        """``SR,A,<amps>`` or ``SR,A,Auto`` (pass ``"auto"``)."""
        self._set_range("A", amps)

    def watts(self) -> PtdSummary:
        """``Watts``: PTD's summary of the last measurement (MLPerf writes it to
        ``run_1/ptd_out.txt``; the metric is computed from the samples, not from this)."""
        return self._summary("Watts")

    def uncertainty(self) -> PtdSummary:
        """``Uncertainty``: PTD's uncertainty summary of the last measurement (fraction)."""
        return self._summary("Uncertainty")

    def _set_range(self, which: str, value: float | str) -> None:
        if isinstance(value, str):
            if value.lower() != "auto":
                raise MeterError(f"a PTD range is a number or 'auto', not {value!r}")
            text = "Auto"
        else:
            if not (math.isfinite(value) and value > 0):
                raise MeterError(f"a PTD {which} range must be a positive number, not {value!r}")
            text = f"{value:.6f}"
        self._expect(f"SR,{which},{text}", lambda r: r == f"Range {which} changed",
                     "check the analyzer offers that range (see its manual)")

    def _summary(self, name: str) -> PtdSummary:
        reply = self._command(name)
        fields = reply.split(",")
        try:
            if fields[0] != name or len(fields) < 5:
                raise ValueError
            return PtdSummary(float(fields[1]), float(fields[2]), float(fields[3]),
                              int(fields[4]), reply)
        except ValueError:
            raise MeterError(self._malformed(name, reply, f"{name},<avg>,<min>,<max>,<n>,...")
                             ) from None

    # -- reading samples ------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop_polling.wait(self.poll_interval_s):
            try:
                self._read_samples()
            except MeterError as exc:
                self._fail(str(exc))
                return

    def _read_samples(self) -> None:
        """One ``RL``: append the unread samples to the run (and to ``spl.txt``)."""
        with self._lock:
            lines = self._read_log_locked()
        for line in lines:
            try:
                labelled = label_sample_line(line, self._mark)
                sample = parse_sample_line(labelled)
            except ValueError as exc:
                self._spl.write(line.encode("latin-1") + b"\n")
                raise MeterError(self._malformed("RL", line, f"a sample line ({exc})")) from None
            self._spl.write(labelled.encode("latin-1") + b"\n")
            run = self._run
            if not math.isfinite(sample.watts):
                run.invalid_samples += 1
            elif run.samples and sample.time_s <= run.samples[-1].time_s:
                run.out_of_order += 1
            else:
                run.samples.append(sample)

    def _read_log_locked(self) -> list[str]:
        forms = [self._rl_form] if self._rl_form else list(RL_FORMS)
        replies = []
        for form in forms:
            first = self._exchange_locked(form)
            match = _LAST_N.match(first)
            if match:
                self._rl_form = form
                return [self._read_line_locked(form) for _ in range(int(match.group(1)))]
            replies.append(f"{form} -> {first!r}")
            if not ("Invalid number of parameters" in first or "Unknown command" in first):
                break
        raise MeterError(self._malformed(
            "RL", "; ".join(replies), "Last N samples (tried RL,*,*, RL and DC-RL)"
        ))

    # -- the line protocol ----------------------------------------------------------------

    def _expect(self, command: str, ok: Callable[[str], bool], fix: str) -> str:
        reply = self._command(command)
        if not ok(reply):
            if reply.startswith("Error"):
                raise MeterError(f"PTDaemon refused {command!r}: {reply!r}. Fix: {fix}")
            raise MeterError(self._malformed(command, reply, "its documented reply"))
        return reply

    def _command(self, command: str) -> str:
        with self._lock:
            return self._exchange_locked(command)

    def _exchange_locked(self, command: str) -> str:
        if self._sock is None:
            raise MeterError(self._failure or "the connection to PTDaemon is closed")
        self._on_command(">", command)
        try:
            self._sock.sendall(command.encode("ascii") + b"\r\n")
        except OSError as exc:
            raise self._broken(self._lost(exc)) from exc
        reply = self._read_line_locked(command)
        self._on_command("<", reply)
        self.messages.append((command, reply))
        return reply

    def _read_line_locked(self, command: str) -> str:
        deadline = time.monotonic() + self.timeout_s
        while (end := self._pending.find(b"\n")) < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._broken(
                    f"PTDaemon at {self.host}:{self.port} did not answer {command!r} within "
                    f"{self.timeout_s:g} s after {len(self._run.samples)} samples: check that "
                    "PTDaemon is running and its analyzer connected (PTD's log says why); the "
                    "samples read so far are kept"
                )
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise self._broken(self._lost(exc)) from exc
            if not chunk:
                raise self._broken(self._lost("connection closed"))
            self._pending += chunk
        raw = bytes(self._pending[:end])
        del self._pending[: end + 1]
        try:
            return raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise self._broken(self._malformed(command, repr(raw[:60]), "ASCII text")) from None

    def _malformed(self, command: str, reply: str, expected: str) -> str:
        return (
            f"malformed PTDaemon reply to {command!r}: {reply[:120]!r} (expected {expected}). "
            f"Is {self.host}:{self.port} a PTDaemon, and is only one client talking to it? "
            "The samples read so far are kept"
        )

    def _lost(self, why: object) -> str:
        return (
            f"lost PTDaemon at {self.host}:{self.port} after {len(self._run.samples)} samples "
            f"({why}): was PTDaemon stopped or the network cut? The samples read so far are "
            "kept; restart PTDaemon and measure again"
        )

    def _broken(self, reason: str) -> MeterError:
        """The connection is out of step or gone: close it and remember why."""
        self._fail(reason)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return MeterError(reason)

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise MeterError(self._failure)
