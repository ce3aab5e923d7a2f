"""A simulated NVML: the few ``pynvml`` functions the NVML meter calls, for GPUs that follow a
power function of a virtual clock.

NVML is a C library behind the NVIDIA driver, with no wire protocol to speak, so the GPU is
simulated at the library boundary: :class:`FakeNvml` has ``pynvml``'s names and raises the real
``pynvml.NVMLError`` subclasses (``nvidia-ml-py`` installed) with the real codes (3 not
supported, 4 no permission, 12 library not found). Each :class:`SimGpu` integrates its power
function exactly (numerically, fine-grained) for the energy counter (millijoules, an integer as
NVML gives it) and reports the power at the moment asked (milliwatts) for power polling.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pynvml

NVMLError = pynvml.NVMLError
INTEGRATION_STEP_S = 1e-3


@dataclass
class SimGpu:
    name: str
    uuid: str
    power_fn: Callable[[float], float]  # W at virtual time t
    has_energy_counter: bool = True
    start_mj: int = 1_000_000
    energy_j: float = field(default=0.0)  # integrated since the clock's start

    def power_w(self, t: float) -> float:
        return float(self.power_fn(t))


class FakeNvml:
    """A stand-in for the ``pynvml`` module; pass it as ``Nvml(nvml=...)``."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[SimGpu], *, start_s: float = 1_700_000_000.0,
                 driver: str = "550.54.15-tinypowersim", fail_init: int | None = None) -> None:
        self.gpus = gpus
        self.driver = driver
        self.fail_init = fail_init  # an NVML error code nvmlInit raises (no driver: 12)
        self.fail_reads_after: int | None = None  # raise NVML errors after this many reads
        self.reads = 0
        self.initialised = 0
        self._now_s = start_s
        self._lock = threading.Lock()

    # -- the virtual clock ----------------------------------------------------------------

    def now(self) -> float:
        with self._lock:
            return self._now_s

    def advance(self, seconds: float) -> None:
        """Move the clock, integrating each GPU's power (midpoint rule, 1 ms steps)."""
        with self._lock:
            steps = max(1, math.ceil(seconds / INTEGRATION_STEP_S))
            dt = seconds / steps
            for gpu in self.gpus:
                gpu.energy_j += sum(gpu.power_w(self._now_s + (k + 0.5) * dt)
                                    for k in range(steps)) * dt
            self._now_s += seconds

    # -- pynvml's names -------------------------------------------------------------------

    def nvmlInit(self) -> None:  # noqa: N802 (pynvml's names)
        if self.fail_init is not None:
            raise NVMLError(self.fail_init)
        self.initialised += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return self.driver

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimGpu:  # noqa: N802
        if not 0 <= index < len(self.gpus):
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> SimGpu:  # noqa: N802
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetName(self, handle: SimGpu) -> str:  # noqa: N802
        return handle.name

    def nvmlDeviceGetUUID(self, handle: SimGpu) -> str:  # noqa: N802
        return handle.uuid

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: SimGpu) -> int:  # noqa: N802
        self._count_read()
        if not handle.has_energy_counter:
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        with self._lock:
            return handle.start_mj + int(handle.energy_j * 1000.0)

    def nvmlDeviceGetPowerUsage(self, handle: SimGpu) -> int:  # noqa: N802
        self._count_read()
        with self._lock:
            return int(round(handle.power_w(self._now_s) * 1000.0))

    def _count_read(self) -> None:
        self.reads += 1
        if self.fail_reads_after is not None and self.reads > self.fail_reads_after:
            raise NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
