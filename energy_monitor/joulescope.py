"""Driver for the Joulescope JS220 (and JS110) through the vendor's ``pyjoulescope_driver``.

The Joulescope has no public USB byte protocol, so this driver talks to the vendor library's
PubSub API (``Driver()``, ``open``, ``publish``, ``subscribe``...) and nothing below it. It
streams current (``s/i/!data``), voltage (``s/v/!data``) and the timestamp input GPI0
(``s/gpi/0/!data``) at the output rate ``h/fs``, and merges the three streams on their
``sample_id`` (native-rate counter; output index = ``sample_id // decimate_factor``) into one
trace: current and voltage columns written to disk as they arrive, GPI0 level changes turned
into :class:`~energy_monitor.trace.Event` at the first sample showing the new level.

A ``sample_id`` that jumps forward is a loss: the gap is padded with NaN and recorded as a
:class:`~energy_monitor.trace.Drop`, so the timing core refuses to integrate across it; samples
the instrument itself marks NaN count the same way. The API carries no per-sample overrange
flag; asynchronous device errors (``h/!error``), removal (``@/!remove``), a stalled stream and
out-of-order sample ids fail the run with a :class:`MeterError` that keeps the data.

The JS220 does not power the DUT: the voltage given to :meth:`Joulescope.configure` is only the
nominal one (it picks the voltage range and the JS110's IO level); energy uses the measured
voltage. Reference: ``shared/reference/instruments.md`` §2; wiring: ``docs/monitors/joulescope.md``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from energy_monitor.meter import MeterError, MeterIdentity
from energy_monitor.store import SampleStore
from energy_monitor.stream import EdgeWaiting, StreamHealth
from energy_monitor.trace import Drop, Event, Trace

MODELS = {"js220": 1_000_000, "js110": 2_000_000}  # model -> top output rate (its native rate)
STREAMS = ("i", "v", "gpi/0")  # current, voltage, timestamp input
MAX_VOLTAGE_V = 15.0
JS110_IO_LEVELS_V = (1.8, 2.1, 2.5, 2.7, 3.0, 3.3, 3.6, 5.0)


def output_rates(max_hz: int) -> tuple[int, ...]:
    """The Joulescope's output rates: 1-2-5 steps from 1 Hz up to ``max_hz``."""
    return tuple(m * 10**e for e in range(7) for m in (1, 2, 5) if m * 10**e <= max_hz)


def _vendor_driver_factory() -> Callable[[], Any]:
    try:
        from pyjoulescope_driver import Driver
    except ImportError as exc:
        raise MeterError(
            "the Joulescope driver needs the vendor package pyjoulescope-driver, which is not "
            f"installed ({exc}): run `pip install pyjoulescope-driver`"
        ) from exc
    return Driver


def _format_version(value: object) -> str:
    if isinstance(value, int):
        return f"{value >> 24}.{(value >> 16) & 0xFF}.{value & 0xFFFF}"
    return str(value)


class _Column:
    """Samples of one stream received but not yet merged, from output index ``start`` on."""

    def __init__(self) -> None:
        self.start = 0
        self.chunks: list[np.ndarray] = []
        self.length = 0
        self.uncertain = 0  # trailing samples that may be bit padding (GPI's packed bytes)

    @property
    def end(self) -> int:
        return self.start + self.length

    def append(self, values: np.ndarray) -> None:
        self.chunks.append(values)
        self.length += len(values)

    def truncate(self, end: int) -> None:
        keep = np.concatenate(self.chunks)[: max(0, end - self.start)] if self.chunks else None
        self.chunks = [keep] if keep is not None and len(keep) else []
        self.length = len(keep) if keep is not None else 0

    def take(self, n: int) -> np.ndarray:
        joined = np.concatenate(self.chunks) if self.chunks else np.empty(0)
        head, tail = joined[:n], joined[n:]
        self.chunks = [tail] if len(tail) else []
        self.length = len(tail)
        self.start += n
        return head


