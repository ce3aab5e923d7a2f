"""A small curated table of published MLPerf results, typed in, to place a user's numbers among.

Why: "1739 uJ per inference" means little alone; beside a published MCU at 245 uJ and a
server at 0.27 J per query it shows where a system stands, from microwatts to kilowatts. Each
entry is typed in from a public MLCommons results repository (the repository and the path of
the result folder are its public identity, as listed in ``shared/mlperf-logs/CASES.md``); no
result file is copied. The values are the published ones; ``mean_power_w`` and the per-unit
energy are derived from the same logs (``shared/reference/published-logs.md`` §3-§5), so
every row's arithmetic can be checked against the cited folder.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedResult:
    """One published result. ``energy_per_work_j`` is energy per inference (Tiny), per query
    (SingleStream) or per sample (Offline: average W / samples per second)."""

    case: str
    round: str
    organization: str
    system: str
    benchmark: str
    scenario: str
    value: float  # as published, in ``unit``
    unit: str
    energy_per_work_j: float
    work_unit: str
    mean_power_w: float
    latency_ms: float | None  # published latency of the same system and benchmark, if any
    repository: str
    path: str
    note: str = ""

    @property
    def scale(self) -> str:
        return "tiny" if self.repository.startswith("mlcommons/tiny") else "edge/datacenter"

    @property
    def url(self) -> str:
        """Where the result lives (shown as text in the report, which has no live links)."""
        return f"github.com/{self.repository}/tree/main/{self.path}"


PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult(
        case="te01", round="Tiny v1.1", organization="STMicroelectronics",
        system="NUCLEO_U575ZI_Q", benchmark="kws", scenario="energy",
        value=1004.221, unit="uJ/inf", energy_per_work_j=1004.221e-6, work_unit="inference",
        # window 2's printed power (26219.876 uW); the five windows agree within 0.1%
        mean_power_w=26.219876e-3,
        latency_ms=1000 / 25.920,  # tp01: median 25.920 inf/s
        repository="mlcommons/tiny_results_v1.1",
        path="closed/STMicroelectronics/results/NUCLEO_U575ZI_Q/kws/energy",
    ),
    PublishedResult(
        case="te10", round="Tiny v1.3", organization="STMicroelectronics",
        system="NUCLEO_U385RG_Q", benchmark="kws", scenario="energy",
        value=245.3412, unit="uJ/inf", energy_per_work_j=245.3412e-6, work_unit="inference",
        mean_power_w=5.0875e-3,  # trial 1's printed power, the median trial
        latency_ms=1000 / 20.703,  # tp13: median 20.703 inf/s
        repository="mlcommons/tiny_results_v1.3",
        path="closed/STMicroelectronics/results/NUCLEO_U385RG_Q/kws/energy",
    ),
    PublishedResult(
        case="te13", round="Tiny v0.7", organization="renesas",
        system="EK-RA6M4", benchmark="kws", scenario="energy",
        value=3796.957, unit="uJ/inf", energy_per_work_j=3796.957e-6, work_unit="inference",
        mean_power_w=74.743248e-3,  # the median window's printed power
        latency_ms=None,
        repository="mlcommons/tiny_results_v0.7",
        path="closed/renesas/results/EK-RA6M4/kws/energy",
        note="summary only (no raw trace); windows of about 1 s, below the 10 s rule",
    ),
    PublishedResult(
        case="pw01", round="Inference v2.1", organization="Dell",
        system="XR12_A2x1_TRT_MaxQ", benchmark="resnet50", scenario="SingleStream",
        value=0.2682116017, unit="J/query", energy_per_work_j=0.2682116017, work_unit="query",
        mean_power_w=232.4572667, latency_ms=None,
        repository="mlcommons/inference_results_v2.1",
        path="closed/Dell/results/XR12_A2x1_TRT_MaxQ/resnet50/SingleStream/performance",
    ),
    PublishedResult(
        case="pw03", round="Inference v2.1", organization="Dell",
        system="XR12_A2x1_TRT_MaxQ", benchmark="resnet50", scenario="Offline",
        value=266.9385801, unit="W",
        # 266.9385801 W / 3091.84 samples/s (mlperf_log_summary.txt of the same run)
        energy_per_work_j=266.9385801 / 3091.84, work_unit="sample",
        mean_power_w=266.9385801, latency_ms=None,
        repository="mlcommons/inference_results_v2.1",
        path="closed/Dell/results/XR12_A2x1_TRT_MaxQ/resnet50/Offline/performance",
    ),
    PublishedResult(
        case="pw11", round="Inference v2.1", organization="Krai",
        system="firefly-tflite-v2.7.1-ruy", benchmark="resnet50", scenario="MultiStream",
        value=11.25623422, unit="J/query", energy_per_work_j=11.25623422,
        work_unit="query (8 samples)",
        # The SingleStream run's mean power over LoadGen's window (run_1/spl.txt)
        mean_power_w=11.808665, latency_ms=None,
        repository="mlcommons/inference_results_v2.1",
        path="closed/Krai/results/firefly-tflite-v2.7.1-ruy/resnet50/multistream/performance",
        note="edge board; MultiStream inferred from its SingleStream run: 8 x its J/query",
    ),
)
