"""NVIDIA GPU energy through NVML (``nvidia-ml-py``, module ``pynvml``).

Two ways to read a GPU's energy, in order of preference:

- the **total energy counter** (``nvmlDeviceGetTotalEnergyConsumption``: millijoules since the
  driver loaded, Volta and newer), read every ``poll_interval_s`` and returned as a
  :class:`~energy_monitor.series.CounterSeries` of joules since :meth:`Nvml.start`;
- **power polling** (``nvmlDeviceGetPowerUsage``: milliwatts) where the counter is not
  supported, returned as a :class:`~energy_monitor.series.PowerSeries`. On Ampere (except
  GA100) and newer this reading is a one-second average, so it lags a changing load; on older
  GPUs it is instantaneous. Polling misses what happens between polls.

``mode="auto"`` (default) uses the counter when every selected GPU has it. Several GPUs are
added up reading by reading; a counter that falls (a driver reload) restarts from its new value,
as :class:`~energy_monitor.series.CounterSeries` treats resets. The counter updates about every
100 ms, so windows shorter than that are not meaningful. Results are ``measured_as="counter"``:
the GPU's own telemetry, not an instrument at the wall.

Reference: ``shared/reference/instruments.md`` §10; setup in ``docs/meters/nvml.md``. Check on a
real GPU: ``benchmarks/gpu_nvml_check.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from energy_monitor.meter import MeterError, MeterIdentity
from energy_monitor.poller import Poller, ReadingLog
from energy_monitor.series import CounterSeries, PowerSeries

MODES = ("auto", "energy", "power")
NOT_SUPPORTED = 3
NO_PERMISSION = 4
DRIVER_NOT_LOADED = 9
LIBRARY_NOT_FOUND = 12


def _load_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError:
        raise MeterError("the NVML meter needs nvidia-ml-py: pip install nvidia-ml-py") from None
    return pynvml


class Nvml:
    """One or more NVIDIA GPUs as one series meter."""

    kind = "nvml"

    def __init__(
        self, device: str | int | None = None, *, mode: str = "auto",
        poll_interval_s: float = 0.1, measured_as: str = "counter",
        clock: Callable[[], float] = time.time, nvml: Any = None,
    ) -> None:
        """``device``: a GPU index, a comma-separated list of them, a UUID (``GPU-...``), or
        None for every GPU. ``nvml`` replaces the ``pynvml`` module (tests, no GPU here)."""
        if mode not in MODES:
            raise MeterError(f"NVML mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.measured_as = measured_as
        self.clock = clock
        self._nvml = nvml if nvml is not None else _load_pynvml()
        self._call(self._nvml.nvmlInit)
        try:
            self.handles = self._handles(device)
            self.names = [_text(self._call(self._nvml.nvmlDeviceGetName, h))
                          for h in self.handles]
            self.uuids = [_text(self._call(self._nvml.nvmlDeviceGetUUID, h))
                          for h in self.handles]
            self.mode = self._choose_mode(mode)
        except BaseException:
            self._nvml.nvmlShutdown()
            raise
        # J since start (energy counter) or W (power polling)
        self._log = ReadingLog("nvml", ("energy_j" if self.mode == "energy" else "power_w",))
        self._last_mj: list[int] = []
        self._total_mj = 0
        self._poller = Poller(self.poll, poll_interval_s, "nvml-poll")
        self._open = True

    # -- SeriesMeter ----------------------------------------------------------------------

    def identify(self) -> MeterIdentity:
        driver = _text(self._call(self._nvml.nvmlSystemGetDriverVersion))
        how = "energy counter" if self.mode == "energy" else "power polling"
        return MeterIdentity("nvml", f"NVML {' + '.join(self.names)} ({how})",
                             ",".join(self.uuids), f"driver {driver}", self.measured_as)

    def start(self, folder: Path | None = None) -> None:
        """First reading now, then one each ``poll_interval_s``; with a folder, readings go
        to ``folder/nvml.csv`` as they are taken."""
        self._total_mj = 0
        self._last_mj = []
        self._log.start(folder)
        self.poll()
        self._poller.start()

    def stop(self) -> CounterSeries | PowerSeries:
        self._poller.finish(self._log.close)
        return self.series()

    def close(self) -> None:
        self._poller.stop()
        self._log.close()
        if self._open:
            self._open = False
            self._nvml.nvmlShutdown()

    # -- readings -------------------------------------------------------------------------

    def poll(self) -> None:
        """One reading of every GPU, added up."""
        if self.mode == "energy":
            counters = [int(self._call(self._nvml.nvmlDeviceGetTotalEnergyConsumption, h))
                        for h in self.handles]
            now = self.clock()
            if not self._last_mj:
                self._last_mj = counters
            for k, mj in enumerate(counters):
                step = mj - self._last_mj[k]
                self._total_mj += step if step >= 0 else mj  # a fall is a reset to zero
                self._last_mj[k] = mj
            value = self._total_mj / 1000.0
        else:
            milliwatts = [self._call(self._nvml.nvmlDeviceGetPowerUsage, h)
                          for h in self.handles]
            now = self.clock()
            value = sum(milliwatts) / 1000.0
        self._log.add(now, value)

    def series(self) -> CounterSeries | PowerSeries:
        """What was read so far (also after a failure)."""
        t, v = self._log.arrays()
        source = f"nvml {'+'.join(self.uuids)}"
        if self.mode == "energy":
            return CounterSeries(t, v, source=source)
        return PowerSeries(t, v, source=source)

    # -- NVML -----------------------------------------------------------------------------

    def _handles(self, device: str | int | None) -> list[Any]:
        if device is None:
            count = self._call(self._nvml.nvmlDeviceGetCount)
            if count == 0:
                raise MeterError("NVML sees no GPU: check `nvidia-smi` lists one")
            return [self._call(self._nvml.nvmlDeviceGetHandleByIndex, k) for k in range(count)]
        text = str(device)
        if text.startswith(("GPU-", "MIG-")):
            return [self._call(self._nvml.nvmlDeviceGetHandleByUUID, text)]
        try:
            indices = [int(part) for part in text.split(",")]
        except ValueError:
            raise MeterError(f"an NVML device is an index (0), a list (0,1) or a UUID "
                             f"(GPU-...), not {device!r}") from None
        count = self._call(self._nvml.nvmlDeviceGetCount)
        bad = [k for k in indices if not 0 <= k < count]
        if bad:
            raise MeterError(f"no GPU {bad[0]}: NVML sees {count} (indices 0..{count - 1})")
        return [self._call(self._nvml.nvmlDeviceGetHandleByIndex, k) for k in indices]

    def _choose_mode(self, mode: str) -> str:
        if mode == "power":
            return mode
        lacking = []
        for handle, name in zip(self.handles, self.names, strict=True):
            try:
                self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            except self._nvml.NVMLError as exc:
                if getattr(exc, "value", None) != NOT_SUPPORTED:
                    raise self._error(exc) from None
                lacking.append(name)
        if not lacking:
            return "energy"
        if mode == "energy":
            raise MeterError(
                f"{', '.join(lacking)} has no NVML energy counter (Volta and newer have one): "
                "use mode = \"power\" (power polling)"
            )
        return "power"

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nvml.NVMLError as exc:
            raise self._error(exc, fn.__name__) from None

    def _error(self, exc: Exception, what: str = "NVML") -> MeterError:
        code = getattr(exc, "value", None)
        if code in (LIBRARY_NOT_FOUND, DRIVER_NOT_LOADED):
            return MeterError(f"NVML cannot start ({exc}): this meter needs an NVIDIA GPU with "
                              "its driver installed (check `nvidia-smi`)")
        if code == NO_PERMISSION:
            return MeterError(f"{what}: no permission ({exc}); run as a user allowed to query "
                              "the GPU (or root)")
        if code == NOT_SUPPORTED:
            return MeterError(f"{what} is not supported on this GPU ({exc})")
        return MeterError(f"{what} failed: {exc}")


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
