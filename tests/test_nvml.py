"""The NVML meter against a simulated NVML at the pynvml boundary (no GPU here): the energy
counter, power polling where the counter is missing, several GPUs, and the errors."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from energy_monitor.meter import MeterError
from energy_monitor.nvml import Nvml
from energy_monitor.series import CounterSeries, PowerSeries
from energy_monitor.sim.nvml_sim import FakeNvml, SimGpu

T0 = 1_700_000_000.0


def ramp_w(t: float) -> float:
    return 100.0 + 20.0 * (t - T0)  # 100 W rising 20 W/s


def wave_w(t: float) -> float:
    return 250.0 + 50.0 * math.sin(2 * math.pi * (t - T0) / 4.0)


def wave_energy_j(a: float, b: float) -> float:
    k = 2 * math.pi / 4.0
    return 250.0 * (b - a) - 50.0 / k * (math.cos(k * (b - T0)) - math.cos(k * (a - T0)))


def two_gpus(counter: bool = True) -> FakeNvml:
    return FakeNvml([
        SimGpu("NVIDIA H100 80GB HBM3", "GPU-aaaa", ramp_w, has_energy_counter=counter),
        SimGpu("NVIDIA H100 80GB HBM3", "GPU-bbbb", wave_w, has_energy_counter=counter),
    ], start_s=T0)


def measure(meter: Nvml, nvml: FakeNvml, seconds: float, step_s: float = 0.1):
    meter.start()
    for _ in range(round(seconds / step_s)):
        nvml.advance(step_s)
        meter.poll()
    return meter.stop()


def test_energy_counter_of_two_gpus_matches_their_power(tmp_path: Path) -> None:
    nvml = two_gpus()
    meter = Nvml(nvml=nvml, clock=nvml.now, poll_interval_s=3600)
    assert meter.mode == "energy"
    ident = meter.identify()
    assert ident.model == "NVML NVIDIA H100 80GB HBM3 + NVIDIA H100 80GB HBM3 (energy counter)"
    assert (ident.serial, ident.firmware, ident.measured_as) == (
        "GPU-aaaa,GPU-bbbb", "driver 550.54.15-tinypowersim", "simulated")
    series = measure(meter, nvml, 5.0)
    meter.close()
    assert isinstance(series, CounterSeries)
    a, b = T0 + 1.05, T0 + 4.45
    ramp_j = 100.0 * (b - a) + 10.0 * ((b - T0) ** 2 - (a - T0) ** 2)
    result = series.energy(a, b, max_gap_s=0.5)
    assert result.energy_j == pytest.approx(ramp_j + wave_energy_j(a, b), rel=0.005)
    whole = series.energy(T0, T0 + 5.0, max_gap_s=0.5)
    assert whole.energy_j == pytest.approx(sum(g.energy_j for g in nvml.gpus), abs=0.01)
    assert nvml.initialised == 0  # nvmlShutdown at close


def test_power_polling_where_there_is_no_counter(tmp_path: Path) -> None:
    nvml = FakeNvml([SimGpu("Tesla P4", "GPU-p4", wave_w, has_energy_counter=False)],
                    start_s=T0)
    meter = Nvml(nvml=nvml, clock=nvml.now, poll_interval_s=3600)
    assert meter.mode == "power"
    assert "power polling" in meter.identify().model
    series = measure(meter, nvml, 6.0, step_s=0.05)
    meter.close()
    assert isinstance(series, PowerSeries)
    a, b = T0 + 0.52, T0 + 5.93
    result = series.energy(a, b, max_gap_s=0.2)
    assert result.energy_j == pytest.approx(wave_energy_j(a, b), rel=0.005)
    assert result.mean_power_w == pytest.approx(wave_energy_j(a, b) / (b - a), rel=0.005)
    with pytest.raises(MeterError, match='no NVML energy counter .* mode = "power"'):
        Nvml(nvml=nvml, mode="energy")


def test_forced_power_mode_and_device_selection() -> None:
    nvml = two_gpus()
    meter = Nvml("GPU-bbbb", nvml=nvml, mode="power", clock=nvml.now, poll_interval_s=3600)
    assert meter.uuids == ["GPU-bbbb"] and meter.mode == "power"
    meter.close()
    assert Nvml("1,0", nvml=nvml).uuids == ["GPU-bbbb", "GPU-aaaa"]
    with pytest.raises(MeterError, match=r"no GPU 2: NVML sees 2 \(indices 0..1\)"):
        Nvml(2, nvml=nvml)
    with pytest.raises(MeterError, match="an index .* not 'first'"):
        Nvml("first", nvml=nvml)
    with pytest.raises(MeterError, match="Not Found"):
        Nvml("GPU-cccc", nvml=nvml)


def test_a_counter_reset_restarts_from_its_new_value() -> None:
    nvml = FakeNvml([SimGpu("A100", "GPU-a", lambda t: 300.0)], start_s=T0)
    meter = Nvml(nvml=nvml, clock=nvml.now, poll_interval_s=3600)
    meter.start()
    for k in range(10):
        nvml.advance(0.1)
        if k == 5:  # the driver reloads: the counter restarts near zero
            nvml.gpus[0].start_mj = -int(nvml.gpus[0].energy_j * 1000)
        meter.poll()
    series = meter.stop()
    # 1 s at 300 W, less the energy between the last reading before the reset and the reset.
    assert series.energy_j[-1] == pytest.approx(300.0 - 30.0, abs=0.01)


def test_no_driver_and_a_lost_gpu_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(MeterError, match="needs an NVIDIA GPU with its driver installed"):
        Nvml(nvml=FakeNvml([], fail_init=12))
    nvml = two_gpus()
    meter = Nvml(nvml=nvml, poll_interval_s=0.01)
    nvml.fail_reads_after = nvml.reads + 12  # the first reading and five polls, then lost
    meter.start(tmp_path)
    deadline = time.monotonic() + 5
    while meter._poller.failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(MeterError, match="nvmlDeviceGetTotalEnergyConsumption failed: GPU is lost"):
        meter.stop()
    kept = meter.series()
    meter.close()
    assert len(kept) == 6  # the first reading and five polls
    assert len((tmp_path / "nvml.csv").read_text().splitlines()) == 7