class Joulescope(EdgeWaiting):
    """A Joulescope JS220/JS110 opened through ``pyjoulescope_driver`` (or a stand-in)."""

    kind = "joulescope"

    def __init__(
        self, device: str | None = None, *, driver_factory: Callable[[], Any] | None = None,
        measured_as: str = "hardware", on_command: Callable[[str, str], None] | None = None,
        gpi_vref: str = "external", stall_timeout_s: float = 3.0, edge: str = "fall",
    ) -> None:
        """``device`` is a device path (``u/js220/000415``) or serial; None takes the only one.
        ``gpi_vref`` is the JS220's GPI reference: ``external`` (the VREF pin, wired to the
        DUT's IO voltage) or ``3v3``. ``edge`` is the timestamp polarity that makes an event:
        ``fall`` (the DUT pulls the pin low) or ``rise`` (what the MLCommons runner uses)."""
        if edge not in ("fall", "rise"):
            raise ValueError(f"edge must be 'fall' or 'rise', not {edge!r}")
        if gpi_vref not in ("external", "3v3"):
            raise ValueError(f"gpi_vref must be 'external' or '3v3', not {gpi_vref!r}")
        self.measured_as = measured_as
        self.edge = edge
        self.gpi_vref = gpi_vref
        self._on_command = on_command or (lambda direction, text: None)
        factory = driver_factory or _vendor_driver_factory()
        self._lock = threading.Lock()
        self._health = StreamHealth(
            "the Joulescope", stall_timeout_s,
            "Check the USB cable and hub (a JS220 needs a USB 2.0 high-speed port)",
        )
        self.path = ""
        try:
            self._drv = factory()
        except Exception as exc:  # the vendor library failing to start its USB backend
            raise MeterError(
                f"cannot start the Joulescope driver ({exc}): check the USB permissions (udev "
                "rules on Linux) and that no other program holds the instrument"
            ) from exc
        self.sample_rate_hz = 1000.0
        self.voltage_v = 1.8  # nominal; the Joulescope measures the DUT's supply, never sets it
        self._reset_acquisition(None)
        try:
            self.path = self._select(device)
            self._call("open", self.path, "defaults")
        except MeterError:
            with contextlib.suppress(Exception):  # stop the vendor library's threads
                self._drv.finalize()
            raise
        self.model, self.serial = self.path.split("/")[1:3]
        self._subscribe("@/!remove", self._on_remove)
        self._subscribe(f"{self.path}/h/!error", self._on_error)

    # -- Meter protocol -------------------------------------------------------------------

    def identify(self) -> MeterIdentity:
        firmware = _format_version(self._call("query", f"{self.path}/c/fw/version"))
        return MeterIdentity("joulescope", self.model.upper(), self.serial, firmware,
                             self.measured_as)

    def configure(self, *, voltage_v: float, sample_rate_hz: float) -> None:
        """Output rate ``h/fs``, automatic current range, the voltage range that holds the
        nominal ``voltage_v`` and the timestamp input's logic level."""
        max_hz = MODELS[self.model]
        if sample_rate_hz not in output_rates(max_hz):
            raise MeterError(
                f"{sample_rate_hz:g} Hz is not a {self.model.upper()} output rate: use a 1-2-5 "
                f"step from 1 Hz to {max_hz:,} Hz (1000, 2000, 5000, 10000, ...)"
            )
        if not 0 < voltage_v <= MAX_VOLTAGE_V:
            raise MeterError(
                f"a DUT supply of {voltage_v:g} V is outside the Joulescope's 0-{MAX_VOLTAGE_V:g} "
                "V input: check the board's monitor voltage"
            )
        self.sample_rate_hz = float(sample_rate_hz)
        self.voltage_v = float(voltage_v)
        settings: list[tuple[str, object]] = [("h/fs", int(sample_rate_hz))]
        if self.model == "js220":
            settings += [
                ("s/i/range/mode", "auto"),
                ("s/v/range/select", "2 V" if voltage_v <= 1.8 else "15 V"),
                ("s/v/range/mode", "manual"),  # select first, as Jetperch's own tools do
                ("c/gpio/vref", self.gpi_vref),
            ]
        else:
            io_v = min(JS110_IO_LEVELS_V, key=lambda v: abs(v - voltage_v))
            settings += [
                ("s/i/range/select", "auto"),
                ("s/v/range/select", "5 V" if voltage_v <= 4.5 else "15 V"),
                ("s/extio/voltage", f"{io_v:.1f} V"),
            ]
        for topic, value in settings:
            self._call("publish", f"{self.path}/{topic}", value)

    def start(self, folder: Path | None = None) -> None:
        """Enable current, voltage and GPI0 streaming; with a folder, the columns go to
        ``joulescope-current.f32`` and ``joulescope-voltage.f32`` there as they arrive (float32,
        as the instrument sends them)."""
        self._raise_if_failed()
        with self._lock:
            self._reset_acquisition(folder)
            self._acquiring = True
            self._health.data_arrived()
        for stream in STREAMS:
            self._subscribe(f"{self.path}/s/{stream}/!data", self._on_data)
        for stream in STREAMS:
            self._call("publish", f"{self.path}/s/{stream}/ctrl", 1)

    def sample_count(self) -> int:
        with self._lock:
            return len(self._current)

    def stop(self) -> Trace:
        """Disable the streams, merge what arrived and return the trace; a failed stream
        raises :class:`MeterError` after the sample files are closed."""
        try:
            for stream in STREAMS:
                self._quietly("publish", f"{self.path}/s/{stream}/ctrl", 0)
            for stream in STREAMS:
                self._quietly("unsubscribe", f"{self.path}/s/{stream}/!data", self._on_data)
        finally:
            with self._lock:
                self._acquiring = False
                self._merge(final=True)  # what arrived before a failure is still good
                self._current.close()
                self._voltage.close()
        self._raise_if_failed()
        return self.trace()

    def trace(self) -> Trace:
        """What has been measured so far (also after a failure, for the session folder)."""
        with self._lock:
            return Trace(
                sample_rate_hz=self.sample_rate_hz, current_a=self._current.array(),
                voltage_v=self._voltage.array(), events=list(self._events),
                drops=list(self._drops),
            )

    def close(self) -> None:
        self._quietly("unsubscribe", "@/!remove", self._on_remove)
        self._quietly("unsubscribe", f"{self.path}/h/!error", self._on_error)
        self._quietly("close", self.path)  # also stops any stream still running
        with contextlib.suppress(Exception):  # the library may already be gone
            self._drv.finalize()
        with self._lock:
            self._acquiring = False
            self._current.close()
            self._voltage.close()

    # -- calls into the vendor library ----------------------------------------------------

    def _select(self, device: str | None) -> str:
        paths = [str(p) for p in self._call("device_paths")]
        ours = [p for p in paths if p.count("/") == 2 and p.split("/")[1] in MODELS]
        if device is not None:
            match = [p for p in ours if p == device or p.split("/")[2] == device]
            if len(match) == 1:
                return match[0]
            raise MeterError(
                f"no Joulescope {device!r} found (connected: {', '.join(paths) or 'none'}): "
                "check the USB cable and the serial number"
            )
        if len(ours) == 1:
            return ours[0]
        if not ours:
            raise MeterError(
                f"no Joulescope JS220/JS110 found (connected: {', '.join(paths) or 'none'}): "
                "plug it in, check the USB cable and permissions, and close the Joulescope UI"
            )
        raise MeterError(
            f"{len(ours)} Joulescopes connected ({', '.join(ours)}): choose one with "
            "device=<path or serial>"
        )

    def _call(self, name: str, *args: object) -> Any:
        """One vendor API call, logged to the transcript; failures become MeterError."""
        text = " ".join(
            a if isinstance(a, str) else getattr(a, "__name__", None) or repr(a) for a in args
        )
        self._on_command(">", f"{name} {text}".strip())
        try:
            result = getattr(self._drv, name)(*args)
        except TimeoutError as exc:
            raise MeterError(
                f"the Joulescope {self.path or '?'} did not answer {name} {text} ({exc}): was it "
                "unplugged? Reconnect it and measure again; the samples received so far are kept"
            ) from exc
        except Exception as exc:
            raise MeterError(
                f"the Joulescope {self.path or '?'} refused {name} {text}: {exc}"
            ) from exc
        if name in ("query", "device_paths"):
            self._on_command("<", repr(result))
        return result

    def _quietly(self, name: str, *args: object) -> None:
        """A clean-up call: ignored once the run has failed (the device may be gone)."""
        try:
            self._call(name, *args)
        except MeterError as exc:
            self._health.fail(str(exc))

    def _subscribe(self, topic: str, fn: Callable[[str, Any], None]) -> None:
        self._call("subscribe", topic, "pub", fn)

    # -- callbacks (on the vendor library's thread) ---------------------------------------

    def _on_remove(self, topic: str, value: object) -> None:
        if str(value) == self.path:
            with self._lock:
                count = len(self._current)
            self._health.fail(
                f"lost the Joulescope {self.path} after {count} samples: it was unplugged or "
                "reset. Reconnect it and measure again; the samples received so far are kept"
            )

    def _on_error(self, topic: str, value: object) -> None:
        self._health.fail(f"the Joulescope {self.path} reported an error: {value}")

    def _on_data(self, topic: str, value: dict[str, Any]) -> None:
        stream = topic[len(self.path) + 3:].removesuffix("/!data")
        with self._lock:
            if not self._acquiring or self._health.failure is not None or stream not in STREAMS:
                return
            self._health.data_arrived()
            try:
                self._accept(stream, value)
                self._merge(final=False)
            except MeterError as exc:
                self._health.fail(str(exc))

    # -- merging the three streams --------------------------------------------------------

    def _reset_acquisition(self, folder: Path | None) -> None:
        self._current = SampleStore(
            folder / "joulescope-current.f32" if folder else None, np.float32)
        self._voltage = SampleStore(
            folder / "joulescope-voltage.f32" if folder else None, np.float32)
        self._columns = {s: _Column() for s in STREAMS}
        self._early: dict[str, list[dict[str, Any]]] = {s: [] for s in STREAMS}
        self._origin: int | None = None  # sample_id of trace sample 0
        self._decimate = 1
        self._events: list[Event] = []
        self._drops: list[Drop] = []
        self._gpi_gaps: list[tuple[int, int]] = []
        self._level: int | None = None  # GPI0 level of the last merged sample
        self._acquiring = False

    def _accept(self, stream: str, msg: dict[str, Any]) -> None:
        rate = msg["sample_rate"] / msg["decimate_factor"]
        if rate != self.sample_rate_hz:
            raise MeterError(
                f"the Joulescope streams {stream} at {rate:g} Hz, not the {self.sample_rate_hz:g}"
                " Hz expected: call configure() before start(), and close any other program "
                "using the instrument (it may have changed h/fs)"
            )
        if self._origin is None:
            self._early[stream].append(msg)
            if all(self._early.values()):
                self._decimate = int(msg["decimate_factor"])
                self._origin = max(m[0]["sample_id"] for m in self._early.values())
                early, self._early = self._early, {s: [] for s in STREAMS}
                for name, msgs in early.items():
                    for m in msgs:
                        self._place(name, m)
            return
        self._place(stream, msg)

    def _place(self, stream: str, msg: dict[str, Any]) -> None:
        """Put one message's samples at their index: trim what precedes the trace, pad a
        forward jump (a loss), refuse a backward one."""
        col = self._columns[stream]
        sid = int(msg["sample_id"])
        if stream == "gpi/0":
            packed = np.asarray(msg["data"], dtype=np.uint8)
            values: np.ndarray = np.unpackbits(packed, bitorder="little")
        else:
            values = np.asarray(msg["data"], dtype=np.float64)
        index = (sid - self._origin) // self._decimate
        if index < 0:
            values, index = values[-index:], 0
        if not len(values):
            return
        if index < col.end - col.uncertain:
            raise MeterError(
                f"the Joulescope's {stream} stream went back from sample {col.end} to {index}: "
                "the data is out of order; reconnect the instrument and measure again"
            )
        if index < col.end:
            col.truncate(index)  # the last GPI byte held padding bits, not samples
        elif index > col.end:  # samples that never arrived
            if stream == "gpi/0":
                self._gpi_gaps.append((col.end, index))
                col.truncate(col.end - col.uncertain)  # the last byte's padding bits, if any
                col.append(np.full(index - col.end, self._last_gpi(col), dtype=np.uint8))
            else:
                col.append(np.full(index - col.end, np.nan))
        col.append(values)
        col.uncertain = 7 if stream == "gpi/0" else 0
        lag = max(c.end for c in self._columns.values()) - min(
            c.end for c in self._columns.values())
        if lag > max(self.sample_rate_hz * self._health.stall_timeout_s, 1000):
            behind = min(self._columns, key=lambda s: self._columns[s].end)
            raise MeterError(
                f"the Joulescope's {behind} stream stopped while the others go on ({lag} "
                "samples behind): reconnect the instrument and measure again"
            )

    def _last_gpi(self, col: _Column) -> int:
        if col.chunks:
            return int(col.chunks[-1][-1])
        return 1 if self._level is None else self._level

    def _merge(self, *, final: bool) -> None:
        """Move the samples all three streams have delivered into the trace."""
        if self._origin is None:
            return
        i, v, g = (self._columns[s] for s in STREAMS)
        base = len(self._current)
        upto = min(i.end, v.end, g.end if final else g.end - g.uncertain)
        n = upto - base
        if n <= 0:
            return
        current, voltage, levels = i.take(n), v.take(n), g.take(n)
        self._current.extend_array(current)
        self._voltage.extend_array(voltage)
        self._current.extend(())  # lets the store flush to disk once a second
        self._voltage.extend(())
        self._note_drops(base, np.isnan(current) | np.isnan(voltage))
        self._note_edges(base, levels.astype(np.int8))

    def _note_drops(self, base: int, lost: np.ndarray) -> None:
        end = base + len(lost)
        for a, b in self._gpi_gaps:
            lost[max(a, base) - base : max(min(b, end), base) - base] = True
        self._gpi_gaps = [(max(a, end), b) for a, b in self._gpi_gaps if b > end]
        if not lost.any():
            return
        flips = np.flatnonzero(np.diff(np.concatenate(([0], lost.astype(np.int8), [0]))))
        for a, b in zip(flips[::2] + base, flips[1::2] + base, strict=True):
            last = self._drops[-1] if self._drops else None
            if last is not None and last.index == a:  # one loss split across two merges
                self._drops[-1] = Drop(int(b), last.missing + int(b - a), last.first_possible)
            else:
                self._drops.append(Drop(index=int(b), missing=int(b - a), earliest=int(a)))

    def _note_edges(self, base: int, levels: np.ndarray) -> None:
        previous = levels[0] if self._level is None else self._level
        changes = np.flatnonzero(np.diff(np.concatenate(([previous], levels))))
        wanted = 0 if self.edge == "fall" else 1
        for k in changes:
            if levels[k] == wanted:
                index = base + int(k)
                self._events.append(Event(index, index / self.sample_rate_hz, self.edge))
        self._level = int(levels[-1])

    # -- failures -------------------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        with self._lock:
            acquiring, count = self._acquiring, len(self._current)
        self._health.check(acquiring, count)
