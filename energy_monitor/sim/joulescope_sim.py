"""A simulated Joulescope JS220 (or JS110) at the ``pyjoulescope_driver`` API.

The Joulescope has no public USB byte protocol: its vendor C driver (``joulescope_driver``,
wrapped by the PyPI package ``pyjoulescope-driver``) owns the wire. So this simulator stands in
for the vendor ``Driver`` object instead: :meth:`JoulescopeSimulator.factory` returns objects
with the same methods and callback shapes (``device_paths``, ``open``, ``publish``, ``query``,
``subscribe(topic, flags, fn(topic, value))``, ``unsubscribe``, ``close``, ``finalize``), and
the real :class:`~energy_monitor.joulescope.Joulescope` driver runs unchanged on top of it.

A thread plays the instrument: as virtual time passes it publishes ``s/i/!data``,
``s/v/!data`` and ``s/gpi/0/!data`` messages in blocks of at most ``block_s`` of samples, with
the real message dict (``sample_id`` counting at the native rate and advancing by
``decimate_factor`` per sample, ``sample_rate``, ``utc``, ``time_map``, float32 ``data``, GPI
packed 8 samples per byte, little-endian bit order). Current is the exact charge of each sample
period divided by the period, voltage is the isolated bench supply (the Joulescope measures it,
it does not source it), GPI0 is the DUT's timestamp pin (a pulse shorter than a sample still
shows as one sample at the pulsed level).

Faults, counted in samples since the first stream was enabled: ``unplug_after`` (data stops,
``@/!remove`` is published with the device path, and later calls on the device raise
``TimeoutError('jsdrv_publish timed out | <topic>')`` as the real binding does for an absent
device), ``stall_after`` (data stops, the device stays), ``drop_at``/``drop_count`` (those
samples never arrive: ``sample_id`` jumps) and ``lose_event`` (the n-th timestamp pulse, counted
by falling edges, never reaches GPI0). ``garble_at`` has no equivalent at this API and is
ignored; the API's harmless oddities (``quirks``) are always on: block lengths follow the
wall clock, so GPI blocks end in padded bytes, and a stream enabled later starts at a later
``sample_id``. Reference: ``shared/reference/instruments.md`` §2.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.load import LoadTimeline

NATIVE_RATE_HZ = {"js220": 1_000_000, "js110": 2_000_000}
FIELD_ID = {"i": 1, "v": 2, "gpi/0": 5}  # the binding's Field enum: current, voltage, gpi
STREAMS = ("i", "v", "gpi/0")
SUBSCRIBE_FLAGS = {"pub", "pub_retain", "metadata_req", "metadata_rsp", "metadata_rsp_retain",
                   "query_req", "query_rsp", "return_code"}
TIME64_PER_S = 1 << 30
EPOCH_2018_UNIX_S = 1514764800  # time64 counts from 2018-01-01T00:00:00Z
# Settable topics per model and the values the instrument accepts.
SETTINGS = {
    "js220": {
        "s/i/range/mode": {"auto", "manual", "off"},
        "s/v/range/mode": {"auto", "manual"},
        "s/v/range/select": {"2 V", "15 V"},
        "c/gpio/vref": {"external", "3v3"},
    },
    "js110": {
        "s/i/range/select": {"auto", "10 A", "2 A", "180 mA", "18 mA", "1.8 mA", "180 µA",
                             "18 µA", "off"},
        "s/v/range/select": {"5 V", "15 V"},
        "s/extio/voltage": {"off", "1.8 V", "2.1 V", "2.5 V", "2.7 V", "3.0 V", "3.3 V",
                            "3.6 V", "5.0 V"},
    },
}
V_RANGE_FULL_SCALE_V = {"2 V": 2.0, "5 V": 5.0, "15 V": 15.0}
VERSIONS = {"c/fw/version": 0x01020003, "c/hw/version": 0x00000003,
            "s/fpga/version": 0x01020001}


def _rates(native_hz: int) -> set[int]:
    return {m * 10**e for e in range(7) for m in (1, 2, 5) if m * 10**e <= native_hz}


def _flag(value: object) -> int | None:
    """A stream enable value as the binding accepts it (1/0, True/False, 'on'/'off')."""
    if value in (1, True, "on", "1"):
        return 1
    if value in (0, False, "off", "0"):
        return 0
    return None


@dataclass
class _Subscription:
    topic: str
    fn: Callable[[str, Any], None]


class JoulescopeSimulator:
    """One simulated Joulescope on the USB bus, fed by a :class:`LoadTimeline`."""

    def __init__(
        self, timeline: LoadTimeline, faults: SimFaults | None = None, *, model: str = "js220",
        serial: str = "tps000001-tinypowersim", supply_voltage_v: float = 1.8, block_s: float = 0.1,
    ) -> None:
        if model not in NATIVE_RATE_HZ:
            raise ValueError(f"model must be one of {sorted(NATIVE_RATE_HZ)}, not {model!r}")
        self.timeline = timeline
        self.faults = faults or SimFaults()
        self.model = model
        self.path = f"u/{model}/{serial}"
        self.native_rate_hz = NATIVE_RATE_HZ[model]
        self.supply_voltage_v = supply_voltage_v
        self.block_s = block_s
        self.values: dict[str, object] = {"h/fs": self.native_rate_hz, **VERSIONS}
        self.opened = False
        self.unplugged = False
        self.published: list[tuple[str, object]] = []  # every accepted publish, for tests
        self._lock = threading.RLock()  # device state and delivery order
        self._subs: list[_Subscription] = []
        self._enabled: dict[str, bool] = dict.fromkeys(STREAMS, False)
        self._start_k: dict[str, int] = dict.fromkeys(STREAMS, 0)
        self._acquiring = False
        self._t_origin = 0.0  # virtual time of sample 0 of the current acquisition
        self._sid_origin = 0
        self._k_next = 0  # next sample period to emit (delivered or lost)
        self._pin_level = 1  # the timestamp pin idles high
        self._falls_seen = 0
        self._swallow_rise = False
        self._utc0 = int((time.time() - EPOCH_2018_UNIX_S) * TIME64_PER_S)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="joulescope-sim", daemon=True)
        self._thread.start()

    # -- the vendor API surface ----------------------------------------------------------

    def factory(self) -> SimulatedDriver:
        """A new driver handle, as ``pyjoulescope_driver.Driver()`` would return."""
        return SimulatedDriver(self)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)

    def __enter__(self) -> JoulescopeSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def report_error(self, message: str) -> None:
        """Publish an asynchronous device error on ``h/!error``, as the instrument does."""
        with self._lock:
            self._deliver(f"{self.path}/h/!error", message)

    @property
    def sample_rate_hz(self) -> int:
        return int(self.values["h/fs"])

    def _device_topic(self, call: str, topic: str) -> str:
        """The subtopic under this device; an absent device times out like the real one."""
        if self.unplugged or not topic.startswith(self.path + "/"):
            raise TimeoutError(f"jsdrv_{call} timed out | {topic}")
        if not self.opened:
            raise RuntimeError(f"jsdrv_{call} failed 22 CLOSED | device not open | {topic}")
        return topic[len(self.path) + 1:]

    def _open(self, path: str, mode: str | None) -> None:
        if mode not in (None, "defaults", "restore", "raw"):
            raise RuntimeError(f"jsdrv_open failed 5 PARAMETER_INVALID | bad mode {mode!r}")
        with self._lock:
            if self.unplugged or path != self.path:
                raise TimeoutError(f"jsdrv_open timed out | {path}")
            if self.opened:
                raise RuntimeError(f"jsdrv_open failed 21 IN_USE | already open | {path}")
            self.opened = True
            if mode in (None, "defaults"):
                self.values = {"h/fs": self.native_rate_hz, **VERSIONS}

    def _close(self, path: str) -> None:
        with self._lock:
            if self.unplugged or path != self.path:
                raise TimeoutError(f"jsdrv_close timed out | {path}")
            for s in STREAMS:
                self._enabled[s] = False
            self._acquiring = False
            self.opened = False

    def _publish(self, topic: str, value: object) -> None:
        with self._lock:
            sub = self._device_topic("publish", topic)
            stream = sub.removeprefix("s/").removesuffix("/ctrl")
            if sub == "h/fs":
                if value not in _rates(self.native_rate_hz) or isinstance(value, bool):
                    self._invalid(topic, value, "not a 1-2-5 rate up to the native rate")
                if self._acquiring:
                    self._invalid(topic, value, "stop the streams before changing h/fs")
                self.values[sub] = int(value)
            elif stream in STREAMS and sub.endswith("/ctrl"):
                flag = _flag(value)
                if flag is None:
                    self._invalid(topic, value, "stream control takes 1/0 or on/off")
                self._set_stream(stream, bool(flag))
            elif sub in SETTINGS[self.model]:
                if value not in SETTINGS[self.model][sub]:
                    self._invalid(topic, value, f"options: {sorted(SETTINGS[self.model][sub])}")
                self.values[sub] = value
                if sub in ("s/i/range/mode", "s/i/range/select"):
                    # The DUT's supply runs through the current shunt: range "off" opens it.
                    # The lab's supply stays off until a range is set (our choice).
                    self.timeline.set_powered(value != "off")
            else:
                self._invalid(topic, value, "unknown or read-only topic")
            self.published.append((sub, value))

    def _query(self, topic: str) -> object:
        if topic == "@/list":
            return "" if self.unplugged else self.path
        with self._lock:
            sub = self._device_topic("query", topic)
            if sub not in self.values:
                raise RuntimeError(f"jsdrv_query failed 16 NOT_FOUND | not found | {topic}")
            return self.values[sub]

    def _subscribe(self, topic: str, flags: object, fn: Callable[[str, Any], None]) -> None:
        names = [flags] if isinstance(flags, str | int) else list(flags)
        if not all(isinstance(f, int) or f in SUBSCRIBE_FLAGS for f in names):
            raise ValueError(f"unsupported subscribe flags {flags!r}")
        if not callable(fn):
            raise ValueError("subscribe needs a callable")
        with self._lock:
            self._subs.append(_Subscription(topic, fn))

    def _unsubscribe(self, topic: str | None, fn: Callable[[str, Any], None]) -> None:
        with self._lock:
            self._subs = [s for s in self._subs
                          if not (s.fn == fn and (topic is None or s.topic == topic))]

    @staticmethod
    def _invalid(topic: str, value: object, why: str) -> None:
        raise RuntimeError(
            f"jsdrv_publish failed 5 PARAMETER_INVALID | parameter invalid | {topic}={value!r}: "
            f"{why}"
        )

    # -- the instrument -------------------------------------------------------------------

    def _set_stream(self, stream: str, on: bool) -> None:
        if on and not self._acquiring:
            with self.timeline.lock:
                self._t_origin = self.timeline.clock.now()
            self._sid_origin = round(self._t_origin * self.native_rate_hz)
            self._k_next = 0
            self._acquiring = True
            with self.timeline.lock:
                before = self.timeline.edges_between(0.0, self._t_origin)
            self._pin_level = 0 if before and before[-1].polarity == "fall" else 1
        if on and not self._enabled[stream]:
            self._start_k[stream] = self._k_next
        self._enabled[stream] = on
        if not any(self._enabled.values()):
            self._acquiring = False

    def _deliver(self, topic: str, value: object) -> None:
        for s in list(self._subs):
            if topic == s.topic or topic.startswith(s.topic.rstrip("/") + "/"):
                s.fn(topic, value)

    def _run(self) -> None:
        while not self._closed.wait(0.005):
            with self._lock:
                if self._acquiring and not self.unplugged:
                    self._pump()

    def _pump(self) -> None:
        """Emit every whole sample period that virtual time has passed, in blocks."""
        f = self.faults
        fs = self.sample_rate_hz
        with self.timeline.lock:
            due = int((self.timeline.clock.now() - self._t_origin) * fs)
        for limit in (f.stall_after, f.unplug_after):
            if limit is not None:
                due = min(due, limit)
        block = max(1, int(fs * self.block_s))
        while self._k_next < due:
            k0 = self._k_next
            n = min(block, due - k0)
            if f.drop_at is not None and f.drop_count > 0:
                lo, hi = f.drop_at, f.drop_at + f.drop_count
                if k0 < lo < k0 + n:
                    n = lo - k0  # deliver up to the loss, then lose it as one block
                elif lo <= k0 < hi:
                    n = min(n, hi - k0)
                    self._emit(k0, n, lost=True)
                    self._k_next += n
                    continue
            self._emit(k0, n, lost=False)
            self._k_next += n
        if f.unplug_after is not None and self._k_next >= f.unplug_after:
            self.unplugged = True
            self.opened = False
            self._acquiring = False
            self._deliver("@/!remove", self.path)

    def _emit(self, k0: int, n: int, *, lost: bool) -> None:
        fs = self.sample_rate_hz
        period = 1.0 / fs
        t0 = self._t_origin + k0 * period
        with self.timeline.lock:
            charge = self.timeline.charge_per_sample(t0, period, n)
            edges = self.timeline.edges_between(t0, t0 + n * period)
        levels = self._pin_levels(edges, t0, fs, n)
        if lost:
            return  # the samples existed (the pin state moved on) but never reached the host
        full_scale = V_RANGE_FULL_SCALE_V.get(str(self.values.get("s/v/range/select")), 15.0)
        if self.values.get("s/v/range/mode") == "auto":
            full_scale = 15.0
        columns = {
            "i": (charge / period).astype(np.float32),
            "v": np.full(n, min(self.supply_voltage_v, full_scale), dtype=np.float32),
            "gpi/0": np.packbits(levels, bitorder="little"),
        }
        decimate = self.native_rate_hz // fs
        for stream in STREAMS:
            skip = max(0, self._start_k[stream] - k0)
            if not self._enabled[stream] or skip >= n:
                continue
            data = columns[stream]
            if skip:
                data = (np.packbits(levels[skip:], bitorder="little") if stream == "gpi/0"
                        else data[skip:])
            sid = self._sid_origin + (k0 + skip) * decimate
            self._deliver(f"{self.path}/s/{stream}/!data", {
                "sample_id": sid,
                "utc": self._utc0 + (sid * TIME64_PER_S) // self.native_rate_hz,
                "field_id": FIELD_ID[stream],
                "index": 0,
                "sample_rate": self.native_rate_hz,
                "decimate_factor": decimate,
                "time_map": {"offset_time": self._utc0, "offset_counter": 0,
                             "counter_rate": float(self.native_rate_hz)},
                "data": data,
            })

    def _pin_levels(self, edges: list, t0: float, fs: int, n: int) -> np.ndarray:
        """GPI0 per sample: the level after the first edge inside the sample, else the level
        at its start, so a pulse shorter than a sample still shows for one sample."""
        levels = np.empty(n, dtype=np.uint8)
        pos = 0
        level = self._pin_level
        by_sample: dict[int, list[int]] = {}
        for e in edges:
            if e.polarity == "fall":
                lose = self._falls_seen == self.faults.lose_event
                self._falls_seen += 1
                if lose:
                    self._swallow_rise = True
                    continue
            elif self._swallow_rise:
                self._swallow_rise = False
                continue
            j = min(max(int((e.time_s - t0) * fs), 0), n - 1)
            by_sample.setdefault(j, []).append(0 if e.polarity == "fall" else 1)
        for j in sorted(by_sample):
            levels[pos:j] = level
            levels[j] = by_sample[j][0]
            level = by_sample[j][-1]
            pos = j + 1
        levels[pos:] = level
        self._pin_level = level
        return levels


class SimulatedDriver:
    """What ``pyjoulescope_driver.Driver()`` gives, answered by a :class:`JoulescopeSimulator`.

    Same methods, arguments and callback shape as the vendor class; ``timeout`` is accepted and
    ignored. Calls after :meth:`finalize` raise, as the vendor driver's do.
    """

    def __init__(self, sim: JoulescopeSimulator) -> None:
        self._sim = sim
        self._finalized = False
        self._callbacks: list[Callable[[str, Any], None]] = []

    def _check(self) -> JoulescopeSimulator:
        if self._finalized:
            raise RuntimeError("jsdrv failed 22 CLOSED | driver finalized")
        return self._sim

    def device_paths(self, timeout: float | None = None) -> list[str]:
        listed = self._check()._query("@/list")
        return [p for p in str(listed).split(",") if p]

    def open(self, device_prefix: str, mode: str | None = None,
             timeout: float | None = None) -> None:
        self._check()._open(device_prefix, mode)

    def close(self, device_prefix: str, timeout: float | None = None) -> None:
        self._check()._close(device_prefix)

    def publish(self, topic: str, value: object, timeout: float | None = None) -> None:
        self._check()._publish(topic, value)

    def query(self, topic: str, timeout: float | None = None) -> object:
        return self._check()._query(topic)

    def subscribe(self, topic: str, flags: object, fn: Callable[[str, Any], None],
                  timeout: float | None = None) -> None:
        self._check()._subscribe(topic, flags, fn)
        self._callbacks.append(fn)

    def unsubscribe(self, topic: str, fn: Callable[[str, Any], None],
                    timeout: float | None = None) -> None:
        self._check()._unsubscribe(topic, fn)

    def unsubscribe_all(self, fn: Callable[[str, Any], None],
                        timeout: float | None = None) -> None:
        self._check()._unsubscribe(None, fn)

    def finalize(self, timeout: float | None = None) -> None:
        if not self._finalized:
            for fn in self._callbacks:
                self._sim._unsubscribe(None, fn)
            self._finalized = True

    def __enter__(self) -> SimulatedDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finalize()
