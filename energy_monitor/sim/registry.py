"""Which simulator stands in for which instrument, and how its real driver connects to it.

The virtual lab asks for a monitor by kind (``lpm01a``, ...); it gets the running simulator
and a ``connect`` function that builds the *real* driver pointed at it, so the runner measures
through exactly the code it would use on hardware. Each instrument adds one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from energy_monitor.meter import Meter
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.load import LoadTimeline


class Simulator(Protocol):
    def close(self) -> None: ...


@dataclass
class SimulatedMeter:
    kind: str
    simulator: Simulator
    default_sample_rate_hz: float  # what the virtual lab measures at
    max_sample_rate_hz: float  # the instrument's top streaming rate (benchmarks)
    connect: Callable[..., Meter]  # (measured_as=..., on_command=...) -> the real driver

    def close(self) -> None:
        self.simulator.close()


def _lpm01a(timeline: LoadTimeline, faults: SimFaults | None) -> SimulatedMeter:
    from energy_monitor.lpm01a import Lpm01a
    from energy_monitor.sim.lpm01a_sim import Lpm01aSimulator

    sim = Lpm01aSimulator(timeline, faults=faults)
    url = sim.start()
    return SimulatedMeter("lpm01a", sim, 1000.0, 100_000.0, lambda **kw: Lpm01a(url, **kw))


def _ppk2(timeline: LoadTimeline, faults: SimFaults | None) -> SimulatedMeter:
    from energy_monitor.ppk2 import Ppk2
    from energy_monitor.sim.ppk2_sim import Ppk2Simulator

    sim = Ppk2Simulator(timeline, faults)
    url = sim.start()
    return SimulatedMeter("ppk2", sim, 100_000.0, 100_000.0, lambda **kw: Ppk2(url, **kw))


def _otii(timeline: LoadTimeline, faults: SimFaults | None) -> SimulatedMeter:
    """An Otii server with one Arc; main current at 1 kS/s in the lab, 4 kS/s (the Arc's) max."""
    from energy_monitor.otii import Otii
    from energy_monitor.sim.otii_sim import OtiiSimulator

    sim = OtiiSimulator(timeline, faults, username="sim-user", password="sim-pass")
    url = sim.start()
    return SimulatedMeter(
        "otii", sim, 1000.0, 4000.0,
        lambda **kw: Otii(url, username="sim-user", password="sim-pass", **kw),
    )


def _joulescope(timeline: LoadTimeline, faults: SimFaults | None) -> SimulatedMeter:
    from energy_monitor.joulescope import Joulescope
    from energy_monitor.sim.joulescope_sim import JoulescopeSimulator

    sim = JoulescopeSimulator(timeline, faults)
    return SimulatedMeter(
        "joulescope", sim, 10_000.0, 1_000_000.0,
        lambda **kw: Joulescope(driver_factory=sim.factory, **kw),
    )


SIMULATED_METERS: dict[str, Callable[[LoadTimeline, SimFaults | None], SimulatedMeter]] = {
    "lpm01a": _lpm01a,
    "ppk2": _ppk2,
    "otii": _otii,
    "joulescope": _joulescope,
}


def start_simulated_meter(
    kind: str, timeline: LoadTimeline, faults: SimFaults | None = None
) -> SimulatedMeter:
    try:
        factory = SIMULATED_METERS[kind]
    except KeyError:
        raise ValueError(
            f"no simulator for monitor {kind!r}; simulated monitors: "
            f"{', '.join(sorted(SIMULATED_METERS))}"
        ) from None
    return factory(timeline, faults)
