"""MLPerf Training power rules: what energy-to-train counts and when a measurement is valid.

From ``training_policies:power_measurement.adoc`` (``shared/reference/mlperf-power.md`` §10):

- all nodes are measured at node level (PSU, PDU outlet, IPMI/Redfish telemetry allowed);
- the interconnect is measured or **estimated** as maximum specified power x run duration x the
  share of it provisioned to the run, and the result says which;
- readings at least once every second, spread evenly over the timed portion, and at least
  60 readings (a shorter run is looped on the same code path until it has them);
- energy-to-train = sum over readings of power x time since the previous reading, summed over
  nodes, plus the estimated parts; reported in kJ;
- across runs, Olympic scoring keeps the same runs as the performance score's.

How we read "at least once every second": the median interval between a node's readings may
not exceed 1 s (plus 1% for scrape jitter), and no stretch longer than ``MAX_GAP_S`` may go
without a reading (a missed reading is a gap, which the integration does not bridge).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tinypower.rules.tiny import Check

MIN_SAMPLES = 60
MAX_INTERVAL_S = 1.0
INTERVAL_TOLERANCE = 0.01  # scrape jitter allowed on the median interval
MAX_GAP_S = 1.5  # longer without a reading: a missed reading
INTERCONNECT_HOW = ("measured", "estimated")


@dataclass(frozen=True)
class NodeSampling:
    """What the rules need to know about one node's readings over the run."""

    node: str
    readings: int
    median_interval_s: float
    coverage: float  # share of the run between readings no further apart than MAX_GAP_S


@dataclass(frozen=True)
class InterconnectEnergy:
    """Energy of the switches and links: ``measured``, or ``estimated`` from ratings."""

    energy_j: float
    how: str
    detail: str

    def __post_init__(self) -> None:
        if self.how not in INTERCONNECT_HOW:
            raise ValueError(f"interconnect energy is {INTERCONNECT_HOW}, not {self.how!r}")


def estimate_interconnect(max_power_w: float, duration_s: float,
                          provisioning_ratio: float) -> InterconnectEnergy:
    """Max specified power x run duration x the share of the interconnect the run used."""
    if max_power_w < 0:
        raise ValueError(f"interconnect max power must be >= 0 W, got {max_power_w}")
    if not 0 < provisioning_ratio <= 1:
        raise ValueError(
            f"provisioning ratio must be in (0, 1] (the share of the interconnect provisioned "
            f"to this run), got {provisioning_ratio}"
        )
    energy = max_power_w * duration_s * provisioning_ratio
    return InterconnectEnergy(energy, "estimated", (
        f"estimated: {max_power_w:g} W max specified x {duration_s:.3f} s x "
        f"{provisioning_ratio:g} provisioned"))


def no_interconnect() -> InterconnectEnergy:
    return InterconnectEnergy(0.0, "measured", "not counted: no interconnect given "
                                               "(single node, or measured with the nodes)")


def _listed(names: Sequence[str], limit: int = 10) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def sampling_checks(nodes: Sequence[NodeSampling], missing: Sequence[str],
                    run_status: str) -> list[Check]:
    """The rules every training power result must pass, one check per rule, naming nodes."""
    slow = [f"{n.node} ({n.median_interval_s:.3f} s)" for n in nodes
            if not n.median_interval_s <= MAX_INTERVAL_S * (1 + INTERVAL_TOLERANCE)]
    few = [f"{n.node} ({n.readings})" for n in nodes if n.readings < MIN_SAMPLES]
    gappy = [f"{n.node} ({n.coverage:.2%})" for n in nodes if n.coverage < 1.0]
    return [
        Check("training.run_completed", run_status == "success",
              f"run_stop status is {run_status!r}" + (
                  "" if run_status == "success" else ": only a run that reached its target "
                  "quality has an energy-to-train")),
        Check("training.all_nodes_measured", not missing,
              f"{len(nodes)} nodes measured" + (
                  f"; no readings from {len(missing)}: {_listed(list(missing))}" if missing
                  else "")),
        Check("training.sampling_1hz", not slow,
              "every node read at least once a second" if not slow else
              f"median reading interval above {MAX_INTERVAL_S:g} s on {len(slow)} nodes: "
              f"{_listed(slow)}; scrape at 1 s or faster"),
        Check("training.min_60_samples", not few,
              f"every node has at least {MIN_SAMPLES} readings" if not few else
              f"fewer than {MIN_SAMPLES} readings on {len(few)} nodes: {_listed(few)}; loop "
              "a short run until it spans at least 60 readings"),
        Check("training.no_gaps", not gappy,
              "no gap longer than the allowed interval" if not gappy else
              f"readings missing for part of the run on {len(gappy)} nodes (coverage): "
              f"{_listed(gappy)}"),
    ]


def energy_to_train_j(node_energy_j: Sequence[float], interconnect: InterconnectEnergy) -> float:
    """Sum over nodes of their energy over the timed portion, plus the interconnect's."""
    return float(sum(node_energy_j)) + interconnect.energy_j


def olympic_runs(times_to_train_s: Sequence[float]) -> list[int]:
    """Indices of the runs Olympic scoring keeps: all but the fastest and the slowest.

    Energy-to-train is averaged over the same runs as the time-to-train score."""
    if len(times_to_train_s) < 3:
        raise ValueError(f"Olympic scoring needs at least 3 runs, got {len(times_to_train_s)}")
    order = sorted(range(len(times_to_train_s)), key=lambda i: times_to_train_s[i])
    return sorted(order[1:-1])
